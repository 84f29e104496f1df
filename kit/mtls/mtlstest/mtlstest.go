// Package mtlstest makes throwaway certificate authorities and the files
// kit/mtls reads, for tests of services served over mutual TLS.
package mtlstest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/duetkit/duet/kit/mtls"
)

// CA is a certificate authority that lives for one test.
type CA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pem  []byte
}

// NewCA makes a CA named name.
func NewCA(t testing.TB, name string) *CA {
	t.Helper()
	key := newKey(t)
	tmpl := &x509.Certificate{
		SerialNumber:          serial(t),
		Subject:               pkix.Name{CommonName: name},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return &CA{cert: cert, key: key, pem: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}
}

// PEM is the CA's certificate, as a CA file holds it.
func (ca *CA) PEM() []byte { return ca.pem }

// Leaf describes a certificate to issue.
type Leaf struct {
	// Names are its DNS names, IP addresses (what callers dial) and URI
	// names (with "://", a SPIFFE id say).
	Names []string
	// Usages are its extended key usages; nil means both serverAuth and
	// clientAuth, as a Duet process needs.
	Usages []x509.ExtKeyUsage
	// NotBefore and NotAfter bound its validity; zero means an hour ago
	// and a day from now.
	NotBefore, NotAfter time.Time
}

// Issue signs a certificate for leaf and returns it and its key, PEM
// encoded.
func (ca *CA) Issue(t testing.TB, leaf Leaf) (certPEM, keyPEM []byte) {
	t.Helper()
	key := newKey(t)
	tmpl := &x509.Certificate{
		SerialNumber: serial(t),
		Subject:      pkix.Name{CommonName: "duet test"},
		NotBefore:    leaf.NotBefore,
		NotAfter:     leaf.NotAfter,
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  leaf.Usages,
	}
	if tmpl.NotBefore.IsZero() {
		tmpl.NotBefore = time.Now().Add(-time.Hour)
	}
	if tmpl.NotAfter.IsZero() {
		tmpl.NotAfter = time.Now().Add(24 * time.Hour)
	}
	if tmpl.ExtKeyUsage == nil {
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}
	}
	for _, n := range leaf.Names {
		switch ip := net.ParseIP(n); {
		case ip != nil:
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		case strings.Contains(n, "://"):
			u, err := url.Parse(n)
			if err != nil {
				t.Fatal(err)
			}
			tmpl.URIs = append(tmpl.URIs, u)
		default:
			tmpl.DNSNames = append(tmpl.DNSNames, n)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder})
}

// Write issues a certificate for names and writes it, its key and the
// PEM of trusted (ca's own when none is given) into dir as cert.pem,
// key.pem and ca.pem, each replaced by a rename so that a reader sees a
// whole file. It returns them as kit/mtls takes them, refreshed every
// refresh.
func (ca *CA) Write(t testing.TB, dir string, refresh time.Duration, names []string, trusted ...*CA) mtls.Config {
	t.Helper()
	certPEM, keyPEM := ca.Issue(t, Leaf{Names: names})
	if len(trusted) == 0 {
		trusted = []*CA{ca}
	}
	var bundle []byte
	for _, c := range trusted {
		bundle = append(bundle, c.PEM()...)
	}
	f := mtls.Config{
		CertFile: filepath.Join(dir, "cert.pem"), KeyFile: filepath.Join(dir, "key.pem"),
		CAFile: filepath.Join(dir, "ca.pem"), Refresh: refresh,
	}
	WriteFile(t, f.KeyFile, keyPEM)
	WriteFile(t, f.CertFile, certPEM)
	WriteFile(t, f.CAFile, bundle)
	return f
}

// WriteFile replaces name with data by a rename.
func WriteFile(t testing.TB, name string, data []byte) {
	t.Helper()
	tmp := name + ".tmp"
	if err := os.WriteFile(tmp, data, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, name); err != nil {
		t.Fatal(err)
	}
}

func newKey(t testing.TB) *ecdsa.PrivateKey {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return key
}

func serial(t testing.TB) *big.Int {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		t.Fatal(err)
	}
	return n
}
