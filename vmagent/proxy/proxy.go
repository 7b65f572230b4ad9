// Package proxy is the vmagent's squid discovery: it asks its site agent
// for candidate squids (GET /v1/squids), checks each itself with an HTTP
// request through it and a short timeout, orders the working ones by the
// time that took, and renders the order as CVMFS_HTTP_PROXY groups
// ("http://a:3128|http://b:3128;http://c:3128;DIRECT"), always ending with
// DIRECT.
//
// Grouping: proxies within a factor (GroupFactor, default 2) of the fastest
// proxy of a group, plus 5 ms, share that group (CVMFS balances load across
// a group); a slower one opens the next group (CVMFS fails over group by
// group). A candidate that does not answer, or that answers as something
// other than a working proxy, is left out. When no candidate fetched the
// probe but some answered as proxies with an upstream error (squid's 5xx,
// X-Squid-Error), the origin is taken to be down, not the proxies: those
// proxies are kept, in order of their answers, since they are the way to
// the origin once it is back.
package proxy

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/canopy-grid/canopy/protocol/vmproto"
)

// Direct is the CVMFS keyword for "no proxy".
const Direct = "DIRECT"

// Limits.
const (
	maxCandidates = 50
	maxAgentReply = 1 << 20
	maxProbeBody  = 64 << 10
)

// Options configure a discovery.
type Options struct {
	// AgentURL is the site agent's VM endpoint (Settings.AgentURL).
	AgentURL string
	// Kind is the upstream kind; default "cvmfs".
	Kind string
	// N is how many candidates to ask for; 0 means 5.
	N int
	// ProbeURL is fetched through every candidate (for CVMFS, a
	// repository's .cvmfspublished or .cvmfswhitelist on a stratum 1).
	// Empty: candidates are not checked and keep the agent's order.
	ProbeURL string
	// Timeout bounds each check; 0 means 3 s.
	Timeout time.Duration
	// GroupFactor: see the package doc; 0 means 2.
	GroupFactor float64
	// Fallback proxies (host:port or http://host:port) are checked when
	// the agent cannot be asked.
	Fallback []string
	// Client asks the agent: vmagent passes its TLS client (only the
	// hub's CA, only the site's VM endpoint certificate; see
	// vmproto.ClientTLS). Nil means a default client with a 10 s timeout.
	Client *http.Client
	// Transport carries the checks; nil means a fresh one without
	// keep-alives (each check measures a whole request).
	Transport http.RoundTripper
}

// Check is what checking one candidate found.
type Check struct {
	// Proxy is the candidate's URL, http://host:port.
	Proxy string `json:"proxy"`
	// OK: the probe came back 2xx through it.
	OK bool `json:"ok"`
	// OriginFailed: it answered as a proxy, but with an upstream error.
	OriginFailed bool          `json:"origin_failed,omitempty"`
	Elapsed      time.Duration `json:"elapsed"`
	Error        string        `json:"error,omitempty"`
}

// Result is the outcome of a discovery.
type Result struct {
	// Groups are the proxy URLs in CVMFS order: load-balanced within a
	// group, failover between groups. DIRECT is not included.
	Groups [][]string `json:"groups"`
	// Checks are the candidates' checks, in the agent's order.
	Checks []Check `json:"checks"`
	// Source is "agent", "fallback" or "none".
	Source string `json:"source"`
}

// CVMFSHTTPProxy renders the groups for CVMFS_HTTP_PROXY, ending in DIRECT.
func (r Result) CVMFSHTTPProxy() string {
	parts := make([]string, 0, len(r.Groups)+1)
	for _, g := range r.Groups {
		parts = append(parts, strings.Join(g, "|"))
	}
	return strings.Join(append(parts, Direct), ";")
}

// Proxies returns the proxy URLs in order, without grouping.
func (r Result) Proxies() []string {
	var out []string
	for _, g := range r.Groups {
		out = append(out, g...)
	}
	return out
}

