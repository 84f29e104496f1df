// Package mtlstest makes throwaway certificate authorities and the files
// kit/mtls reads, for tests of services served over mutual TLS (kit/mtls/
// devca, failing the test on an error).
package mtlstest

import (
	"path/filepath"
	"testing"
	"time"

	"github.com/duetkit/duet/kit/mtls"
	"github.com/duetkit/duet/kit/mtls/devca"
)

// CA is a certificate authority that lives for one test.
type CA struct {
	ca *devca.CA
}

// NewCA makes a CA named name, valid for a day.
func NewCA(t testing.TB, name string) *CA {
	t.Helper()
	ca, err := devca.New(name, 24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return &CA{ca: ca}
}

// PEM is the CA's certificate, as a CA file holds it.
func (ca *CA) PEM() []byte { return ca.ca.PEM() }

// Leaf describes a certificate to issue (devca.Leaf).
type Leaf = devca.Leaf

// Issue signs a certificate for leaf and returns it and its key, PEM
// encoded.
func (ca *CA) Issue(t testing.TB, leaf Leaf) (certPEM, keyPEM []byte) {
	t.Helper()
	certPEM, keyPEM, err := ca.ca.Issue(leaf)
	if err != nil {
		t.Fatal(err)
	}
	return certPEM, keyPEM
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
	if err := devca.WriteFile(name, data); err != nil {
		t.Fatal(err)
	}
}
