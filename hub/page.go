package hub

import (
	_ "embed"
	"fmt"
	"html"
	"html/template"
	"maps"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
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
	// Images is the image × site matrix (rows by image name); empty when
	// no cloud lists images.
	Images     []imageRow
	ImageSites []string
	// SitesHTML is the per-site table's rows, written in Go (100 sites ×
	// 30 cells through the template's reflection cost most of a render).
	SitesHTML template.HTML
}

// imageRow is one image's status on each site (in ImageSites order; ""
// where the site does not have it).
type imageRow struct {
	Name  string
	Sites []string
}

// maxImageRows bounds the image matrix on the page.
const maxImageRows = 100

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
	d.SitesHTML = sitesHTML(d.Sites, admin, public, d.Now)
	d.Plots = h.plots(tier, st.At)
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
			if (d.EvKind == "" || e.Kind == d.EvKind) && (d.EvSite == "" || e.Site == d.EvSite) && len(d.Events) < pageEvents {
				d.Events = append(d.Events, e)
			}
		}
		for k := range kinds {
			d.EvKinds = append(d.EvKinds, k)
		}
		slices.Sort(d.EvKinds)
		d.Squids = h.squids.Squids()
		d.Images, d.ImageSites = imageMatrix(st.Sites)
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

// imageMatrix is the image × site matrix of the sites' image lists.
func imageMatrix(sites []SiteStatus) ([]imageRow, []string) {
	names := map[string]bool{}
	var cols []string
	for _, s := range sites {
		if len(s.Images) == 0 {
			continue
		}
		cols = append(cols, s.Name)
		for n := range s.Images {
			names[n] = true
		}
	}
	var rows []imageRow
	for _, n := range slices.Sorted(maps.Keys(names)) {
		if len(rows) == maxImageRows {
			break
		}
		r := imageRow{Name: n}
		for _, s := range sites {
			if len(s.Images) > 0 {
				r.Sites = append(r.Sites, s.Images[n])
			}
		}
		rows = append(rows, r)
	}
	return rows, cols
}

// sitesHTML writes the per-site table's rows. Every string from outside
// (names, reasons, modes) is escaped; the rest are numbers.
func sitesHTML(rows []siteRow, admin, public bool, now time.Time) template.HTML {
	if len(rows) == 0 {
		return `<tr><td colspan="20" class="muted">no site configured and no agent connected</td></tr>`
	}
	var b strings.Builder
	b.Grow(len(rows) * 1400)
	esc := html.EscapeString
	num := strconv.Itoa
	gib := func(mib int) string {
		if mib < 0 {
			return "∞"
		}
		return strconv.FormatFloat(float64(mib)/1024, 'f', 0, 64)
	}
	capStr := func(v int) string {
		if v <= 0 {
			return "–"
		}
		return num(v)
	}
	for _, s := range rows {
		cls := ""
		if s.Paused || s.Disabled {
			cls = "off"
		}
		fmt.Fprintf(&b, `<tr class="%s" data-site="%s">`+"\n"+`<td><b>%s</b>`, cls, esc(s.Name), esc(s.Name))
		switch {
		case s.Mode != "":
			when := " at run time"
			if public {
				when = ""
			}
			fmt.Fprintf(&b, ` <span class="muted">(%s%s)</span>`, esc(s.Mode), when)
		case s.Disabled:
			b.WriteString(` <span class="muted">(disabled)</span>`)
		case s.Paused:
			b.WriteString(` <span class="muted">(paused)</span>`)
		}
		b.WriteString("</td>\n<td>")
		if s.Connected {
			b.WriteString(`<span class="good">connected</span>`)
		} else {
			b.WriteString(`<span class="bad">disconnected</span>`)
		}
		switch {
		case s.APIUp:
			fmt.Fprintf(&b, "\n"+`<span class="good">API %d ms</span>`, s.APIMillis)
		case s.InventoryAt.IsZero():
			b.WriteString("\n" + `<span class="bad">API never listed</span>`)
		default:
			fmt.Fprintf(&b, "\n"+`<span class="bad">API last listed %s ago</span>`, now.Sub(s.InventoryAt).Round(time.Second))
		}
		b.WriteString("</td>\n<td>")
		if s.State != "" {
			b.WriteString(esc(string(s.State)))
		} else {
			b.WriteString("–")
		}
		if s.Reason != "" {
			fmt.Fprintf(&b, ` <span class="muted">%s</span>`, esc(s.Reason))
		}
		b.WriteString("</td>\n")
		for _, st := range DisplayStates {
			fmt.Fprintf(&b, `<td class="n" data-state="%s">%d</td>`, st, s.Counts[st])
		}
		fmt.Fprintf(&b, "\n"+`<td class="n">%d</td><td class="n">%d</td>`+"\n", s.Slots, s.IdleSlotCores)
		fmt.Fprintf(&b, `<td class="n">%d / %s</td><td class="n">%d / %s</td>`+"\n", s.CanopyCores, gib(s.CanopyRAMMiB), s.ForeignCores, gib(s.ForeignRAMMiB))
		maxCores := "∞"
		if s.MaxCores >= 0 {
			maxCores = num(s.MaxCores)
		}
		fmt.Fprintf(&b, `<td class="n">%d / %s</td><td class="n">%s / %s</td>`+"\n", s.UsedCores, maxCores, gib(s.UsedRAMMiB), gib(s.MaxRAMMiB))
		fmt.Fprintf(&b, `<td>%s · %s</td>`+"\n<td>", capStr(s.Caps.Cores), capStr(s.SoftQuota.Cores))
		for _, g := range s.Groups {
			fmt.Fprintf(&b, "%s %d; ", esc(g.Name), g.Running)
		}
		b.WriteString("</td>\n")
		if admin {
			b.WriteString("<td>")
			for _, a := range s.Actions {
				fmt.Fprintf(&b, `<button type="button" data-act="site" data-site="%s" data-action="%s">%s</button>`, esc(s.Name), a, a)
			}
			b.WriteString("</td>")
		}
		b.WriteString("\n</tr>\n")
	}
	return template.HTML(b.String()) //nolint:gosec // every value from outside is escaped
}
