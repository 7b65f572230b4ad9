package hub

import (
	"context"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"html/template"
	"net"
	"net/http"
	"net/http/pprof"
	"net/url"
	"slices"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/canopy-grid/canopy/hub/intent"
	"github.com/canopy-grid/canopy/hub/planner"
	"github.com/canopy-grid/canopy/hub/snapshot"
	"github.com/canopy-grid/canopy/protocol"
	"github.com/canopy-grid/canopy/protocol/squidreg"
)

//go:embed status.html
var statusHTML string

var statusTmpl = template.Must(template.New("status").Funcs(template.FuncMap{
	"ago": func(t time.Time) string {
		if t.IsZero() {
			return "never"
		}
		return time.Since(t).Round(time.Second).String() + " ago"
	},
}).Parse(statusHTML))

// errNoSuchVM is returned by admin actions on a VM the hub does not know.
var errNoSuchVM = errors.New("no such VM")

// SetHeld puts a VM under manual control (the planner never touches it)
// or releases it. The VM must be one the hub knows. The change is durable
// when SetHeld returns.
func (h *Hub) SetHeld(ctx context.Context, vmID string, held bool, by string) error {
	return h.admin(ctx, func(l *loop, now time.Time) error {
		vm, ok := h.Status().VM(vmID)
		if !ok {
			if _, had := l.st.Hold[vmID]; !(had && !held) {
				return fmt.Errorf("%w: %q", errNoSuchVM, vmID)
			}
		}
		tx := l.tx
		if held {
			tx.PutHold(intent.Hold{VMID: vmID, Cloud: vm.Site, Name: vm.Name, At: now, By: by})
			l.event(now, vm.Site, vmID, "", "held", "manual control by "+by)
		} else {
			tx.DropHold(vmID)
			l.event(now, vm.Site, vmID, "", "released", "released by "+by)
		}
		return nil
	})
}

// sameOrigin refuses state-changing requests a browser sends on behalf of
// another site: any page the admin's browser opens could otherwise hold
// VMs. Requests with neither header (curl, the CLI) pass.
func sameOrigin(r *http.Request) error {
	switch r.Header.Get("Sec-Fetch-Site") {
	case "", "same-origin", "none":
	default:
		return fmt.Errorf("cross-site request refused (Sec-Fetch-Site: %.40s)", r.Header.Get("Sec-Fetch-Site"))
	}
	origin := r.Header.Get("Origin")
	if origin == "" {
		return nil
	}
	u, err := url.Parse(origin)
	if err != nil || u.Host != r.Host {
		return fmt.Errorf("cross-site request refused (Origin: %.80s, host %.80s)", origin, r.Host)
	}
	return nil
}

// validVMID bounds what a VM id in a URL may be before it is looked up.
func validVMID(id string) bool {
	if id == "" || len(id) > 255 {
		return false
	}
	for _, c := range id {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.') {
			return false
		}
	}
	return true
}

