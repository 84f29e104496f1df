package devca_test

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/duetkit/duet/kit/mtls/devca"
)

// TestSaveLoad: a CA saved and loaded again issues certificates that its
// first self's certificate verifies.
func TestSaveLoad(t *testing.T) {
	dir := t.TempDir()
	ca, err := devca.New("test", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile := filepath.Join(dir, "ca.pem"), filepath.Join(dir, "ca.key")
	if err := ca.Save(certFile, keyFile); err != nil {
		t.Fatal(err)
	}
	again, err := devca.Load(certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(again.PEM(), ca.PEM()) {
		t.Fatal("loaded another CA")
	}
	certPEM, keyPEM, err := again.Issue(devca.Leaf{Names: []string{"user", "127.0.0.1", "spiffe://duet/user"}})
	if err != nil {
		t.Fatal(err)
	}
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(ca.PEM())
	if _, err := pair.Leaf.Verify(x509.VerifyOptions{Roots: roots, DNSName: "user", KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Fatal(err)
	}
	if len(pair.Leaf.IPAddresses) != 1 || len(pair.Leaf.URIs) != 1 {
		t.Errorf("names: IPs %v, URIs %v", pair.Leaf.IPAddresses, pair.Leaf.URIs)
	}
	// No certificate outlives its CA.
	longPEM, _, err := ca.Issue(devca.Leaf{Names: []string{"x"}, NotAfter: time.Now().Add(48 * time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode(longPEM)
	if block == nil {
		t.Fatal("no PEM")
	}
	c, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	if c.NotAfter.After(ca.NotAfter()) {
		t.Errorf("a certificate outlives its CA: %v after %v", c.NotAfter, ca.NotAfter())
	}
	// A leaf is no CA to load.
	leafCert, leafKey := filepath.Join(dir, "leaf.pem"), filepath.Join(dir, "leaf.key")
	if err := os.WriteFile(leafCert, certPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(leafKey, keyPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := devca.Load(leafCert, leafKey); err == nil {
		t.Error("a leaf certificate loaded as a CA")
	}
}

// A CA for a test or a developer's machine issues a certificate that
// both serves and calls, under the names its peers dial.
func Example() {
	ca, err := devca.New("development CA", 30*24*time.Hour)
	if err != nil {
		fmt.Println(err)
		return
	}
	certPEM, keyPEM, err := ca.Issue(devca.Leaf{Names: []string{"order", "localhost", "127.0.0.1"}})
	if err != nil {
		fmt.Println(err)
		return
	}
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(pair.Leaf.DNSNames, pair.Leaf.IPAddresses, pair.Leaf.ExtKeyUsage)
	// Output: [order localhost] [127.0.0.1] [serverAuth clientAuth]
}

// TestWriteFile: writers at once each succeed and leave one of their
// files whole, readable by the owner only, and no temporary file behind.
func TestWriteFile(t *testing.T) {
	dir := t.TempDir()
	name := filepath.Join(dir, "key.pem")
	if err := os.WriteFile(name, []byte("old"), 0o644); err != nil {
		t.Fatal(err)
	}
	for range 20 {
		var wg sync.WaitGroup
		errs := make([]error, 8)
		for i := range errs {
			wg.Go(func() { errs[i] = devca.WriteFile(name, bytes.Repeat([]byte{byte('a' + i)}, 4096)) })
		}
		wg.Wait()
		for i, err := range errs {
			if err != nil {
				t.Fatalf("writer %d: %v", i, err)
			}
		}
		got, err := os.ReadFile(name)
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != 4096 || !bytes.Equal(got, bytes.Repeat(got[:1], 4096)) {
			t.Fatalf("the file is not one writer's whole: %d bytes, %q…", len(got), got[:min(len(got), 16)])
		}
	}
	if info, err := os.Stat(name); err != nil || info.Mode().Perm() != 0o600 {
		t.Errorf("mode %v, %v; want 0600", info.Mode().Perm(), err)
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 1 {
		t.Errorf("left in the directory: %v", entries)
	}
}
