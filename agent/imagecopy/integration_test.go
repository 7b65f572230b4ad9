//go:build integration

package imagecopy

import (
	"context"
	"crypto/sha512"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gophercloud/gophercloud/v2"
	gcos "github.com/gophercloud/gophercloud/v2/openstack"
	"github.com/gophercloud/gophercloud/v2/openstack/config/clouds"

	"github.com/canopy-grid/canopy/agent/openstack"
	"github.com/canopy-grid/canopy/images"
)

// The testbed (deploy/testbed/openstack/up.sh): two projects, canopy-a and
// canopy-b, stand for two clouds, each with its own Glance images (one
// Glance service on 127.0.0.1:9292).

func cloudsFile() string {
	dir := os.Getenv("OSTB_DIR")
	if dir == "" {
		dir = "/var/lib/canopy-testbed/openstack"
	}
	return filepath.Join(dir, "clouds.yaml")
}

func driverFor(t testing.TB, cloud string) *openstack.Driver {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	d, err := openstack.New(ctx, openstack.Config{Cloud: cloud, CloudsFile: cloudsFile(), RequestTimeout: 5 * time.Minute}, nil)
	if err != nil {
		t.Fatalf("driver for %s (is the openstack testbed up? deploy/testbed/openstack/up.sh): %v", cloud, err)
	}
	return d
}

// glance is a raw Glance client of one project: its endpoint and a token,
// for what the test does behind the driver's back.
type glance struct {
	endpoint string // .../v2/ base, ends in "/"
	token    string
}

func rawGlance(t testing.TB, cloud string) glance {
	t.Helper()
	ao, _, _, err := clouds.Parse(clouds.WithCloudName(cloud), clouds.WithLocations(cloudsFile()))
	if err != nil {
		t.Fatalf("parse %s: %v", cloudsFile(), err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	p, err := gcos.AuthenticatedClient(ctx, ao)
	if err != nil {
		t.Fatalf("authenticate %s: %v", cloud, err)
	}
	sc, err := gcos.NewImageV2(p, gophercloud.EndpointOpts{})
	if err != nil {
		t.Fatalf("image endpoint: %v", err)
	}
	return glance{endpoint: sc.ResourceBaseURL(), token: p.Token()}
}

// httpSource reads an image's bytes over plain HTTP from base (Glance, or a
// proxy in front of it that the test controls).
type httpSource struct {
	base, token string
}

func (s httpSource) DownloadImage(ctx context.Context, id string) (io.ReadCloser, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, s.base+"images/"+id+"/file", nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("X-Auth-Token", s.token)
	resp, err := noKeepAlive.Do(req)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		resp.Body.Close()
		return nil, fmt.Errorf("GET image %s: %s", id, resp.Status)
	}
	return resp.Body, nil
}

// noKeepAlive opens a connection per request: each attempt of a copy
// goes through the test's proxy afresh.
var noKeepAlive = &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}

// randReader is n pseudo-random bytes from a seed (fast: ChaCha8).
type randReader struct {
	r *rand.ChaCha8
	n int64
}

func newRand(n int64, seed byte) *randReader {
	var s [32]byte
	s[0] = seed
	return &randReader{r: rand.NewChaCha8(s), n: n}
}

func (r *randReader) Read(p []byte) (int, error) {
	if r.n <= 0 {
		return 0, io.EOF
	}
	if int64(len(p)) > r.n {
		p = p[:r.n]
	}
	n, _ := r.r.Read(p)
	r.n -= int64(n)
	return n, nil
}

var uniqSeq atomic.Int64

func uniq(prefix string) string {
	return fmt.Sprintf("%s-%d-%d", prefix, time.Now().UnixNano()%1e9, uniqSeq.Add(1))
}

// sourceImage uploads size random bytes into canopy-a and returns the
// image with Glance's digests; it is deleted at the end of the test.
func sourceImage(t testing.TB, src *openstack.Driver, size int64, seed byte) images.Image {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	h := sha512.New()
	if _, err := io.Copy(h, newRand(size, seed)); err != nil {
		t.Fatal(err)
	}
	im, err := src.UploadImage(ctx, images.Image{Name: uniq("canopy-copy-src"), DiskFormat: "raw", ContainerFormat: "bare"}, newRand(size, seed))
	if err != nil {
		t.Fatalf("upload the source image: %v", err)
	}
	t.Cleanup(func() { _ = src.DeleteImage(context.Background(), im.ID) })
	if got := im.Digest("sha512"); got != hex.EncodeToString(h.Sum(nil)) {
		t.Fatalf("source image sha512 %q, want %x", got, h.Sum(nil))
	}
	return im
}

