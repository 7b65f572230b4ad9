package hub

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/canopy-grid/canopy/hub/intent"
	"github.com/canopy-grid/canopy/hub/planner"
	"github.com/canopy-grid/canopy/protocol/pki"
)

// Admin actions change what the hub does; each is applied on the control
// loop, made durable, written to the events log with who asked, and
// published before it answers.
//
// Who may act (docs/operations.md, "Admin access"):
//   - the admin socket (admin_socket, a Unix socket in the state
//     directory, mode 0600): root and the hub's own user, on the hub's
//     host. It is what `hub` commands use there. A loopback TCP port would
//     be open to every local user; a socket's file mode is not.
//   - the admin TLS listener (admin_listen): a client certificate from the
//     hub's CA issued with `hub tls issue-admin NAME`; NAME is logged.
//   - the HTTP listener only with admin_on_http: true (the demo; never
//     where other users share the host).
//
// The HTTP listener otherwise serves the page, /metrics and the JSON API
// read-only.

// errNoSuchSite is returned by actions on a site the hub does not know.
var errNoSuchSite = errors.New("no such site")

// errRefused is an action that makes no sense in the VM's or site's state.
var errRefused = errors.New("refused")

// Site actions.
const (
	ActionPause   = "pause"
	ActionResume  = "resume"
	ActionDisable = "disable"
	ActionDrain   = "drain"
)

// SiteAction pauses, resumes, disables or drains a site at run time (over
// what the config says). Draining disables the site and orders every
// Canopy VM there that is not held to retire: each finishes its jobs, or
// is deleted at the retire deadline (an admin-set deadline).
func (h *Hub) SiteAction(ctx context.Context, site, action, by string) error {
	mode := map[string]string{ActionPause: intent.ModePaused, ActionDisable: intent.ModeDisabled,
		ActionDrain: intent.ModeDraining, ActionResume: ""}
	m, ok := mode[action]
	if !ok {
		return fmt.Errorf("%w: action %q: want pause, resume, disable or drain", errRefused, action)
	}
	return h.admin(ctx, func(l *loop, now time.Time) error {
		if _, known := h.policy().Sites[site]; !known && !h.linkExists(site) {
			return fmt.Errorf("%w: %q", errNoSuchSite, site)
		}
		if m == "" {
			l.tx.DropSite(site)
			l.event(now, site, "", "", "site_resumed", "resumed by "+by+" (config settings apply)")
			return nil
		}
		l.tx.PutSite(intent.SiteMode{Site: site, Mode: m, At: now, By: by})
		detail := m + " by " + by
		if m == intent.ModeDraining {
			n := l.drainSite(now, site, by)
			detail += fmt.Sprintf(": %d VMs ordered to retire by %s", n, now.Add(h.retireDeadline()).UTC().Format(time.RFC3339))
		}
		l.event(now, site, "", "", "site_"+m, detail)
		return nil
	})
}

// drainSite orders every Canopy VM of a site that is not held and not
// yet ordered to retire.
func (l *loop) drainSite(now time.Time, site, by string) int {
	n := 0
	for _, vm := range l.h.Status().VMs {
		if vm.Site != site || vm.ID == "" {
			continue
		}
		if _, held := l.st.Hold[vm.ID]; held {
			continue
		}
		if _, ordered := l.st.Retire[vm.ID]; ordered {
			continue
		}
		l.tx.PutRetire(intent.RetireOrder{VMID: vm.ID, Site: site, Name: vm.Name, At: now,
			Deadline: now.Add(l.h.retireDeadline()), Rule: "admin", Reason: "site drained by " + by})
		n++
	}
	return n
}

// RetireVM orders one VM to retire: it finishes its jobs (or is deleted
// at the retire deadline). A held VM is refused: release it first.
func (h *Hub) RetireVM(ctx context.Context, vmID, by string) error {
	return h.admin(ctx, func(l *loop, now time.Time) error {
		vm, ok := h.Status().VM(vmID)
		if !ok {
			return fmt.Errorf("%w: %q", errNoSuchVM, vmID)
		}
		if _, held := l.st.Hold[vmID]; held {
			return fmt.Errorf("%w: VM %s is held (under manual control): release it first", errRefused, vm.Name)
		}
		if _, ordered := l.st.Retire[vmID]; ordered {
			return fmt.Errorf("%w: VM %s is already retiring", errRefused, vm.Name)
		}
		deadline := now.Add(h.retireDeadline())
		l.tx.PutRetire(intent.RetireOrder{VMID: vmID, Site: vm.Site, Name: vm.Name, At: now, Deadline: deadline,
			Rule: "admin", Reason: "retired by " + by})
		l.event(now, vm.Site, vmID, "", "retire", fmt.Sprintf("retired by %s; jobs may run until %s", by, deadline.UTC().Format(time.RFC3339)))
		return nil
	})
}

