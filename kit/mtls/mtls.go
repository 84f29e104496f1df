// Package mtls gives gRPC servers and clients mutual TLS from PEM files
// that are read again while the process runs, so certificates rotate
// (cert-manager, Vault, a cron job) without a restart.
//
// A process loads one set of files, its own certificate chain and key and
// the CA bundle it trusts for peers, and uses them both ways: its server
// asks every caller for a certificate signed by that CA, and its client
// connections present its certificate and check the peer's chain and name.
// The files are read again every Files.Refresh; a rotation shows on the
// connections opened after it (open ones keep their handshake). A set of
// files that does not parse (a certificate written before its key, say) is
// skipped and read again at the next refresh, the last good one kept.
//
// The reading and the handshakes are grpc-go's: the pemfile certificate
// provider and the advancedtls credentials.
package mtls

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"time"

	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/tls/certprovider"
	"google.golang.org/grpc/credentials/tls/certprovider/pemfile"
	"google.golang.org/grpc/security/advancedtls"
)

// DefaultRefresh is how often the files are read again when Files.Refresh
// is zero: a minute keeps a rotation's delay short against certificates
// that live for days, for a stat-sized read of three small files.
const DefaultRefresh = time.Minute

// Files names the PEM files of one process.
type Files struct {
	// CertFile holds the process's certificate, followed by any
	// intermediates. Its names (DNS or IP subject alternative names) are
	// what callers check against the address they dialed: 127.0.0.1 for
	// "127.0.0.1:9091", "user" for "dns:///user:9091".
	CertFile string
	// KeyFile holds the certificate's private key. It must sit in the same
	// directory as CertFile, so that a rotation replacing the directory
	// (a Kubernetes Secret volume does) swaps both at once.
	KeyFile string
	// CAFile holds the certificates of the authorities whose peers are
	// trusted, servers and callers alike.
	CAFile string
	// Refresh is how often the files are read again; zero means
	// DefaultRefresh.
	Refresh time.Duration
}

// IsZero reports whether no file is named: mutual TLS is off.
func (f Files) IsZero() bool {
	return f.CertFile == "" && f.KeyFile == "" && f.CAFile == ""
}

// Credentials are a process's mutual-TLS credentials, both ways, kept up
// to date with its files until Close.
type Credentials struct {
	identity, roots certprovider.Provider
	server, client  credentials.TransportCredentials
}

// Load reads f once, so that a file missing, unreadable, expired or not
// PEM is an error now rather than a handshake that never completes, and
// starts reading them again every f.Refresh. Close stops it. ctx bounds
// the wait for the first read.
func Load(ctx context.Context, f Files) (*Credentials, error) {
	if err := f.check(); err != nil {
		return nil, err
	}
	refresh := f.Refresh
	if refresh == 0 {
		refresh = DefaultRefresh
	}
	identity, err := pemfile.NewProvider(pemfile.Options{CertFile: f.CertFile, KeyFile: f.KeyFile, RefreshDuration: refresh})
	if err != nil {
		return nil, fmt.Errorf("mtls: %w", err)
	}
	roots, err := pemfile.NewProvider(pemfile.Options{RootFile: f.CAFile, RefreshDuration: refresh})
	if err != nil {
		identity.Close()
		return nil, fmt.Errorf("mtls: %w", err)
	}
	c := &Credentials{identity: identity, roots: roots}
	// The handshakes ask the providers with no deadline, and a provider
	// answers only once it has read its files: wait for that here, so a
	// file replaced by a bad one since the check is an error now, not a
	// handshake that hangs.
	for _, p := range []certprovider.Provider{identity, roots} {
		if err := firstRead(ctx, p); err != nil {
			c.Close()
			return nil, err
		}
	}
	// Both sides verify the peer's chain against the CA bundle; a client
	// also checks the server's name against the address it dialed. TLS
	// 1.3 only: every peer is a Duet process, and a grpc-go of any
	// supported version speaks it.
	server := &advancedtls.Options{
		IdentityOptions:   advancedtls.IdentityCertificateOptions{IdentityProvider: identity},
		RootOptions:       advancedtls.RootCertificateOptions{RootProvider: roots},
		RequireClientCert: true,
		VerificationType:  advancedtls.CertVerification,
		MinTLSVersion:     tls.VersionTLS13,
		MaxTLSVersion:     tls.VersionTLS13,
	}
	client := &advancedtls.Options{
		IdentityOptions:  advancedtls.IdentityCertificateOptions{IdentityProvider: identity},
		RootOptions:      advancedtls.RootCertificateOptions{RootProvider: roots},
		VerificationType: advancedtls.CertAndHostVerification,
		MinTLSVersion:    tls.VersionTLS13,
		MaxTLSVersion:    tls.VersionTLS13,
	}
	if c.server, err = advancedtls.NewServerCreds(server); err == nil {
		c.client, err = advancedtls.NewClientCreds(client)
	}
	if err != nil {
		c.Close()
		return nil, fmt.Errorf("mtls: %w", err)
	}
	return c, nil
}

