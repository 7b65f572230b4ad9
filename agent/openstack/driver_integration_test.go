//go:build integration

package openstack

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gophercloud/gophercloud/v2"
	gcos "github.com/gophercloud/gophercloud/v2/openstack"
	"github.com/gophercloud/gophercloud/v2/openstack/compute/v2/servers"
	"github.com/gophercloud/gophercloud/v2/openstack/identity/v3/applicationcredentials"
	"github.com/gophercloud/gophercloud/v2/openstack/identity/v3/tokens"
	gimages "github.com/gophercloud/gophercloud/v2/openstack/image/v2/images"
	"github.com/sirupsen/logrus"
	logtest "github.com/sirupsen/logrus/hooks/test"

	"github.com/canopy-grid/canopy/agent/driver"
	"github.com/canopy-grid/canopy/images"
	"github.com/canopy-grid/canopy/protocol"
)

// uniq returns a name unique to this run.
func uniq(prefix string) string {
	b := make([]byte, 4)
	if _, err := rand.Read(b); err != nil {
		panic(err)
	}
	return prefix + "-" + hex.EncodeToString(b)
}

// waitServer polls the driver's listing until pred holds for the server
// with id (or, when gone is true, until it is no longer listed).
func waitServer(t *testing.T, ctx context.Context, d *Driver, id string, what string, pred func(s driver.Server, listed bool) bool) driver.Server {
	t.Helper()
	deadline := time.Now().Add(3 * time.Minute)
	delay := 200 * time.Millisecond
	for time.Now().Before(deadline) {
		list, err := d.Servers(ctx)
		if err != nil {
			t.Fatalf("list servers while waiting for %s: %v", what, err)
		}
		var found driver.Server
		listed := false
		for _, s := range list {
			if s.ID == id {
				found, listed = s, true
			}
		}
		if pred(found, listed) {
			return found
		}
		if !wait(ctx, delay) {
			break
		}
		delay = min(delay*2, 2*time.Second)
	}
	t.Fatalf("server %s: timed out waiting for %s", id, what)
	return driver.Server{}
}

func deleteOnCleanup(t *testing.T, d *Driver, id string) {
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := d.Delete(ctx, id); err != nil {
			t.Errorf("cleanup: delete %s: %v", id, err)
		}
	})
}

func TestIntegrationPasswordAuthFlavors(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	d := newDriver(t, ctx, passwordConfig(t, "canopy-a"))
	if mv := d.ComputeMicroversion(); mv != "2.47" {
		t.Errorf("microversion = %s, want 2.47 (Zed supports up to 2.93)", mv)
	}
	fl, err := d.Flavors(ctx)
	if err != nil {
		t.Fatalf("Flavors: %v", err)
	}
	want := map[string]protocol.Flavor{
		"m1.tiny": {Name: "m1.tiny", VCPUs: 1, RAMMiB: 512, DiskGiB: 1},
		"b8":      {Name: "b8", VCPUs: 8, RAMMiB: 16384, DiskGiB: 80},
	}
	for _, f := range fl {
		if w, ok := want[f.Name]; ok {
			if f.ID == "" || f.VCPUs != w.VCPUs || f.RAMMiB != w.RAMMiB || f.DiskGiB != w.DiskGiB {
				t.Errorf("flavor %s = %+v, want %+v with an id", f.Name, f, w)
			}
			delete(want, f.Name)
		}
	}
	if len(want) > 0 {
		t.Errorf("flavors missing from %+v: %v", fl, want)
	}
}

