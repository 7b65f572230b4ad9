package hub

import (
	_ "embed"
	"html/template"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"time"

	"github.com/canopy-grid/canopy/hub/intent"
	"github.com/canopy-grid/canopy/hub/series"
	"github.com/canopy-grid/canopy/hub/squid"
)

//go:embed status.html
var statusHTML string

//go:embed console.js
var consoleJS []byte

var statusTmpl = template.Must(template.New("status").Funcs(template.FuncMap{
	"ago": func(t time.Time) string {
		if t.IsZero() {
			return "never"
		}
		return time.Since(t).Round(time.Second).String() + " ago"
	},
	"limit": func(v int) string {
		if v < 0 {
			return "∞"
		}
		return strconv.Itoa(v)
	},
	"cap": func(v int) string {
		if v <= 0 {
			return "–"
		}
		return strconv.Itoa(v)
	},
	"gib": func(mib int) string {
		if mib < 0 {
			return "∞"
		}
		return strconv.FormatFloat(float64(mib)/1024, 'f', 0, 64)
	},
	"qurl": pageURL,
	"add":  func(a, b int) int { return a + b },
	"sub":  func(a, b int) int { return a - b },
}).Parse(statusHTML))

// vmPageSize is how many VMs one page of the VM list shows.
const vmPageSize = 100

// pageEvents is how many events the page shows.
const pageEvents = 50

// pageData is what the page template renders.
type pageData struct {
	HubID   string
	Public  bool
	Admin   bool
	Now     time.Time
	St      *Status
	States  []string
	Sites   []siteRow
	Plots   []plotView
	Tier    string
	Tiers   []string
	VMs     []vmRow
	VMTotal int // VMs matching the filter
	VMPage  int
	VMPages int
	VMSite  string
	VMState string
	Events  []intent.Event
	EvKind  string
	EvSite  string
	EvKinds []string
	Squids  []squid.Status
	Query   string
}

type siteRow struct {
	SiteStatus
	Actions []string
	Groups  []groupCount
}

type groupCount struct {
	Name    string
	Running int
}

type vmRow struct {
	VMStatus
	Display string
	Actions []string
}

// renderPage renders the page (public: the read-only variant without
// controls, VM names or addresses).
func (h *Hub) renderPage(w http.ResponseWriter, r *http.Request, ch channel, public bool) {
	st := h.Status()
	q := r.URL.Query()
	_, admin := h.adminIdentity(ch, r)
	admin = admin && !public
	d := pageData{HubID: st.HubID, Public: public, Admin: admin, Now: h.now(), St: st, States: DisplayStates,
		Tier: "hour", Query: r.URL.RawQuery}
	for _, t := range series.Tiers {
		d.Tiers = append(d.Tiers, t.Name)
	}
	tier := 0
	if ti, ok := series.TierByName(q.Get("tier")); ok {
		tier, d.Tier = ti, q.Get("tier")
	}
	for _, s := range st.Sites {
		row := siteRow{SiteStatus: s}
		if admin {
			row.Actions = siteActions(s)
		}
		for _, g := range st.Groups {
			row.Groups = append(row.Groups, groupCount{Name: g.Name, Running: s.RunningJobs[g.Name]})
		}
		d.Sites = append(d.Sites, row)
	}
	for _, p := range plots {
		d.Plots = append(d.Plots, drawPlot(h.con.series, p, tier, st.At))
	}
	if !public {
		d.VMSite, d.VMState = q.Get("vmsite"), q.Get("vmstate")
		d.VMPage, _ = strconv.Atoi(q.Get("vmpage"))
		d.VMs, d.VMTotal = pageVMList(st.VMs, d.VMSite, d.VMState, max(d.VMPage, 0), admin)
		d.VMPages = max((d.VMTotal+vmPageSize-1)/vmPageSize, 1)
		d.VMPage = min(max(d.VMPage, 0), d.VMPages-1)
		d.EvKind, d.EvSite = q.Get("evkind"), q.Get("evsite")
		kinds := map[string]bool{}
		for _, e := range st.Events {
			kinds[e.Kind] = true
			if (d.EvKind == "" || e.Kind == d.EvKind) && (d.EvSite == "" || e.Cloud == d.EvSite) && len(d.Events) < pageEvents {
				d.Events = append(d.Events, e)
			}
		}
		for k := range kinds {
			d.EvKinds = append(d.EvKinds, k)
		}
		slices.Sort(d.EvKinds)
		d.Squids = h.squids.Squids()
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'; script-src 'self'; connect-src 'self'; img-src 'self'")
	w.Header().Set("X-Frame-Options", "DENY")
	name := "page"
	if q.Get("fragment") == "1" {
		name = "live"
	}
	if err := statusTmpl.ExecuteTemplate(w, name, d); err != nil {
		h.log.WithError(err).Warn("render status page")
	}
}

// pageVMList picks one page of the VMs matching a site and display-state
// filter: those that need attention (error, held, retiring, a failed
// retirement) first, then the rest, each in name order. It returns the
// page and how many VMs match.
func pageVMList(vms []VMStatus, site, state string, page int, admin bool) ([]vmRow, int) {
	total := 0
	var rows []vmRow
	from, to := page*vmPageSize, (page+1)*vmPageSize
	for pass := range 2 {
		for i := range vms {
			vm := &vms[i]
			if site != "" && vm.Site != site {
				continue
			}
			ds := displayState(vm)
			if state != "" && ds != state {
				continue
			}
			attention := ds == "error" || ds == "held" || ds == "unknown" || vm.State == "retiring" || vm.RetireError != ""
			if attention != (pass == 0) {
				continue
			}
			if total >= from && total < to {
				row := vmRow{VMStatus: *vm, Display: ds}
				if admin {
					row.Actions = vmActions(*vm)
				}
				rows = append(rows, row)
			}
			total++
		}
	}
	return rows, total
}

// pageURL is the page's URL with one query value changed.
func pageURL(raw, key, value string) string {
	q, _ := url.ParseQuery(raw)
	q.Del("fragment")
	if value == "" {
		q.Del(key)
	} else {
		q.Set(key, value)
	}
	if len(q) == 0 {
		return "?"
	}
	return "?" + q.Encode()
}
