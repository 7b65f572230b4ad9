// Package openstack is the agent's driver for an OpenStack cloud: Nova
// servers, flavors and limits, Glance images and Neutron network lookup,
// through gophercloud v2.
//
// One Driver is one project of one cloud: the tenant of one site (see
// "Terms" in docs/architecture.md). It authenticates
// with a password, an application credential or a clouds.yaml entry, keeps
// its token fresh, bounds the API calls in flight, retries what is safe to
// retry and classifies every failure (see Classify). Credentials stay in the
// Config; no error or log line carries them.
package openstack

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"os"
	"regexp"
	"strings"
	"sync"
	"time"

	"github.com/gophercloud/gophercloud/v2"
	gcos "github.com/gophercloud/gophercloud/v2/openstack"
	"github.com/gophercloud/gophercloud/v2/openstack/compute/v2/flavors"
	"github.com/gophercloud/gophercloud/v2/openstack/compute/v2/keypairs"
	"github.com/gophercloud/gophercloud/v2/openstack/compute/v2/limits"
	"github.com/gophercloud/gophercloud/v2/openstack/compute/v2/servers"
	"github.com/gophercloud/gophercloud/v2/openstack/config/clouds"
	"github.com/gophercloud/gophercloud/v2/openstack/identity/v3/applicationcredentials"
	"github.com/gophercloud/gophercloud/v2/openstack/networking/v2/networks"
	"github.com/gophercloud/gophercloud/v2/openstack/utils"
	"github.com/sirupsen/logrus"

	"github.com/canopy-grid/canopy/agent/driver"
	"github.com/canopy-grid/canopy/protocol"
)

// Nova API microversions the driver knows.
const (
	// microversionNetworks is where "networks" became required and may be
	// "auto" or "none".
	microversionNetworks = "2.37"
	// microversionFlavorEmbedded is where a server's flavor is listed by
	// its fields (original_name, vcpus, ...) instead of its id.
	microversionFlavorEmbedded = "2.47"
)

// Nova's limits on server metadata and user data.
const (
	maxMetaLen     = 255
	maxMetaItems   = 128
	maxUserDataB64 = 65535
)

// Driver is an driver.Driver for one OpenStack project.
type Driver struct {
	cfg      Config
	log      logrus.FieldLogger
	secrets  []string
	provider *gophercloud.ProviderClient
	compute  *gophercloud.ServiceClient
	image    *gophercloud.ServiceClient // nil: the catalog has no image service
	network  *gophercloud.ServiceClient // nil: the catalog has no network service
	identity *gophercloud.ServiceClient
	// networks is what Boot passes to Nova: nil, "auto", "none" or a
	// resolved []servers.Network.
	networks     any
	netMu        sync.Mutex
	flavorInline bool // server listings carry the flavor's name (>= 2.47)
	names        nameCache
	faults       faultCache
}

var _ driver.Driver = (*Driver)(nil)

