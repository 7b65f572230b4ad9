//go:build integration

package demo

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/chromedp/cdproto/cdp"
	cdplog "github.com/chromedp/cdproto/log"
	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"

	"github.com/canopy-grid/canopy/hub"
)

// The browser tests drive the status page in Debian's headless Chromium
// (installed by deploy/testbed/chromium/up.sh; the test installs nothing)
// against the demo system: the real hub, agents and VMs on loopback.
// Admin actions go through a small reverse proxy that presents an admin
// client certificate to the hub's admin TLS listener, as an
// authenticating front end would. Screenshots go to $CANOPY_ARTIFACTS,
// else artifacts/ in this package (ignored by git).

// artifactsDir is where screenshots are written.
func artifactsDir(t *testing.T) string {
	dir := os.Getenv("CANOPY_ARTIFACTS")
	if dir == "" {
		dir = "artifacts"
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

// adminProxy serves the hub's admin listener to the browser on plain
// loopback HTTP, presenting the admin certificate; Host is kept so the
// hub's same-origin check sees the browser's origin.
func adminProxy(t *testing.T, adminURL, certFile, keyFile, caFile string) string {
	t.Helper()
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	caPEM, err := os.ReadFile(caFile)
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(caPEM)
	target, _ := url.Parse(adminURL)
	rp := &httputil.ReverseProxy{
		Rewrite: func(r *httputil.ProxyRequest) {
			r.SetURL(target)
			r.Out.Host = r.In.Host
		},
		Transport: &http.Transport{TLSClientConfig: &tls.Config{MinVersion: tls.VersionTLS13, RootCAs: roots,
			Certificates: []tls.Certificate{cert}, ServerName: "127.0.0.1"}},
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: rp, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	return "http://" + ln.Addr().String()
}

// browser starts headless Chromium and records console errors and
// uncaught exceptions.
type browser struct {
	ctx  context.Context
	mu   sync.Mutex
	errs []string
}

func newBrowser(t *testing.T, parent context.Context) *browser {
	t.Helper()
	path, err := exec.LookPath("chromium")
	if err != nil {
		t.Fatalf("chromium not found (deploy/testbed/chromium/up.sh installs Debian's chromium): %v", err)
	}
	opts := append(chromedp.DefaultExecAllocatorOptions[:], chromedp.ExecPath(path), chromedp.NoSandbox,
		chromedp.WindowSize(1440, 1000), chromedp.Flag("disable-dev-shm-usage", true))
	actx, cancelA := chromedp.NewExecAllocator(parent, opts...)
	t.Cleanup(cancelA)
	ctx, cancel := chromedp.NewContext(actx)
	t.Cleanup(cancel)
	b := &browser{ctx: ctx}
	// The first call starts the browser: with the test's context, no timeout.
	err = chromedp.Listen(ctx, func(ev any) {
		var msg string
		switch ev := ev.(type) {
		case *runtime.EventExceptionThrown:
			if d := ev.ExceptionDetails; d != nil {
				msg = fmt.Sprintf("exception: %s at %s:%d", d.Text, d.URL, d.LineNumber)
				if d.Exception != nil {
					msg += " " + d.Exception.Description
				}
			}
		case *runtime.EventConsoleAPICalled:
			if ev.Type == runtime.ConsoleAPICalledTypeError {
				var parts []string
				for _, a := range ev.Args {
					parts = append(parts, a.Description+string(a.Value))
				}
				msg = "console.error: " + strings.Join(parts, " ")
			}
		case *cdplog.EventEntryAdded:
			if ev.Entry != nil && ev.Entry.Level == cdplog.EntryLevelError {
				msg = "log: " + ev.Entry.Text + " " + ev.Entry.URL
			}
		}
		if msg != "" {
			b.mu.Lock()
			b.errs = append(b.errs, msg)
			b.mu.Unlock()
		}
	})
	if err != nil {
		t.Fatalf("start chromium: %v", err)
	}
	for _, enable := range []func() error{
		func() error { _, err := chromedp.Call(ctx, cdplog.Enable, cdp.Empty{}); return err },
		func() error { _, err := chromedp.Call(ctx, runtime.Enable, cdp.Empty{}); return err },
	} {
		if err := enable(); err != nil {
			t.Fatal(err)
		}
	}
	return b
}

func (b *browser) errors() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]string{}, b.errs...)
}

func (b *browser) run(t *testing.T, what string, actions ...chromedp.Action[chromedp.Void]) {
	t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 30*time.Second)
	defer cancel()
	if err := chromedp.Do(ctx, actions...); err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

