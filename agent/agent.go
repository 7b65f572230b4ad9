// Package agent is Canopy's site agent: one per cloud tenant. It keeps a
// mutual-TLS QUIC session to the hub, reports what is true in its cloud
// (flavors, limits, servers, images), carries out the hub's commands
// idempotently through a cloud Driver, and answers its VMs' check-ins.
package agent

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/canopy-grid/canopy/agent/agentdb"
	"github.com/canopy-grid/canopy/agent/driver"
	"github.com/canopy-grid/canopy/agent/imagecopy"
	"github.com/canopy-grid/canopy/agent/squidcache"
	"github.com/canopy-grid/canopy/agent/vmtoken"
	"github.com/canopy-grid/canopy/images"
	"github.com/canopy-grid/canopy/protocol"
	"github.com/canopy-grid/canopy/protocol/gossip"
	"github.com/canopy-grid/canopy/protocol/pki"
	"github.com/canopy-grid/canopy/protocol/vmproto"
)

// Config is the agent's own configuration (the cloud driver's settings are
// configured separately).
type Config struct {
	// Site is this agent's site name; it must match its certificate.
	Site string `yaml:"site"`
	// Hub says how to reach and trust the hub.
	Hub HubLink `yaml:"hub"`
	// StateDir holds the agent's VM token key, its gossip keys and its
	// durable VM book (agent.db).
	StateDir string `yaml:"state_dir"`
	// VMListen is where VMs enroll and check in (host:port), over TLS.
	// VMs must reach it.
	VMListen string `yaml:"vm_listen"`
	// VMAdvertise is the URL VMs are told to use, https://host:port;
	// default https://VMListen (which must then name the host VMs dial).
	VMAdvertise string `yaml:"vm_advertise"`
	// VMCert and VMKey are the VM endpoint's certificate and key, issued
	// by the hub's CA for the names and addresses in VMAdvertise (`hub tls
	// issue-agent --site SITE --vm-host HOST`). VMs trust only the hub's
	// CA (Hub.CA, which their user-data carries) and only this site's VM
	// endpoint certificate.
	VMCert string `yaml:"vm_cert"`
	VMKey  string `yaml:"vm_key"`
	// CondorHost is the HTCondor central manager VMs join.
	CondorHost string `yaml:"condor_host"`
	// Condor configures the VMs' HTCondor credentials and settings.
	Condor CondorConfig `yaml:"condor"`
	// TokenTTL is how long a VM's check-in token is valid; check-ins
	// renew it when a third of that is left.
	TokenTTL time.Duration `yaml:"token_ttl"`
	// EnrollTTL is how long a VM's single-use enrollment token (the only
	// credential in its user-data) is valid: the VM must have booted and
	// enrolled by then.
	EnrollTTL time.Duration `yaml:"enroll_ttl"`
	// CheckinEvery is how often VMs check in.
	CheckinEvery time.Duration `yaml:"checkin_every"`
	// RetireGrace is how long after a VM reports it has drained, or past
	// its retirement deadline, before the server is deleted anyway.
	RetireGrace time.Duration `yaml:"retire_grace"`
	// ReconnectMin and ReconnectMax bound the reconnect backoff.
	ReconnectMin time.Duration `yaml:"reconnect_min"`
	ReconnectMax time.Duration `yaml:"reconnect_max"`
	// VM is what every VM's user-data carries besides its identity.
	VM VMContext `yaml:"vm"`
	// GossipListen is where the site's gossip pool listens (IP:port, TCP
	// and UDP; default 0.0.0.0:7946). VMs must reach it.
	GossipListen string `yaml:"gossip_listen"`
	// GossipAdvertise is the address VMs join, if not GossipListen's.
	GossipAdvertise string `yaml:"gossip_advertise"`
	// Squids configures the cache of the hub's squid rankings that VMs
	// read (GET /v1/squids on the VM endpoint).
	Squids squidcache.Config `yaml:"squids"`
	// SquidList are the squids this site offers; the hub verifies and
	// ranks them.
	SquidList []protocol.SquidInfo `yaml:"squid_list"`
	// Policy is reported to the hub with every inventory (filled from the
	// cloud driver's settings by main).
	Policy *protocol.SitePolicy `yaml:"-"`
	// StorageEvery is how often storage health is collected (when a
	// storage collector is configured).
	StorageEvery time.Duration `yaml:"storage_every"`
	// MetricsListen is where the agent serves Prometheus /metrics and its
	// VM book (GET /v1/vms), host:port; empty: not served (the default:
	// no listener an operator did not ask for, and no fixed port to clash
	// when several agents share a host). Keep it on loopback or a
	// management network.
	MetricsListen string `yaml:"metrics_listen"`
	// ImageSources are the other sites' image services this agent reads
	// image copies from, by site (filled by main from the config's
	// image_sources: a read credential per source site).
	ImageSources map[string]imagecopy.Source `yaml:"-"`
}