// New authenticates to the cloud cfg describes and returns its driver.
// log receives warnings (credential expiry) and debug lines (retries).
func New(ctx context.Context, cfg Config, log logrus.FieldLogger) (*Driver, error) {
	if err := cfg.Validate(); err != nil {
		return nil, &Error{Op: "configure", Class: protocol.ErrClassInvalid, Msg: redact(err.Error(), cfg.secrets()), err: err}
	}
	cfg = cfg.withDefaults()
	if log == nil {
		l := logrus.New()
		l.Out = nopWriter{}
		log = l
	}
	log = log.WithField("cloud_auth", cfg.authMethod())

	ao, eo, tlsConf, err := authOptions(cfg)
	if err != nil {
		return nil, &Error{Op: "configure", Class: protocol.ErrClassInvalid, Msg: redact(err.Error(), cfg.secrets()), err: err}
	}
	d := &Driver{cfg: cfg, log: log, secrets: append(cfg.secrets(), ao.Password, ao.ApplicationCredentialSecret)}

	base := http.DefaultTransport.(*http.Transport).Clone()
	base.TLSClientConfig = tlsConf
	base.ResponseHeaderTimeout = cfg.RequestTimeout
	base.MaxIdleConnsPerHost = cfg.MaxConcurrentRequests
	provider, err := gcos.NewClient(ao.IdentityEndpoint)
	if err != nil {
		return nil, wrapError("configure", err, d.secrets)
	}
	provider.HTTPClient = http.Client{Transport: newLimitTransport(cfg.MaxConcurrentRequests, base)}
	provider.UserAgent.Prepend("canopy-agent")
	r := retrier{maxRetries: cfg.MaxRetries, maxWait: cfg.MaxRetryWait, base: 500 * time.Millisecond, log: log}
	provider.RetryBackoffFunc = r.rateLimited
	provider.RetryFunc = r.failed
	provider.MaxBackoffRetries = uint(max(cfg.MaxRetries, 1))
	d.provider = provider

	actx, cancel := context.WithTimeout(ctx, cfg.RequestTimeout)
	defer cancel()
	if err := gcos.Authenticate(actx, provider, ao); err != nil {
		return nil, authFailure(wrapError("authenticate at "+ao.IdentityEndpoint, err, d.secrets))
	}
	if d.compute, err = gcos.NewComputeV2(provider, eo); err != nil {
		return nil, wrapError("find the compute endpoint", err, d.secrets)
	}
	// Glance and Neutron are optional (a cloud may lack them); failing to
	// reach one that is in the catalog is not.
	if d.image, err = optionalService(gcos.NewImageV2(provider, eo)); err != nil {
		return nil, wrapError("find the image endpoint", err, d.secrets)
	}
	if d.network, err = optionalService(gcos.NewNetworkV2(provider, eo)); err != nil {
		return nil, wrapError("find the network endpoint", err, d.secrets)
	}
	if d.identity, err = gcos.NewIdentityV3(provider, eo); err != nil {
		return nil, wrapError("find the identity endpoint", err, d.secrets)
	}
	if err := d.chooseMicroversion(actx); err != nil {
		return nil, err
	}
	if _, _, err := d.CredentialExpiry(actx); err != nil {
		log.WithError(err).Debug("openstack: credential expiry unknown")
	}
	return d, nil
}

// optionalService returns nil, nil for a service the catalog lacks.
func optionalService(sc *gophercloud.ServiceClient, err error) (*gophercloud.ServiceClient, error) {
	var notFound *gophercloud.ErrEndpointNotFound
	switch {
	case err == nil:
		return sc, nil
	case errors.As(err, &notFound):
		return nil, nil
	}
	return nil, err
}

// nopWriter discards log output when New is given no logger.
type nopWriter struct{}

func (nopWriter) Write(p []byte) (int, error) { return len(p), nil }