// eval evaluates a JavaScript expression (awaiting a promise) into a T.
func eval[T any](t *testing.T, b *browser, js string) T {
	t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 30*time.Second)
	defer cancel()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[T](js, chromedp.EvalAwaitPromise))
	if err != nil {
		t.Fatalf("evaluate %.80s: %v", js, err)
	}
	return v
}

func (b *browser) screenshot(t *testing.T, name string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 30*time.Second)
	defer cancel()
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatalf("screenshot: %v", err)
	}
	p := filepath.Join(artifactsDir(t), name)
	if err := os.WriteFile(p, png, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshot %s (%d bytes)", p, len(png))
}

// pageCounts reads the per-site table: site -> state -> count.
const pageCounts = `Object.fromEntries([...document.querySelectorAll('#sites tr[data-site]')].map(r =>
  [r.dataset.site, Object.fromEntries([...r.querySelectorAll('td[data-state]')].map(td => [td.dataset.state, +td.textContent]))]))`

// TestBrowserStatusPage: the demo runs busy VMs on both sites, one VM's
// machine stops (error, with the cloud's status as fault) and another
// hub's server sits in west's project. In Chromium: the per-site table
// shows the states the hub reports, refreshed in place; the plots have
// points; holding a VM from the page works and is in the events log; the
// public page has no controls and no internal names or addresses; no
// console errors. Unauthenticated and cross-site admin requests are
// refused and change nothing.
func TestBrowserStatusPage(t *testing.T) {
	adminPort, err := freePort("tcp")
	if err != nil {
		t.Fatal(err)
	}
	e := startFaults(t, 4*time.Minute, Options{Replace: map[string]string{
		`admin_listen: ""`: fmt.Sprintf("admin_listen: 127.0.0.1:%d", adminPort)}})
	vms := e.busyVMs("west", 2)

	// One VM's machine stops: the cloud lists it stopped; the hub shows it
	// in error (the error delay is 5 minutes: it stays for the test).
	var victim localVM
	for _, vm := range vms {
		victim = vm
		break
	}
	if err := syscall.Kill(victim.PID, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	e.poll(60*time.Second, "the stopped VM in error on the hub", func() bool {
		return e.sites()["west"].Counts["error"] >= 1
	})

	pki := filepath.Join(e.dir, "pki")
	if out, err := exec.Command(filepath.Join(e.sys.bin, "hub"), "tls", "issue-admin", "browser", "--dir", pki,
		"--out", filepath.Join(e.dir, "admin")).CombinedOutput(); err != nil {
		t.Fatalf("issue-admin: %v\n%s", err, out)
	}
	proxy := adminProxy(t, fmt.Sprintf("https://127.0.0.1:%d", adminPort), filepath.Join(e.dir, "admin", "browser.crt"),
		filepath.Join(e.dir, "admin", "browser.key"), filepath.Join(e.dir, "admin", "ca.crt"))

	b := newBrowser(t, e.ctx)
	b.run(t, "open the page", chromedp.Navigate(proxy+"/"), chromedp.WaitVisible(chromedp.CSS(`#sites tr[data-site="west"]`)))

	// The table converges on what the hub reports, by in-place refreshes.
	var onPage map[string]map[string]int
	e.poll(60*time.Second, "the page's per-site counts to match the hub's", func() bool {
		onPage = eval[map[string]map[string]int](t, b, pageCounts)
		sites := e.sites()
		if len(sites) != 2 || onPage["west"]["busy"] == 0 || onPage["west"]["error"] == 0 {
			return false
		}
		for name, s := range sites {
			for _, st := range hub.DisplayStates {
				if onPage[name][st] != s.Counts[st] {
					return false
				}
			}
		}
		return true
	})
	t.Logf("per-site counts on the page: %v", onPage)
	if !eval[bool](t, b, `[...document.querySelectorAll('#vms .fault')].some(f => f.textContent.includes('fault:'))`) {
		t.Error("the VM in error is listed without its fault message")
	}

	// Plots: drawn with data points (two samples at least, 10 s apart).
	e.poll(60*time.Second, "plots with data points", func() bool {
		n := eval[int](t, b, `Math.min(...['vms','jobs','cores'].map(id => { const p = document.querySelector('#plot-'+id+' polyline');
		  return p ? p.getAttribute('points').trim().split(/\s+/).length : 0 }))`)
		return n >= 2
	})

	// An admin action from the page: hold a busy VM.
	var target hub.VMStatus
	for _, v := range e.hubVMs() {
		if v.State == "busy" && !v.Held && v.ID != victim.ID {
			target = v
			break
		}
	}
	if target.ID == "" {
		t.Fatal("no busy VM to hold")
	}
	sel := fmt.Sprintf(`#vms button[data-vm=%q][data-action="hold"]`, target.ID)
	b.run(t, "click hold", chromedp.WaitVisible(chromedp.CSS(sel)), chromedp.Click(chromedp.CSS(sel)))
	e.poll(30*time.Second, "the hold in the hub, the events table and the page's message", func() bool {
		ok := eval[bool](t, b, fmt.Sprintf(`document.getElementById('msg').textContent.includes('hold VM %s: done') &&
		  [...document.querySelectorAll('#events tr[data-kind="held"]')].some(r => r.textContent.includes('admin:browser'))`, target.ID))
		vm, _ := findHubVM(e.hubVMs(), target.ID)
		return ok && vm.Held
	})
	b.screenshot(t, "status-admin.png")
	if errs := b.errors(); len(errs) > 0 {
		t.Errorf("console errors on the admin page: %v", errs)
	}

	// The public page: no controls, no VM names, ids or addresses.
	b.run(t, "open the public page", chromedp.Navigate(e.sys.HTTPURL+"/public"), chromedp.WaitVisible(chromedp.CSS(`#sites`)))
	controls := eval[int](t, b, `document.querySelectorAll('button, form, input, select, textarea, script, [data-act]').length`)
	text := eval[string](t, b, `document.body.innerText`)
	html := eval[string](t, b, `document.documentElement.outerHTML`)
	if controls != 0 {
		t.Errorf("the public page has %d controls or scripts", controls)
	}
	for _, leak := range []string{"127.0.0.1", "localhost", target.Name, target.ID, victim.ID, "/api/v1", "/metrics"} {
		if strings.Contains(html, leak) {
			t.Errorf("the public page shows %q", leak)
		}
	}
	if !strings.Contains(text, "west") || !strings.Contains(text, "east") {
		t.Errorf("the public page lacks the sites: %.300s", text)
	}
	b.screenshot(t, "status-public.png")
	if errs := b.errors(); len(errs) > 0 {
		t.Errorf("console errors: %v", errs)
	}

	// Refused: the read-only listener (unauthenticated), a cross-site
	// request through the admin front end (from a page of another origin
	// in the browser, and with a forged Origin), and a browser request
	// without the page's header. The VM stays held.
	release := "/api/v1/vms/" + target.ID + "/release"
	b.run(t, "open the read-only page", chromedp.Navigate(e.sys.HTTPURL+"/"), chromedp.WaitVisible(chromedp.CSS(`#sites`)))
	if buttons := eval[int](t, b, `document.querySelectorAll('button[data-act]').length`); buttons != 0 {
		t.Errorf("the read-only page offers %d admin buttons", buttons)
	}
	eval[bool](t, b, fmt.Sprintf(`fetch(%q, {method: 'POST', mode: 'no-cors'}).then(() => true, () => true)`, proxy+release))
	for _, c := range []struct {
		name, url string
		hdr       map[string]string
	}{
		{"unauthenticated", e.sys.HTTPURL + release, nil},
		{"forged origin", proxy + release, map[string]string{"Origin": "http://evil.example"}},
		{"browser without the page's header", proxy + release, map[string]string{"Sec-Fetch-Site": "same-origin"}},
	} {
		req, _ := http.NewRequestWithContext(e.ctx, "POST", c.url, nil)
		for k, v := range c.hdr {
			req.Header.Set(k, v)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusForbidden {
			t.Errorf("%s: status %d, want 403", c.name, resp.StatusCode)
		}
	}
	if vm, _ := findHubVM(e.hubVMs(), target.ID); !vm.Held {
		t.Error("a refused request released the VM")
	}
	var metrics string
	resp, err := http.Get(e.sys.HTTPURL + "/metrics")
	if err == nil {
		var sb strings.Builder
		buf := make([]byte, 1<<16)
		for {
			n, rerr := resp.Body.Read(buf)
			sb.Write(buf[:n])
			if rerr != nil {
				break
			}
		}
		resp.Body.Close()
		metrics = sb.String()
	}
	for _, reason := range []string{`reason="cross_site"`, `reason="not_admin"`, `reason="no_csrf_header"`} {
		if !strings.Contains(metrics, "canopy_hub_api_refused_total{"+reason+"}") {
			t.Errorf("refusal %s not counted", reason)
		}
	}
}

func findHubVM(vms []hub.VMStatus, id string) (hub.VMStatus, bool) {
	for _, v := range vms {
		if v.ID == id {
			return v, true
		}
	}
	return hub.VMStatus{}, false
}