// HubLink says how to reach and trust the hub (the config's hub: section).
type HubLink struct {
	Addr       string `yaml:"addr"`
	ServerName string `yaml:"server_name"`
	CA         string `yaml:"ca"`
	Cert       string `yaml:"cert"`
	Key        string `yaml:"key"`
}

// withDefaults fills unset fields.
func (c Config) withDefaults() Config {
	if c.VMListen == "" {
		c.VMListen = "127.0.0.1:0"
	}
	if c.TokenTTL == 0 {
		c.TokenTTL = 24 * time.Hour
	}
	if c.EnrollTTL == 0 {
		c.EnrollTTL = time.Hour
	}
	c.Condor = c.Condor.withDefaults()
	if c.CheckinEvery == 0 {
		c.CheckinEvery = 10 * time.Second
	}
	if c.StorageEvery == 0 {
		c.StorageEvery = time.Minute
	}
	if c.RetireGrace == 0 {
		c.RetireGrace = 30 * time.Second
	}
	if c.ReconnectMin == 0 {
		c.ReconnectMin = 500 * time.Millisecond
	}
	if c.ReconnectMax == 0 {
		c.ReconnectMax = 30 * time.Second
	}
	if c.Hub.ServerName == "" {
		if host, _, err := net.SplitHostPort(c.Hub.Addr); err == nil {
			c.Hub.ServerName = host
		}
	}
	return c
}