func TestIntegrationCloudsYAMLAuthLimits(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	// canopy-b lives in domain "canopy": the clouds.yaml entry carries the
	// user and project domains.
	d := newDriver(t, ctx, Config{Cloud: "canopy-b", CloudsFile: cloudsYAML})
	l, err := d.Limits(ctx)
	if err != nil {
		t.Fatalf("Limits: %v", err)
	}
	wantInst, _ := strconv.Atoi(testbedEnv["B_QUOTA_INSTANCES"])
	wantCores, _ := strconv.Atoi(testbedEnv["B_QUOTA_CORES"])
	wantRAM, _ := strconv.Atoi(testbedEnv["B_QUOTA_RAM_MB"])
	if l.MaxInstances != wantInst || l.MaxCores != wantCores || l.MaxRAMMiB != wantRAM {
		t.Errorf("canopy-b limits = %+v, want instances %d cores %d ram %d", l, wantInst, wantCores, wantRAM)
	}
	if l.UsedInstances < 0 || l.UsedCores < 0 || l.UsedRAMMiB < 0 {
		t.Errorf("negative usage in %+v", l)
	}

	// The same project through its password, with caps below the quota.
	cfg := passwordConfig(t, "canopy-b")
	if cfg.UserDomainName != "canopy" || cfg.ProjectDomainName != "canopy" {
		t.Fatalf("canopy-b domains = %q/%q, want canopy", cfg.UserDomainName, cfg.ProjectDomainName)
	}
	cfg.CoresMax, cfg.RAMMaxMiB = 2, 1024
	capped, err := newDriver(t, ctx, cfg).Limits(ctx)
	if err != nil {
		t.Fatalf("Limits (capped): %v", err)
	}
	if capped.MaxCores != 2 || capped.MaxRAMMiB != 1024 || capped.MaxInstances != wantInst {
		t.Errorf("capped limits = %+v, want cores 2 ram 1024 instances %d", capped, wantInst)
	}
}

func TestIntegrationApplicationCredential(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	p := rawProvider(t, ctx, "canopy-a")
	ident, err := gcos.NewIdentityV3(p, gophercloud.EndpointOpts{})
	if err != nil {
		t.Fatal(err)
	}
	user, err := p.GetAuthResult().(tokens.CreateResult).ExtractUser()
	if err != nil {
		t.Fatal(err)
	}
	expires := time.Now().Add(72 * time.Hour).UTC().Truncate(time.Second)
	ac, err := applicationcredentials.Create(ctx, ident, user.ID, applicationcredentials.CreateOpts{
		Name: uniq("itest-appcred"), ExpiresAt: &expires,
	}).Extract()
	if err != nil {
		t.Fatalf("create application credential: %v", err)
	}
	t.Cleanup(func() {
		if err := applicationcredentials.Delete(context.Background(), ident, user.ID, ac.ID).ExtractErr(); err != nil {
			t.Errorf("cleanup: delete application credential: %v", err)
		}
	})

	log, hook := logtest.NewNullLogger()
	cfg := Config{AuthURL: keystoneURL, ApplicationCredentialID: ac.ID, ApplicationCredentialSecret: Secret(ac.Secret)}
	d, err := New(ctx, cfg, log)
	if err != nil {
		t.Fatalf("New with application credential: %v", err)
	}
	if _, err := d.Flavors(ctx); err != nil {
		t.Errorf("Flavors with application credential: %v", err)
	}
	got, ok, err := d.CredentialExpiry(ctx)
	if err != nil || !ok || !got.Equal(expires) {
		t.Errorf("CredentialExpiry = %v, %v, %v; want %v, true, nil", got, ok, err, expires)
	}
	warned := false
	for _, e := range hook.AllEntries() {
		if e.Level == logrus.WarnLevel && strings.Contains(e.Message, "expires soon") {
			warned = true
		}
	}
	if !warned {
		t.Errorf("no expiry warning logged for a credential expiring in 3 days; entries: %v", hook.AllEntries())
	}

	// A wrong secret: an auth error that does not carry the secret.
	bad := cfg
	bad.ApplicationCredentialSecret = Secret("wrong-" + ac.Secret)
	_, err = New(ctx, bad, nil)
	if Classify(err) != protocol.ErrClassAuth {
		t.Fatalf("wrong application credential secret: class %q (%v), want auth", Classify(err), err)
	}
	for _, s := range []string{ac.Secret, string(bad.ApplicationCredentialSecret)} {
		if strings.Contains(err.Error(), s) || strings.Contains(fmt.Sprintf("%+v %#v", err, err), s) {
			t.Errorf("error leaks the secret: %v", err)
		}
	}
}

