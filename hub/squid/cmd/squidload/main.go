// Command squidload measures the hub's nearest-squid queries over HTTP: it
// sends a bounded number of GET /api/v1/squids/nearest requests from
// keep-alive clients and prints requests per second and the p50/p99
// latency. Without -url it serves a registry of -squids synthetic squids
// itself, on 127.0.0.1. Targets must be on the loopback network.
//
//	go run ./hub/squid/cmd/squidload -n 200000 -c 32
package main

import (
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/canopy-grid/canopy/hub/squid"
	"github.com/canopy-grid/canopy/internal/squidtest"
	"github.com/canopy-grid/canopy/protocol/squidreg"
)

func main() {
	target := flag.String("url", "", "base URL of a running hub (loopback only); empty: serve a synthetic registry in-process")
	squids := flag.Int("squids", 1000, "synthetic squids (without -url)")
	requests := flag.Int("n", 100000, "requests to send")
	conc := flag.Int("c", 32, "concurrent clients")
	maxDur := flag.Duration("d", 30*time.Second, "stop after this long even if requests remain")
	n := flag.Int("answer", 5, "squids per answer (?n=)")
	kind := flag.String("kind", "cvmfs", "?kind=")
	flag.Parse()
	if err := run(*target, *squids, *requests, *conc, *maxDur, *n, *kind); err != nil {
		fmt.Fprintln(os.Stderr, "squidload:", err)
		os.Exit(1)
	}
}

func run(target string, squids, requests, conc int, maxDur time.Duration, n int, kind string) error {
	if requests < 1 || requests > 10_000_000 || conc < 1 || conc > 1024 || maxDur <= 0 || maxDur > 10*time.Minute {
		return fmt.Errorf("bounds: 1 <= -n <= 1e7, 1 <= -c <= 1024, 0 < -d <= 10m")
	}
	fleet := squidtest.NewFleet(max(squids, 1), 1000, 1)
	if target == "" {
		db, err := squidtest.GeoDB(fleet.Places)
		if err != nil {
			return err
		}
		loc, err := squid.LocatorFromBytes(db)
		if err != nil {
			return err
		}
		log := logrus.New()
		log.SetOutput(io.Discard)
		reg, err := squid.New(squid.Config{}, loc, logrus.NewEntry(log))
		if err != nil {
			return err
		}
		if err := reg.ReplaceSource("synthetic", fleet.Squids); err != nil {
			return err
		}
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return err
		}
		srv := &http.Server{Handler: reg.Handler(), ReadHeaderTimeout: 5 * time.Second}
		go func() { _ = srv.Serve(ln) }()
		defer srv.Close()
		target = "http://" + ln.Addr().String()
		fmt.Printf("serving %d synthetic squids at %s\n", len(fleet.Squids), target)
	}
	u, err := url.Parse(target)
	if err != nil {
		return fmt.Errorf("-url: %w", err)
	}
	if h := u.Hostname(); h != "localhost" && !strings.HasPrefix(h, "127.") && h != "::1" {
		return fmt.Errorf("-url %s: only loopback targets are allowed", target)
	}
	base := strings.TrimSuffix(target, "/") + squidreg.PathNearest
	res := squidtest.Load(squidtest.LoadOptions{
		URL: func(i int) string {
			return fmt.Sprintf("%s?n=%d&kind=%s&ip=%s", base, n, kind, fleet.Clients[i%len(fleet.Clients)])
		},
		Requests:    requests,
		Concurrency: conc,
		Timeout:     maxDur,
	})
	fmt.Println(res)
	if res.Errors > 0 {
		return fmt.Errorf("%d requests failed, first: %v", res.Errors, res.FirstError)
	}
	return nil
}
