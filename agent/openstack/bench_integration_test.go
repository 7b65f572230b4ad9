//go:build integration

package openstack

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/canopy-grid/canopy/agent/driver"
)

// BenchmarkBootRate boots N servers (CANOPY_BENCH_SERVERS, default 50) on
// the testbed's canopy-a, `networks: none`, CANOPY_BENCH_CONCURRENCY POSTs
// in flight (default 8), first with a plain net/http loop (a token and raw
// POSTs), then through the driver, and reports for each: servers/s of the
// POSTs, seconds from POST to ACTIVE (median and max, seen by listing),
// and deletes/s. driver/raw is the ratio of POST rates. Run it alone:
//
//	go test -tags integration -run '^$' -bench BootRate -benchtime 2x ./agent/openstack/
func BenchmarkBootRate(b *testing.B) {
	n := envInt("CANOPY_BENCH_SERVERS", 50)
	conc := envInt("CANOPY_BENCH_CONCURRENCY", 8)
	ctx := context.Background()
	d, err := New(ctx, Config{Cloud: "canopy-a", CloudsFile: cloudsYAML, Network: "none", MaxConcurrentRequests: conc}, nil)
	if err != nil {
		b.Fatal(err)
	}
	flavorID, _, err := d.resolveFlavor(ctx, "m1.tiny")
	if err != nil {
		b.Fatal(err)
	}
	imageID, err := d.resolveImage(ctx, "canopy-tiny")
	if err != nil {
		b.Fatal(err)
	}
	raw := newRawNova(b, ctx)
	var rawTotal, drvTotal batchTotals
	for i := 0; i < b.N; i++ {
		prefix := uniq("bench")
		rawBatch := func() batchResult {
			return runBatch(b, ctx, d, n, conc, prefix+"-raw", func(ctx context.Context, name string, md map[string]string) (string, error) {
				return raw.boot(ctx, name, flavorID, imageID, md)
			})
		}
		drvBatch := func() batchResult {
			return runBatch(b, ctx, d, n, conc, prefix+"-drv", func(ctx context.Context, name string, md map[string]string) (string, error) {
				s, err := d.Boot(ctx, driver.BootSpec{Name: name, Flavor: "m1.tiny", Image: "canopy-tiny", Metadata: md})
				return s.ID, err
			})
		}
		// Alternate which goes first (-benchtime 2x runs both orders):
		// the cloud's load drifts between batches.
		var rawRes, drvRes batchResult
		if i%2 == 0 {
			rawRes, drvRes = rawBatch(), drvBatch()
		} else {
			drvRes, rawRes = drvBatch(), rawBatch()
		}
		rawTotal.add(rawRes)
		drvTotal.add(drvRes)
		b.Logf("round %d (%s first), N=%d concurrency=%d: raw %.2f boots/s, ACTIVE p50 %s max %s; "+
			"driver %.2f boots/s, ACTIVE p50 %s max %s, %.2f deletes/s, all gone after %s; ratio %.2f",
			i, map[bool]string{true: "raw", false: "driver"}[i%2 == 0], n, conc,
			rawRes.bootRate(), rawRes.activeP50, rawRes.activeMax, drvRes.bootRate(), drvRes.activeP50, drvRes.activeMax,
			drvRes.deleteRate(), drvRes.goneAfter, drvRes.bootRate()/rawRes.bootRate())
	}
	// Rates over all rounds of this run.
	b.ReportMetric(rawTotal.bootRate(), "raw_servers/s")
	b.ReportMetric(drvTotal.bootRate(), "driver_servers/s")
	b.ReportMetric(drvTotal.bootRate()/rawTotal.bootRate(), "driver/raw")
	b.ReportMetric(drvTotal.deleteRate(), "driver_deletes/s")
	b.ReportMetric(drvTotal.activeP50Mean().Seconds(), "driver_active_p50_s")
	b.ReportMetric(rawTotal.activeP50Mean().Seconds(), "raw_active_p50_s")
}

// batchTotals sums batches for rates over a whole run.
type batchTotals struct {
	servers           int
	postTime, delTime time.Duration
	activeP50s        time.Duration
	batches           int
}

func (t *batchTotals) add(r batchResult) {
	t.servers += r.servers
	t.postTime += r.postTime
	t.delTime += r.delTime
	t.activeP50s += r.activeP50
	t.batches++
}

func (t *batchTotals) bootRate() float64   { return float64(t.servers) / t.postTime.Seconds() }
func (t *batchTotals) deleteRate() float64 { return float64(t.servers) / t.delTime.Seconds() }
func (t *batchTotals) activeP50Mean() time.Duration {
	return t.activeP50s / time.Duration(max(t.batches, 1))
}

type batchResult struct {
	servers              int
	postTime, delTime    time.Duration // all POSTs / all DELETEs accepted
	activeP50, activeMax time.Duration // from a server's POST to ACTIVE in the listing
	goneAfter            time.Duration // from the first DELETE to none listed
}

func (r batchResult) bootRate() float64   { return float64(r.servers) / r.postTime.Seconds() }
func (r batchResult) deleteRate() float64 { return float64(r.servers) / r.delTime.Seconds() }

