package vmproto

import (
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/canopy-grid/canopy/protocol/userdata"
)

func TestRenderParseRoundTrip(t *testing.T) {
	for name, s := range map[string]Settings{"minimal": minimalSettings(), "full": fullSettings()} {
		t.Run(name, func(t *testing.T) {
			s.CheckinEvery = 3 * time.Second
			ud, err := RenderUserData(s)
			if err != nil {
				t.Fatal(err)
			}
			if !strings.HasPrefix(string(ud), "#cloud-config\n") {
				t.Fatalf("user-data starts %q", ud[:20])
			}
			if err := userdata.CheckCloudConfig(ud); err != nil {
				t.Fatal(err)
			}
			got, err := ParseUserData(ud)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, s) {
				t.Fatalf("round trip:\n got %+v\nwant %+v", got, s)
			}
		})
	}
}

// TestParseUserDataRetiredSecrets: user-data from an older agent, which
// put secrets into it (the check-in token, a site-wide IDTOKEN, the pool
// signing key, the gossip key), is refused naming the key, not half used.
func TestParseUserDataRetiredSecrets(t *testing.T) {
	entry := func(content string) string {
		return "#cloud-config\nwrite_files:\n- path: " + SettingsPath + "\n  content: |\n" + indent(content) + "\n"
	}
	good := "agent_url: https://a:1\nagent_ca: x\nenroll_token: t\ncondor_host: cm\nsite: s\ngroup: g\nvm_type: v\n"
	tests := []struct{ name, in, want string }{
		{"the first agent's format", readFile(t, "testdata/userdata/skeleton.yaml"), "key token came from an older site agent"},
		{"site-wide IDTOKEN", entry(good + "condor_idtoken: a.b.c\n"), "key condor_idtoken"},
		{"pool signing key", entry(good + "pool_signing_key: c2VjcmV0\n"), "key pool_signing_key"},
		{"gossip key", entry(good + "gossip_key: a2V5\n"), "key gossip_key"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParseUserData([]byte(tt.in))
			if err == nil || !strings.Contains(err.Error(), tt.want) || !strings.Contains(err.Error(), "upgrade the site agent") {
				t.Fatalf("err %v, want one saying %q", err, tt.want)
			}
		})
	}
}

func TestParseUserDataMultipart(t *testing.T) {
	own, err := RenderUserData(fullSettings())
	if err != nil {
		t.Fatal(err)
	}
	ud, err := userdata.Compose([]userdata.Part{
		{Type: userdata.TypeShellScript, Filename: "first.sh", Content: []byte("#!/bin/sh\ntrue\n")},
		{Type: userdata.TypeCloudConfig, Filename: "site.yaml", Content: []byte("#cloud-config\nwrite_files:\n- path: /etc/motd\n  content: hi\n")},
		{Type: userdata.TypeCloudConfig, Filename: "canopy.yaml", Content: own},
	})
	if err != nil {
		t.Fatal(err)
	}
	s, err := ParseUserData(ud)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(s, fullSettings()) {
		t.Fatalf("got %+v", s)
	}
}

func TestParseUserDataErrors(t *testing.T) {
	entry := func(content string) string {
		return "#cloud-config\nwrite_files:\n- path: " + SettingsPath + "\n  content: |\n" + indent(content) + "\n"
	}
	good := "agent_url: https://a:1\nagent_ca: |\n" + indentBy(testCA, "  ") + "\nenroll_token: t\ncondor_host: cm\nsite: s\ngroup: g\nvm_type: v\n"
	other := string(must(userdata.Compose([]userdata.Part{
		{Type: userdata.TypeCloudConfig, Content: []byte(entry(good))},
		{Type: userdata.TypeCloudConfig, Content: []byte(entry(good))},
	})))
	tests := []struct{ name, in, want string }{
		{"script only", "#!/bin/sh\n", "no write_files entry"},
		{"no entry", "#cloud-config\nwrite_files:\n- path: /etc/motd\n  content: x\n", "no write_files entry"},
		{"write_files not a list", "#cloud-config\nwrite_files: 3\n", "unreadable cloud-config"},
		{"two entries", other, "2 write_files entries"},
		{"unknown key", entry(good + "colour: blue\n"), `unknown key`},
		{"missing fields", entry("site: s\n"), "lack agent_url, agent_ca, enroll_token, condor_host"},
		{"alias", entry("a: &x https://a:1\nagent_url: *x\n"), "YAML aliases"},
		{"bad duration", entry(good + "checkin_every: soon\n"), "duration"},
		{"bad agent url", entry(strings.Replace(good, "https://a:1", "ftp://a", 1)), "not an https://host:port URL"},
		{"plain http agent url", entry(strings.Replace(good, "https://a:1", "http://a:1", 1)), "TLS only"},
		{"agent CA not PEM", entry(strings.Replace(good, "-----BEGIN", "-----BOGUS", 1)), "agent_ca"},
		{"group with macro", entry(strings.Replace(good, "group: g", "group: $(HOME)", 1)), "group"},
		{"bad base64 entry", "#cloud-config\nwrite_files:\n- path: " + SettingsPath + "\n  encoding: b64\n  content: '!!'\n", "bad base64"},
		{"gzip entry", "#cloud-config\nwrite_files:\n- path: " + SettingsPath + "\n  encoding: gzip\n  content: x\n", "unsupported encoding"},
		{"not user-data", "hello\n", "neither"},
		{"settings not a mapping", entry("- a\n- b"), "want a mapping"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParseUserData([]byte(tt.in))
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err %v, want one containing %q", err, tt.want)
			}
		})
	}
}