func TestIntegrationWrongPassword(t *testing.T) {
	t.Parallel()
	cfg := passwordConfig(t, "canopy-a")
	cfg.Password = Secret("Wr0ng-pa55word-" + uniq("x"))
	_, err := New(context.Background(), cfg, nil)
	if err == nil {
		t.Fatal("New with a wrong password succeeded")
	}
	if Classify(err) != protocol.ErrClassAuth {
		t.Errorf("class = %q, want auth: %v", Classify(err), err)
	}
	var e *Error
	if !errors.As(err, &e) || e.StatusCode != http.StatusUnauthorized {
		t.Errorf("error %v: want *Error with status 401", err)
	}
	for _, text := range []string{err.Error(), fmt.Sprintf("%+v", err), fmt.Sprintf("%#v", err), cfg.String(), fmt.Sprintf("%+v %#v", cfg, cfg)} {
		if strings.Contains(text, cfg.Password.Reveal()) {
			t.Errorf("password leaked: %s", text)
		}
	}
	if !strings.Contains(err.Error(), "authenticate") || !strings.Contains(err.Error(), "401") {
		t.Errorf("error is not clear about authentication: %v", err)
	}
}

func TestIntegrationServerLifecycle(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	cfg := passwordConfig(t, "canopy-a")
	cfg.Network = "canopy-net"
	cfg.SecurityGroups = []string{"default"}
	cfg.DefaultImage = "canopy-tiny"
	d := newDriver(t, ctx, cfg)

	name := uniq("itest-vm")
	userData := []byte("#cloud-config\nruncmd:\n  - echo canopy\n")
	md := map[string]string{driver.MetaHub: "hub-itest", driver.MetaSite: "site-a", driver.MetaGroup: "atlas",
		driver.MetaVMType: "default", driver.MetaPlan: "plan-1"}
	t0 := time.Now()
	s, err := d.Boot(ctx, driver.BootSpec{Name: name, Flavor: "m1.tiny", Metadata: md, UserData: userData})
	if err != nil {
		t.Fatalf("Boot: %v", err)
	}
	deleteOnCleanup(t, d, s.ID)
	if s.ID == "" || s.Status != driver.StatusBuild || s.Flavor != "m1.tiny" {
		t.Errorf("Boot returned %+v", s)
	}
	got := waitServer(t, ctx, d, s.ID, "ACTIVE", func(s driver.Server, listed bool) bool {
		if listed && s.Status == driver.StatusError {
			t.Fatalf("server went to ERROR: %s", s.Fault)
		}
		return listed && s.Status == driver.StatusActive
	})
	t.Logf("server ACTIVE %s after POST", time.Since(t0).Round(10*time.Millisecond))
	if got.Name != name || got.Flavor != "m1.tiny" || got.Image == "" || got.CreatedAt.IsZero() {
		t.Errorf("listed server = %+v", got)
	}
	for k, v := range md {
		if got.Metadata[k] != v {
			t.Errorf("metadata %s = %q, want %q", k, got.Metadata[k], v)
		}
	}

	// The user data as Nova stores it (admin-only attribute, 2.3+).
	admin := rawProvider(t, ctx, "canopy-admin")
	nova, err := gcos.NewComputeV2(admin, gophercloud.EndpointOpts{})
	if err != nil {
		t.Fatal(err)
	}
	nova.Microversion = "2.3"
	raw, err := servers.Get(ctx, nova, s.ID).Extract()
	if err != nil {
		t.Fatalf("admin get server: %v", err)
	}
	if raw.Userdata == nil || *raw.Userdata != base64.StdEncoding.EncodeToString(userData) {
		t.Errorf("user data stored = %v, want base64 of %q", raw.Userdata, userData)
	}
	if addrs, _ := raw.Addresses["canopy-net"].([]any); len(addrs) == 0 {
		t.Errorf("server not on canopy-net: %v", raw.Addresses)
	}

	if err := d.Delete(ctx, s.ID); err != nil {
		t.Fatalf("Delete: %v", err)
	}
	waitServer(t, ctx, d, s.ID, "deletion", func(s driver.Server, listed bool) bool {
		return !listed || s.Status == driver.StatusDeleted
	})
	// The project's user gets 404 (an admin may still see it as DELETED).
	userNova, err := gcos.NewComputeV2(rawProvider(t, ctx, "canopy-a"), gophercloud.EndpointOpts{})
	if err != nil {
		t.Fatal(err)
	}
	// Nova may answer DELETED for a moment before 404.
	t1 := time.Now()
	for delay := 100 * time.Millisecond; ; delay = min(2*delay, 2*time.Second) {
		gs, err := servers.Get(ctx, userNova, s.ID).Extract()
		if gophercloud.ResponseCodeIs(err, http.StatusNotFound) {
			break
		}
		if err != nil || gs.Status != "DELETED" || time.Since(t1) > time.Minute {
			t.Fatalf("GET deleted server: %v, status %v; want 404 within a minute", err, gs)
		}
		wait(ctx, delay)
	}
	t.Logf("404 %s after the listing dropped the server", time.Since(t1).Round(10*time.Millisecond))
	if err := d.Delete(ctx, s.ID); err != nil {
		t.Errorf("second Delete of a gone server: %v, want nil", err)
	}
}

