package squidtest

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// LoadOptions bound a load run.
type LoadOptions struct {
	// URL gives the URL of request i.
	URL func(i int) string
	// Requests is the number of requests to send (the run stops earlier
	// when Timeout passes).
	Requests int
	// Concurrency is the number of clients sending back to back; 0 means 16.
	Concurrency int
	// Timeout bounds the whole run; 0 means one minute.
	Timeout time.Duration
	// Client sends the requests; nil means keep-alive connections, one per
	// client.
	Client *http.Client
}

// LoadResult is what a load run measured.
type LoadResult struct {
	Requests   int
	Errors     int
	FirstError error
	Elapsed    time.Duration
	PerSecond  float64
	P50        time.Duration
	P99        time.Duration
	Max        time.Duration
	// CPU is the process's CPU time (user + system) during the run, which
	// includes the clients' own share when the server runs in-process.
	CPU time.Duration
}

// String formats the result on one line.
func (r LoadResult) String() string {
	per := time.Duration(0)
	if ok := r.Requests - r.Errors; ok > 0 {
		per = r.CPU / time.Duration(ok)
	}
	return fmt.Sprintf("%d requests (%d errors) in %v: %.0f req/s, p50 %v, p99 %v, max %v, CPU %v/request",
		r.Requests, r.Errors, r.Elapsed.Round(time.Millisecond), r.PerSecond, r.P50.Round(time.Microsecond),
		r.P99.Round(time.Microsecond), r.Max.Round(time.Microsecond), per)
}

// Load sends GET requests and measures throughput and latency. A request
// counts as an error unless it answers 200 and its body reads fully.
func Load(o LoadOptions) LoadResult {
	if o.Concurrency <= 0 {
		o.Concurrency = 16
	}
	if o.Timeout <= 0 {
		o.Timeout = time.Minute
	}
	c := o.Client
	if c == nil {
		tr := &http.Transport{MaxIdleConns: o.Concurrency, MaxIdleConnsPerHost: o.Concurrency, Proxy: nil}
		defer tr.CloseIdleConnections()
		c = &http.Client{Transport: tr, Timeout: 10 * time.Second}
	}
	ctx, cancel := context.WithTimeout(context.Background(), o.Timeout)
	defer cancel()
	var (
		next     atomic.Int64
		mu       sync.Mutex
		all      []time.Duration
		errs     int
		firstErr error
		wg       sync.WaitGroup
	)
	start, cpu0 := time.Now(), CPUTime()
	for range o.Concurrency {
		wg.Go(func() {
			lat := make([]time.Duration, 0, o.Requests/o.Concurrency+1)
			var nerr int
			var ferr error
			for ctx.Err() == nil {
				i := int(next.Add(1)) - 1
				if i >= o.Requests {
					break
				}
				t0 := time.Now()
				err := get(ctx, c, o.URL(i))
				d := time.Since(t0)
				if err != nil {
					if ctx.Err() != nil {
						break // the run's time is up: not the server's failure
					}
					nerr++
					if ferr == nil {
						ferr = err
					}
					continue
				}
				lat = append(lat, d)
			}
			mu.Lock()
			all = append(all, lat...)
			errs += nerr
			if firstErr == nil {
				firstErr = ferr
			}
			mu.Unlock()
		})
	}
	wg.Wait()
	res := LoadResult{Requests: len(all) + errs, Errors: errs, FirstError: firstErr, Elapsed: time.Since(start), CPU: CPUTime() - cpu0}
	if res.Elapsed > 0 {
		res.PerSecond = float64(len(all)) / res.Elapsed.Seconds()
	}
	if len(all) > 0 {
		slices.Sort(all)
		res.P50 = all[len(all)/2]
		res.P99 = all[min(len(all)-1, len(all)*99/100)]
		res.Max = all[len(all)-1]
	}
	return res
}

func get(ctx context.Context, c *http.Client, url string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := c.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if _, err := io.Copy(io.Discard, resp.Body); err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	return nil
}

// CPUTime is the CPU time (user + system) this process has used.
func CPUTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