// Discover asks the agent for candidates, checks them and orders them. The
// Result is always usable (at worst DIRECT alone); the error says why the
// agent could not be asked, when it could not.
func Discover(ctx context.Context, o Options) (Result, error) {
	if o.Kind == "" {
		o.Kind = "cvmfs"
	}
	if o.N <= 0 {
		o.N = 5
	}
	if o.Timeout <= 0 {
		o.Timeout = 3 * time.Second
	}
	if o.GroupFactor <= 0 {
		o.GroupFactor = 2
	}
	res := Result{Source: "agent"}
	cands, agentErr := askAgent(ctx, o)
	if agentErr != nil {
		res.Source = "fallback"
		cands = nil
		for _, f := range o.Fallback {
			u, err := ProxyURL(f)
			if err != nil {
				return Result{Source: "none"}, errors.Join(agentErr, fmt.Errorf("fallback proxy: %w", err))
			}
			cands = append(cands, u)
		}
	}
	if len(cands) == 0 {
		if agentErr != nil {
			res.Source = "none"
		}
		return res, agentErr
	}
	if o.ProbeURL == "" {
		for _, c := range cands {
			res.Groups = append(res.Groups, []string{c})
			res.Checks = append(res.Checks, Check{Proxy: c, OK: true})
		}
		return res, agentErr
	}
	res.Checks = checkAll(ctx, o, cands)
	res.Groups = group(res.Checks, o.GroupFactor)
	return res, agentErr
}

func askAgent(ctx context.Context, o Options) ([]string, error) {
	if o.AgentURL == "" {
		return nil, errors.New("ask agent for squids: no agent URL")
	}
	c := o.Client
	if c == nil {
		c = &http.Client{Timeout: 10 * time.Second}
	}
	u := strings.TrimSuffix(o.AgentURL, "/") + vmproto.PathSquids + "?" + url.Values{"kind": {o.Kind}, "n": {strconv.Itoa(o.N)}}.Encode()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, fmt.Errorf("ask agent for squids: %w", err)
	}
	resp, err := c.Do(req)
	if err != nil {
		return nil, fmt.Errorf("ask agent for squids: %w", err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxAgentReply+1))
	if err != nil {
		return nil, fmt.Errorf("ask agent for squids: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("ask agent for squids: %s: %s", resp.Status, truncate(strings.TrimSpace(string(b)), 200))
	}
	return DecodeAgentList(b)
}

// DecodeAgentList reads the agent's GET /v1/squids answer into proxy URLs
// (http://host:port), best first. Each address is checked, as it ends up in
// the CVMFS configuration as it is.
func DecodeAgentList(b []byte) ([]string, error) {
	if len(b) > maxAgentReply {
		return nil, fmt.Errorf("agent's squid list is %d bytes, limit %d", len(b), maxAgentReply)
	}
	var l vmproto.SquidList
	if err := json.Unmarshal(b, &l); err != nil {
		return nil, fmt.Errorf("agent's squid list: %w", err)
	}
	if l.Proxies == nil {
		return nil, errors.New("agent's squid list has no proxies field")
	}
	if len(l.Proxies) > maxCandidates {
		return nil, fmt.Errorf("agent's squid list has %d proxies, limit %d", len(l.Proxies), maxCandidates)
	}
	if err := l.Validate(); err != nil {
		return nil, fmt.Errorf("agent's %w", err)
	}
	out := make([]string, 0, len(l.Proxies))
	for i, p := range l.Proxies {
		u, err := ProxyURL(p.Address)
		if err != nil {
			return nil, fmt.Errorf("agent's squid list, proxy %d: %w", i, err)
		}
		if !slices.Contains(out, u) {
			out = append(out, u)
		}
	}
	return out, nil
}

