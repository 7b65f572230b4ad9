// Command scale runs the hub's scale harness (deploy/scale) against one or
// more hub binaries and prints the figures side by side.
//
//	scale [--clouds 100] [--vms 200] [--jobs 300000] [--measure 2m] HUB...
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/canopy-grid/canopy/deploy/scale"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "scale:", err)
		os.Exit(1)
	}
}

func run() error {
	o := scale.Options{Log: os.Stderr}
	flag.IntVar(&o.Clouds, "clouds", 100, "simulated agents (clouds)")
	flag.IntVar(&o.VMsPerCloud, "vms", 200, "VMs per cloud at start")
	flag.IntVar(&o.IdleJobs, "jobs", 300000, "idle jobs in the simulated queue")
	flag.DurationVar(&o.PlanEvery, "plan-every", 10*time.Second, "the hub's plan cycle")
	flag.DurationVar(&o.ScrapeEvery, "scrape-every", 15*time.Second, "status page and /metrics read every")
	flag.DurationVar(&o.APIEvery, "api-every", 250*time.Millisecond, "/api/v1/sites read every")
	flag.DurationVar(&o.Warmup, "warmup", 60*time.Second, "run before measuring")
	flag.DurationVar(&o.Measure, "measure", 2*time.Minute, "measured window")
	flag.IntVar(&o.ErrorsPerMinute, "errors-per-minute", 60, "VMs put into ERROR per minute, fleet-wide")
	dir := flag.String("dir", ".scale", "working directory")
	fullFor := flag.String("full-inventories", "", "comma-separated hub binaries whose agents send full inventories only (hubs built before inventory deltas)")
	flag.Parse()
	if flag.NArg() == 0 {
		return fmt.Errorf("name at least one hub binary")
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	var results []scale.Result
	full := map[string]bool{}
	for _, h := range strings.Split(*fullFor, ",") {
		full[h] = true
	}
	for i, hub := range flag.Args() {
		o.Hub = hub
		o.FullInventories = full[hub]
		o.Dir = filepath.Join(*dir, fmt.Sprint(i))
		r, err := scale.Run(ctx, o)
		if err != nil {
			return fmt.Errorf("%s: %w", hub, err)
		}
		results = append(results, r)
	}
	fmt.Printf("\nhub at %d clouds x %d VMs, %d idle jobs, plan every %s, page and /metrics every %s, /api/v1/sites every %s, %s measured\n\n",
		o.Clouds, o.VMsPerCloud, o.IdleJobs, o.PlanEvery, o.ScrapeEvery, o.APIEvery, o.Measure)
	w := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(w, "hub\tCPU cores\tRSS MiB\tpeak RSS MiB\tplans\tplan p50\tplan p99\tcmd p99\tcommands\tAPI p99\tpage p99\tpage KB\t/metrics p99\tboots\tdeletes\t")
	for _, r := range results {
		fmt.Fprintf(w, "%s\t%.3f\t%.0f\t%.0f\t%d\t%s\t%s\t%s\t%d\t%s\t%s\t%d\t%s\t%d\t%d\t\n", r.Hub, r.CPUCores, r.RSSMiB, r.HWMMiB,
			r.Plans, ms(r.PlanP50), ms(r.PlanP99), ms(r.CommandP99), r.Commands, ms(r.APIP99), ms(r.PageP99), r.PageBytes/1024,
			ms(r.MetricsP99), r.Boots, r.Deletes)
	}
	return w.Flush()
}

func ms(d time.Duration) string {
	if d == 0 {
		return "-"
	}
	return fmt.Sprintf("%.1fms", float64(d)/float64(time.Millisecond))
}