// Validate checks the configuration. Durations must not be negative (zero
// or absent means the default); errors name the key.
func (c Config) Validate() error {
	if err := pki.ValidSite(c.Site); err != nil {
		return fmt.Errorf("agent config: site: %w", err)
	}
	for _, kv := range []struct{ name, v string }{{"hub.addr", c.Hub.Addr}, {"hub.ca", c.Hub.CA}, {"hub.cert", c.Hub.Cert},
		{"hub.key", c.Hub.Key}, {"state_dir", c.StateDir}, {"condor_host", c.CondorHost}, {"vm_cert", c.VMCert}, {"vm_key", c.VMKey}} {
		if kv.v == "" {
			return fmt.Errorf("agent config: %s is required", kv.name)
		}
	}
	for _, kv := range []struct {
		name string
		d    time.Duration
	}{{"token_ttl", c.TokenTTL}, {"enroll_ttl", c.EnrollTTL}, {"checkin_every", c.CheckinEvery}, {"retire_grace", c.RetireGrace},
		{"reconnect_min", c.ReconnectMin}, {"reconnect_max", c.ReconnectMax}, {"storage_every", c.StorageEvery}} {
		if kv.d < 0 {
			return fmt.Errorf("agent config: %s is %s: it must be positive (or absent for the default)", kv.name, kv.d)
		}
	}
	d := c.withDefaults()
	if d.ReconnectMin > d.ReconnectMax {
		return fmt.Errorf("agent config: reconnect_min (%s) is over reconnect_max (%s)", d.ReconnectMin, d.ReconnectMax)
	}
	// Renewal happens at a check-in within the last third of a token's
	// life: that third must hold a few check-ins.
	if d.TokenTTL < 9*d.CheckinEvery {
		return fmt.Errorf("agent config: token_ttl (%s) must be at least 9 × checkin_every (%s): tokens are renewed at a check-in in their last third", d.TokenTTL, d.CheckinEvery)
	}
	if err := c.Condor.validate(d.CheckinEvery); err != nil {
		return fmt.Errorf("agent config: condor: %w", err)
	}
	if err := c.VM.validate(); err != nil {
		return fmt.Errorf("agent config: vm: %w", err)
	}
	if c.VMAdvertise != "" {
		if _, err := advertisedHost(c.VMAdvertise); err != nil {
			return fmt.Errorf("agent config: vm_advertise: %w", err)
		}
	} else if host, _, err := net.SplitHostPort(d.VMListen); err == nil {
		if ip := net.ParseIP(host); host == "" || ip != nil && ip.IsUnspecified() {
			return fmt.Errorf("agent config: vm_listen %s binds every interface: set vm_advertise to the https://host:port VMs dial", d.VMListen)
		}
	}
	for _, kv := range []struct{ name, v string }{{"vm_listen", c.VMListen}, {"metrics_listen", c.MetricsListen}} {
		if kv.v == "" {
			continue
		}
		if _, _, err := net.SplitHostPort(kv.v); err != nil {
			return fmt.Errorf("agent config: %s %q: want host:port: %w", kv.name, kv.v, err)
		}
	}
	return nil
}

// certSite reads the site a certificate identifies, the way the hub does
// (pki.Verifier: the subject's common name).
func certSite(cert tls.Certificate) (string, error) {
	if len(cert.Certificate) == 0 {
		return "", errors.New("no certificate in the file")
	}
	leaf, err := x509.ParseCertificate(cert.Certificate[0])
	if err != nil {
		return "", fmt.Errorf("parse certificate: %w", err)
	}
	return leaf.Subject.CommonName, nil
}

// Agent is a running site agent.
type Agent struct {
	cfg    Config
	driver driver.Driver
	log    *logrus.Entry
	signer *vmtoken.Signer
	tls    *tls.Config
	now    func() time.Time
	// vmTLS is the VM endpoint's TLS configuration (its certificate from
	// the hub's CA); caPEM is that CA, which VMs are given to verify it.
	vmTLS *tls.Config
	caPEM string
	// condor mints the VMs' HTCondor IDTOKENs; nil: none configured.
	condor *condorMinter

	userData *UserDataRenderer
	storage  StorageCollector
	squids   *squidcache.Cache
	gkeys    gossip.SiteKeys
	pool     *gossip.Pool // set in Run, under mu

	cmds    *commandLog
	vms     *vmBook
	listing *listing
	changed chan struct{} // something worth an early inventory happened
	resync  chan struct{} // the hub asked for a full inventory
	invSeq  atomic.Uint64
	// epoch names this run of the agent (Hello.Epoch): commands planned
	// on another run's inventory are refused as stale.
	epoch   string
	metrics *metrics
	// checkinLog, enrollLog and deleteLog rate-limit refusal warnings.
	checkinLog *throttle
	enrollLog  *throttle
	tlsLog     *throttle
	deleteLog  *throttle
	// enrolls are the enrollment tokens minted for booted servers.
	enrolls *enrollBook

	// progress carries image copy reports to the current hub session;
	// copying holds the images being copied in (by name and digest).
	progress progressSink
	copying  sync.Map

	db      *agentdb.Store // nil: the book is not persisted (tests)
	flushMu sync.Mutex     // serialises flushes

	mu          sync.Mutex
	flavors     []protocol.Flavor // the last slow listing (slowParts)
	images      []images.Image
	slowAt      time.Time
	lastStorage *protocol.StorageReport
	// gossipSquids is the CVMFS squid list last published to the pool.
	gossipSquids []string
	hubID        string
	hubIDDirty   bool // hubID changed since the last flush
	vmURL        string
	metricsAddr  string
	status       Status
	// lastInventory is the last inventory sent to the hub.
	lastInventory *protocol.Inventory
}