// ProxyURL turns host:port or http://host:port into http://host:port,
// refusing anything that could not be written into CVMFS_HTTP_PROXY as it
// is.
func ProxyURL(s string) (string, error) {
	addr := strings.TrimPrefix(s, "http://")
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return "", fmt.Errorf("proxy %q: %w", truncate(s, 64), err)
	}
	pn, err := strconv.Atoi(port)
	if err != nil || pn < 1 || pn > 65535 || strconv.Itoa(pn) != port {
		return "", fmt.Errorf("proxy %q: bad port", truncate(s, 64))
	}
	if host == "" || len(host) > 253 {
		return "", fmt.Errorf("proxy %q: bad host", truncate(s, 64))
	}
	for i := 0; i < len(host); i++ {
		c := host[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '-' || c == ':') {
			return "", fmt.Errorf("proxy %q: bad host", truncate(s, 64))
		}
	}
	return "http://" + net.JoinHostPort(host, port), nil
}

func checkAll(ctx context.Context, o Options, cands []string) []Check {
	tr := o.Transport
	if tr == nil {
		t := &http.Transport{
			Proxy: func(r *http.Request) (*url.URL, error) {
				u, _ := r.Context().Value(proxyKey{}).(*url.URL)
				return u, nil
			},
			DisableKeepAlives:      true,
			MaxResponseHeaderBytes: 64 << 10,
		}
		defer t.CloseIdleConnections()
		tr = t
	}
	client := &http.Client{Transport: tr, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	out := make([]Check, len(cands))
	var wg sync.WaitGroup
	for i, c := range cands {
		wg.Go(func() { out[i] = checkOne(ctx, client, o, c) })
	}
	wg.Wait()
	return out
}

type proxyKey struct{}

func checkOne(ctx context.Context, client *http.Client, o Options, proxy string) Check {
	ch := Check{Proxy: proxy}
	pu, err := url.Parse(proxy)
	if err != nil {
		ch.Error = err.Error()
		return ch
	}
	ctx, cancel := context.WithTimeout(context.WithValue(ctx, proxyKey{}, pu), o.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, o.ProbeURL, nil)
	if err != nil {
		ch.Error = err.Error()
		return ch
	}
	// A plain GET: a cached answer is what CVMFS gets too, and the time it
	// takes measures the proxy rather than the origin.
	start := time.Now()
	resp, err := client.Do(req)
	if err != nil {
		ch.Elapsed = time.Since(start)
		ch.Error = err.Error()
		return ch
	}
	_, rerr := io.Copy(io.Discard, io.LimitReader(resp.Body, maxProbeBody))
	resp.Body.Close()
	ch.Elapsed = time.Since(start)
	fromProxy := resp.Header.Get("X-Squid-Error") != "" || resp.Header.Get("Via") != "" || resp.Header.Get("X-Cache") != ""
	switch {
	case rerr != nil:
		ch.Error = "read answer: " + rerr.Error()
	case resp.StatusCode >= 200 && resp.StatusCode <= 299:
		ch.OK = true
	case fromProxy && resp.StatusCode != http.StatusForbidden && resp.StatusCode != http.StatusProxyAuthRequired:
		ch.OriginFailed = true
		ch.Error = strings.TrimSpace(resp.Status + " " + resp.Header.Get("X-Squid-Error"))
	default:
		ch.Error = "answer " + resp.Status + " is not a working proxy's"
	}
	return ch
}

// group orders the usable checks by time and cuts them into groups.
func group(checks []Check, factor float64) [][]string {
	var use []Check
	for _, c := range checks {
		if c.OK {
			use = append(use, c)
		}
	}
	if len(use) == 0 {
		for _, c := range checks {
			if c.OriginFailed {
				use = append(use, c)
			}
		}
	}
	slices.SortStableFunc(use, func(a, b Check) int { return cmp.Compare(a.Elapsed, b.Elapsed) })
	var groups [][]string
	var lead time.Duration
	for _, c := range use {
		if len(groups) == 0 || float64(c.Elapsed) > float64(lead)*factor+float64(5*time.Millisecond) {
			groups = append(groups, nil)
			lead = c.Elapsed
		}
		groups[len(groups)-1] = append(groups[len(groups)-1], c.Proxy)
	}
	return groups
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}
