package hub

import (
	"context"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/canopy-grid/canopy/hub/ledger"
	"github.com/canopy-grid/canopy/hub/planner"
	"github.com/canopy-grid/canopy/hub/series"
)

// Blob keys in the hub's store.
const (
	blobSeries = "series"
	blobLedger = "ledger"
)

// consoleEvery is how often the time series and the ledger are written to
// the store (and when the hub stops): a crash loses at most this much
// history, never intent.
const consoleEvery = time.Minute

// maxSampleGap bounds the time one sample accounts for: a hub that was
// stopped (or a status that came late) does not bill the gap.
const maxSampleGap = 5 * time.Minute

// console is what the hub records for its status page and accounting:
// time series and the ledger, fed from each published status.
type console struct {
	series  *series.Set
	ledger  *ledger.Ledger
	coreSec *prometheus.CounterVec

	// observed counts the statuses sampled: the plots drawn are cached
	// until it moves (plotCache).
	observed  atomic.Uint64
	plotCache atomic.Pointer[drawnPlots]

	// Owned by observe (called under publishMu).
	prev     *Status
	prevJobs map[string]int // JobsStarted by VM name at the last sample
}

func newConsole(reg *prometheus.Registry) *console {
	c := &console{series: series.New(), ledger: ledger.New(), prevJobs: map[string]int{},
		coreSec: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "canopy_core_seconds_total",
			Help: "Core-seconds Canopy's VMs were up (booted, not in error), by group and site."}, []string{"group", "site"})}
	reg.MustRegister(c.coreSec)
	return c
}

// loadConsole reads the stored series and ledger; what does not decode
// is logged and replaced by an empty one (history lost, nothing else).
func (h *Hub) loadConsole() {
	if b, err := h.store.Blob(blobSeries); err != nil {
		h.log.WithError(err).Warn("time series not read; starting without history")
	} else if b != nil {
		if s, err := series.Decode(b); err != nil {
			h.log.WithError(err).Warn("stored time series unreadable; starting without history")
		} else {
			h.con.series = s
		}
	}
	if b, err := h.store.Blob(blobLedger); err != nil {
		h.log.WithError(err).Warn("accounting ledger not read; starting empty")
	} else if b != nil {
		if l, err := ledger.Decode(b); err != nil {
			h.log.WithError(err).Warn("stored accounting ledger unreadable; starting empty")
		} else {
			h.con.ledger = l
		}
	}
}

// saveConsole writes the series and the ledger to the store.
func (h *Hub) saveConsole() error {
	b, err := h.con.series.MarshalBinary()
	if err == nil {
		err = h.store.PutBlob(blobSeries, b)
	}
	if err != nil {
		return err
	}
	h.con.ledger.Prune(h.now())
	if b, err = h.con.ledger.MarshalJSON(); err == nil {
		err = h.store.PutBlob(blobLedger, b)
	}
	return err
}

// runConsole saves the series and ledger every consoleEvery until ctx
// ends, and once more then.
func (h *Hub) runConsole(ctx context.Context) {
	t := time.NewTicker(consoleEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			if err := h.saveConsole(); err != nil {
				h.log.WithError(err).Warn("time series and ledger not saved at stop")
			}
			return
		case <-t.C:
			if err := h.saveConsole(); err != nil {
				h.log.WithError(err).Warn("time series and ledger not saved")
			}
		}
	}
}

// observe samples a published status into the series and the ledger. It
// runs under publishMu, once per status, in order.
func (h *Hub) observe(st *Status) {
	c := h.con
	prev := c.prev
	if prev != nil && st.seq <= prev.seq {
		return
	}
	c.prev = st
	at := st.At
	s := c.series
	totals := map[string]int{}
	for _, site := range st.Sites {
		for k, n := range site.Counts {
			totals[k] += n
		}
		s.Add(at, "cores."+site.Name, series.Gauge, float64(site.CanopyCores))
	}
	for _, k := range DisplayStates {
		s.Add(at, "vms."+k, series.Gauge, float64(totals[k]))
	}
	for _, g := range st.Groups {
		s.Add(at, "jobs.idle."+g.Name, series.Gauge, float64(g.Idle))
		s.Add(at, "jobs.running."+g.Name, series.Gauge, float64(g.Running))
	}
	if prev != nil {
		s.Add(at, "boots", series.Counter, float64(st.Boots-min(prev.Boots, st.Boots)))
		s.Add(at, "failures", series.Counter, float64(st.BootFailures-min(prev.BootFailures, st.BootFailures)))
	}
	// Accounting: what was up since the last sample, billed to its day.
	dt := 0.0
	if prev != nil && at.After(prev.At) {
		dt = min(at.Sub(prev.At), maxSampleGap).Seconds()
	}
	type gs struct{ group, site string }
	use := map[gs]*ledger.Usage{}
	pol := h.policy()
	jobs := make(map[string]int, len(c.prevJobs))
	for i := range st.VMs {
		vm := &st.VMs[i]
		if vm.ID == "" {
			continue // a boot not yet listed
		}
		k := gs{vm.Group, vm.Site}
		u := use[k]
		if u == nil {
			u = &ledger.Usage{}
			use[k] = u
		}
		if vm.JobsStarted > 0 {
			jobs[vm.Name] = vm.JobsStarted
			if before, ok := c.prevJobs[vm.Name]; ok && vm.JobsStarted >= before {
				u.JobsStarted += int64(vm.JobsStarted - before)
			} else if prev != nil {
				u.JobsStarted += int64(vm.JobsStarted)
			}
		}
		if dt <= 0 || vm.State == planner.VMBooting || vm.State == planner.VMError {
			continue
		}
		u.VMSeconds += dt
		u.CoreSeconds += float64(vm.Cores) * dt
		if r := pol.Sites[vm.Site].rating(vm.Flavor); r > 0 {
			u.HS06Seconds += float64(vm.Cores) * r * dt
		}
	}
	c.prevJobs = jobs
	defer c.observed.Add(1)
	for k, u := range use {
		if *u == (ledger.Usage{}) {
			continue
		}
		c.ledger.Add(at, k.group, k.site, *u)
		if u.CoreSeconds > 0 {
			c.coreSec.WithLabelValues(k.group, k.site).Add(u.CoreSeconds)
		}
	}
}

// drawnPlots are the plots of one tier drawn after a number of samples.
type drawnPlots struct {
	observed uint64
	tier     int
	plots    []plotView
}

// plots returns the page's plots in a tier, drawn once per sample and tier
// (a page view between two samples reuses them).
func (h *Hub) plots(tier int, at time.Time) []plotView {
	c := h.con
	n := c.observed.Load()
	if d := c.plotCache.Load(); d != nil && d.observed == n && d.tier == tier {
		return d.plots
	}
	out := make([]plotView, 0, len(plots))
	for _, p := range plots {
		out = append(out, drawPlot(c.series, p, tier, at))
	}
	c.plotCache.Store(&drawnPlots{observed: n, tier: tier, plots: out})
	return out
}

// rating is a flavor's HS06 per core for accounting: its own rating, else
// the site's default; zero when the site rates neither (no HS06-hours).
func (sc SiteConfig) rating(flavor string) float64 {
	if r := sc.HS06PerCore[flavor]; r > 0 {
		return r
	}
	return sc.HS06Default
}