// authOptions turns cfg into gophercloud's authentication and endpoint
// options and the TLS settings.
func authOptions(cfg Config) (gophercloud.AuthOptions, gophercloud.EndpointOpts, *tls.Config, error) {
	if cfg.Cloud != "" {
		opts := []clouds.ParseOption{clouds.WithCloudName(cfg.Cloud)}
		if cfg.CloudsFile != "" {
			opts = append(opts, clouds.WithLocations(cfg.CloudsFile))
		}
		if cfg.Region != "" {
			opts = append(opts, clouds.WithRegion(cfg.Region))
		}
		if cfg.Interface != "" {
			opts = append(opts, clouds.WithEndpointType(cfg.Interface))
		}
		ao, eo, tlsConf, err := clouds.Parse(opts...)
		if err != nil {
			return ao, eo, nil, fmt.Errorf("read clouds.yaml entry %q: %w", cfg.Cloud, err)
		}
		if cfg.CACertFile != "" {
			if tlsConf, err = caConfig(cfg.CACertFile); err != nil {
				return ao, eo, nil, err
			}
		}
		ao.AllowReauth = true
		return ao, eo, tlsConf, nil
	}
	ao := gophercloud.AuthOptions{
		IdentityEndpoint:            cfg.AuthURL,
		Username:                    cfg.Username,
		UserID:                      cfg.UserID,
		Password:                    cfg.Password.Reveal(),
		ApplicationCredentialID:     cfg.ApplicationCredentialID,
		ApplicationCredentialName:   cfg.ApplicationCredentialName,
		ApplicationCredentialSecret: cfg.ApplicationCredentialSecret.Reveal(),
		AllowReauth:                 true,
	}
	if cfg.Username != "" && cfg.UserID == "" {
		ao.DomainName, ao.DomainID = cfg.UserDomainName, cfg.UserDomainID
		if ao.DomainID != "" {
			ao.DomainName = ""
		}
	}
	if !cfg.usesAppCred() {
		if cfg.ProjectID != "" {
			ao.Scope = &gophercloud.AuthScope{ProjectID: cfg.ProjectID}
		} else {
			ao.Scope = &gophercloud.AuthScope{ProjectName: cfg.ProjectName, DomainName: cfg.ProjectDomainName, DomainID: cfg.ProjectDomainID}
			if ao.Scope.DomainID != "" {
				ao.Scope.DomainName = ""
			}
		}
	}
	eo := gophercloud.EndpointOpts{Region: cfg.Region, Availability: gophercloud.AvailabilityPublic}
	switch cfg.Interface {
	case "internal":
		eo.Availability = gophercloud.AvailabilityInternal
	case "admin":
		eo.Availability = gophercloud.AvailabilityAdmin
	}
	var tlsConf *tls.Config
	if cfg.CACertFile != "" {
		var err error
		if tlsConf, err = caConfig(cfg.CACertFile); err != nil {
			return ao, eo, nil, err
		}
	}
	return ao, eo, tlsConf, nil
}

// caConfig trusts exactly the CAs in the PEM file at path.
func caConfig(path string) (*tls.Config, error) {
	pem, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read ca_cert_file: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("ca_cert_file %s: no PEM certificate in it", path)
	}
	return &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}, nil
}

// chooseMicroversion pins the compute API microversion: the configured one,
// else 2.47 when the cloud supports it, else 2.1.
func (d *Driver) chooseMicroversion(ctx context.Context) error {
	mv := d.cfg.ComputeMicroversion
	var sup *utils.SupportedMicroversions
	if s, err := utils.GetSupportedMicroversions(ctx, d.compute); err == nil {
		sup = &s
	} else {
		d.log.WithError(err).Debug("openstack: compute microversions unknown")
	}
	if mv == "" {
		mv = "2.1"
		if sup != nil {
			if ok, _ := sup.IsSupported(microversionFlavorEmbedded); ok {
				mv = microversionFlavorEmbedded
			}
		}
	} else if sup != nil {
		if ok, _ := sup.IsSupported(mv); !ok {
			return &Error{Op: "configure", Class: protocol.ErrClassInvalid,
				Msg: fmt.Sprintf("compute_microversion %s is outside what the cloud supports (%d.%d to %d.%d)",
					mv, sup.MinMajor, sup.MinMinor, sup.MaxMajor, sup.MaxMinor)}
		}
	}
	v, err := parseMicroversion(mv)
	if err != nil {
		return &Error{Op: "configure", Class: protocol.ErrClassInvalid, Msg: err.Error()}
	}
	d.compute.Microversion = mv
	d.flavorInline = v >= 47
	switch d.cfg.Network {
	case "none", "auto":
		if v < 37 {
			return &Error{Op: "configure", Class: protocol.ErrClassInvalid,
				Msg: fmt.Sprintf("network %q needs compute API %s, the driver uses %s", d.cfg.Network, microversionNetworks, mv)}
		}
	case "":
		if v >= 37 {
			d.networks = "auto"
		}
	}
	return nil
}