// linkExists reports whether an agent for site ever connected.
func (h *Hub) linkExists(site string) bool {
	h.linksMu.RLock()
	defer h.linksMu.RUnlock()
	_, ok := h.links[site]
	return ok
}

// channel is how a request reached the hub, which decides whether it may
// administer it.
type channel int

const (
	chanHTTP   channel = iota // the HTTP listener (loopback)
	chanSocket                // the admin Unix socket
	chanTLS                   // the admin TLS listener, client certificate verified
)

// adminIdentity returns who is asking, if the request may administer the
// hub.
func (h *Hub) adminIdentity(ch channel, r *http.Request) (string, bool) {
	switch ch {
	case chanSocket:
		return "socket", true
	case chanTLS:
		if r.TLS == nil || len(r.TLS.PeerCertificates) == 0 {
			return "", false
		}
		return "admin:" + r.TLS.PeerCertificates[0].Subject.CommonName, true
	case chanHTTP:
		if h.cfg.AdminOnHTTP {
			return "http:" + r.RemoteAddr, true
		}
	}
	return "", false
}

// csrfHeader must be on every admin request a browser sends: a page of
// another site cannot set it without a CORS preflight the hub never
// answers, on top of the Origin and Sec-Fetch-Site checks (sameOrigin).
const csrfHeader = "X-Canopy-Action"

// browserRequest reports whether a request comes from a browser (it sends
// Origin or Sec-Fetch-* on state-changing requests; the CLI sends neither).
func browserRequest(r *http.Request) bool {
	return r.Header.Get("Origin") != "" || r.Header.Get("Sec-Fetch-Site") != "" || r.Header.Get("Sec-Fetch-Mode") != ""
}

// adminOnly wraps an admin handler: the channel must allow administering,
// and a browser's request must be same-origin and carry csrfHeader.
func (h *Hub) adminOnly(ch channel, f func(w http.ResponseWriter, r *http.Request, by string)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		by, ok := h.adminIdentity(ch, r)
		if !ok {
			h.m.apiRefused.WithLabelValues("not_admin").Inc()
			http.Error(w, "admin actions need the admin socket or an admin client certificate (hub tls issue-admin); "+
				"this listener is read-only", http.StatusForbidden)
			return
		}
		if err := sameOrigin(r); err != nil {
			h.m.apiRefused.WithLabelValues("cross_site").Inc()
			http.Error(w, err.Error(), http.StatusForbidden)
			return
		}
		if browserRequest(r) && r.Header.Get(csrfHeader) == "" {
			h.m.apiRefused.WithLabelValues("no_csrf_header").Inc()
			http.Error(w, "browser admin requests need the "+csrfHeader+" header (sent by the status page)", http.StatusForbidden)
			return
		}
		f(w, r, by)
	}
}

// answerAdmin writes an admin action's outcome.
func (h *Hub) answerAdmin(w http.ResponseWriter, err error, ok any) {
	switch {
	case errors.Is(err, errNoSuchVM), errors.Is(err, errNoSuchSite):
		h.m.apiRefused.WithLabelValues("unknown").Inc()
		http.Error(w, err.Error(), http.StatusNotFound)
	case errors.Is(err, errRefused):
		h.m.apiRefused.WithLabelValues("refused").Inc()
		http.Error(w, err.Error(), http.StatusConflict)
	case err != nil:
		http.Error(w, err.Error(), http.StatusServiceUnavailable)
	default:
		writeJSON(w, ok)
	}
}

