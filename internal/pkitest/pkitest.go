// Package pkitest gives tests a certificate authority like the hub's
// (protocol/pki) and site agents' VM endpoint certificates from it, so that
// tests talk to VM endpoints over TLS exactly as VMs do.
package pkitest

import (
	"crypto/tls"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/canopy-grid/canopy/protocol/pki"
	"github.com/canopy-grid/canopy/protocol/vmproto"
)

// CA is a test CA in a temporary directory.
type CA struct {
	// Dir holds ca.crt and ca.key (pki's layout).
	Dir string
	// PEM is the CA certificate, as VMs receive it in their user-data.
	PEM string
	ca  *pki.CA
}

// New creates a CA for the test.
func New(t testing.TB) *CA {
	t.Helper()
	dir := t.TempDir()
	if err := pki.InitCA(dir, []string{"127.0.0.1", "localhost"}, time.Now()); err != nil {
		t.Fatal(err)
	}
	ca, err := pki.LoadCA(dir)
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(dir, pki.CACertFile))
	if err != nil {
		t.Fatal(err)
	}
	return &CA{Dir: dir, PEM: string(b), ca: ca}
}

// VMEndpoint issues site's VM endpoint certificate for hosts (default
// 127.0.0.1 and localhost).
func (c *CA) VMEndpoint(t testing.TB, site string, hosts ...string) tls.Certificate {
	t.Helper()
	if len(hosts) == 0 {
		hosts = []string{"127.0.0.1", "localhost"}
	}
	iss, err := c.ca.IssueAgentVM(site, hosts, time.Now().Add(-time.Hour), time.Now().Add(24*time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	cert, err := tls.X509KeyPair(iss.CertPEM, iss.KeyPEM)
	if err != nil {
		t.Fatal(err)
	}
	return cert
}

// VMEndpointFiles writes site's VM endpoint certificate and key into dir
// and returns their paths (an agent config's vm_cert and vm_key).
func (c *CA) VMEndpointFiles(t testing.TB, dir, site string, hosts ...string) (certFile, keyFile string) {
	t.Helper()
	if len(hosts) == 0 {
		hosts = []string{"127.0.0.1", "localhost"}
	}
	iss, err := c.ca.IssueAgentVM(site, hosts, time.Now().Add(-time.Hour), time.Now().Add(24*time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile = filepath.Join(dir, site+"-vm.crt"), filepath.Join(dir, site+"-vm.key")
	if err := os.WriteFile(certFile, iss.CertPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, iss.KeyPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	return certFile, keyFile
}

// AgentFiles writes site's agent client certificate and key into dir and
// returns their paths (an agent config's hub.cert and hub.key).
func (c *CA) AgentFiles(t testing.TB, dir, site string) (certFile, keyFile string) {
	t.Helper()
	iss, err := c.ca.IssueAgent(site, time.Now().Add(-time.Hour), time.Now().Add(24*time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile = filepath.Join(dir, site+".crt"), filepath.Join(dir, site+".key")
	if err := os.WriteFile(certFile, iss.CertPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, iss.KeyPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	return certFile, keyFile
}

// CAFile is the CA certificate's path.
func (c *CA) CAFile() string { return filepath.Join(c.Dir, pki.CACertFile) }

// Server starts h on 127.0.0.1 over TLS with site's VM endpoint
// certificate, as an agent's VM endpoint, closed when the test ends.
func (c *CA) Server(t testing.TB, site string, h http.Handler) *httptest.Server {
	t.Helper()
	srv := httptest.NewUnstartedServer(h)
	srv.TLS = vmproto.ServerTLS(c.VMEndpoint(t, site))
	srv.Config.ErrorLog = log.New(io.Discard, "", 0) // refused handshakes are what some tests are about
	srv.StartTLS()
	t.Cleanup(srv.Close)
	return srv
}

// Client is an HTTP client that trusts site's VM endpoint as a VM does
// (vmproto.ClientTLS).
func (c *CA) Client(t testing.TB, site string) *http.Client {
	t.Helper()
	conf, err := vmproto.ClientTLS(c.PEM, site)
	if err != nil {
		t.Fatal(err)
	}
	return &http.Client{Transport: &http.Transport{TLSClientConfig: conf}, Timeout: 10 * time.Second}
}