// runBatch boots n servers with boot at concurrency conc, waits for all of
// them to be ACTIVE (polling the driver's listing), deletes them through the
// driver and waits until they are gone.
func runBatch(b *testing.B, ctx context.Context, d *Driver, n, conc int, prefix string,
	boot func(ctx context.Context, name string, md map[string]string) (string, error)) batchResult {
	b.Helper()
	var (
		mu      sync.Mutex
		posted  = map[string]time.Time{} // id -> POST time
		errs    []error
		wg      sync.WaitGroup
		slots   = make(chan struct{}, conc)
		results batchResult
	)
	cleanup := func() {
		mu.Lock()
		ids := make([]string, 0, len(posted))
		for id := range posted {
			ids = append(ids, id)
		}
		mu.Unlock()
		for _, id := range ids {
			d.Delete(context.Background(), id)
		}
	}
	defer func() {
		if b.Failed() {
			cleanup()
		}
	}()
	t0 := time.Now()
	for i := range n {
		wg.Add(1)
		slots <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-slots }()
			start := time.Now()
			id, err := boot(ctx, fmt.Sprintf("%s-%03d", prefix, i), map[string]string{driver.MetaHub: "bench", driver.MetaPlan: prefix})
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				errs = append(errs, err)
				return
			}
			posted[id] = start
		}()
	}
	wg.Wait()
	postTime := time.Since(t0)
	if len(errs) > 0 {
		b.Fatalf("%d of %d boots failed, first: %v", len(errs), n, errs[0])
	}
	results.servers, results.postTime = n, postTime

	active := map[string]time.Duration{}
	deadline := time.Now().Add(10 * time.Minute)
	for len(active) < n && time.Now().Before(deadline) {
		list, err := d.Servers(ctx)
		if err != nil {
			b.Fatalf("list: %v", err)
		}
		now := time.Now()
		for _, s := range list {
			t, ok := posted[s.ID]
			if !ok {
				continue
			}
			if s.Status == driver.StatusError {
				b.Fatalf("server %s went to ERROR: %s", s.Name, s.Fault)
			}
			if _, seen := active[s.ID]; !seen && s.Status == driver.StatusActive {
				active[s.ID] = now.Sub(t)
			}
		}
		if len(active) < n {
			wait(ctx, 250*time.Millisecond)
		}
	}
	if len(active) < n {
		b.Fatalf("only %d of %d servers ACTIVE after 10 minutes", len(active), n)
	}
	lat := make([]time.Duration, 0, n)
	for _, l := range active {
		lat = append(lat, l)
	}
	slices.Sort(lat)
	results.activeP50, results.activeMax = lat[len(lat)/2].Round(10*time.Millisecond), lat[len(lat)-1].Round(10*time.Millisecond)

	t1 := time.Now()
	for id := range posted {
		wg.Add(1)
		slots <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-slots }()
			if err := d.Delete(ctx, id); err != nil {
				mu.Lock()
				errs = append(errs, err)
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if len(errs) > 0 {
		b.Fatalf("%d deletes failed, first: %v", len(errs), errs[0])
	}
	results.delTime = time.Since(t1)
	for time.Now().Before(deadline) {
		list, err := d.Servers(ctx)
		if err != nil {
			b.Fatalf("list: %v", err)
		}
		left := 0
		for _, s := range list {
			if _, ok := posted[s.ID]; ok {
				left++
			}
		}
		if left == 0 {
			break
		}
		wait(ctx, 250*time.Millisecond)
	}
	results.goneAfter = time.Since(t1).Round(10 * time.Millisecond)
	return results
}

// rawNova boots servers with nothing but net/http: one Keystone token and
// POST /servers, microversion 2.37, the baseline for the driver's rate.
type rawNova struct {
	client   http.Client
	token    string
	endpoint string
}

func newRawNova(b *testing.B, ctx context.Context) *rawNova {
	ao := cloudAuth(b, "canopy-a")
	body := map[string]any{"auth": map[string]any{
		"identity": map[string]any{"methods": []string{"password"}, "password": map[string]any{"user": map[string]any{
			"name": ao.Username, "password": ao.Password, "domain": map[string]any{"name": ao.DomainName}}}},
		"scope": map[string]any{"project": map[string]any{"name": ao.Scope.ProjectName, "domain": map[string]any{"name": ao.Scope.DomainName}}},
	}}
	js, _ := json.Marshal(body)
	req, _ := http.NewRequestWithContext(ctx, "POST", keystoneURL+"/auth/tokens", bytes.NewReader(js))
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		b.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 201 {
		b.Fatalf("token: %s", resp.Status)
	}
	var tok struct {
		Token struct {
			Catalog []struct {
				Type      string `json:"type"`
				Endpoints []struct {
					Interface string `json:"interface"`
					URL       string `json:"url"`
				} `json:"endpoints"`
			} `json:"catalog"`
		} `json:"token"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&tok); err != nil {
		b.Fatal(err)
	}
	r := &rawNova{token: resp.Header.Get("X-Subject-Token")}
	for _, s := range tok.Token.Catalog {
		for _, e := range s.Endpoints {
			if s.Type == "compute" && e.Interface == "public" {
				r.endpoint = e.URL
			}
		}
	}
	if r.endpoint == "" {
		b.Fatal("no compute endpoint")
	}
	return r
}

func (r *rawNova) boot(ctx context.Context, name, flavor, image string, md map[string]string) (string, error) {
	js, _ := json.Marshal(map[string]any{"server": map[string]any{
		"name": name, "flavorRef": flavor, "imageRef": image, "networks": "none", "metadata": md}})
	req, err := http.NewRequestWithContext(ctx, "POST", r.endpoint+"/servers", bytes.NewReader(js))
	if err != nil {
		return "", err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("X-Auth-Token", r.token)
	req.Header.Set("X-OpenStack-Nova-API-Version", "2.37")
	resp, err := r.client.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	var out struct {
		Server struct {
			ID string `json:"id"`
		} `json:"server"`
	}
	if resp.StatusCode != http.StatusAccepted {
		return "", fmt.Errorf("POST /servers: %s", resp.Status)
	}
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		return "", err
	}
	return out.Server.ID, nil
}

func envInt(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil && v > 0 {
		return v
	}
	return def
}