func (h *Hub) httpHandler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(h.reg, promhttp.HandlerOpts{}))
	// Profiles for whoever administers the hub (the listener is loopback).
	mux.HandleFunc("GET /debug/pprof/", pprof.Index)
	mux.HandleFunc("GET /debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("GET /debug/pprof/heap", pprof.Index)
	mux.HandleFunc("GET /api/v1/sites", func(w http.ResponseWriter, _ *http.Request) { writeRaw(w, h.Status().SitesJSON()) })
	mux.HandleFunc("GET /api/v1/vms", func(w http.ResponseWriter, _ *http.Request) { writeRaw(w, h.Status().VMsJSON()) })
	mux.HandleFunc("GET /api/v1/status", func(w http.ResponseWriter, _ *http.Request) { writeJSON(w, h.Status()) })
	sq := h.squids.Handler()
	mux.Handle(squidreg.PathSquids, sq)
	mux.Handle(squidreg.PathNearest, sq)
	mux.Handle(squidreg.PathWPAD, sq)
	// Manual control. The HTTP listener is loopback only (Config.Validate):
	// whoever can reach it administers the hub.
	hold := func(held bool) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			if err := sameOrigin(r); err != nil {
				h.m.apiRefused.WithLabelValues("cross_site").Inc()
				http.Error(w, err.Error(), http.StatusForbidden)
				return
			}
			id := r.PathValue("id")
			if !validVMID(id) {
				h.m.apiRefused.WithLabelValues("bad_id").Inc()
				http.Error(w, "bad VM id: want 1 to 255 letters, digits, '-', '_' or '.'", http.StatusBadRequest)
				return
			}
			ctx, cancel := context.WithTimeout(r.Context(), 30*time.Second)
			defer cancel()
			err := h.SetHeld(ctx, id, held, "api:"+r.RemoteAddr)
			switch {
			case errors.Is(err, errNoSuchVM):
				h.m.apiRefused.WithLabelValues("unknown_vm").Inc()
				http.Error(w, err.Error(), http.StatusNotFound)
			case err != nil:
				http.Error(w, err.Error(), http.StatusServiceUnavailable)
			default:
				writeJSON(w, map[string]any{"vm_id": id, "held": held})
			}
		}
	}
	mux.HandleFunc("POST /api/v1/vms/{id}/hold", hold(true))
	mux.HandleFunc("DELETE /api/v1/vms/{id}/hold", hold(false))
	mux.HandleFunc("GET /api/v1/images", func(w http.ResponseWriter, _ *http.Request) { writeJSON(w, h.Images()) })
	mux.HandleFunc("POST /api/v1/images/want", h.imageWantHandler(true))
	mux.HandleFunc("POST /api/v1/images/unwant", h.imageWantHandler(false))
	mux.HandleFunc("GET /api/v1/storage", func(w http.ResponseWriter, _ *http.Request) {
		out := map[string]*protocol.StorageReport{}
		for _, s := range h.Sites() {
			if s.Storage != nil {
				out[s.Name] = s.Storage
			}
		}
		writeJSON(w, out)
	})
	mux.HandleFunc("GET /api/v1/demand", func(w http.ResponseWriter, _ *http.Request) { writeJSON(w, h.Demand()) })
	mux.HandleFunc("GET /api/v1/events", func(w http.ResponseWriter, _ *http.Request) { writeJSON(w, h.Status().Events) })
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, _ *http.Request) {
		st := h.Status()
		ev := st.Events[:min(20, len(st.Events))]
		rows, counts := pageVMs(st.VMs, pageVMRows)
		data := struct {
			HubID    string
			Sites    []SiteStatus
			VMs      []VMStatus
			VMTotal  int
			VMCounts []siteCounts
			Demand   DemandStatus
			Evidence snapshot.Report
			Events   []intent.Event
			Now      time.Time
		}{st.HubID, st.Sites, rows, len(st.VMs), counts, st.Demand, st.Evidence, ev, h.now()}
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.Header().Set("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'")
		if err := statusTmpl.Execute(w, data); err != nil {
			h.log.WithError(err).Warn("render status page")
		}
	})
	return mux
}

// pageVMRows is how many VMs the status page lists; the JSON API has all.
const pageVMRows = 200

// siteCounts is one cloud's VMs by state, for the status page.
type siteCounts struct {
	Site   string
	Counts map[string]int
	Total  int
}

// pageVMs picks the VMs the page lists (those that need attention first:
// in error, held, retiring; then the rest by name, up to n) and counts
// every VM by cloud and state.
func pageVMs(vms []VMStatus, n int) ([]VMStatus, []siteCounts) {
	by := map[string]*siteCounts{}
	var order []string
	var rows []VMStatus
	for pass := range 2 {
		for i := range vms {
			vm := &vms[i]
			attention := vm.State == planner.VMError || vm.Held || vm.State == planner.VMRetiring || vm.RetireError != ""
			if pass == 0 {
				c := by[vm.Site]
				if c == nil {
					c = &siteCounts{Site: vm.Site, Counts: map[string]int{}}
					by[vm.Site] = c
					order = append(order, vm.Site)
				}
				c.Counts[string(vm.State)]++
				c.Total++
			}
			if len(rows) < n && attention == (pass == 0) {
				rows = append(rows, *vm)
			}
		}
	}
	slices.Sort(order)
	counts := make([]siteCounts, 0, len(order))
	for _, s := range order {
		counts = append(counts, *by[s])
	}
	return rows, counts
}

// checkListen refuses an HTTP address beyond loopback: the API has no
// authentication of its own yet.
func checkListen(addr string) error {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("http %q: %w", addr, err)
	}
	if host == "localhost" {
		return nil
	}
	ip := net.ParseIP(host)
	if ip == nil || !ip.IsLoopback() {
		return fmt.Errorf("http %q is not a loopback address: the hub's API has no authentication of its own, "+
			"so anyone who reaches it administers the hub. Keep http on 127.0.0.1 and publish the page through "+
			"a reverse proxy that authenticates (TLS with client certificates or single sign-on); see docs/operations.md", addr)
	}
	return nil
}

func writeRaw(w http.ResponseWriter, b []byte) {
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write(b)
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}
