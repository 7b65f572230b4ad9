// Command demo runs the whole Canopy system locally (`make demo`): a hub
// with a simulated pool and two site agents whose VMs are local processes.
// It prints progress and the status page URL, and runs until Ctrl-C or
// DEMO_SECONDS have passed, then stops every process it started.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/canopy-grid/canopy/deploy/demo"
	"github.com/canopy-grid/canopy/hub"
	"github.com/canopy-grid/canopy/hub/intent"
)

func main() {
	bin := flag.String("bin", "bin", "directory with the hub, agent and vmagent binaries")
	dir := flag.String("dir", ".demo", "working directory (emptied first)")
	flag.Parse()
	if err := run(*bin, *dir); err != nil {
		fmt.Fprintln(os.Stderr, "demo:", err)
		os.Exit(1)
	}
}

func run(bin, dir string) error {
	var limit time.Duration
	if v := os.Getenv("DEMO_SECONDS"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n <= 0 {
			return fmt.Errorf("DEMO_SECONDS=%q: want a positive whole number", v)
		}
		limit = time.Duration(n) * time.Second
	}
	if err := os.RemoveAll(dir); err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if limit > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, limit)
		defer cancel()
	}
	start := time.Now()
	sys, err := demo.Start(ctx, demo.Options{BinDir: bin, Dir: dir})
	if err != nil {
		return err
	}
	defer func() {
		fmt.Println("stopping the agents, the hub and the local clouds' VMs...")
		sys.Stop()
		fmt.Printf("all processes stopped; logs in %s/log\n", sys.Dir)
	}()
	fmt.Printf("Canopy demo running. Status page: %s/  (metrics: %s/metrics)\n", sys.HTTPURL, sys.HTTPURL)
	for _, site := range demo.Sites {
		fmt.Printf("Agent %s: %s/metrics and its VM book %s/v1/vms\n", site, sys.AgentURLs[site], sys.AgentURLs[site])
	}
	fmt.Println("Press Ctrl-C to stop" + map[bool]string{true: fmt.Sprintf(" (stops by itself after %s)", limit), false: ""}[limit > 0] + ".")

	var lastSeq uint64
	firstAllUp := time.Duration(0)
	t := time.NewTicker(2 * time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		if name, gone := sys.Exited(); gone {
			return fmt.Errorf("%s exited; see %s/log/%s.log", name, sys.Dir, name)
		}
		var events []intent.Event
		_ = demo.GetJSON(ctx, sys.HTTPURL+"/api/v1/events", &events)
		for i := len(events) - 1; i >= 0; i-- {
			if e := events[i]; e.Seq > lastSeq {
				fmt.Printf("  %6.1fs  %-5s %-7s %s %s\n", time.Since(start).Seconds(), e.Site, e.Kind, e.VM, e.Detail)
				lastSeq = e.Seq
			}
		}
		var d hub.DemandStatus
		var vms []hub.VMStatus
		if demo.GetJSON(ctx, sys.HTTPURL+"/api/v1/demand", &d) != nil || demo.GetJSON(ctx, sys.HTTPURL+"/api/v1/vms", &vms) != nil {
			continue
		}
		perSite := map[string]map[string]int{}
		booting := 0
		for _, vm := range vms {
			if perSite[vm.Site] == nil {
				perSite[vm.Site] = map[string]int{}
			}
			perSite[vm.Site][string(vm.State)]++
			if vm.State == "booting" || vm.State == "starting" {
				booting++
			}
		}
		if len(vms) > 0 && booting == 0 && firstAllUp == 0 {
			firstAllUp = time.Since(start)
			fmt.Printf("  %6.1fs  all %d VMs booted and contextualized\n", firstAllUp.Seconds(), len(vms))
		}
		var parts []string
		for _, s := range demo.Sites {
			var states []string
			for _, st := range []string{"booting", "starting", "idle", "busy", "retiring"} {
				if n := perSite[s][st]; n > 0 {
					states = append(states, fmt.Sprintf("%d %s", n, st))
				}
			}
			if len(states) == 0 {
				states = []string{"no VMs"}
			}
			parts = append(parts, s+": "+strings.Join(states, ", "))
		}
		fmt.Printf("%6.1fs  jobs: %d idle, %d running, %d finished | %s\n",
			time.Since(start).Seconds(), d.Idle, d.Running, d.Finished, strings.Join(parts, " | "))
	}
}