// parseMicroversion reads "2.N" and returns N.
func parseMicroversion(s string) (int, error) {
	major, minor, err := utils.ParseMicroversion(s)
	if err != nil || major != 2 || minor < 1 || minor > 1000 {
		return 0, fmt.Errorf("compute microversion %q is not of the form 2.N", s)
	}
	return minor, nil
}

// opCtx bounds one API operation by the configured request timeout.
func (d *Driver) opCtx(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, d.cfg.RequestTimeout)
}

// Config returns the driver's configuration with defaults applied.
func (d *Driver) Config() Config { return d.cfg }

// ComputeMicroversion returns the Nova API microversion the driver uses.
func (d *Driver) ComputeMicroversion() string { return d.compute.Microversion }

// Flavors implements driver.Driver.
func (d *Driver) Flavors(ctx context.Context) ([]protocol.Flavor, error) {
	ctx, cancel := d.opCtx(ctx)
	defer cancel()
	list, err := d.listFlavors(ctx)
	if err != nil {
		return nil, wrapError("list flavors", err, d.secrets)
	}
	out := make([]protocol.Flavor, 0, len(list))
	for _, f := range list {
		out = append(out, protocol.Flavor{ID: f.ID, Name: f.Name, VCPUs: f.VCPUs, RAMMiB: f.RAM, DiskGiB: f.Disk})
	}
	return out, nil
}

func (d *Driver) listFlavors(ctx context.Context) ([]flavors.Flavor, error) {
	pages, err := flavors.ListDetail(d.compute, flavors.ListOpts{}).AllPages(ctx)
	if err != nil {
		return nil, err
	}
	list, err := flavors.ExtractFlavors(pages)
	if err != nil {
		return nil, fmt.Errorf("decode flavors: %w", err)
	}
	d.names.setFlavors(list)
	return list, nil
}

// Limits implements driver.Driver. Maxima are lowered to the configured
// cores_max and ram_max_mib caps.
func (d *Driver) Limits(ctx context.Context) (protocol.Limits, error) {
	ctx, cancel := d.opCtx(ctx)
	defer cancel()
	l, err := limits.Get(ctx, d.compute, nil).Extract()
	if err != nil {
		return protocol.Limits{}, wrapError("get limits", err, d.secrets)
	}
	a := l.Absolute
	return protocol.Limits{
		MaxCores:      capLimit(a.MaxTotalCores, d.cfg.CoresMax),
		MaxRAMMiB:     capLimit(a.MaxTotalRAMSize, d.cfg.RAMMaxMiB),
		MaxInstances:  a.MaxTotalInstances,
		UsedCores:     a.TotalCoresUsed,
		UsedRAMMiB:    a.TotalRAMUsed,
		UsedInstances: a.TotalInstancesUsed,
	}, nil
}

// capLimit lowers a quota (negative: unlimited) to a cap (0: none).
func capLimit(quota, limit int) int {
	if limit > 0 && (quota < 0 || quota > limit) {
		return limit
	}
	return quota
}

// Servers implements driver.Driver: every server in the project. Servers
// whose metadata lacks driver.MetaHub are foreign.
func (d *Driver) Servers(ctx context.Context) ([]driver.Server, error) {
	ctx, cancel := d.opCtx(ctx)
	defer cancel()
	pages, err := servers.List(d.compute, servers.ListOpts{}).AllPages(ctx)
	if err != nil {
		return nil, wrapError("list servers", err, d.secrets)
	}
	list, err := servers.ExtractServers(pages)
	if err != nil {
		return nil, wrapError("list servers", fmt.Errorf("decode servers: %w", err), d.secrets)
	}
	out := make([]driver.Server, 0, len(list))
	refreshed := false
	for _, s := range list {
		flavor := flavorName(s.Flavor)
		if !d.flavorInline && flavor != "" {
			name, ok := d.names.flavorNameByID(flavor)
			if !ok && !refreshed {
				refreshed = true
				if _, err := d.listFlavors(ctx); err == nil {
					name, ok = d.names.flavorNameByID(flavor)
				}
			}
			if ok {
				flavor = name
			}
		}
		out = append(out, convertServer(s, flavor))
	}
	d.fillFaults(ctx, out)
	return out, nil
}