// Status is what the agent knows about its own link, for tests and logs.
type Status struct {
	Connected  bool
	Sessions   int
	LastError  string
	Inventory  uint64
	Heartbeats uint64
}

// New prepares an agent. It loads certificates, the VM token key and the
// durable VM book (<state_dir>/agent.db); an unreadable book is an error
// (the agent never silently drops retirement orders). Close the agent
// after Run returns.
func New(cfg Config, d driver.Driver, log *logrus.Entry) (*Agent, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	if err := os.MkdirAll(cfg.StateDir, 0o700); err != nil {
		return nil, fmt.Errorf("agent state dir: %w", err)
	}
	cert, err := tls.LoadX509KeyPair(cfg.Hub.Cert, cfg.Hub.Key)
	if err != nil {
		return nil, fmt.Errorf("load agent certificate: %w", err)
	}
	certName, err := certSite(cert)
	if err != nil {
		return nil, fmt.Errorf("agent certificate %s: %w", cfg.Hub.Cert, err)
	}
	if certName != cfg.Site {
		return nil, fmt.Errorf("agent config: site is %q but the certificate %s identifies site %q: "+
			"the hub would take this agent for %q; fix site or use %q's certificate", cfg.Site, cfg.Hub.Cert, certName, certName, cfg.Site)
	}
	caPEM, err := os.ReadFile(cfg.Hub.CA)
	if err != nil {
		return nil, fmt.Errorf("load hub CA: %w", err)
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(caPEM) {
		return nil, fmt.Errorf("load hub CA %s: no certificate found", cfg.Hub.CA)
	}
	vmCert, err := tls.LoadX509KeyPair(cfg.VMCert, cfg.VMKey)
	if err != nil {
		return nil, fmt.Errorf("load the VM endpoint certificate (vm_cert, vm_key): %w", err)
	}
	if cfg.VMAdvertise != "" {
		host, _ := advertisedHost(cfg.VMAdvertise)
		if err := vmproto.CheckEndpointCert(vmCert, string(caPEM), cfg.Site, host); err != nil {
			return nil, fmt.Errorf("agent config: vm_cert %s for vm_advertise %s: %w", cfg.VMCert, cfg.VMAdvertise, err)
		}
	}
	condor, err := cfg.Condor.signer()
	if err != nil {
		return nil, fmt.Errorf("agent config: condor: %w", err)
	}
	key, err := vmtoken.LoadOrCreateKey(cfg.StateDir + "/vmtoken.key")
	if err != nil {
		return nil, err
	}
	signer, err := vmtoken.NewSigner(key)
	if err != nil {
		return nil, err
	}
	userData, err := NewUserDataRenderer(cfg.VM, string(caPEM))
	if err != nil {
		return nil, err
	}
	gkeys, err := gossip.LoadOrCreateSiteKeys(cfg.StateDir)
	if err != nil {
		return nil, err
	}
	if cfg.Squids.Site == "" {
		cfg.Squids.Site = cfg.Site
	}
	if cfg.Squids.StateFile == "" {
		cfg.Squids.StateFile = filepath.Join(cfg.StateDir, "squids.json")
	}
	squids, err := squidcache.New(cfg.Squids, log.WithFields(logrus.Fields{"site": cfg.Site, "component": "squidcache"}))
	if err != nil {
		return nil, fmt.Errorf("squids: %w", err)
	}
	a, err := newAgent(cfg, d, log)
	if err != nil {
		return nil, err
	}
	a.signer, a.userData, a.squids, a.gkeys = signer, userData, squids, gkeys
	a.tls = protocol.ClientTLS(roots, cert, cfg.Hub.ServerName)
	a.vmTLS, a.caPEM, a.condor = vmproto.ServerTLS(vmCert), string(caPEM), condor
	if condor != nil {
		a.log.WithField("tokens", condor.describe()).Info("VMs get HTCondor IDTOKENs minted by this agent")
	} else {
		a.log.Info("no condor.signing_key_file: VMs get no HTCondor IDTOKEN")
	}
	if err := a.openState(); err != nil {
		return nil, err
	}
	return a, nil
}

// newAgent builds the parts of an agent that need no files: the book, the
// command log, the epoch, metrics and log throttles.
func newAgent(cfg Config, d driver.Driver, log *logrus.Entry) (*Agent, error) {
	epoch, err := newEpoch()
	if err != nil {
		return nil, err
	}
	a := &Agent{
		cfg:     cfg,
		driver:  d,
		log:     log.WithField("site", cfg.Site),
		now:     time.Now,
		cmds:    newCommandLog(maxCommandResults),
		vms:     newVMBook(),
		enrolls: newEnrollBook(),
		listing: &listing{list: d.Servers},
		changed: make(chan struct{}, 1),
		resync:  make(chan struct{}, 1),
		epoch:   epoch,
	}
	a.metrics = newMetrics(cfg.Site, func() bool { return a.Status().Connected })
	now := func() time.Time { return a.now() }
	a.checkinLog = newThrottle(refusalLogEvery, now, func(n map[string]int, window time.Duration) {
		a.log.WithFields(logrus.Fields{"refused": n, "window": window.Round(time.Second)}).Warn("VM check-ins refused (more of the same; counted in canopy_agent_checkins_refused_total)")
	})
	a.enrollLog = newThrottle(refusalLogEvery, now, func(n map[string]int, window time.Duration) {
		a.log.WithFields(logrus.Fields{"refused": n, "window": window.Round(time.Second)}).Warn("VM enrollments refused (more of the same; counted in canopy_agent_enrollments_refused_total)")
	})
	a.tlsLog = newThrottle(refusalLogEvery, now, func(n map[string]int, window time.Duration) {
		a.log.WithFields(logrus.Fields{"refused": n, "window": window.Round(time.Second)}).Warn("VM endpoint connections refused (more of the same; counted in canopy_agent_vm_endpoint_errors_total)")
	})
	a.deleteLog = newThrottle(deleteLogEvery, now, func(n map[string]int, window time.Duration) {
		a.log.WithFields(logrus.Fields{"refused": n, "window": window.Round(time.Second)}).Warn("deletes refused again (counted in canopy_agent_deletes_refused_total)")
	})
	return a, nil
}

// How many command results are remembered, and how often repeated refusal
// warnings are summarised.
const (
	maxCommandResults = 4096
	refusalLogEvery   = 10 * time.Second
	deleteLogEvery    = 10 * time.Minute
)

// newEpoch returns a random id for this run of the agent.
func newEpoch() (string, error) {
	b := make([]byte, 12)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("agent epoch: %w", err)
	}
	return hex.EncodeToString(b), nil
}

