package openstack

import (
	"bytes"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/sirupsen/logrus"
	"gopkg.in/yaml.v3"

	"github.com/canopy-grid/canopy/deploy/config"
	"github.com/canopy-grid/canopy/protocol"
)

const (
	testPassword = "pa55-Very-Secret"
	testACSecret = "ac-Secret-Value-9"
)

func validPassword() Config {
	return Config{AuthURL: "https://keystone.example.org:5000/v3", Username: "canopy", Password: testPassword, ProjectName: "atlas"}
}

func TestConfigFromYAML(t *testing.T) {
	t.Parallel()
	doc := `
openstack:
  auth_url: https://keystone.example.org:5000/v3
  region: RegionTwo
  interface: internal
  username: canopy
  password: ` + testPassword + `
  user_domain_name: Users
  project_name: atlas
  project_domain_id: abc123
  key_name: canopy-key
  network: private-net
  security_groups: [default, condor]
  default_image: worker-el9
  default_flavor: c8.m32
  availability_zone: az1
  keep_alive: 10m
  cores_soft_max: 400
  cores_max: 500
  ram_max_mib: 2000000
  enabled: false
  max_concurrent_requests: 4
  request_timeout: 45s
  max_retries: 2
  max_retry_wait: 10s
  credential_expiry_warning: 168h
  compute_microversion: "2.60"
`
	var wrapper struct {
		OpenStack Config `yaml:"openstack"`
	}
	if err := config.Decode("agent.yaml", []byte(doc), &wrapper); err != nil {
		t.Fatalf("decode: %v", err)
	}
	c := wrapper.OpenStack
	if err := c.Validate(); err != nil {
		t.Fatalf("Validate: %v", err)
	}
	want := Config{
		AuthURL: "https://keystone.example.org:5000/v3", Region: "RegionTwo", Interface: "internal",
		Username: "canopy", Password: testPassword, UserDomainName: "Users", ProjectName: "atlas", ProjectDomainID: "abc123",
		KeyName: "canopy-key", Network: "private-net", SecurityGroups: []string{"default", "condor"},
		DefaultImage: "worker-el9", DefaultFlavor: "c8.m32", AvailabilityZone: "az1", KeepAlive: 10 * time.Minute,
		CoresSoftMax: 400, CoresMax: 500, RAMMaxMiB: 2000000, MaxConcurrentRequests: 4, RequestTimeout: 45 * time.Second,
		MaxRetries: 2, MaxRetryWait: 10 * time.Second, CredentialExpiryWarning: 168 * time.Hour, ComputeMicroversion: "2.60",
	}
	if c.IsEnabled() {
		t.Error("enabled: false decoded as enabled")
	}
	c.Enabled = nil
	if !reflect.DeepEqual(c, want) {
		t.Errorf("decoded\n%s\nwant\n%s", fieldsOf(c), fieldsOf(want))
	}

	// A typo is an error naming the key.
	err := config.Decode("agent.yaml", []byte("openstack:\n  pasword: x\n"), &wrapper)
	if err == nil || !strings.Contains(err.Error(), "openstack.pasword") {
		t.Errorf("typo: %v", err)
	}
}

// fieldsOf prints a config with its secrets, for test failure messages only.
func fieldsOf(c Config) string {
	type plain Config
	p := plain(c)
	return fmt.Sprintf("%+v password=%s", p, c.Password.Reveal())
}