func indent(s string) string { return indentBy(s, "    ") }

func indentBy(s, by string) string {
	lines := strings.Split(strings.TrimSuffix(s, "\n"), "\n")
	for i := range lines {
		lines[i] = by + lines[i]
	}
	return strings.Join(lines, "\n")
}

func must(b []byte, err error) []byte {
	if err != nil {
		panic(err)
	}
	return b
}

func TestSettingsValidate(t *testing.T) {
	tests := []struct {
		name string
		edit func(*Settings)
		want string
	}{
		{"ok", func(*Settings) {}, ""},
		{"condor host with space", func(s *Settings) { s.CondorHost = "cm x" }, "condor_host"},
		{"condor host with newline", func(s *Settings) { s.CondorHost = "cm\nSTART=True" }, "condor_host"},
		{"site with quote", func(s *Settings) { s.Site = `e"ast` }, "site"},
		{"vm type too long", func(s *Settings) { s.VMType = strings.Repeat("a", 129) }, "vm_type"},
		{"negative checkin", func(s *Settings) { s.CheckinEvery = -time.Second }, "negative"},
		{"hs06 rating", func(s *Settings) { s.HS06PerCore = 10.5 }, ""},
		{"negative hs06 rating", func(s *Settings) { s.HS06PerCore = -1 }, "hs06_per_core"},
		{"absurd hs06 rating", func(s *Settings) { s.HS06PerCore = 1e12 }, "hs06_per_core"},
		{"enroll token with space", func(s *Settings) { s.EnrollToken = "a b" }, "enroll_token"},
		{"enroll token too long", func(s *Settings) { s.EnrollToken = strings.Repeat("a", maxToken+1) }, "enroll_token"},
		{"agent CA empty of certificates", func(s *Settings) { s.AgentCA = "hello" }, "no PEM certificate"},
		{"agent CA with a key", func(s *Settings) { s.AgentCA = "-----BEGIN EC PRIVATE KEY-----\nAAAA\n-----END EC PRIVATE KEY-----\n" }, "CERTIFICATE blocks only"},
		{"agent CA with trailing text", func(s *Settings) { s.AgentCA += "junk" }, "text after"},
		{"agent CA too big", func(s *Settings) { s.AgentCA = strings.Repeat(testCA, 40) }, "over"},
		{"agent URL with user", func(s *Settings) { s.AgentURL = "https://u:p@10.0.0.5:7080" }, "agent_url"},
		{"trust domain with space", func(s *Settings) { s.CondorTrustDomain = "a b" }, "condor_trust_domain"},
		{"uid domain with macro", func(s *Settings) { s.CondorUIDDomain = "$(HOME)" }, "condor_uid_domain"},
		{"ccb with newline", func(s *Settings) { s.CondorCCBAddress = "cm\nSTART=True" }, "condor_ccb_address"},
		{"gluster no servers", func(s *Settings) { s.Gluster.Servers = nil }, "servers"},
		{"gluster ipv6", func(s *Settings) { s.Gluster.Servers = []string{"[::1]"} }, "IPv4"},
		{"gluster bad volume", func(s *Settings) { s.Gluster.Volume = "a b" }, "volume"},
		{"gluster relative mount", func(s *Settings) { s.Gluster.MountPoint = "mnt/x" }, "mount point"},
		{"gluster unclean mount", func(s *Settings) { s.Gluster.MountPoint = "/mnt/../etc" }, "mount point"},
		{"gluster system mount", func(s *Settings) { s.Gluster.MountPoint = "/etc/cron.d" }, "system directory"},
		{"proxy not http", func(s *Settings) { s.Proxies = [][]string{{"https://s:3128"}} }, "http://host:port"},
		{"proxy with separator", func(s *Settings) { s.Proxies = [][]string{{"http://a:3128|http://b:3128"}} }, "http://host:port"},
		{"proxy without port", func(s *Settings) { s.Proxies = [][]string{{"http://a"}} }, "http://host:port"},
		{"proxy port zero", func(s *Settings) { s.Proxies = [][]string{{"http://a:0"}} }, "port out of range"},
		{"DIRECT listed", func(s *Settings) { s.Proxies = [][]string{{"DIRECT"}} }, "http://host:port"},
		{"empty group", func(s *Settings) { s.Proxies = [][]string{{}} }, "empty proxy group"},
		{"too many groups", func(s *Settings) { s.Proxies = make([][]string, maxProxyGroups+1) }, "limit"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := fullSettings()
			tt.edit(&s)
			err := s.Validate()
			if tt.want == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err %v, want one containing %q", err, tt.want)
			}
			if _, rerr := RenderUserData(s); rerr == nil {
				t.Fatal("RenderUserData accepted invalid settings")
			}
		})
	}
}

// FuzzParseUserData: never a panic; settings it accepts are valid and
// survive a render/parse round trip.
func FuzzParseUserData(f *testing.F) {
	f.Fuzz(func(t *testing.T, b []byte) {
		s, err := ParseUserData(b)
		if err != nil {
			return
		}
		if err := s.Validate(); err != nil {
			t.Fatalf("accepted invalid settings: %v", err)
		}
		ud, err := RenderUserData(s)
		if err != nil {
			t.Fatalf("render accepted settings: %v", err)
		}
		back, err := ParseUserData(ud)
		if err != nil {
			t.Fatalf("parse rendered settings: %v", err)
		}
		if !reflect.DeepEqual(back, s) {
			t.Fatalf("round trip changed settings:\n%+v\n%+v", back, s)
		}
	})
}
