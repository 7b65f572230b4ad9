package hub

import (
	_ "embed"
	"encoding/json"
	"html/template"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/canopy-grid/canopy/hub/planner"
	"github.com/canopy-grid/canopy/hub/store"
	"github.com/canopy-grid/canopy/protocol"
	"github.com/canopy-grid/canopy/protocol/squidreg"
)

// SiteStatus is one site in the JSON API and on the status page.
type SiteStatus struct {
	Name          string    `json:"name"`
	Connected     bool      `json:"connected"`
	Software      string    `json:"software,omitempty"`
	ConnectedAt   time.Time `json:"connected_at,omitzero"`
	LastHeartbeat time.Time `json:"last_heartbeat,omitzero"`
	InventoryAt   time.Time `json:"inventory_at,omitzero"`
	Flavors       int       `json:"flavors"`
	MaxCores      int       `json:"max_cores"`
	UsedCores     int       `json:"used_cores"`
	MaxInstances  int       `json:"max_instances"`
	VMs           int       `json:"vms"`
	ForeignVMs    int       `json:"foreign_vms"`
	Pending       int       `json:"pending_boots"`
	Paused        bool      `json:"paused"`
	BootFailures  int       `json:"boot_failures"`
	LastFailure   string    `json:"last_failure,omitempty"`
	// Storage is the site's last storage health report, if it sends one.
	Storage *protocol.StorageReport `json:"storage,omitempty"`
}

// VMStatus is one VM in the JSON API and on the status page.
type VMStatus struct {
	ID          string          `json:"id"`
	Name        string          `json:"name"`
	Site        string          `json:"site"`
	Group       string          `json:"group"`
	VMType      string          `json:"vm_type"`
	Flavor      string          `json:"flavor"`
	State       planner.VMState `json:"state"`
	Held        bool            `json:"held,omitempty"`
	RunningJobs int             `json:"running_jobs"`
	CreatedAt   time.Time       `json:"created_at,omitzero"`
}

// DemandStatus summarizes demand for the API.
type DemandStatus struct {
	Shapes   []planner.Shape `json:"shapes"`
	Idle     int             `json:"idle"`
	Running  int             `json:"running"`
	Finished int             `json:"finished"`
	TakenAt  time.Time       `json:"taken_at,omitzero"`
	Error    string          `json:"error,omitempty"`
	Plan     planner.Plan    `json:"last_plan"`
	PlanAt   time.Time       `json:"plan_at,omitzero"`
}

// Sites returns every site's status, sorted by name.
func (h *Hub) Sites() []SiteStatus {
	h.mu.Lock()
	defer h.mu.Unlock()
	now := h.now()
	out := make([]SiteStatus, 0, len(h.sites))
	for _, s := range h.sites {
		st := SiteStatus{Name: s.name, Connected: h.connectedLocked(s, now), Software: s.software, ConnectedAt: s.connectedAt,
			LastHeartbeat: s.lastHeartbeat, InventoryAt: s.invAt, Flavors: len(s.inv.Flavors), MaxCores: s.inv.Limits.MaxCores,
			UsedCores: s.inv.Limits.UsedCores, MaxInstances: s.inv.Limits.MaxInstances, Pending: len(s.pending),
			Paused: h.cfg.Sites[s.name].Paused, BootFailures: s.bootFailures, LastFailure: s.lastFailure, Storage: s.inv.Storage}
		for _, vm := range s.inv.VMs {
			if vm.Foreign {
				st.ForeignVMs++
			} else {
				st.VMs++
			}
		}
		out = append(out, st)
	}
	slices.SortFunc(out, func(a, b SiteStatus) int { return strings.Compare(a.Name, b.Name) })
	return out
}

// VMs returns every Canopy VM the hub knows, including boots not yet listed.
func (h *Hub) VMs() []VMStatus {
	h.mu.Lock()
	snap := h.snapshotLocked(h.now(), h.demand)
	h.mu.Unlock()
	out := make([]VMStatus, 0, len(snap.VMs))
	for _, vm := range snap.VMs {
		out = append(out, VMStatus{ID: vm.ID, Name: vm.Name, Site: vm.Site, Group: vm.Group, VMType: vm.VMType,
			Flavor: vm.Flavor, State: vm.State, Held: vm.Held, RunningJobs: vm.RunningJobs, CreatedAt: vm.CreatedAt})
	}
	slices.SortFunc(out, func(a, b VMStatus) int { return strings.Compare(a.Name, b.Name) })
	return out
}

// Demand returns the last demand and plan.
func (h *Hub) Demand() DemandStatus {
	h.mu.Lock()
	defer h.mu.Unlock()
	d := DemandStatus{Shapes: h.demand.Shapes, Finished: h.demand.Finished, TakenAt: h.demandAt, Error: h.demandErr,
		Plan: h.lastPlan, PlanAt: h.planAt}
	for _, sh := range d.Shapes {
		d.Idle += sh.Idle
		d.Running += sh.Running
	}
	return d
}

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

func (h *Hub) httpHandler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(h.reg, promhttp.HandlerOpts{}))
	mux.HandleFunc("GET /api/v1/sites", func(w http.ResponseWriter, _ *http.Request) { writeJSON(w, h.Sites()) })
	mux.HandleFunc("GET /api/v1/vms", func(w http.ResponseWriter, _ *http.Request) { writeJSON(w, h.VMs()) })
	sq := h.squids.Handler()
	mux.Handle(squidreg.PathSquids, sq)
	mux.Handle(squidreg.PathNearest, sq)
	mux.Handle(squidreg.PathWPAD, sq)
	// Manual control. The HTTP listener is loopback by default: whoever
	// can reach it administers the hub (put an authenticating proxy in
	// front before publishing it).
	hold := func(held bool) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			id := r.PathValue("id")
			if id == "" || len(id) > 255 {
				http.Error(w, "bad VM id", http.StatusBadRequest)
				return
			}
			if err := h.SetHeld(id, held); err != nil {
				http.Error(w, err.Error(), http.StatusInternalServerError)
				return
			}
			writeJSON(w, map[string]any{"vm_id": id, "held": held})
		}
	}
	mux.HandleFunc("POST /api/v1/vms/{id}/hold", hold(true))
	mux.HandleFunc("DELETE /api/v1/vms/{id}/hold", hold(false))
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
	mux.HandleFunc("GET /api/v1/events", func(w http.ResponseWriter, _ *http.Request) {
		ev, err := h.store.Recent(200)
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		writeJSON(w, ev)
	})
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, _ *http.Request) {
		ev, _ := h.store.Recent(20)
		data := struct {
			HubID  string
			Sites  []SiteStatus
			VMs    []VMStatus
			Demand DemandStatus
			Events []store.Event
			Now    time.Time
		}{h.cfg.ID, h.Sites(), h.VMs(), h.Demand(), ev, h.now()}
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.Header().Set("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'")
		if err := statusTmpl.Execute(w, data); err != nil {
			h.log.WithError(err).Warn("render status page")
		}
	})
	return mux
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}