func TestConfigValidate(t *testing.T) {
	t.Parallel()
	appCred := Config{AuthURL: "http://127.0.0.1:5000/v3", ApplicationCredentialID: "id", ApplicationCredentialSecret: "s"}
	tests := []struct {
		name string
		edit func(*Config)
		base Config
		errs []string // substrings; none means valid
	}{
		{name: "password ok", base: validPassword()},
		{name: "application credential ok", base: appCred},
		{name: "clouds.yaml ok", base: Config{Cloud: "canopy-a", CloudsFile: "/etc/openstack/clouds.yaml", Region: "R1"}},
		{name: "nothing", base: Config{}, errs: []string{"openstack.auth_url: is required", "openstack.username", "openstack.password", "openstack.project_name"}},
		{name: "bad url", base: validPassword(), edit: func(c *Config) { c.AuthURL = "keystone:5000" }, errs: []string{"not an http(s) URL"}},
		{name: "both methods", base: appCred, edit: func(c *Config) { c.Password = "p" }, errs: []string{"openstack.password: must not be set together with an application credential"}},
		{name: "appcred without secret", base: appCred, edit: func(c *Config) { c.ApplicationCredentialSecret = "" }, errs: []string{"application_credential_secret: is required"}},
		{name: "appcred by name without user", base: appCred, edit: func(c *Config) { c.ApplicationCredentialID, c.ApplicationCredentialName = "", "n" }, errs: []string{"openstack.username: is required to find application credential"}},
		{name: "appcred with project", base: appCred, edit: func(c *Config) { c.ProjectName = "p" }, errs: []string{"bound to its project"}},
		{name: "cloud plus credentials", base: Config{Cloud: "c", Password: "p", AuthURL: "http://x"}, errs: []string{"openstack.auth_url: must not be set together with cloud", "openstack.password: must not"}},
		{name: "clouds file alone", base: validPassword(), edit: func(c *Config) { c.CloudsFile = "/x" }, errs: []string{"clouds_file"}},
		{name: "two domains", base: validPassword(), edit: func(c *Config) { c.UserDomainName, c.UserDomainID = "a", "b" }, errs: []string{"user_domain_id"}},
		{name: "bad interface", base: validPassword(), edit: func(c *Config) { c.Interface = "private" }, errs: []string{"openstack.interface"}},
		{name: "negatives", base: validPassword(), edit: func(c *Config) {
			c.CoresMax, c.RAMMaxMiB, c.KeepAlive, c.MaxConcurrentRequests, c.MaxRetries = -1, -2, -time.Second, -1, -2
		}, errs: []string{"cores_max", "ram_max_mib", "keep_alive", "max_concurrent_requests", "max_retries"}},
		{name: "soft above hard", base: validPassword(), edit: func(c *Config) { c.CoresSoftMax, c.CoresMax = 10, 5 }, errs: []string{"cores_soft_max: 10 is above cores_max 5"}},
		{name: "too much concurrency", base: validPassword(), edit: func(c *Config) { c.MaxConcurrentRequests = 1000 }, errs: []string{"more than 256"}},
		{name: "bad microversion", base: validPassword(), edit: func(c *Config) { c.ComputeMicroversion = "3.1" }, errs: []string{"compute_microversion"}},
		{name: "empty security group", base: validPassword(), edit: func(c *Config) { c.SecurityGroups = []string{"default", " "} }, errs: []string{"security_groups[1]"}},
	}
	for _, tc := range tests {
		c := tc.base
		if tc.edit != nil {
			tc.edit(&c)
		}
		err := c.Validate()
		if len(tc.errs) == 0 {
			if err != nil {
				t.Errorf("%s: unexpected error %v", tc.name, err)
			}
			continue
		}
		if err == nil {
			t.Errorf("%s: no error, want %q", tc.name, tc.errs)
			continue
		}
		for _, want := range tc.errs {
			if !strings.Contains(err.Error(), want) {
				t.Errorf("%s: error %q lacks %q", tc.name, err, want)
			}
		}
		if strings.Contains(err.Error(), testPassword) {
			t.Errorf("%s: error leaks the password", tc.name)
		}
	}
}

// TestConfigRedaction prints, marshals and logs configs every way the agent
// might, and checks that no secret comes out.
func TestConfigRedaction(t *testing.T) {
	t.Parallel()
	pw := validPassword()
	ac := Config{AuthURL: "http://127.0.0.1:5000/v3", ApplicationCredentialID: "id", ApplicationCredentialSecret: testACSecret}
	for _, c := range []Config{pw, ac} {
		var out []string
		out = append(out, c.String(), c.GoString(), fmt.Sprint(c), fmt.Sprintf("%v|%+v|%#v|%s|%q", c, c, c, c, c))
		out = append(out, fmt.Sprintf("%v %+v %#v", &c, &c, &c))
		out = append(out, fmt.Sprintf("%v %#v %s", c.Password, c.ApplicationCredentialSecret, c.ApplicationCredentialSecret))
		type wrapper struct{ Cloud Config }
		out = append(out, fmt.Sprintf("%+v %#v", wrapper{c}, wrapper{c}))
		js, err := json.Marshal(c)
		if err != nil {
			t.Fatal(err)
		}
		ym, err := yaml.Marshal(c)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, string(js), string(ym))
		for _, f := range []logrus.Formatter{&logrus.JSONFormatter{}, &logrus.TextFormatter{DisableColors: true}} {
			var buf bytes.Buffer
			l := logrus.New()
			l.Out, l.Formatter = &buf, f
			l.WithField("cloud", c).WithField("password", c.Password).Info("starting")
			out = append(out, buf.String())
		}
		for _, s := range out {
			if strings.Contains(s, testPassword) || strings.Contains(s, testACSecret) {
				t.Errorf("secret leaked: %s", s)
			}
		}
		if !strings.Contains(string(ym), redacted) && !strings.Contains(string(js), redacted) {
			t.Errorf("marshalled config does not mark the secret as redacted: %s", js)
		}
	}
	if pw.Password.Reveal() != testPassword {
		t.Error("Reveal lost the secret")
	}
}