// fillFaults sets the fault of ERROR servers the listing gave none for: Nova
// leaves it out of /servers/detail for servers that never left cell0 (e.g.
// "No valid host was found"), but shows it on GET /servers/{id}. Faults do
// not change, so each is fetched once.
func (d *Driver) fillFaults(ctx context.Context, list []driver.Server) {
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		seen = make(map[string]bool, len(list))
	)
	for i := range list {
		s := &list[i]
		seen[s.ID] = true
		if s.Status != driver.StatusError || s.Fault != "" {
			continue
		}
		if f, ok := d.faults.get(s.ID); ok {
			s.Fault = f
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			srv, err := servers.Get(ctx, d.compute, s.ID).Extract()
			if err != nil {
				d.log.WithError(wrapError("get server "+s.ID, err, d.secrets)).Debug("openstack: fault of an ERROR server unknown")
				return
			}
			if srv.Fault.Message == "" {
				return // Nova has not recorded it yet: look again next time
			}
			mu.Lock()
			s.Fault = srv.Fault.Message
			mu.Unlock()
			d.faults.set(s.ID, srv.Fault.Message)
		}()
	}
	wg.Wait()
	d.faults.prune(seen)
}

// faultCache remembers the faults of ERROR servers by server ID.
type faultCache struct {
	mu sync.Mutex
	m  map[string]string
}

func (c *faultCache) get(id string) (string, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	f, ok := c.m[id]
	return f, ok
}

func (c *faultCache) set(id, fault string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil {
		c.m = map[string]string{}
	}
	c.m[id] = fault
}

// prune forgets servers no longer listed.
func (c *faultCache) prune(listed map[string]bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for id := range c.m {
		if !listed[id] {
			delete(c.m, id)
		}
	}
}

// flavorName reads a listed server's flavor: its original_name from
// microversion 2.47 on, else its id.
func flavorName(f map[string]any) string {
	if n, ok := f["original_name"].(string); ok {
		return n
	}
	if id, ok := f["id"].(string); ok {
		return id
	}
	return ""
}

func convertServer(s servers.Server, flavor string) driver.Server {
	image := ""
	if id, ok := s.Image["id"].(string); ok {
		image = id
	}
	md := make(map[string]string, len(s.Metadata))
	for k, v := range s.Metadata {
		md[k] = v
	}
	out := driver.Server{
		ID: s.ID, Name: s.Name, Flavor: flavor, Image: image,
		Status: mapStatus(s.Status, s.TaskState), CloudStatus: cloudStatus(s.Status, s.TaskState), Metadata: md, CreatedAt: s.Created,
	}
	if out.Status == driver.StatusError {
		// Nova records the fault just after setting ERROR: a listing in
		// between shows ERROR with no fault yet.
		out.Fault = s.Fault.Message
	}
	return out
}

// mapStatus reduces a Nova server status and task state
// (OS-EXT-STS:task_state) to what Canopy acts on. Nova shows a server being
// deleted as ACTIVE with task_state "deleting": that server is going, not
// capacity. Any status Canopy does not know is a server that runs nothing:
// stopped, never deleted for being unknown, never counted as capacity.
func mapStatus(status, taskState string) driver.ServerStatus {
	switch strings.ToLower(taskState) {
	case "deleting", "soft-deleting":
		return driver.StatusDeleting
	}
	switch strings.ToUpper(status) {
	case "BUILD", "BUILDING":
		return driver.StatusBuild
	case "ACTIVE":
		return driver.StatusActive
	case "ERROR":
		return driver.StatusError
	case "DELETED", "SOFT_DELETED":
		return driver.StatusDeleted
	case "REBOOT", "HARD_REBOOT", "MIGRATING", "RESIZE", "VERIFY_RESIZE", "REVERT_RESIZE", "PASSWORD", "REBUILD":
		return driver.StatusRebooting
	}
	// SHUTOFF, SUSPENDED, PAUSED, SHELVED, SHELVED_OFFLOADED, STOPPED,
	// RESCUE, UNKNOWN and words a later Nova may add.
	return driver.StatusStopped
}