// adminRoutes adds the admin actions to mux for one channel.
func (h *Hub) adminRoutes(mux *http.ServeMux, ch channel) {
	vmAction := func(act func(ctx context.Context, id, by string) error, result func(id string) any) http.HandlerFunc {
		return h.adminOnly(ch, func(w http.ResponseWriter, r *http.Request, by string) {
			id := r.PathValue("id")
			if !validVMID(id) {
				h.m.apiRefused.WithLabelValues("bad_id").Inc()
				http.Error(w, "bad VM id: want 1 to 255 letters, digits, '-', '_' or '.'", http.StatusBadRequest)
				return
			}
			ctx, cancel := context.WithTimeout(r.Context(), 30*time.Second)
			defer cancel()
			h.answerAdmin(w, act(ctx, id, by), result(id))
		})
	}
	hold := func(ctx context.Context, id, by string) error { return h.SetHeld(ctx, id, true, by) }
	release := func(ctx context.Context, id, by string) error { return h.SetHeld(ctx, id, false, by) }
	held := func(v bool) func(string) any {
		return func(id string) any { return map[string]any{"vm_id": id, "held": v} }
	}
	mux.HandleFunc("POST /api/v1/vms/{id}/hold", vmAction(hold, held(true)))
	mux.HandleFunc("DELETE /api/v1/vms/{id}/hold", vmAction(release, held(false)))
	mux.HandleFunc("POST /api/v1/vms/{id}/release", vmAction(release, held(false)))
	mux.HandleFunc("POST /api/v1/vms/{id}/retire", vmAction(h.RetireVM, func(id string) any {
		return map[string]any{"vm_id": id, "retiring": true}
	}))
	mux.HandleFunc("POST /api/v1/sites/{name}/{action}", h.adminOnly(ch, func(w http.ResponseWriter, r *http.Request, by string) {
		site, action := r.PathValue("name"), r.PathValue("action")
		if err := pki.ValidSite(site); err != nil {
			h.m.apiRefused.WithLabelValues("bad_id").Inc()
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		ctx, cancel := context.WithTimeout(r.Context(), 30*time.Second)
		defer cancel()
		h.answerAdmin(w, h.SiteAction(ctx, site, action, by), map[string]any{"site": site, "action": action})
	}))
	mux.HandleFunc("POST /api/v1/reload", h.adminOnly(ch, func(w http.ResponseWriter, r *http.Request, by string) {
		if h.reloader == nil {
			http.Error(w, "this hub was not started from a config file", http.StatusConflict)
			return
		}
		cfg, err := h.reloader()
		if err != nil {
			h.log.WithError(err).Warn("reload refused; the running config stays")
			http.Error(w, err.Error(), http.StatusUnprocessableEntity)
			return
		}
		ctx, cancel := context.WithTimeout(r.Context(), 30*time.Second)
		defer cancel()
		res, err := h.Reload(ctx, cfg, by)
		if err != nil {
			h.log.WithError(err).Warn("reload refused; the running config stays")
			http.Error(w, err.Error(), http.StatusUnprocessableEntity)
			return
		}
		writeJSON(w, res)
	}))
}

// SetReloader gives the hub the function that reads its config file again
// (for `hub reload` through the API; SIGHUP is handled by main).
func (h *Hub) SetReloader(f func() (Config, error)) { h.reloader = f }

// adminTLS is the admin listener's TLS config: TLS 1.3, the hub's
// certificate, and a client certificate required from the hub's CA with
// the admin unit, not revoked.
func (h *Hub) adminTLS() (*tls.Config, error) {
	cert, err := tls.LoadX509KeyPair(filepath.Join(h.cfg.TLSDir, pki.HubCert), filepath.Join(h.cfg.TLSDir, pki.HubKey))
	if err != nil {
		return nil, fmt.Errorf("admin listener certificate: %w", err)
	}
	v := &pki.Verifier{Roots: h.verifier.Roots, Revoked: h.verifier.Revoked, Admin: true}
	return &tls.Config{
		MinVersion:   tls.VersionTLS13,
		Certificates: []tls.Certificate{cert},
		ClientAuth:   tls.RequestClientCert,
		VerifyConnection: func(cs tls.ConnectionState) error {
			if _, err := v.Verify(cs.PeerCertificates); err != nil {
				h.m.apiRefused.WithLabelValues("admin_cert").Inc()
				return err
			}
			return nil
		},
	}, nil
}

// listenAdmin opens the admin socket and the admin TLS listener, as
// configured, and serves them until ctx ends.
func (h *Hub) listenAdmin(ctx context.Context) ([]net.Listener, error) {
	var lns []net.Listener
	if p := h.cfg.AdminSocket; p != "" {
		// The socket is a convenience for `hub` commands on this host: a
		// hub that cannot open it (a path too long for a socket, a
		// directory it may not write) runs without it, and says so.
		if ln, err := listenSocket(p); err != nil {
			h.log.WithError(err).Error("admin socket not opened: `hub` commands on this host cannot reach the hub " +
				"(set admin_socket to a short writable path)")
		} else {
			lns = append(lns, ln)
			h.serve(ctx, ln, h.handler(chanSocket))
		}
	}
	if a := h.cfg.AdminListen; a != "" {
		tc, err := h.adminTLS()
		if err != nil {
			closeAll(lns)
			return nil, err
		}
		ln, err := tls.Listen("tcp", a, tc)
		if err != nil {
			closeAll(lns)
			return nil, fmt.Errorf("admin listener %s: %w", a, err)
		}
		lns = append(lns, ln)
		h.adminAddr.Store(&adminAddr{ln.Addr()})
		h.serve(ctx, ln, h.handler(chanTLS))
	}
	return lns, nil
}

// maxSocketPath is the longest path a Unix socket may have (sun_path).
const maxSocketPath = 107

// listenSocket opens the admin socket at p, mode 0600, replacing a stale
// one (the state file's lock says no other hub runs here).
func listenSocket(p string) (net.Listener, error) {
	if len(p) > maxSocketPath {
		return nil, fmt.Errorf("admin socket %s: path longer than %d bytes", p, maxSocketPath)
	}
	if fi, err := os.Lstat(p); err == nil && fi.Mode()&os.ModeSocket != 0 {
		_ = os.Remove(p)
	}
	if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
		return nil, fmt.Errorf("admin socket dir: %w", err)
	}
	ln, err := net.Listen("unix", p)
	if err != nil {
		return nil, fmt.Errorf("admin socket %s: %w", p, err)
	}
	if err := os.Chmod(p, 0o600); err != nil {
		_ = ln.Close()
		return nil, fmt.Errorf("admin socket %s: %w", p, err)
	}
	return ln, nil
}