func taskFor(src images.Image, name string) Task {
	return Task{Ref: images.Ref{Name: name, Algo: "sha512", Hex: src.Digest("sha512")}, SourceImageID: src.ID,
		SizeBytes: src.SizeBytes, HubID: "hub-it", Meta: images.Image{DiskFormat: "raw", ContainerFormat: "bare",
			Checksums: []images.Checksum{{Algorithm: "md5", Hex: src.Digest("md5")}}}}
}

// watch polls the destination's images named name (hidden or not) until
// stop, and records any that was active and visible with other contents
// than want, or active while still hidden-and-unverified.
type watch struct {
	mu  sync.Mutex
	bad []string
	saw map[string]bool
}

func startWatch(t *testing.T, dst *openstack.Driver, name, wantHex string) (*watch, func() *watch) {
	w := &watch{saw: map[string]bool{}}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := 0; i < 100000 && ctx.Err() == nil; i++ {
			visible, _ := dst.Images(ctx)
			hidden, _ := dst.HiddenImages(ctx, name)
			w.mu.Lock()
			for _, im := range visible {
				if im.Name == name && im.Status == images.StatusActive && im.Digest("sha512") != wantHex {
					w.bad = append(w.bad, fmt.Sprintf("%s active and visible with sha512 %s", im.ID, im.Digest("sha512")))
				}
			}
			for _, im := range hidden {
				w.saw[im.ID+" "+string(im.Status)] = true
			}
			w.mu.Unlock()
			tm := time.NewTimer(50 * time.Millisecond)
			select {
			case <-ctx.Done():
			case <-tm.C:
			}
			tm.Stop()
		}
	}()
	return w, func() *watch { cancel(); <-done; return w }
}

// named returns the destination's images of that name, hidden or not.
func named(t testing.TB, dst *openstack.Driver, name string) []images.Image {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	vis, err := dst.Images(ctx)
	if err != nil {
		t.Fatal(err)
	}
	hid, err := dst.HiddenImages(ctx, name)
	if err != nil {
		t.Fatal(err)
	}
	var out []images.Image
	for _, im := range append(vis, hid...) {
		if im.Name == name {
			out = append(out, im)
		}
	}
	return out
}

func cleanupNamed(t *testing.T, dst *openstack.Driver, name string) {
	t.Cleanup(func() {
		for _, im := range named(t, dst, name) {
			_ = dst.DeleteImage(context.Background(), im.ID)
		}
	})
}

// TestIntegrationCopyVerified: a 64 MiB image is copied from canopy-a into
// canopy-b, verified by sha512 and md5 in the destination, visible only
// once verified.
func TestIntegrationCopyVerified(t *testing.T) {
	src, dst := driverFor(t, "canopy-a"), driverFor(t, "canopy-b")
	const size = 64 << 20
	sim := sourceImage(t, src, size, 1)
	name := uniq("canopy-copy")
	cleanupNamed(t, dst, name)
	w, stop := startWatch(t, dst, name, sim.Digest("sha512"))
	var reports []Progress
	var mu sync.Mutex
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	start := time.Now()
	got, err := Copy(ctx, taskFor(sim, name), src, dst, Options{Every: 100 * time.Millisecond, Report: func(p Progress) {
		mu.Lock()
		reports = append(reports, p)
		mu.Unlock()
	}})
	took := time.Since(start)
	stop()
	if err != nil {
		t.Fatalf("Copy: %v", err)
	}
	t.Logf("64 MiB copied in %s (%.0f MB/s)", took.Round(time.Millisecond), float64(size)/took.Seconds()/1e6)
	if got.Status != images.StatusActive || got.Hidden || got.SizeBytes != size || got.Digest("sha512") != sim.Digest("sha512") ||
		got.Digest("md5") != sim.Digest("md5") || got.Hub != "hub-it" {
		t.Fatalf("copied image %+v, want active, visible, %d bytes, source digests, canopy_hub", got, size)
	}
	listed := named(t, dst, name)
	if len(listed) != 1 || listed[0].ID != got.ID || listed[0].Hidden {
		t.Fatalf("destination lists %+v, want exactly the verified copy", listed)
	}
	if len(w.bad) > 0 {
		t.Fatalf("an image was usable with wrong contents: %v", w.bad)
	}
	mu.Lock()
	defer mu.Unlock()
	states := map[string]bool{}
	for _, p := range reports {
		states[p.State] = true
	}
	if !states["starting"] || !states["verifying"] || !states["done"] {
		t.Fatalf("progress states %v, want starting, verifying and done", states)
	}
}