// cloudStatus is the word people see: Nova's status, with the task state
// when one is under way.
func cloudStatus(status, taskState string) string {
	if taskState == "" {
		return status
	}
	return status + "/" + taskState
}

// Boot implements driver.Driver. The key pair, network, security groups and
// availability zone come from the Config; an empty flavor or image takes the
// configured default. Flavor, image and network may be names or IDs.
func (d *Driver) Boot(ctx context.Context, spec driver.BootSpec) (driver.Server, error) {
	op := fmt.Sprintf("boot server %q", spec.Name)
	ctx, cancel := d.opCtx(ctx)
	defer cancel()
	if err := validateSpec(spec); err != nil {
		return driver.Server{}, &Error{Op: op, Class: protocol.ErrClassInvalid, Msg: err.Error(), err: err}
	}
	flavorRef := spec.Flavor
	if flavorRef == "" {
		flavorRef = d.cfg.DefaultFlavor
	}
	imageRef := spec.Image
	if imageRef == "" {
		imageRef = d.cfg.DefaultImage
	}
	if flavorRef == "" || imageRef == "" {
		err := errors.New("no flavor or no image given and no default_flavor/default_image configured")
		return driver.Server{}, &Error{Op: op, Class: protocol.ErrClassInvalid, Msg: err.Error(), err: err}
	}
	flavorID, flavor, err := d.resolveFlavor(ctx, flavorRef)
	if err != nil {
		return driver.Server{}, wrapError(op, err, d.secrets)
	}
	imageID, err := d.resolveImage(ctx, imageRef)
	if err != nil {
		return driver.Server{}, wrapError(op, err, d.secrets)
	}
	nets, err := d.resolveNetworks(ctx)
	if err != nil {
		return driver.Server{}, wrapError(op, err, d.secrets)
	}
	md := make(map[string]string, len(spec.Metadata))
	for k, v := range spec.Metadata {
		md[k] = v
	}
	create := servers.CreateOpts{
		Name:             spec.Name,
		FlavorRef:        flavorID,
		ImageRef:         imageID,
		SecurityGroups:   d.cfg.SecurityGroups,
		AvailabilityZone: d.cfg.AvailabilityZone,
		Networks:         nets,
		Metadata:         md,
	}
	if len(spec.UserData) > 0 {
		// Always encode: gophercloud would pass bytes that happen to be
		// valid base64 through unencoded, and Nova would decode them.
		create.UserData = []byte(base64.StdEncoding.EncodeToString(spec.UserData))
	}
	var opts servers.CreateOptsBuilder = create
	if d.cfg.KeyName != "" {
		opts = keypairs.CreateOptsExt{CreateOptsBuilder: create, KeyName: d.cfg.KeyName}
	}
	s, err := servers.Create(ctx, d.compute, opts, nil).Extract()
	if err != nil {
		return driver.Server{}, wrapError(op, err, d.secrets)
	}
	return driver.Server{
		ID: s.ID, Name: spec.Name, Flavor: flavor, Image: imageID, Status: driver.StatusBuild, CloudStatus: "BUILD",
		Metadata: md, CreatedAt: time.Now().UTC(),
	}, nil
}

