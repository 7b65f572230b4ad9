// Package agent is Canopy's site agent: one per cloud tenant. It keeps a
// mutual-TLS QUIC session to the hub, reports what is true in its cloud
// (flavors, limits, servers, images), carries out the hub's commands
// idempotently through a cloud Driver, and answers its VMs' check-ins.
package agent

import (
	"context"
	"crypto/tls"
	"crypto/x509"
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

	"github.com/canopy-grid/canopy/agent/driver"
	"github.com/canopy-grid/canopy/agent/squidcache"
	"github.com/canopy-grid/canopy/agent/vmtoken"
	"github.com/canopy-grid/canopy/protocol"
	"github.com/canopy-grid/canopy/protocol/gossip"
	"github.com/canopy-grid/canopy/protocol/pki"
)

// Config is the agent's own configuration (the cloud driver's settings are
// configured separately).
type Config struct {
	// Site is this agent's site name; it must match its certificate.
	Site string `yaml:"site"`
	// Hub says how to reach and trust the hub.
	Hub HubLink `yaml:"hub"`
	// StateDir holds the agent's VM token key.
	StateDir string `yaml:"state_dir"`
	// VMListen is where VMs check in (host:port). VMs must reach it.
	VMListen string `yaml:"vm_listen"`
	// VMAdvertise is the URL VMs are told to use; default http://VMListen.
	VMAdvertise string `yaml:"vm_advertise"`
	// CondorHost is the HTCondor central manager VMs join.
	CondorHost string `yaml:"condor_host"`
	// TokenTTL is how long a VM's identity token is valid.
	TokenTTL time.Duration `yaml:"token_ttl"`
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
		c.TokenTTL = 7 * 24 * time.Hour
	}
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

// Validate checks the configuration.
func (c Config) Validate() error {
	if err := pki.ValidSite(c.Site); err != nil {
		return err
	}
	for name, v := range map[string]string{"hub.addr": c.Hub.Addr, "hub.ca": c.Hub.CA, "hub.cert": c.Hub.Cert,
		"hub.key": c.Hub.Key, "state_dir": c.StateDir, "condor_host": c.CondorHost} {
		if v == "" {
			return fmt.Errorf("agent config: %s is required", name)
		}
	}
	return nil
}

// Agent is a running site agent.
type Agent struct {
	cfg    Config
	driver driver.Driver
	log    *logrus.Entry
	signer *vmtoken.Signer
	tls    *tls.Config
	now    func() time.Time

	userData *UserDataRenderer
	storage  StorageCollector
	squids   *squidcache.Cache
	gkeys    gossip.SiteKeys
	pool     *gossip.Pool // set in Run, under mu

	cmds    *commandLog
	vms     *vmBook
	changed chan struct{} // something worth an early inventory happened
	invSeq  atomic.Uint64

	mu          sync.Mutex
	lastStorage *protocol.StorageReport
	// gossipSquids is the CVMFS squid list last published to the pool.
	gossipSquids []string
	hubID        string
	vmURL        string
	status       Status
}

// Status is what the agent knows about its own link, for tests and logs.
type Status struct {
	Connected  bool
	Sessions   int
	LastError  string
	Inventory  uint64
	Heartbeats uint64
}

// New prepares an agent. It loads certificates and the VM token key.
func New(cfg Config, d driver.Driver, log *logrus.Entry) (*Agent, error) {
	cfg = cfg.withDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(cfg.StateDir, 0o700); err != nil {
		return nil, fmt.Errorf("agent state dir: %w", err)
	}
	key, err := vmtoken.LoadOrCreateKey(cfg.StateDir + "/vmtoken.key")
	if err != nil {
		return nil, err
	}
	signer, err := vmtoken.NewSigner(key)
	if err != nil {
		return nil, err
	}
	userData, err := NewUserDataRenderer(cfg.VM)
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
	cert, err := tls.LoadX509KeyPair(cfg.Hub.Cert, cfg.Hub.Key)
	if err != nil {
		return nil, fmt.Errorf("load agent certificate: %w", err)
	}
	caPEM, err := os.ReadFile(cfg.Hub.CA)
	if err != nil {
		return nil, fmt.Errorf("load hub CA: %w", err)
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(caPEM) {
		return nil, fmt.Errorf("load hub CA %s: no certificate found", cfg.Hub.CA)
	}
	return &Agent{
		cfg:      cfg,
		driver:   d,
		log:      log.WithField("site", cfg.Site),
		signer:   signer,
		userData: userData,
		squids:   squids,
		gkeys:    gkeys,
		tls:      protocol.ClientTLS(roots, cert, cfg.Hub.ServerName),
		now:      time.Now,
		cmds:     newCommandLog(4096),
		vms:      newVMBook(),
		changed:  make(chan struct{}, 1),
	}, nil
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
		url = "http://" + ln.Addr().String()
	}
	a.mu.Lock()
	a.vmURL = url
	a.mu.Unlock()
	srv := &http.Server{Handler: a.vmHandler(), ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.Serve(ln) }()
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

	var wg sync.WaitGroup
	wg.Go(func() { a.reaper(ctx) })
	wg.Go(func() { a.storageLoop(ctx) })
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
