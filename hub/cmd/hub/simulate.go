package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"

	"github.com/canopy-grid/canopy/hub/sim"
)

// runSimulate implements "hub simulate --trace FILE": it replays a workload
// trace through the planner against simulated clouds and prints a summary.
func runSimulate(args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("simulate", flag.ContinueOnError)
	fs.SetOutput(stdout)
	tracePath := fs.String("trace", "", "workload trace `file` (format: see package hub/sim)")
	seed := fs.Uint64("seed", 0, "random seed (0: the trace's)")
	duration := fs.Duration("duration", 0, "how long jobs arrive (0: the trace's)")
	drain := fs.Duration("drain", 0, "how long to run on for the queue to empty (0: the trace's)")
	noDrain := fs.Bool("no-drain", false, "stop when the trace's duration is over")
	asJSON := fs.Bool("json", false, "print the summary as JSON")
	maxClouds := fs.Int("clouds", 20, "show at most this many clouds, busiest first (0: all)")
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), "usage: hub simulate --trace FILE [flags]")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return fmt.Errorf("simulate: %w", err)
	}
	if *tracePath == "" {
		fs.Usage()
		return errors.New("simulate: --trace is required")
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("simulate: unexpected arguments %q", fs.Args())
	}
	f, err := os.Open(*tracePath)
	if err != nil {
		return fmt.Errorf("simulate: %w", err)
	}
	defer f.Close()
	tr, err := sim.ParseTrace(f)
	if err != nil {
		return fmt.Errorf("simulate: parse %s: %w", *tracePath, err)
	}
	sum, err := sim.Run(tr, sim.Options{Seed: *seed, Duration: *duration, Drain: *drain, NoDrain: *noDrain})
	if err != nil {
		return fmt.Errorf("simulate %s: %w", *tracePath, err)
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(sum); err != nil {
			return fmt.Errorf("simulate: write summary: %w", err)
		}
		return nil
	}
	fmt.Fprintf(stdout, "trace %s\n", *tracePath)
	return sum.WriteTable(stdout, *maxClouds)
}