// proxy is a TCP proxy in front of Glance that the test controls: it can
// cut the connection after a number of response bytes, or flip one byte.
type proxy struct {
	ln       net.Listener
	target   string
	cutAfter atomic.Int64 // response bytes before the connection is dropped; 0: never
	flipAt   atomic.Int64 // response byte offset to alter; 0: none
	conns    atomic.Int64
}

func startProxy(t *testing.T, target string) *proxy {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &proxy{ln: ln, target: target}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			p.conns.Add(1)
			go p.serve(c)
		}
	}()
	return p
}

func (p *proxy) serve(c net.Conn) {
	defer c.Close()
	u, err := net.Dial("tcp", p.target)
	if err != nil {
		return
	}
	defer u.Close()
	go func() { _, _ = io.Copy(u, c) }()
	cut, flip := p.cutAfter.Load(), p.flipAt.Load()
	buf := make([]byte, 64<<10)
	var off int64
	for {
		n, err := u.Read(buf)
		if n > 0 {
			if flip > 0 && off <= flip && flip < off+int64(n) {
				buf[flip-off] ^= 0xff
			}
			if cut > 0 && off+int64(n) > cut {
				_, _ = c.Write(buf[:cut-off])
				return // drop the connection mid-stream
			}
			if _, werr := c.Write(buf[:n]); werr != nil {
				return
			}
			off += int64(n)
		}
		if err != nil {
			return
		}
	}
}

func proxied(t *testing.T, g glance, p *proxy) httpSource {
	u := strings.Replace(g.endpoint, "127.0.0.1:9292", p.ln.Addr().String(), 1)
	if u == g.endpoint {
		t.Fatalf("glance endpoint %s is not 127.0.0.1:9292", g.endpoint)
	}
	return httpSource{base: u, token: g.token}
}

// TestIntegrationCopyFaults: bytes altered on the way, a connection dropped
// mid-stream, a copy cancelled by the agent: each leaves no image behind
// and none usable with wrong contents; a retry after a dropped connection
// succeeds.
func TestIntegrationCopyFaults(t *testing.T) {
	src, dst := driverFor(t, "canopy-a"), driverFor(t, "canopy-b")
	const size = 16 << 20
	sim := sourceImage(t, src, size, 2)
	g := rawGlance(t, "canopy-a")
	cases := []struct {
		name     string
		cut      int64 // drop after this many response bytes (first connection only when retry)
		flip     int64
		cancelAt int64 // cancel the copy once this many bytes passed
		attempts int
		wantErr  error // nil: must succeed in the end
		wantOK   bool
	}{
		{name: "source serves altered bytes", flip: 5 << 20, attempts: 2, wantErr: ErrMismatch},
		{name: "connection dropped every time", cut: 3 << 20, attempts: 2},
		{name: "connection dropped once, retried", cut: 3 << 20, attempts: 3, wantOK: true},
		{name: "agent cancels mid-copy", cancelAt: 4 << 20, attempts: 3, wantErr: context.Canceled},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p := startProxy(t, "127.0.0.1:9292")
			p.cutAfter.Store(tc.cut)
			p.flipAt.Store(tc.flip)
			name := uniq("canopy-fault")
			cleanupNamed(t, dst, name)
			w, stop := startWatch(t, dst, name, sim.Digest("sha512"))
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			attempts := 0
			got, err := Copy(ctx, taskFor(sim, name), proxied(t, g, p), dst, Options{Attempts: tc.attempts, BackoffMin: 50 * time.Millisecond,
				Every: 20 * time.Millisecond, Report: func(pr Progress) {
					if pr.State == "starting" {
						attempts++
						if tc.wantOK && attempts == 2 {
							p.cutAfter.Store(0) // the network heals
						}
					}
					if tc.cancelAt > 0 && pr.Bytes >= tc.cancelAt {
						cancel()
					}
				}})
			stop()
			if len(w.bad) > 0 {
				t.Fatalf("an image was usable with wrong contents: %v", w.bad)
			}
			for st := range w.saw {
				if strings.HasSuffix(st, " active") && !tc.wantOK {
					t.Errorf("a hidden copy became active: %s", st)
				}
			}
			left := named(t, dst, name)
			if tc.wantOK {
				if err != nil || attempts != 2 || len(left) != 1 || left[0].ID != got.ID || left[0].Digest("sha512") != sim.Digest("sha512") {
					t.Fatalf("Copy: %v after %d attempts; destination holds %+v", err, attempts, left)
				}
				return
			}
			if err == nil {
				t.Fatalf("Copy succeeded, want a failure")
			}
			if tc.wantErr != nil && !errors.Is(err, tc.wantErr) {
				t.Fatalf("Copy: %v, want %v", err, tc.wantErr)
			}
			if tc.wantErr == nil && attempts != tc.attempts {
				t.Fatalf("%d attempts, want %d", attempts, tc.attempts)
			}
			if len(left) != 0 {
				t.Fatalf("partial images left in the destination: %+v", left)
			}
			t.Logf("refused: %v", err)
		})
	}
}