// validateSpec checks a boot against Nova's limits before calling it.
func validateSpec(spec driver.BootSpec) error {
	if strings.TrimSpace(spec.Name) == "" {
		return errors.New("server name is empty")
	}
	if len(spec.Name) > maxMetaLen {
		return fmt.Errorf("server name is %d bytes, Nova allows %d", len(spec.Name), maxMetaLen)
	}
	if len(spec.Metadata) > maxMetaItems {
		return fmt.Errorf("%d metadata items, Nova allows %d by default", len(spec.Metadata), maxMetaItems)
	}
	for k, v := range spec.Metadata {
		if k == "" || len(k) > maxMetaLen || len(v) > maxMetaLen {
			return fmt.Errorf("metadata %q: keys must be 1 to %d bytes and values at most %d", k, maxMetaLen, maxMetaLen)
		}
	}
	if n := base64.StdEncoding.EncodedLen(len(spec.UserData)); n > maxUserDataB64 {
		return fmt.Errorf("user data is %d bytes base64-encoded, Nova allows %d", n, maxUserDataB64)
	}
	return nil
}

// Delete implements driver.Driver: a server that is already gone (404) is
// deleted.
func (d *Driver) Delete(ctx context.Context, id string) error {
	ctx, cancel := d.opCtx(ctx)
	defer cancel()
	if id == "" {
		return &Error{Op: "delete server", Class: protocol.ErrClassInvalid, Msg: "empty server id"}
	}
	err := servers.Delete(ctx, d.compute, id).ExtractErr()
	if err == nil || gophercloud.ResponseCodeIs(err, http.StatusNotFound) {
		return nil
	}
	return wrapError(fmt.Sprintf("delete server %s", id), err, d.secrets)
}

// uuidRE matches an OpenStack resource ID.
var uuidRE = regexp.MustCompile(`^[0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{12}$`)

// resolveFlavor finds a flavor's ID and name from its name or ID.
func (d *Driver) resolveFlavor(ctx context.Context, ref string) (id, name string, err error) {
	if id, name, ok := d.names.flavor(ref); ok {
		return id, name, nil
	}
	if _, err := d.listFlavors(ctx); err != nil {
		return "", "", fmt.Errorf("look up flavor %q: %w", ref, err)
	}
	if id, name, ok := d.names.flavor(ref); ok {
		return id, name, nil
	}
	return "", "", fmt.Errorf("flavor %q: %w", ref, errNotFound)
}

// resolveNetworks returns what Boot passes as networks, resolving a
// configured network name to its ID once.
func (d *Driver) resolveNetworks(ctx context.Context) (any, error) {
	d.netMu.Lock()
	defer d.netMu.Unlock()
	if d.networks != nil || d.cfg.Network == "" {
		return d.networks, nil
	}
	switch n := d.cfg.Network; {
	case n == "none" || n == "auto":
		d.networks = n
	case uuidRE.MatchString(n):
		d.networks = []servers.Network{{UUID: n}}
	default:
		if d.network == nil {
			return nil, fmt.Errorf("network %q: the cloud has no network service to look it up; give its ID", n)
		}
		pages, err := networks.List(d.network, networks.ListOpts{Name: n}).AllPages(ctx)
		if err != nil {
			return nil, fmt.Errorf("look up network %q: %w", n, err)
		}
		list, err := networks.ExtractNetworks(pages)
		if err != nil {
			return nil, fmt.Errorf("decode networks: %w", err)
		}
		switch len(list) {
		case 0:
			return nil, fmt.Errorf("network %q: %w", n, errNotFound)
		case 1:
			d.networks = []servers.Network{{UUID: list[0].ID}}
		default:
			return nil, &Error{Op: "look up network", Class: protocol.ErrClassInvalid,
				Msg: fmt.Sprintf("%d networks are named %q; configure the network by ID", len(list), n)}
		}
	}
	return d.networks, nil
}