// Server returns the credentials of a gRPC server (kit/server's
// Config.Creds): callers must present a certificate the CA signed.
func (c *Credentials) Server() credentials.TransportCredentials { return c.server }

// Client returns the credentials of a gRPC client connection (kit/client's
// Config.Creds): it presents the process's certificate and checks the
// server's.
func (c *Credentials) Client() credentials.TransportCredentials { return c.client }

// Close stops reading the files. Connections open keep working; new
// handshakes use the last material read.
func (c *Credentials) Close() {
	c.identity.Close()
	c.roots.Close()
}

// firstReadWait bounds the wait for a provider's first read of files that
// the check has just read.
const firstReadWait = 5 * time.Second

func firstRead(ctx context.Context, p certprovider.Provider) error {
	ctx, cancel := context.WithTimeout(ctx, firstReadWait)
	defer cancel()
	if _, err := p.KeyMaterial(ctx); err != nil {
		return fmt.Errorf("mtls: the files changed while they were loaded and do not parse now: %w", err)
	}
	return nil
}

// check reads the files as Load will have them read, and says which one
// is wrong and how.
func (f Files) check() error {
	switch {
	case f.CertFile == "" || f.KeyFile == "" || f.CAFile == "":
		return errors.New("mtls: a certificate, its key and a CA file are all needed")
	case filepath.Dir(f.CertFile) != filepath.Dir(f.KeyFile):
		return fmt.Errorf("mtls: certificate %s and key %s must be in the same directory (they are swapped together)", f.CertFile, f.KeyFile)
	case f.Refresh < 0:
		return fmt.Errorf("mtls: refresh must not be negative, got %v", f.Refresh)
	}
	pair, err := tls.LoadX509KeyPair(f.CertFile, f.KeyFile)
	if err != nil {
		return fmt.Errorf("mtls: certificate %s with key %s: %w", f.CertFile, f.KeyFile, err)
	}
	now := time.Now()
	leaf := pair.Leaf
	switch {
	case now.Before(leaf.NotBefore):
		return fmt.Errorf("mtls: certificate %s is not valid before %s", f.CertFile, leaf.NotBefore.UTC().Format(time.RFC3339))
	case now.After(leaf.NotAfter):
		return fmt.Errorf("mtls: certificate %s expired at %s", f.CertFile, leaf.NotAfter.UTC().Format(time.RFC3339))
	}
	// A Duet process both serves and calls with the one certificate; one
	// restricted to either use fails half of its handshakes, with an error
	// that names neither the file nor the cause.
	if eku := leaf.ExtKeyUsage; len(eku) > 0 && !slices.Contains(eku, x509.ExtKeyUsageAny) {
		for _, want := range []struct {
			usage x509.ExtKeyUsage
			name  string
		}{{x509.ExtKeyUsageServerAuth, "serverAuth"}, {x509.ExtKeyUsageClientAuth, "clientAuth"}} {
			if !slices.Contains(eku, want.usage) {
				return fmt.Errorf("mtls: certificate %s lacks the %s extended key usage (it is used to serve and to call)", f.CertFile, want.name)
			}
		}
	}
	pem, err := os.ReadFile(f.CAFile)
	if err != nil {
		return fmt.Errorf("mtls: CA file: %w", err)
	}
	if !x509.NewCertPool().AppendCertsFromPEM(pem) {
		return fmt.Errorf("mtls: CA file %s holds no PEM certificate", f.CAFile)
	}
	return nil
}