// copyHelperEnv runs TestHelperCopyProcess as a copy in a child process.
const copyHelperEnv = "CANOPY_IMAGECOPY_HELPER"

// TestHelperCopyProcess is the child of the kill test and of the memory
// figure: it copies the image named in its environment and prints its
// peak RSS. It does nothing in a normal run.
func TestHelperCopyProcess(t *testing.T) {
	spec := os.Getenv(copyHelperEnv)
	if spec == "" {
		return
	}
	f := strings.Split(spec, ",") // srcID,size,sha512,md5,name
	size, _ := strconv.ParseInt(f[1], 10, 64)
	src, dst := driverFor(t, "canopy-a"), driverFor(t, "canopy-b")
	task := Task{Ref: images.Ref{Name: f[4], Algo: "sha512", Hex: f[2]}, SourceImageID: f[0], SizeBytes: size, HubID: "hub-it",
		Meta: images.Image{DiskFormat: "raw", ContainerFormat: "bare", Checksums: []images.Checksum{{Algorithm: "md5", Hex: f[3]}}}}
	_, err := Copy(context.Background(), task, src, dst, Options{Attempts: 1, Every: 50 * time.Millisecond, Report: func(p Progress) {
		fmt.Printf("progress %s %d\n", p.State, p.Bytes)
	}})
	fmt.Printf("result %v\npeak_rss_kib %d\n", err, peakRSSKiB())
}

// peakRSSKiB is this process's VmHWM.
func peakRSSKiB() int64 {
	b, _ := os.ReadFile("/proc/self/status")
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "VmHWM:"); ok {
			n, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return n
		}
	}
	return -1
}

// childCopy starts the helper copying sim into name.
func childCopy(t testing.TB, sim images.Image, name string) (*exec.Cmd, io.ReadCloser) {
	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperCopyProcess$", "-test.v")
	cmd.Env = append(os.Environ(), copyHelperEnv+"="+strings.Join([]string{sim.ID, strconv.FormatInt(sim.SizeBytes, 10),
		sim.Digest("sha512"), sim.Digest("md5"), name}, ","))
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	return cmd, out
}

// TestIntegrationCopyAgentKilled: an agent killed mid-copy leaves at most a
// hidden, unverified image, never a usable one; the next copy deletes the
// leftover and completes.
func TestIntegrationCopyAgentKilled(t *testing.T) {
	src, dst := driverFor(t, "canopy-a"), driverFor(t, "canopy-b")
	const size = 32 << 20
	sim := sourceImage(t, src, size, 3)
	name := uniq("canopy-kill")
	cleanupNamed(t, dst, name)
	w, stop := startWatch(t, dst, name, sim.Digest("sha512"))
	cmd, out := childCopy(t, sim, name)
	buf := make([]byte, 4096)
	var seen strings.Builder
	deadline := time.Now().Add(2 * time.Minute)
	for time.Now().Before(deadline) {
		n, err := out.Read(buf)
		seen.Write(buf[:n])
		if strings.Contains(seen.String(), "progress streaming") || err != nil {
			break
		}
	}
	if !strings.Contains(seen.String(), "progress streaming") {
		t.Fatalf("the child never streamed: %s", seen.String())
	}
	if err := cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	_ = cmd.Wait()
	left := named(t, dst, name)
	for _, im := range left {
		if !im.Hidden || im.Status == images.StatusActive {
			t.Fatalf("after the kill the destination holds %+v: want only hidden, inactive leftovers", im)
		}
	}
	t.Logf("after the kill: %d hidden leftover(s)", len(left))
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	got, err := Copy(ctx, taskFor(sim, name), src, dst, Options{})
	stop()
	if err != nil {
		t.Fatalf("copy after the kill: %v", err)
	}
	if len(w.bad) > 0 {
		t.Fatalf("an image was usable with wrong contents: %v", w.bad)
	}
	final := named(t, dst, name)
	if len(final) != 1 || final[0].ID != got.ID || final[0].Hidden {
		t.Fatalf("after the retry the destination holds %+v, want only the verified copy %s", final, got.ID)
	}
}

