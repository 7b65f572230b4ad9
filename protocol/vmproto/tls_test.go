package vmproto_test

import (
	"crypto/tls"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/canopy-grid/canopy/internal/pkitest"
	"github.com/canopy-grid/canopy/protocol/pki"
	"github.com/canopy-grid/canopy/protocol/vmproto"
)

// TestClientTLS: a VM reaches its site's VM endpoint, and nothing else the
// hub's CA (or another CA) issued: not another site's endpoint, not the
// hub, not an agent's client certificate; and only over TLS 1.3.
func TestClientTLS(t *testing.T) {
	ca := pkitest.New(t)
	other := pkitest.New(t)
	caKey, err := pki.LoadCA(ca.Dir)
	if err != nil {
		t.Fatal(err)
	}
	issued := func(f func() (*pki.Issued, error)) tls.Certificate {
		iss, err := f()
		if err != nil {
			t.Fatal(err)
		}
		c, err := tls.X509KeyPair(iss.CertPEM, iss.KeyPEM)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	now := time.Now()
	hubCert := issued(func() (*pki.Issued, error) { return caKey.IssueServer([]string{"127.0.0.1"}, now, now.Add(time.Hour)) })
	agentCert := issued(func() (*pki.Issued, error) { return caKey.IssueAgent("west", now.Add(-time.Hour), now.Add(time.Hour)) })
	tests := []struct {
		name   string
		server *tls.Config
		want   string // "" for success
	}{
		{"the site's VM endpoint", vmproto.ServerTLS(ca.VMEndpoint(t, "west")), ""},
		{"another site's VM endpoint", vmproto.ServerTLS(ca.VMEndpoint(t, "east")), "not site west's VM endpoint certificate"},
		{"the hub", vmproto.ServerTLS(hubCert), "not site west's VM endpoint certificate"},
		{"an agent's client certificate", vmproto.ServerTLS(agentCert), "failed to verify certificate"},
		{"another CA", vmproto.ServerTLS(other.VMEndpoint(t, "west")), "unknown authority"},
		{"a name the certificate lacks", vmproto.ServerTLS(ca.VMEndpoint(t, "west", "10.9.9.9")), "10.9.9.9"},
		{"TLS 1.2 only", &tls.Config{Certificates: []tls.Certificate{ca.VMEndpoint(t, "west")}, MaxVersion: tls.VersionTLS12}, "protocol version"},
	}
	client := ca.Client(t, "west")
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { _, _ = io.WriteString(w, "ok") }))
			srv.TLS = tc.server
			srv.Config.ErrorLog = log.New(io.Discard, "", 0)
			srv.StartTLS()
			defer srv.Close()
			resp, err := client.Get(srv.URL)
			if tc.want == "" {
				if err != nil {
					t.Fatal(err)
				}
				resp.Body.Close()
				if resp.TLS.Version != tls.VersionTLS13 {
					t.Errorf("TLS version %x", resp.TLS.Version)
				}
				return
			}
			if err == nil {
				resp.Body.Close()
				t.Fatal("connected")
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err %v, want %q", err, tc.want)
			}
		})
	}
}

// TestCheckEndpointCert: what an agent checks of its VM endpoint
// certificate at start, so that a certificate its VMs would refuse stops
// it with the fix named.
func TestCheckEndpointCert(t *testing.T) {
	ca := pkitest.New(t)
	dir := t.TempDir()
	certFile, keyFile := ca.VMEndpointFiles(t, dir, "west", "10.0.0.5", "agent.west.example")
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	agentCrt, agentKey := ca.AgentFiles(t, dir, "west")
	agentCert, err := tls.LoadX509KeyPair(agentCrt, agentKey)
	if err != nil {
		t.Fatal(err)
	}
	otherCA, err := os.ReadFile(filepath.Join(pkitest.New(t).Dir, pki.CACertFile))
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name       string
		cert       tls.Certificate
		ca         string
		site, host string
		want       string
	}{
		{"address", cert, ca.PEM, "west", "10.0.0.5", ""},
		{"name", cert, ca.PEM, "west", "agent.west.example", ""},
		{"another host", cert, ca.PEM, "west", "10.0.0.6", "--vm-host 10.0.0.6"},
		{"another site", cert, ca.PEM, "east", "10.0.0.5", "not site east's"},
		{"another CA", cert, string(otherCA), "west", "10.0.0.5", "unknown authority"},
		{"client certificate", agentCert, ca.PEM, "west", "10.0.0.5", "VMs would refuse it"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := vmproto.CheckEndpointCert(tc.cert, tc.ca, tc.site, tc.host)
			if tc.want == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err %v, want %q", err, tc.want)
			}
		})
	}
}