// TestIntegrationServerStopped: a server stopped through Nova (os-stop) is
// listed as stopped with Nova's word SHUTOFF, never as active (capacity)
// or gone; once started again it is active.
func TestIntegrationServerStopped(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	d := newDriver(t, ctx, Config{Cloud: "canopy-a", CloudsFile: cloudsYAML, Network: "none", DefaultImage: "canopy-tiny"})
	s, err := d.Boot(ctx, driver.BootSpec{Name: uniq("itest-stop"), Flavor: "m1.tiny", Metadata: map[string]string{driver.MetaHub: "hub-itest"}})
	if err != nil {
		t.Fatalf("Boot: %v", err)
	}
	deleteOnCleanup(t, d, s.ID)
	waitServer(t, ctx, d, s.ID, "ACTIVE", func(s driver.Server, listed bool) bool {
		if listed && s.Status == driver.StatusError {
			t.Fatalf("server went to ERROR: %s", s.Fault)
		}
		return listed && s.Status == driver.StatusActive
	})
	nova, err := gcos.NewComputeV2(rawProvider(t, ctx, "canopy-a"), gophercloud.EndpointOpts{})
	if err != nil {
		t.Fatal(err)
	}
	if err := servers.Stop(ctx, nova, s.ID).ExtractErr(); err != nil {
		t.Fatalf("os-stop: %v", err)
	}
	var seen []string
	got := waitServer(t, ctx, d, s.ID, "SHUTOFF", func(s driver.Server, listed bool) bool {
		if listed && (len(seen) == 0 || seen[len(seen)-1] != s.CloudStatus) {
			seen = append(seen, s.CloudStatus)
		}
		// On the way Nova may show ACTIVE/powering-off: still active.
		if listed && s.Status != driver.StatusActive && s.Status != driver.StatusStopped {
			t.Fatalf("while stopping: status %s (%s)", s.Status, s.CloudStatus)
		}
		return listed && s.CloudStatus == "SHUTOFF"
	})
	if got.Status != driver.StatusStopped {
		t.Fatalf("stopped server listed as %s (%s)", got.Status, got.CloudStatus)
	}
	t.Logf("cloud statuses seen: %v", seen)
	if err := servers.Start(ctx, nova, s.ID).ExtractErr(); err != nil {
		t.Fatalf("os-start: %v", err)
	}
	waitServer(t, ctx, d, s.ID, "ACTIVE again", func(s driver.Server, listed bool) bool {
		return listed && s.Status == driver.StatusActive && s.CloudStatus == "ACTIVE"
	})
}

func TestIntegrationQuotaExceeded(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	d := newDriver(t, ctx, Config{Cloud: "canopy-b", CloudsFile: cloudsYAML, Network: "none"})
	cores, _ := strconv.Atoi(testbedEnv["B_QUOTA_CORES"])
	if cores >= 8 {
		t.Fatalf("canopy-b cores quota %d; the test needs it below 8 (b8)", cores)
	}
	s, err := d.Boot(ctx, driver.BootSpec{Name: uniq("itest-quota"), Flavor: "b8", Image: "canopy-tiny",
		Metadata: map[string]string{driver.MetaHub: "hub-itest"}})
	if err == nil {
		deleteOnCleanup(t, d, s.ID)
		t.Fatalf("booting b8 past a %d-core quota succeeded: %+v", cores, s)
	}
	if Classify(err) != protocol.ErrClassQuota {
		t.Errorf("class = %q, want quota: %v", Classify(err), err)
	}
	var e *Error
	if !errors.As(err, &e) || e.StatusCode != http.StatusForbidden || !strings.Contains(e.Msg, "Quota exceeded") {
		t.Errorf("error = %#v, want 403 with Nova's message", err)
	}
}

