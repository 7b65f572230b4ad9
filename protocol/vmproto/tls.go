package vmproto

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"slices"

	"github.com/canopy-grid/canopy/protocol/pki"
)

// ClientTLS is how a vmagent trusts its site agent: only the certificate
// authority from its settings (no system roots), TLS 1.3 only, the host
// name of AgentURL, and a leaf issued for this site's VM endpoint (common
// name the site, organizational unit pki.OUAgentVM: `hub tls issue-agent
// --vm-host`). The hub's own certificate and another site's agent
// certificate, though from the same CA, are refused.
func ClientTLS(caPEM, site string) (*tls.Config, error) {
	certs, err := ParseAgentCA(caPEM)
	if err != nil {
		return nil, err
	}
	roots := x509.NewCertPool()
	for _, c := range certs {
		roots.AddCert(c)
	}
	return &tls.Config{
		RootCAs:    roots,
		MinVersion: tls.VersionTLS13,
		VerifyConnection: func(cs tls.ConnectionState) error {
			if len(cs.PeerCertificates) == 0 {
				return errors.New("the agent presented no certificate")
			}
			return CheckEndpointLeaf(cs.PeerCertificates[0], site)
		},
	}, nil
}

// CheckEndpointLeaf checks that a certificate (already verified against
// the CA) names site's VM endpoint.
func CheckEndpointLeaf(leaf *x509.Certificate, site string) error {
	if leaf.Subject.CommonName != site || !slices.Contains(leaf.Subject.OrganizationalUnit, pki.OUAgentVM) {
		return fmt.Errorf("certificate %q (OU %v) is not site %s's VM endpoint certificate (CN %s, OU %s)",
			leaf.Subject.CommonName, leaf.Subject.OrganizationalUnit, site, site, pki.OUAgentVM)
	}
	return nil
}

// ServerTLS is the agent's VM endpoint configuration: its VM endpoint
// certificate, TLS 1.3 only.
func ServerTLS(cert tls.Certificate) *tls.Config {
	return &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS13}
}

// CheckEndpointCert checks, when an agent starts, that its VM endpoint
// certificate is what its VMs will accept: issued by the CA in caPEM for
// server authentication, for site's VM endpoint, valid now and for host
// (the host of the URL the VMs are given). Errors say what to fix.
func CheckEndpointCert(cert tls.Certificate, caPEM, site, host string) error {
	if len(cert.Certificate) == 0 {
		return errors.New("no certificate in the file")
	}
	leaf, err := x509.ParseCertificate(cert.Certificate[0])
	if err != nil {
		return fmt.Errorf("parse certificate: %w", err)
	}
	certs, err := ParseAgentCA(caPEM)
	if err != nil {
		return err
	}
	roots := x509.NewCertPool()
	for _, c := range certs {
		roots.AddCert(c)
	}
	inter := x509.NewCertPool()
	for _, der := range cert.Certificate[1:] {
		if c, err := x509.ParseCertificate(der); err == nil {
			inter.AddCert(c)
		}
	}
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, DNSName: host,
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}); err != nil {
		return fmt.Errorf("VMs would refuse it: %w (issue it with `hub tls issue-agent --site %s --vm-host %s`)", err, site, host)
	}
	if err := CheckEndpointLeaf(leaf, site); err != nil {
		return fmt.Errorf("VMs would refuse it: %w", err)
	}
	return nil
}
