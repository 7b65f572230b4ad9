package hub

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/pprof"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/canopy-grid/canopy/hub/intent"
	"github.com/canopy-grid/canopy/hub/ledger"
	"github.com/canopy-grid/canopy/hub/series"
	"github.com/canopy-grid/canopy/protocol"
	"github.com/canopy-grid/canopy/protocol/squidreg"
)

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
			tx.PutHold(intent.Hold{VMID: vmID, Site: vm.Site, Name: vm.Name, At: now, By: by})
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

// httpHandler serves the HTTP listener: read-only unless admin_on_http.
func (h *Hub) httpHandler() http.Handler { return h.handler(chanHTTP) }

// handler serves one listener: the page, the public page, /metrics, the
// JSON API and, where the channel allows administering, admin actions.
func (h *Hub) handler(ch channel) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(h.reg, promhttp.HandlerOpts{}))
	// Profiles for whoever administers the hub (the listener is loopback).
	mux.HandleFunc("GET /debug/pprof/", pprof.Index)
	mux.HandleFunc("GET /debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("GET /debug/pprof/heap", pprof.Index)
	mux.HandleFunc("GET /api/v1/sites", func(w http.ResponseWriter, _ *http.Request) { writeRaw(w, h.Status().SitesJSON()) })
	mux.HandleFunc("GET /api/v1/vms", func(w http.ResponseWriter, _ *http.Request) { writeRaw(w, h.Status().VMsJSON()) })
	mux.HandleFunc("GET /api/v1/status", func(w http.ResponseWriter, _ *http.Request) { writeJSON(w, h.Status()) })
	mux.HandleFunc("GET /api/v1/summary", func(w http.ResponseWriter, _ *http.Request) {
		st := h.Status()
		writeJSON(w, Summary{At: st.At, HubID: st.HubID, Sites: st.Sites, Groups: st.Groups, Unmatchable: st.Unmatchable,
			Idle: st.Demand.Idle, Running: st.Demand.Running, DemandError: st.Demand.Error})
	})
	sq := h.squids.Handler()
	mux.Handle(squidreg.PathSquids, sq)
	mux.Handle(squidreg.PathNearest, sq)
	mux.Handle(squidreg.PathWPAD, sq)
	h.adminRoutes(mux, ch)
	h.imageRoutes(mux, ch)
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
	mux.HandleFunc("GET /api/v1/events", h.serveEvents)
	mux.HandleFunc("GET /api/v1/series/{plot}", h.serveSeries)
	mux.HandleFunc("GET /api/v1/accounting", h.serveAccounting)
	mux.HandleFunc("GET /static/console.js", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/javascript; charset=utf-8")
		w.Header().Set("Cache-Control", "max-age=300")
		_, _ = w.Write(consoleJS)
	})
	mux.HandleFunc("GET /static/icon.svg", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "image/svg+xml")
		w.Header().Set("Cache-Control", "max-age=86400")
		_, _ = w.Write([]byte(iconSVG))
	})
	mux.HandleFunc("GET /favicon.ico", func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusNoContent) })
	mux.HandleFunc("GET /public", func(w http.ResponseWriter, r *http.Request) { h.renderPage(w, r, ch, true) })
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) { h.renderPage(w, r, ch, false) })
	return mux
}

// iconSVG is the page's icon (a canopy: three leaves).
const iconSVG = `<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 16 16"><circle cx="5" cy="7" r="4" fill="#2e8b57"/>` +
	`<circle cx="11" cy="7" r="4" fill="#3a9d66"/><circle cx="8" cy="4" r="4" fill="#46b076"/><rect x="7" y="9" width="2" height="6" fill="#6b4f2a"/></svg>`

// Summary is /api/v1/summary: what `hub status` shows.
type Summary struct {
	At          time.Time        `json:"at"`
	HubID       string           `json:"hub_id"`
	Sites       []SiteStatus     `json:"sites"`
	Groups      []GroupRow       `json:"groups"`
	Unmatchable []UnmatchableRow `json:"unmatchable"`
	Idle        int              `json:"idle"`
	Running     int              `json:"running"`
	DemandError string           `json:"demand_error,omitempty"`
}

// serveEvents answers /api/v1/events, newest first, filtered by kind and
// site, at most limit (default and maximum: the status's 200).
func (h *Hub) serveEvents(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	kind, site := q.Get("kind"), q.Get("site")
	limit := recentEvents
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n <= 0 {
			http.Error(w, "limit: want a positive number", http.StatusBadRequest)
			return
		}
		limit = min(n, recentEvents)
	}
	out := []intent.Event{}
	for _, e := range h.Status().Events {
		if (kind == "" || e.Kind == kind) && (site == "" || e.Site == site) && len(out) < limit {
			out = append(out, e)
		}
	}
	writeJSON(w, out)
}

// serveSeries answers /api/v1/series/PLOT.csv (or .json) ?tier=hour|day|month.
func (h *Hub) serveSeries(w http.ResponseWriter, r *http.Request) {
	id, format, _ := strings.Cut(r.PathValue("plot"), ".")
	p, ok := plotByID(id)
	if !ok || (format != "csv" && format != "json") {
		http.Error(w, "want /api/v1/series/{vms,jobs,cores,boots}.{csv,json}", http.StatusNotFound)
		return
	}
	tierName := r.URL.Query().Get("tier")
	if tierName == "" {
		tierName = "hour"
	}
	tier, ok := series.TierByName(tierName)
	if !ok {
		http.Error(w, "tier: want hour, day or month", http.StatusBadRequest)
		return
	}
	names := p.series(h.con.series.Names())
	if format == "json" {
		out := map[string][]series.Point{}
		for _, n := range names {
			out[n] = h.con.series.Points(n, tier)
		}
		writeJSON(w, out)
		return
	}
	w.Header().Set("Content-Type", "text/csv; charset=utf-8")
	w.Header().Set("Content-Disposition", fmt.Sprintf("attachment; filename=canopy-%s-%s.csv", id, tierName))
	if err := h.con.series.WriteCSV(w, names, tier); err != nil {
		h.log.WithError(err).Debug("series CSV not sent whole")
	}
}

// serveAccounting answers /api/v1/accounting?from=YYYY-MM-DD&to=&by=group,site&format=csv.
func (h *Hub) serveAccounting(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	var by []string
	if v := q.Get("by"); v != "" {
		by = strings.Split(v, ",")
	}
	rows, err := h.con.ledger.Query(q.Get("from"), q.Get("to"), by)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	switch q.Get("format") {
	case "", "json":
		writeJSON(w, rows)
	case "csv":
		w.Header().Set("Content-Type", "text/csv; charset=utf-8")
		_ = ledger.WriteCSV(w, rows)
	default:
		http.Error(w, "format: want json or csv", http.StatusBadRequest)
	}
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
