package squid_test

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/canopy-grid/canopy/hub/squid"
	"github.com/canopy-grid/canopy/internal/squidtest"
	"github.com/canopy-grid/canopy/protocol/squidreg"
)

// benchRegistry is a registry of 1,000 synthetic squids (no probes: all
// offered) and 1,000 located clients.
func benchRegistry(b *testing.B) (*squid.Registry, squidtest.Fleet) {
	b.Helper()
	f := squidtest.NewFleet(1000, 1000, 1)
	loc, err := locator(f.Places...)
	if err != nil {
		b.Fatal(err)
	}
	r, err := squid.New(squid.Config{}, loc, quietLog())
	if err != nil {
		b.Fatal(err)
	}
	if err := r.ReplaceSource("bench", f.Squids); err != nil {
		b.Fatal(err)
	}
	return r, f
}

func quietLog() *logrus.Entry {
	l := logrus.New()
	l.SetOutput(io.Discard)
	return logrus.NewEntry(l)
}

// BenchmarkNearest is a whole query as the HTTP handler makes it (GeoIP
// lookup of the client, ranking of 1,000 squids, top 5), on all cores.
func BenchmarkNearest(b *testing.B) {
	r, f := benchRegistry(b)
	var next atomic.Uint64
	var mu sync.Mutex
	var lat []time.Duration
	b.ReportAllocs()
	b.ResetTimer()
	defer reportCPU(b)()
	start := time.Now()
	b.RunParallel(func(pb *testing.PB) {
		mine := make([]time.Duration, 0, 1024)
		for pb.Next() {
			i := next.Add(1)
			t0 := time.Now()
			a := r.Nearest(squid.Query{Addr: f.Clients[i%uint64(len(f.Clients))], Kind: squidreg.KindCVMFS, N: 5,
				Site: "site7", Domain: "domain3.example.org"})
			mine = append(mine, time.Since(t0))
			if len(a.Squids) != 5 {
				b.Fatalf("got %d squids", len(a.Squids))
			}
		}
		mu.Lock()
		lat = append(lat, mine...)
		mu.Unlock()
	})
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "queries/s")
	slices.Sort(lat)
	b.ReportMetric(float64(lat[len(lat)*99/100].Nanoseconds()), "p99-ns")
}

// BenchmarkRank is the ranking alone (client already located).
func BenchmarkRank(b *testing.B) {
	r, _ := benchRegistry(b)
	loc := squid.Location{Latitude: 48.2, Longitude: 16.4}
	b.ReportAllocs()
	b.ResetTimer()
	defer reportCPU(b)()
	b.RunParallel(func(pb *testing.PB) {
		dst := make([]squid.Candidate, 0, 5)
		for pb.Next() {
			dst = r.Rank(squid.Query{Kind: squidreg.KindCVMFS, N: 5}, loc, true, dst[:0])
		}
	})
}

// BenchmarkLocate is one GeoIP2 City lookup of a client.
func BenchmarkLocate(b *testing.B) {
	f := squidtest.NewFleet(1000, 1000, 1)
	loc, err := locator(f.Places...)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	defer reportCPU(b)()
	i := 0
	for b.Loop() {
		if _, ok := loc.Locate(f.Clients[i%len(f.Clients)]); !ok {
			b.Fatal("client not located")
		}
		i++
	}
}

// BenchmarkHTTPFloor is the same load run against a handler that only
// writes "ok": what this machine's loopback HTTP costs by itself, the
// floor BenchmarkNearestHTTP is to be read against.
func BenchmarkHTTPFloor(b *testing.B) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		_, _ = io.WriteString(w, "ok")
	}))
	defer srv.Close()
	benchLoad(b, func(int) string { return srv.URL + "/" })
}

// BenchmarkNearestHTTP is the load run over HTTP: the registry's handler
// on a loopback listener, 32 keep-alive clients, each sending requests
// back to back. It reports req/s and the p50/p99 latency seen by clients.
func BenchmarkNearestHTTP(b *testing.B) {
	r, f := benchRegistry(b)
	srv := httptest.NewServer(r.Handler())
	defer srv.Close()
	benchLoad(b, func(i int) string {
		return fmt.Sprintf("%s%s?n=5&kind=cvmfs&ip=%s", srv.URL, squidreg.PathNearest, f.Clients[i%len(f.Clients)])
	})
}

func benchLoad(b *testing.B, url func(int) string) {
	b.ResetTimer()
	res := squidtest.Load(squidtest.LoadOptions{
		URL:         url,
		Requests:    b.N,
		Concurrency: 32,
		Timeout:     time.Minute,
	})
	if res.Errors > 0 {
		b.Fatalf("%d of %d requests failed: %v", res.Errors, res.Requests, res.FirstError)
	}
	b.ReportMetric(res.PerSecond, "req/s")
	b.ReportMetric(float64(res.P50.Microseconds()), "p50-µs")
	b.ReportMetric(float64(res.P99.Microseconds()), "p99-µs")
	b.ReportMetric(float64(res.CPU.Nanoseconds())/float64(b.N), "cpu-ns/op")
}

// reportCPU reports the process CPU time per operation ("cpu-ns/op"): on a
// shared machine wall time per op grows with other load, CPU time much
// less. Queries per second the 2 cores could serve: 2e9 / cpu-ns/op.
func reportCPU(b *testing.B) func() {
	c0 := squidtest.CPUTime()
	return func() {
		b.ReportMetric(float64((squidtest.CPUTime()-c0).Nanoseconds())/float64(b.N), "cpu-ns/op")
	}
}