func TestFillFromEnv(t *testing.T) {
	t.Parallel()
	env := map[string]string{
		"OS_AUTH_URL": "http://127.0.0.1:5000/v3", "OS_USERNAME": "canopy", "OS_PASSWORD": testPassword,
		"OS_PROJECT_NAME": "atlas", "OS_USER_DOMAIN_NAME": "Default", "OS_PROJECT_DOMAIN_NAME": "Default", "OS_REGION_NAME": "R1",
	}
	lookup := func(k string) (string, bool) { v, ok := env[k]; return v, ok }

	var c Config
	c.FillFromEnv(lookup)
	if err := c.Validate(); err != nil || c.Password.Reveal() != testPassword || c.Region != "R1" || c.ProjectName != "atlas" {
		t.Errorf("filled %v, %v", c, err)
	}

	// A config naming its own keystone takes only the secret from the environment.
	c = Config{AuthURL: "https://other/v3", Username: "u", ProjectName: "p"}
	c.FillFromEnv(lookup)
	if c.Password.Reveal() != testPassword || c.Region != "" || c.AuthURL != "https://other/v3" {
		t.Errorf("partial fill: %v", c)
	}

	// OS_CLOUD wins over the rest.
	env["OS_CLOUD"], env["OS_CLIENT_CONFIG_FILE"] = "canopy-a", "/etc/clouds.yaml"
	c = Config{}
	c.FillFromEnv(lookup)
	if c.Cloud != "canopy-a" || c.CloudsFile != "/etc/clouds.yaml" || c.AuthURL != "" || c.Password != "" {
		t.Errorf("clouds fill: %v", c)
	}
	if err := c.Validate(); err != nil {
		t.Errorf("clouds fill invalid: %v", err)
	}
}

func TestNewFromCloudsYAMLAndCA(t *testing.T) {
	t.Parallel()
	f := newFakeCloud(t)
	dir := t.TempDir()
	path := filepath.Join(dir, "clouds.yaml")
	yml := fmt.Sprintf("clouds:\n  fake:\n    auth:\n      auth_url: %s/v3\n      username: %s\n      password: %s\n      project_name: %s\n      user_domain_name: Default\n      project_domain_name: Default\n    region_name: RegionOne\n",
		f.srv.URL, fakeUser, f.password, fakeProject)
	if err := os.WriteFile(path, []byte(yml), 0o600); err != nil {
		t.Fatal(err)
	}
	d, err := New(t.Context(), Config{Cloud: "fake", CloudsFile: path}, nil)
	if err != nil {
		t.Fatalf("New from clouds.yaml: %v", err)
	}
	if _, err := d.Flavors(t.Context()); err != nil {
		t.Fatal(err)
	}

	_, err = New(t.Context(), Config{Cloud: "absent", CloudsFile: path}, nil)
	if Classify(err) != protocol.ErrClassInvalid || !strings.Contains(err.Error(), `"absent"`) {
		t.Errorf("missing cloud entry: %v (%s)", err, Classify(err))
	}

	bad := filepath.Join(dir, "ca.pem")
	os.WriteFile(bad, []byte("not a certificate"), 0o600)
	cfg := validPassword()
	cfg.CACertFile = bad
	if _, err := New(t.Context(), cfg, nil); err == nil || !strings.Contains(err.Error(), "no PEM certificate") {
		t.Errorf("bad CA file: %v", err)
	}
}

func TestCACertFile(t *testing.T) {
	t.Parallel()
	f := startFakeCloud(t, true)
	cfg := f.config()
	_, err := New(t.Context(), cfg, nil)
	if Classify(err) != protocol.ErrClassInvalid || !strings.Contains(err.Error(), "ca_cert_file") {
		t.Fatalf("untrusted certificate: %v (%s), want invalid naming ca_cert_file", err, Classify(err))
	}
	if f.count("POST /v3/auth/tokens") != 0 {
		t.Error("a request got through an untrusted TLS connection")
	}
	ca := filepath.Join(t.TempDir(), "ca.pem")
	cert := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: f.srv.Certificate().Raw})
	if err := os.WriteFile(ca, cert, 0o600); err != nil {
		t.Fatal(err)
	}
	cfg.CACertFile = ca
	d, err := New(t.Context(), cfg, nil)
	if err != nil {
		t.Fatalf("with ca_cert_file: %v", err)
	}
	if _, err := d.Limits(t.Context()); err != nil {
		t.Fatal(err)
	}
}