// Epoch is this run's id, sent in Hello.
func (a *Agent) Epoch() string { return a.epoch }

// MetricsAddr is where /metrics is served ("" when metrics_listen is unset
// or Run has not started it yet).
func (a *Agent) MetricsAddr() string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.metricsAddr
}

// Status returns a copy of the agent's link status.
func (a *Agent) Status() Status {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.status
}

// gossipPool returns the site's gossip pool, nil before Run starts it.
func (a *Agent) gossipPool() *gossip.Pool {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.pool
}

// VMURL is the URL VMs check in at (valid once Run has started listening).
func (a *Agent) VMURL() string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.vmURL
}

// Run serves VMs and keeps a session with the hub until ctx ends.
func (a *Agent) Run(ctx context.Context) error {
	ln, err := net.Listen("tcp", a.cfg.VMListen)
	if err != nil {
		return fmt.Errorf("vm endpoint: %w", err)
	}
	url := a.cfg.VMAdvertise
	if url == "" {
		url = "https://" + ln.Addr().String()
		if a.vmTLS != nil {
			// VMs dial the listen address: the certificate must name it.
			host, _ := advertisedHost(url)
			if err := vmproto.CheckEndpointCert(a.vmTLS.Certificates[0], a.caPEM, a.cfg.Site, host); err != nil {
				_ = ln.Close()
				return fmt.Errorf("agent config: vm_cert %s for %s (vm_listen; set vm_advertise if VMs dial another name): %w", a.cfg.VMCert, url, err)
			}
		}
	}
	a.mu.Lock()
	a.vmURL = url
	a.mu.Unlock()
	srv := &http.Server{Handler: a.vmHandler(), ReadHeaderTimeout: 5 * time.Second, TLSConfig: a.vmTLS,
		ErrorLog: vmEndpointErrorLog(a)}
	go func() { _ = srv.ServeTLS(ln, "", "") }()
	defer srv.Close()
	a.log.WithField("vm_url", url).Info("VM endpoint listening")

	pool, err := gossip.NewPool(gossip.Config{Site: a.cfg.Site, Bind: a.cfg.GossipListen, Advertise: a.cfg.GossipAdvertise,
		Key: a.gkeys.Pool, Signer: a.gkeys.Signer, Log: a.log.WithField("component", "gossip"), OnEvent: a.onGossipEvent})
	if err != nil {
		return fmt.Errorf("gossip pool: %w", err)
	}
	defer pool.Close()
	a.mu.Lock()
	a.pool = pool
	a.mu.Unlock()
	a.log.WithField("gossip", pool.Addr()).Info("gossip pool listening")

	if a.cfg.MetricsListen != "" {
		addr, stop, err := a.serveMetrics(ctx, a.cfg.MetricsListen)
		if err != nil {
			return err
		}
		defer stop()
		a.mu.Lock()
		a.metricsAddr = addr
		a.mu.Unlock()
		a.log.WithField("metrics", "http://"+addr+"/metrics").Info("metrics listening")
	}

	var wg sync.WaitGroup
	wg.Go(func() { a.flushLoop(ctx) })
	wg.Go(func() { a.throttleLoop(ctx) })
	wg.Go(func() { a.reaper(ctx) })
	wg.Go(func() { a.storageLoop(ctx) })
	wg.Go(func() { a.credentialLoop(ctx) })
	wg.Go(func() { _ = a.squids.Run(ctx) })
	defer wg.Wait()

	b := protocol.Backoff{Min: a.cfg.ReconnectMin, Max: a.cfg.ReconnectMax}
	for ctx.Err() == nil {
		connected, err := a.session(ctx)
		if ctx.Err() != nil {
			break
		}
		if connected {
			b.Reset()
		}
		d := b.Next()
		a.setStatus(func(s *Status) { s.Connected = false; s.LastError = errString(err) })
		a.log.WithError(err).WithField("retry_in", d.Round(time.Millisecond)).Warn("hub session ended")
		if protocol.Sleep(ctx, d) != nil {
			break
		}
	}
	return nil
}

// throttleLoop writes the refusal summaries of intervals that ended.
func (a *Agent) throttleLoop(ctx context.Context) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			a.checkinLog.flush()
			a.enrollLog.flush()
			a.tlsLog.flush()
			a.deleteLog.flush()
		}
	}
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

func (a *Agent) setStatus(f func(*Status)) {
	a.mu.Lock()
	f(&a.status)
	a.mu.Unlock()
}

func (a *Agent) markChanged() {
	select {
	case a.changed <- struct{}{}:
	default:
	}
}

// ErrNotConnected is returned by operations that need the hub.
var ErrNotConnected = errors.New("not connected to the hub")
