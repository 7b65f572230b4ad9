package squid

import (
	"crypto/subtle"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"net/url"
	"strconv"
	"strings"

	"github.com/canopy-grid/canopy/protocol/squidreg"
)

// Handler serves the registry over HTTP:
//
//	GET  /api/v1/squids/nearest?n=N&kind=cvmfs&ip=&site=&domain=  ranked squids (JSON Answer)
//	GET  /wpad.dat?n=&kind=&ip=&site=&domain=                     the same as a PAC file
//	GET  /api/v1/squids                                          every squid's Status
//	POST /api/v1/squids                                          an advertisement (Registration; bearer token)
//
// The client is located by ?ip= when given, else by the request's remote
// address.
func (r *Registry) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET "+squidreg.PathNearest, r.serveNearest)
	mux.HandleFunc("GET "+squidreg.PathWPAD, r.serveWPAD)
	mux.HandleFunc("GET "+squidreg.PathSquids, func(w http.ResponseWriter, _ *http.Request) { writeJSON(w, http.StatusOK, r.Squids()) })
	mux.HandleFunc("POST "+squidreg.PathSquids, r.serveAdvertise)
	return mux
}

// ParseQuery reads a nearest-squids query from URL parameters. remoteAddr
// (host:port, as in http.Request.RemoteAddr) locates the client unless
// ?ip= is given. Unknown parameters are ignored.
func ParseQuery(v url.Values, remoteAddr string, cfg Config) (Query, error) {
	cfg = cfg.WithDefaults()
	q := Query{N: cfg.DefaultAnswer}
	if s := v.Get("n"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 || n > cfg.MaxAnswer {
			return q, fmt.Errorf("n=%q: want a whole number from 1 to %d", truncate(s, 20), cfg.MaxAnswer)
		}
		q.N = n
	}
	if s := v.Get("kind"); s != "" {
		k, err := squidreg.ParseKind(s)
		if err != nil {
			return q, err
		}
		q.Kind = k
	}
	if s := v.Get("ip"); s != "" {
		a, err := netip.ParseAddr(s)
		if err != nil || a.Zone() != "" {
			return q, fmt.Errorf("ip=%q is not an IP address", truncate(s, 64))
		}
		q.Addr = a.Unmap()
	} else if ap, err := netip.ParseAddrPort(remoteAddr); err == nil {
		q.Addr = ap.Addr().Unmap()
	}
	q.Site, q.Domain = v.Get("site"), strings.ToLower(v.Get("domain"))
	if err := squidreg.ValidLabel(q.Site); err != nil {
		return q, fmt.Errorf("site: %w", err)
	}
	if err := squidreg.ValidLabel(q.Domain); err != nil {
		return q, fmt.Errorf("domain: %w", err)
	}
	return q, nil
}

func (r *Registry) serveNearest(w http.ResponseWriter, req *http.Request) {
	q, err := ParseQuery(req.URL.Query(), req.RemoteAddr, r.cfg)
	if err != nil {
		http.Error(w, "bad query: "+err.Error(), http.StatusBadRequest)
		return
	}
	w.Header().Set("Cache-Control", "no-store")
	writeJSON(w, http.StatusOK, r.Nearest(q))
}

func (r *Registry) serveWPAD(w http.ResponseWriter, req *http.Request) {
	q, err := ParseQuery(req.URL.Query(), req.RemoteAddr, r.cfg)
	if err != nil {
		http.Error(w, "bad query: "+err.Error(), http.StatusBadRequest)
		return
	}
	w.Header().Set("Content-Type", "application/x-ns-proxy-autoconfig")
	w.Header().Set("Cache-Control", "max-age=60")
	_, _ = io.WriteString(w, PAC(r.Nearest(q).Squids))
}

// PAC renders a proxy auto-config file that tries the squids in order,
// then goes DIRECT. Hosts were validated at registration (IP addresses and
// host names only), so they are safe inside the JavaScript string.
func PAC(squids []Candidate) string {
	var b strings.Builder
	b.WriteString("function FindProxyForURL(url, host) {\n  return \"")
	for _, s := range squids {
		b.WriteString("PROXY ")
		b.WriteString(s.Address)
		b.WriteString("; ")
	}
	b.WriteString("DIRECT\";\n}\n")
	return b.String()
}

func (r *Registry) serveAdvertise(w http.ResponseWriter, req *http.Request) {
	if r.cfg.AdvertiseToken == "" {
		http.Error(w, "squid advertising is disabled on this hub (no advertise token configured)", http.StatusForbidden)
		return
	}
	tok, ok := strings.CutPrefix(req.Header.Get("Authorization"), "Bearer ")
	if !ok || subtle.ConstantTimeCompare([]byte(tok), []byte(r.cfg.AdvertiseToken)) != 1 {
		r.log.WithField("remote", req.RemoteAddr).Warn("squid advertisement refused: bad or missing token")
		http.Error(w, "bad or missing bearer token", http.StatusUnauthorized)
		return
	}
	b, err := io.ReadAll(http.MaxBytesReader(w, req.Body, squidreg.MaxRegistrationSize))
	if err != nil {
		http.Error(w, "read registration: "+err.Error(), http.StatusRequestEntityTooLarge)
		return
	}
	reg, err := squidreg.DecodeRegistration(b)
	if err == nil {
		err = r.Register(reg, "advertised")
	} else {
		r.m.rejected.Add(1)
	}
	if err != nil {
		r.log.WithField("remote", req.RemoteAddr).WithError(err).Warn("squid advertisement refused")
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	state := squidreg.StatePending
	r.mu.Lock()
	if e, ok := r.squids[reg.Name]; ok {
		state = e.state
	}
	r.mu.Unlock()
	writeJSON(w, http.StatusOK, squidreg.AdvertiseResponse{Name: reg.Name, Expiry: r.cfg.Expiry, State: state})
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		http.Error(w, "encode answer: "+err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_, _ = w.Write(append(b, '\n'))
}