func TestIntegrationNoValidHost(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	d := newDriver(t, ctx, Config{Cloud: "canopy-a", CloudsFile: cloudsYAML, Network: "none"})
	// canopy.nohost asks for more disk than the fake compute node has.
	s, err := d.Boot(ctx, driver.BootSpec{Name: uniq("itest-nohost"), Flavor: "canopy.nohost", Image: "canopy-tiny",
		Metadata: map[string]string{driver.MetaHub: "hub-itest"}})
	if err != nil {
		t.Fatalf("Boot: %v", err)
	}
	deleteOnCleanup(t, d, s.ID)
	got := waitServer(t, ctx, d, s.ID, "ERROR", func(s driver.Server, listed bool) bool {
		if listed && s.Status == driver.StatusActive {
			t.Fatalf("server with an impossible flavor became ACTIVE")
		}
		return listed && s.Status == driver.StatusError && s.Fault != ""
	})
	if !strings.Contains(got.Fault, "No valid host was found") {
		t.Errorf("fault = %q, want Nova's no-valid-host message", got.Fault)
	}
	if c := FaultClass(got.Fault); c != protocol.ErrClassNoHost {
		t.Errorf("FaultClass(%q) = %q, want no_valid_host", got.Fault, c)
	}
}

func TestIntegrationForeignServer(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	d := newDriver(t, ctx, Config{Cloud: "canopy-a", CloudsFile: cloudsYAML})
	// Someone else's server, booted with gophercloud directly: no metadata.
	p := rawProvider(t, ctx, "canopy-a")
	nova, err := gcos.NewComputeV2(p, gophercloud.EndpointOpts{})
	if err != nil {
		t.Fatal(err)
	}
	nova.Microversion = "2.37"
	imageID, err := d.resolveImage(ctx, "canopy-tiny")
	if err != nil {
		t.Fatal(err)
	}
	flavorID, _, err := d.resolveFlavor(ctx, "m1.tiny")
	if err != nil {
		t.Fatal(err)
	}
	name := uniq("itest-foreign")
	fs, err := servers.Create(ctx, nova, servers.CreateOpts{Name: name, ImageRef: imageID, FlavorRef: flavorID, Networks: "none"}, nil).Extract()
	if err != nil {
		t.Fatalf("create foreign server: %v", err)
	}
	deleteOnCleanup(t, d, fs.ID)
	got := waitServer(t, ctx, d, fs.ID, "listing", func(s driver.Server, listed bool) bool { return listed })
	if _, ok := got.Metadata[driver.MetaHub]; ok || got.Name != name {
		t.Errorf("foreign server listed as %+v; want no %s metadata", got, driver.MetaHub)
	}
}

// patternReader yields n deterministic pseudo-random bytes without holding them.
type patternReader struct {
	n, off int64
	seed   [32]byte
	block  []byte
}

func newPatternReader(n int64, seed byte) *patternReader {
	r := &patternReader{n: n}
	r.seed[0] = seed
	return r
}

func (r *patternReader) Read(p []byte) (int, error) {
	if r.off >= r.n {
		return 0, io.EOF
	}
	done := 0
	for done < len(p) && r.off < r.n {
		if len(r.block) == 0 {
			h := sha256.Sum256(append(r.seed[:], byte(r.off>>40), byte(r.off>>32), byte(r.off>>24), byte(r.off>>16), byte(r.off>>8), byte(r.off)))
			r.block = h[:]
		}
		k := copy(p[done:], r.block)
		k = int(min(int64(k), r.n-r.off))
		r.block = r.block[k:]
		done += k
		r.off += int64(k)
	}
	return done, nil
}