type adminAddr struct{ net.Addr }

// AdminAddr is the admin TLS listener's address once Run listens (nil
// when none is configured).
func (h *Hub) AdminAddr() net.Addr {
	if a := h.adminAddr.Load(); a != nil {
		return a.Addr
	}
	return nil
}

func (h *Hub) serve(ctx context.Context, ln net.Listener, hd http.Handler) {
	// Refused handshakes (no or a wrong certificate) are counted in
	// canopy_hub_api_refused_total{reason="admin_cert"}; their lines go to
	// the debug log.
	w := h.log.WriterLevel(logrus.DebugLevel)
	srv := &http.Server{Handler: hd, ReadHeaderTimeout: 5 * time.Second, ErrorLog: log.New(w, "", 0)}
	go func() { <-ctx.Done(); _ = w.Close() }()
	go func() { _ = srv.Serve(ln) }()
	go func() { <-ctx.Done(); _ = srv.Close() }()
}

func closeAll(lns []net.Listener) {
	for _, ln := range lns {
		_ = ln.Close()
	}
}

// AdminCertPool is a pool of the hub CA, for admin clients.
func AdminCertPool(tlsDir string) (*x509.CertPool, error) {
	ca, err := pki.LoadCert(filepath.Join(tlsDir, pki.CACertFile))
	if err != nil {
		return nil, err
	}
	p := x509.NewCertPool()
	p.AddCert(ca)
	return p, nil
}

// siteActions are the actions the page offers for a site in a state.
func siteActions(s SiteStatus) []string {
	var out []string
	if s.Mode != "" {
		out = append(out, ActionResume)
	}
	for _, a := range []string{ActionPause, ActionDisable, ActionDrain} {
		if !strings.HasPrefix(s.Mode, a) && !(a == ActionDisable && s.Mode == intent.ModeDraining) {
			out = append(out, a)
		}
	}
	return slices.Clip(out)
}

// vmActions are the actions the page offers for a VM.
func vmActions(vm VMStatus) []string {
	switch {
	case vm.ID == "":
		return nil
	case vm.Held:
		return []string{"release"}
	case vm.State == planner.VMRetiring || !vm.RetireDeadline.IsZero():
		return []string{"hold"}
	}
	return []string{"hold", "retire"}
}