// CredentialExpiry returns when the credential the driver authenticates
// with expires: an application credential's expires_at or the user's
// password_expires_at, as Keystone reports them. ok is false when it never
// expires or the expiry is unknown. When the expiry is nearer than
// CredentialExpiryWarning it logs a warning.
func (d *Driver) CredentialExpiry(ctx context.Context) (expiry time.Time, ok bool, err error) {
	res, isTok := d.provider.GetAuthResult().(interface{ ExtractInto(any) error })
	if !isTok {
		return time.Time{}, false, nil
	}
	var tok struct {
		User struct {
			ID                string  `json:"id"`
			PasswordExpiresAt *string `json:"password_expires_at"`
		} `json:"user"`
		AppCred *struct {
			ID string `json:"id"`
		} `json:"application_credential"`
	}
	if err := res.ExtractInto(&tok); err != nil {
		return time.Time{}, false, fmt.Errorf("decode token: %w", err)
	}
	switch {
	case tok.AppCred != nil && tok.AppCred.ID != "":
		ctx, cancel := d.opCtx(ctx)
		defer cancel()
		ac, err := applicationcredentials.Get(ctx, d.identity, tok.User.ID, tok.AppCred.ID).Extract()
		if err != nil {
			return time.Time{}, false, wrapError("get application credential "+tok.AppCred.ID, err, d.secrets)
		}
		expiry, ok = ac.ExpiresAt, !ac.ExpiresAt.IsZero()
	case tok.User.PasswordExpiresAt != nil && *tok.User.PasswordExpiresAt != "":
		t, err := parseKeystoneTime(*tok.User.PasswordExpiresAt)
		if err != nil {
			return time.Time{}, false, err
		}
		expiry, ok = t, true
	}
	if ok {
		if left := time.Until(expiry); left < d.cfg.CredentialExpiryWarning {
			d.log.WithFields(logrus.Fields{"expires_at": expiry.UTC().Format(time.RFC3339), "days_left": int(left.Hours() / 24)}).
				Warn("openstack: credential expires soon; renew it in the agent's config")
		}
	}
	return expiry, ok, nil
}

// parseKeystoneTime reads Keystone's timestamps (ISO 8601, with or without
// zone and fraction).
func parseKeystoneTime(s string) (time.Time, error) {
	for _, layout := range []string{time.RFC3339Nano, "2006-01-02T15:04:05.999999", "2006-01-02T15:04:05"} {
		if t, err := time.Parse(layout, s); err == nil {
			return t.UTC(), nil
		}
	}
	return time.Time{}, fmt.Errorf("keystone time %q: not ISO 8601", s)
}

// nameCache maps flavor and image names to IDs between listings.
type nameCache struct {
	mu      sync.Mutex
	flavors map[string][2]string // name or ID -> {ID, name}
	images  map[string]imageRef  // name -> newest active image
}

type imageRef struct {
	id string
	at time.Time // when looked up
}

// imageCacheTTL is how long a name-to-image lookup is reused: image names
// move to new uploads, so the cache is short.
const imageCacheTTL = 30 * time.Second

func (c *nameCache) setFlavors(list []flavors.Flavor) {
	m := make(map[string][2]string, 2*len(list))
	for _, f := range list {
		m[f.Name] = [2]string{f.ID, f.Name}
	}
	for _, f := range list {
		m[f.ID] = [2]string{f.ID, f.Name} // an ID wins over a name that looks like one
	}
	c.mu.Lock()
	c.flavors = m
	c.mu.Unlock()
}

func (c *nameCache) flavor(ref string) (id, name string, ok bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	v, ok := c.flavors[ref]
	return v[0], v[1], ok
}

func (c *nameCache) flavorNameByID(id string) (string, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	v, ok := c.flavors[id]
	if !ok || v[0] != id {
		return "", false
	}
	return v[1], true
}

func (c *nameCache) image(name string, now time.Time) (string, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	v, ok := c.images[name]
	if !ok || now.Sub(v.at) > imageCacheTTL {
		return "", false
	}
	return v.id, true
}

func (c *nameCache) setImage(name string, ref imageRef) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.images == nil {
		c.images = map[string]imageRef{}
	}
	c.images[name] = ref
}