func TestIntegrationImageRoundTrip(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	d := newDriver(t, ctx, Config{Cloud: "canopy-a", CloudsFile: cloudsYAML})
	const size = 8<<20 + 123
	want := sha256.New()
	if _, err := io.Copy(want, newPatternReader(size, 7)); err != nil {
		t.Fatal(err)
	}
	wantHex := hex.EncodeToString(want.Sum(nil))
	name := uniq("itest-image")
	meta := images.Image{Name: name, DiskFormat: "raw", ContainerFormat: "bare",
		Checksums: []images.Checksum{{Algorithm: "sha256", Hex: wantHex}}}
	t0 := time.Now()
	im, err := d.UploadImage(ctx, meta, newPatternReader(size, 7))
	if err != nil {
		t.Fatalf("UploadImage: %v", err)
	}
	t.Logf("uploaded %d bytes in %s", size, time.Since(t0).Round(time.Millisecond))
	glance, err := gcos.NewImageV2(rawProvider(t, ctx, "canopy-a"), gophercloud.EndpointOpts{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := gimages.Delete(context.Background(), glance, im.ID).ExtractErr(); err != nil {
			t.Errorf("cleanup: delete image: %v", err)
		}
	})
	if im.Status != images.StatusActive || im.SizeBytes != size || im.Digest("sha256") != wantHex || im.Digest("md5") == "" {
		t.Errorf("uploaded image = %+v", im)
	}

	list, err := d.Images(ctx)
	if err != nil {
		t.Fatalf("Images: %v", err)
	}
	i := slices.IndexFunc(list, func(x images.Image) bool { return x.ID == im.ID })
	if i < 0 || !images.SameBytes(list[i], im) || list[i].Digest("sha256") != wantHex || list[i].Digest("sha512") == "" {
		t.Errorf("listed image: %+v (index %d), want it with md5, sha512 and sha256 like %+v", list, i, im)
	}

	rc, err := d.DownloadImage(ctx, im.ID)
	if err != nil {
		t.Fatalf("DownloadImage: %v", err)
	}
	got := sha256.New()
	n, err := io.Copy(got, rc)
	rc.Close()
	if err != nil || n != size {
		t.Fatalf("download: %d bytes, %v; want %d", n, err, size)
	}
	if h := hex.EncodeToString(got.Sum(nil)); h != wantHex {
		t.Errorf("downloaded sha256 %s, uploaded %s", h, wantHex)
	}

	// A wrong expected digest: refused, and the image does not stay.
	bad := meta
	bad.Name = uniq("itest-badimage")
	bad.Checksums = []images.Checksum{{Algorithm: "sha256", Hex: strings.Repeat("0", 64)}}
	if _, err := d.UploadImage(ctx, bad, newPatternReader(1<<20, 1)); Classify(err) != protocol.ErrClassInvalid {
		t.Errorf("upload with a wrong sha256: class %q (%v), want invalid", Classify(err), err)
	}
	list, err = d.Images(ctx)
	if err != nil {
		t.Fatalf("Images: %v", err)
	}
	if slices.ContainsFunc(list, func(x images.Image) bool { return x.Name == bad.Name }) {
		t.Errorf("image %s with a bad checksum was left behind", bad.Name)
	}

	if _, err := d.DownloadImage(ctx, "00000000-0000-0000-0000-000000000000"); Classify(err) != protocol.ErrClassInvalid {
		t.Errorf("download of a missing image: class %q (%v), want invalid", Classify(err), err)
	}
}

// TestIntegrationRevokedApplicationCredential: a credential that no longer
// exists (revoked, or expired and purged) gives a clear authentication
// error that carries no secret.
func TestIntegrationRevokedApplicationCredential(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	p := rawProvider(t, ctx, "canopy-a")
	ident, err := gcos.NewIdentityV3(p, gophercloud.EndpointOpts{})
	if err != nil {
		t.Fatal(err)
	}
	user, err := p.GetAuthResult().(tokens.CreateResult).ExtractUser()
	if err != nil {
		t.Fatal(err)
	}
	ac, err := applicationcredentials.Create(ctx, ident, user.ID, applicationcredentials.CreateOpts{Name: uniq("itest-revoked")}).Extract()
	if err != nil {
		t.Fatalf("create application credential: %v", err)
	}
	if err := applicationcredentials.Delete(ctx, ident, user.ID, ac.ID).ExtractErr(); err != nil {
		t.Fatalf("revoke: %v", err)
	}
	_, err = New(ctx, Config{AuthURL: keystoneURL, ApplicationCredentialID: ac.ID, ApplicationCredentialSecret: Secret(ac.Secret)}, nil)
	if err == nil {
		t.Fatal("a revoked application credential authenticated")
	}
	if Classify(err) != protocol.ErrClassAuth || !strings.Contains(err.Error(), "authenticate") {
		t.Errorf("revoked credential: class %q, error %v", Classify(err), err)
	}
	if strings.Contains(fmt.Sprintf("%v %+v %#v", err, err, err), ac.Secret) {
		t.Errorf("error leaks the secret: %v", err)
	}
}
