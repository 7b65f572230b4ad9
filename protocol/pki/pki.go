// Package pki is the hub's small certificate authority: it creates the CA,
// issues the hub's server certificate and one client certificate per site
// agent (the site name is the agent's identity), and checks a peer's
// certificate chain, validity and revocation with a reason fit for a log line.
package pki

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"time"
)

// Organizational units of the certificates the CA issues to site agents.
const (
	// OUAgent marks an agent's client certificate (its identity towards
	// the hub).
	OUAgent = "site-agent"
	// OUAgentVM marks an agent's VM endpoint certificate (server
	// authentication towards its VMs).
	OUAgentVM = "site-agent-vm"
	// OUAdmin marks an admin's client certificate (hub tls issue-admin):
	// it authenticates to the hub's admin listener, never as an agent.
	OUAdmin = "canopy-admin"
)

// File names inside a PKI directory.
const (
	CACertFile = "ca.crt"
	CAKeyFile  = "ca.key"
	HubCert    = "hub.crt"
	HubKey     = "hub.key"
)

// siteRE is what a site name may look like: it becomes a certificate subject
// and part of server names, so keep it DNS-label-like.
var siteRE = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$`)

// ValidSite reports whether name can be a site name.
func ValidSite(name string) error {
	if !siteRE.MatchString(name) {
		return fmt.Errorf("site name %q: want 1-63 lowercase letters, digits or '-', not starting or ending with '-'", name)
	}
	return nil
}

// CA is a loaded certificate authority.
type CA struct {
	Cert *x509.Certificate
	Key  *ecdsa.PrivateKey
}

// Issued is a certificate and key in PEM form.
type Issued struct {
	CertPEM []byte
	KeyPEM  []byte
	Serial  *big.Int
}

// InitCA creates a new CA and the hub's server certificate in dir. It refuses
// to overwrite an existing CA. hosts are the names and addresses agents dial
// the hub by.
func InitCA(dir string, hosts []string, now time.Time) error {
	if _, err := os.Stat(filepath.Join(dir, CAKeyFile)); err == nil {
		return fmt.Errorf("init CA in %s: a CA already exists; remove it first to start over", dir)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("init CA: %w", err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return fmt.Errorf("init CA: generate key: %w", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          newSerial(),
		Subject:               pkix.Name{CommonName: "Canopy hub CA", Organization: []string{"Canopy"}},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.AddDate(10, 0, 0),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return fmt.Errorf("init CA: create certificate: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return fmt.Errorf("init CA: %w", err)
	}
	ca := &CA{Cert: cert, Key: key}
	if err := writePEM(filepath.Join(dir, CACertFile), "CERTIFICATE", der, 0o644); err != nil {
		return err
	}
	if err := writeKey(filepath.Join(dir, CAKeyFile), key); err != nil {
		return err
	}
	hub, err := ca.IssueServer(hosts, now, now.AddDate(2, 0, 0))
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, HubCert), hub.CertPEM, 0o644); err != nil {
		return fmt.Errorf("init CA: %w", err)
	}
	if err := os.WriteFile(filepath.Join(dir, HubKey), hub.KeyPEM, 0o600); err != nil {
		return fmt.Errorf("init CA: %w", err)
	}
	return nil
}

// LoadCA reads the CA certificate and key from dir.
func LoadCA(dir string) (*CA, error) {
	cert, err := LoadCert(filepath.Join(dir, CACertFile))
	if err != nil {
		return nil, err
	}
	keyPEM, err := os.ReadFile(filepath.Join(dir, CAKeyFile))
	if err != nil {
		return nil, fmt.Errorf("load CA key: %w", err)
	}
	block, _ := pem.Decode(keyPEM)
	if block == nil || block.Type != "EC PRIVATE KEY" {
		return nil, fmt.Errorf("load CA key %s: no EC PRIVATE KEY block", filepath.Join(dir, CAKeyFile))
	}
	key, err := x509.ParseECPrivateKey(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("load CA key: %w", err)
	}
	return &CA{Cert: cert, Key: key}, nil
}

// LoadCert reads one PEM certificate.
func LoadCert(path string) (*x509.Certificate, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("load certificate: %w", err)
	}
	block, _ := pem.Decode(b)
	if block == nil || block.Type != "CERTIFICATE" {
		return nil, fmt.Errorf("load certificate %s: no CERTIFICATE block", path)
	}
	c, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("load certificate %s: %w", path, err)
	}
	return c, nil
}

// IssueAgent issues a client certificate whose identity is site.
func (ca *CA) IssueAgent(site string, notBefore, notAfter time.Time) (*Issued, error) {
	if err := ValidSite(site); err != nil {
		return nil, fmt.Errorf("issue agent certificate: %w", err)
	}
	return ca.issue(&x509.Certificate{
		Subject:     pkix.Name{CommonName: site, OrganizationalUnit: []string{OUAgent}, Organization: []string{"Canopy"}},
		NotBefore:   notBefore,
		NotAfter:    notAfter,
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	})
}

// IssueAdmin issues an admin's client certificate: client authentication
// for the hub's admin listener, common name the admin's name (written in
// the events log for every action), organizational unit OUAdmin. The
// agent listener refuses it (Verifier.Verify).
func (ca *CA) IssueAdmin(name string, notBefore, notAfter time.Time) (*Issued, error) {
	if err := ValidSite(name); err != nil {
		return nil, fmt.Errorf("issue admin certificate: admin name: %w", err)
	}
	return ca.issue(&x509.Certificate{
		Subject:     pkix.Name{CommonName: name, OrganizationalUnit: []string{OUAdmin}, Organization: []string{"Canopy"}},
		NotBefore:   notBefore,
		NotAfter:    notAfter,
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	})
}

// IssueAgentVM issues a site agent's VM endpoint certificate: server
// authentication only, for the names and addresses its VMs reach it by,
// common name the site and organizational unit OUAgentVM (VMs check both,
// see vmproto.ClientTLS). It is a certificate of its own, not the agent's
// client certificate with more names: the hub refuses it as an agent
// identity (no client authentication), so a key exposed on the VMs'
// network cannot impersonate the agent to the hub, and it can be reissued
// when the VM-facing addresses change without touching the hub link.
func (ca *CA) IssueAgentVM(site string, hosts []string, notBefore, notAfter time.Time) (*Issued, error) {
	if err := ValidSite(site); err != nil {
		return nil, fmt.Errorf("issue VM endpoint certificate: %w", err)
	}
	tmpl := &x509.Certificate{
		Subject:     pkix.Name{CommonName: site, OrganizationalUnit: []string{OUAgentVM}, Organization: []string{"Canopy"}},
		NotBefore:   notBefore,
		NotAfter:    notAfter,
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	if err := addHosts(tmpl, hosts); err != nil {
		return nil, fmt.Errorf("issue VM endpoint certificate for %s: %w", site, err)
	}
	return ca.issue(tmpl)
}

// addHosts puts hosts into a certificate's subject alternative names:
// addresses as IP SANs, names as DNS SANs. At least one is needed.
func addHosts(tmpl *x509.Certificate, hosts []string) error {
	for _, h := range hosts {
		switch ip := net.ParseIP(h); {
		case ip != nil:
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		case hostNameRE.MatchString(h):
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		default:
			return fmt.Errorf("host %q is neither an IP address nor a DNS name", h)
		}
	}
	if len(tmpl.IPAddresses)+len(tmpl.DNSNames) == 0 {
		return errors.New("no host names or addresses: VMs could verify it for none")
	}
	return nil
}

// hostNameRE is a DNS name (labels of letters, digits and -).
var hostNameRE = regexp.MustCompile(`^([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\.?$`)

// IssueServer issues the hub's server certificate for the given DNS names
// and IP addresses.
func (ca *CA) IssueServer(hosts []string, notBefore, notAfter time.Time) (*Issued, error) {
	tmpl := &x509.Certificate{
		Subject:     pkix.Name{CommonName: "canopy-hub", Organization: []string{"Canopy"}},
		NotBefore:   notBefore.Add(-time.Hour),
		NotAfter:    notAfter,
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	for _, h := range hosts {
		if ip := net.ParseIP(h); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else if h != "" {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	return ca.issue(tmpl)
}

func (ca *CA) issue(tmpl *x509.Certificate) (*Issued, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("issue certificate: %w", err)
	}
	tmpl.SerialNumber = newSerial()
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, &key.PublicKey, ca.Key)
	if err != nil {
		return nil, fmt.Errorf("issue certificate for %q: %w", tmpl.Subject.CommonName, err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("issue certificate: %w", err)
	}
	return &Issued{
		CertPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		KeyPEM:  pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}),
		Serial:  tmpl.SerialNumber,
	}, nil
}

// SerialHex formats a serial number the way revocation lists in the hub
// config write it: lowercase hex without separators.
func SerialHex(s *big.Int) string { return strings.ToLower(s.Text(16)) }

// RejectReason explains why a peer certificate was refused.
type RejectReason string

// Reasons a client certificate is refused.
const (
	RejectNoCert     RejectReason = "no client certificate"
	RejectUnknownCA  RejectReason = "certificate not signed by this hub's CA"
	RejectExpired    RejectReason = "certificate expired or not yet valid"
	RejectRevoked    RejectReason = "certificate revoked"
	RejectWrongUsage RejectReason = "certificate not issued for a site agent"
	RejectInvalid    RejectReason = "certificate invalid"
)

// RejectError is returned by Verifier.Verify.
type RejectError struct {
	Reason  RejectReason
	Subject string
	Serial  string
	Detail  string
}

func (e *RejectError) Error() string {
	s := string(e.Reason)
	if e.Subject != "" {
		s += fmt.Sprintf(" (subject %q, serial %s)", e.Subject, e.Serial)
	}
	if e.Detail != "" {
		s += ": " + e.Detail
	}
	return s
}

// Verifier checks site agents' client certificates against one CA and a
// revocation list of serial numbers.
type Verifier struct {
	Roots   *x509.CertPool
	Revoked map[string]bool // lowercase hex serials
	Now     func() time.Time
	// Admin makes the verifier accept admin certificates (OUAdmin) only,
	// for the hub's admin listener; otherwise it refuses them.
	Admin bool
}

// Verify checks the presented chain (leaf first) and returns the site name
// the certificate identifies.
func (v *Verifier) Verify(chain []*x509.Certificate) (string, error) {
	if len(chain) == 0 {
		return "", &RejectError{Reason: RejectNoCert}
	}
	leaf := chain[0]
	serial := SerialHex(leaf.SerialNumber)
	rej := func(r RejectReason, detail string) error {
		return &RejectError{Reason: r, Subject: leaf.Subject.CommonName, Serial: serial, Detail: detail}
	}
	now := time.Now()
	if v.Now != nil {
		now = v.Now()
	}
	inter := x509.NewCertPool()
	for _, c := range chain[1:] {
		inter.AddCert(c)
	}
	_, err := leaf.Verify(x509.VerifyOptions{
		Roots:         v.Roots,
		Intermediates: inter,
		CurrentTime:   now,
		KeyUsages:     []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	})
	if err != nil {
		var inv x509.CertificateInvalidError
		var ua x509.UnknownAuthorityError
		switch {
		case errors.As(err, &inv) && inv.Reason == x509.Expired:
			return "", rej(RejectExpired, fmt.Sprintf("valid %s to %s, now %s",
				leaf.NotBefore.UTC().Format(time.RFC3339), leaf.NotAfter.UTC().Format(time.RFC3339), now.UTC().Format(time.RFC3339)))
		case errors.As(err, &inv) && inv.Reason == x509.IncompatibleUsage:
			return "", rej(RejectWrongUsage, err.Error())
		case errors.As(err, &ua):
			return "", rej(RejectUnknownCA, fmt.Sprintf("issuer %q", leaf.Issuer.CommonName))
		default:
			return "", rej(RejectInvalid, err.Error())
		}
	}
	if v.Revoked[serial] {
		return "", rej(RejectRevoked, "serial is on the hub's revocation list")
	}
	isAdmin := slices.Contains(leaf.Subject.OrganizationalUnit, OUAdmin)
	if isAdmin != v.Admin {
		if v.Admin {
			return "", rej(RejectWrongUsage, "not an admin certificate (hub tls issue-admin)")
		}
		return "", rej(RejectWrongUsage, "an admin certificate is not a site agent's identity")
	}
	site := leaf.Subject.CommonName
	if err := ValidSite(site); err != nil {
		return "", rej(RejectInvalid, err.Error())
	}
	return site, nil
}

func newSerial() *big.Int {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		panic(fmt.Sprintf("crypto/rand failed: %v", err))
	}
	return n.Add(n, big.NewInt(1))
}

func writePEM(path, typ string, der []byte, mode os.FileMode) error {
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), mode); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}

func writeKey(path string, key *ecdsa.PrivateKey) error {
	der, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return writePEM(path, "EC PRIVATE KEY", der, 0o600)
}