// BenchmarkCopyVsCurl copies CANOPY_IMAGE_BENCH_MIB (default 1024) MiB from
// canopy-a to canopy-b with Copy, then the same bytes with `curl download |
// curl upload` between the same endpoints, and prints both throughputs, the
// ratio and the copy's peak RSS (run in a child process, so the figure is
// the copy's alone).
//
//	go test -tags integration -run '^$' -bench CopyVsCurl -benchtime 1x ./agent/imagecopy/
func BenchmarkCopyVsCurl(b *testing.B) {
	mib, _ := strconv.Atoi(os.Getenv("CANOPY_IMAGE_BENCH_MIB"))
	if mib <= 0 {
		mib = 1024
	}
	size := int64(mib) << 20
	src, dst := driverFor(b, "canopy-a"), driverFor(b, "canopy-b")
	sim := sourceImage(b, src, size, 4)
	ga, gb := rawGlance(b, "canopy-a"), rawGlance(b, "canopy-b")
	for b.Loop() {
		ctx := context.Background()
		name := uniq("canopy-bench")
		// The copy as the agent runs it: create, stream, verify, unhide.
		start := time.Now()
		if _, err := Copy(ctx, taskFor(sim, name), src, dst, Options{Attempts: 1}); err != nil {
			b.Fatalf("copy: %v", err)
		}
		copyTook := time.Since(start)
		// The same copy in a child process, for its peak RSS alone.
		cmd, out := childCopy(b, sim, name+"-rss")
		rep, _ := io.ReadAll(out)
		if err := cmd.Wait(); err != nil || !strings.Contains(string(rep), "result <nil>") {
			b.Fatalf("copy child: %v\n%s", err, rep)
		}
		rss := "?"
		for _, l := range strings.Split(string(rep), "\n") {
			if v, ok := strings.CutPrefix(l, "peak_rss_kib "); ok {
				rss = v
			}
		}
		for _, n := range []string{name, name + "-rss"} {
			for _, im := range named(b, dst, n) {
				_ = dst.DeleteImage(ctx, im.ID)
			}
		}
		// The baseline: a queued image in canopy-b, filled by curl from curl.
		id, err := dst.CreateHiddenImage(ctx, images.Image{Name: name + "-curl", DiskFormat: "raw", ContainerFormat: "bare"}, "hub-bench", "")
		if err != nil {
			b.Fatal(err)
		}
		start = time.Now()
		pipe := fmt.Sprintf("curl -sf -H 'X-Auth-Token: %s' %simages/%s/file | curl -sf -X PUT -H 'X-Auth-Token: %s' -H 'Content-Type: application/octet-stream' -T - %simages/%s/file",
			ga.token, ga.endpoint, sim.ID, gb.token, gb.endpoint, id)
		if out, err := exec.Command("sh", "-c", pipe).CombinedOutput(); err != nil {
			b.Fatalf("curl pipe: %v %s", err, out)
		}
		curlTook := time.Since(start)
		_ = dst.DeleteImage(ctx, id)
		cr, pr := float64(size)/copyTook.Seconds()/1e6, float64(size)/curlTook.Seconds()/1e6
		fmt.Printf("image copy %d MiB: canopy %.1f MB/s (%s, create+stream+verify+unhide), curl|curl %.1f MB/s (%s), ratio %.2f, copy peak RSS %s KiB\n",
			mib, cr, copyTook.Round(time.Millisecond), pr, curlTook.Round(time.Millisecond), cr/pr, rss)
		b.ReportMetric(cr, "MB/s")
		b.ReportMetric(cr/pr, "ratio_vs_curl")
	}
}
