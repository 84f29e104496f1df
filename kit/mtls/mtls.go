// Package mtls gives gRPC servers and clients mutual TLS from PEM files
// that are read again while the process runs, so certificates rotate
// (cert-manager, Vault, a cron job) without a restart.
//
// A process loads one set of files, its own certificate chain and key and
// the CA bundle it trusts for peers, and uses them both ways: its server
// asks every caller for a certificate signed by that CA, and its client
// connections present its certificate and check the peer's chain and name.
//
// The files are read again every Config.Refresh, the three as one set: a
// set that changed is checked as Load checks it (every PEM block parses,
// the key matches the certificate, the certificate is valid now and allows
// the uses asked for) and then serves the handshakes that follow; open
// connections keep theirs. Files that change while they are read are
// read again at the next refresh. A set that fails the check (a key from
// another certificate, a certificate not valid yet) is not used, the
// last good one stays, and the process logs why, once while the set
// stays; it is checked again at each refresh. Replace the files by
// rename (a Kubernetes Secret volume does), and rotate a CA in three
// steps: add the new CA to every CA file, then give every process a
// certificate it signed, then remove the old CA.
//
// The handshakes are grpc-go's advancedtls credentials, fed by a
// certificate provider of this package's (grpc-go's pemfile provider
// neither checks what it reads nor says when it skips a set, and logs
// the key file's contents when a pair does not parse).
package mtls

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/time/rate"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/tls/certprovider"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/security/advancedtls"

	"github.com/duetkit/duet/kit/metrics"
)

// DefaultRefresh is how often the files are read again when
// Config.Refresh is zero: a minute keeps a rotation's delay short against
// certificates that live for days, for a read of three small files.
const DefaultRefresh = time.Minute

// Use is what a process does with its certificate.
type Use int

const (
	// Serve: it answers calls; the certificate must allow serverAuth.
	Serve Use = 1 << iota
	// Call: it calls servers; the certificate must allow clientAuth.
	Call
)

// Config names a process's PEM files and how they are used.
type Config struct {
	// CertFile holds the process's certificate, followed by any
	// intermediates. Its names (DNS or IP subject alternative names) are
	// what callers check against the address they dialed: 127.0.0.1 for
	// "127.0.0.1:9091", "user" for "dns:///user:9091".
	CertFile string
	// KeyFile holds the certificate's private key.
	KeyFile string
	// CAFile holds the certificates of the authorities whose peers are
	// trusted, servers and callers alike.
	CAFile string
	// Refresh is how often the files are read again; zero means
	// DefaultRefresh.
	Refresh time.Duration
	// Use is what the certificate must allow: Serve, Call, or both
	// (zero means both).
	Use Use
	// Logger receives a line for each set of files taken or refused after
	// Load, for each failure to read them, when the certificate in use
	// expires, and for failed handshakes (the first three, then one every
	// 10 s); nil means slog.Default().
	Logger *slog.Logger
	// Metrics gets ExpiryMetric and HandshakeFailuresMetric; nil means
	// metrics.Default().
	Metrics *metrics.Metrics
}

// ExpiryMetric is when the certificate in use expires, in Unix seconds,
// labelled with its file (cert_file): a rotation that never comes, or is
// refused, shows as a value that stops moving forward. Alert on
// `duet_tls_certificate_expiry_timestamp_seconds - time() < 7 * 86400`.
// Close removes the file's series.
const ExpiryMetric = "duet_tls_certificate_expiry_timestamp_seconds"

// HandshakeFailuresMetric counts the TLS handshakes that failed on this
// side, by side: "server", a caller without a certificate the CA signed,
// not speaking TLS, refusing this process's certificate, or abandoning
// the handshake (a reset, a stall); "client", a server whose certificate
// this process refused, or that hung up. It counts attempts, not peers:
// a refused client retries with backoff. A peer left on an old CA, or a
// component started without its flags, shows here before anyone reads a
// log. A caller that closes at once, without a word (a TCP probe), is
// not counted; one that resets the connection is.
const HandshakeFailuresMetric = "duet_tls_handshake_failures_total"

// handshakeFailures registers HandshakeFailuresMetric on m, or finds it
// registered by other credentials of the process.
func handshakeFailures(m *metrics.Metrics) (*prometheus.CounterVec, error) {
	return metrics.Register(m.Registry, prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: HandshakeFailuresMetric,
		Help: "TLS handshakes that failed on this side (attempts): server, a caller refused or gone; client, a server refused or gone.",
	}, []string{"side"}))
}

// expiryGauge registers ExpiryMetric on m, or finds it registered by
// other credentials of the process.
func expiryGauge(m *metrics.Metrics) (*prometheus.GaugeVec, error) {
	return metrics.Register(m.Registry, prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: ExpiryMetric,
		Help: "When the certificate in use expires, in Unix seconds, by certificate file.",
	}, []string{"cert_file"}))
}

// IsZero reports whether no file is named: mutual TLS is off.
func (c Config) IsZero() bool {
	return c.CertFile == "" && c.KeyFile == "" && c.CAFile == ""
}

// Credentials are a process's mutual-TLS credentials, both ways, kept up
// to date with its files until Close.
type Credentials struct {
	cfg            Config
	source         *source
	expiries       *prometheus.GaugeVec // ExpiryMetric, whose cert_file series Close removes
	expiry         prometheus.Gauge     // this one's series
	server, client credentials.TransportCredentials
	stop           context.CancelFunc
	done           chan struct{}

	// Kept by the reading goroutine alone: the files' contents in use and
	// last refused, the last failure to read them, and whether the expiry
	// of the certificate in use was logged.
	used         [3][]byte
	refused      *[3][]byte
	readErr      string
	expiryLogged bool
}

// Load reads and checks the files, so that one missing, unreadable,
// expired or not PEM is an error now rather than a handshake that fails,
// and starts reading them again every Refresh. Close stops that: ctx's
// cancellation does not (its values reach the reading's log lines).
func Load(ctx context.Context, cfg Config) (*Credentials, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	switch {
	case cfg.CertFile == "" || cfg.KeyFile == "" || cfg.CAFile == "":
		return nil, errors.New("mtls: a certificate, its key and a CA file are all needed")
	case cfg.Refresh < 0:
		return nil, fmt.Errorf("mtls: refresh must not be negative, got %v", cfg.Refresh)
	}
	if cfg.Refresh == 0 {
		cfg.Refresh = DefaultRefresh
	}
	if cfg.Use == 0 {
		cfg.Use = Serve | Call
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Metrics == nil {
		cfg.Metrics = metrics.Default()
	}
	gauge, err := expiryGauge(cfg.Metrics)
	if err != nil {
		return nil, fmt.Errorf("mtls: %w", err)
	}
	failures, err := handshakeFailures(cfg.Metrics)
	if err != nil {
		return nil, fmt.Errorf("mtls: %w", err)
	}
	contents, err := cfg.read()
	if err != nil {
		return nil, err
	}
	km, leaf, err := cfg.check(contents, time.Now())
	if err != nil {
		return nil, err
	}
	c := &Credentials{cfg: cfg, source: &source{}, used: contents, done: make(chan struct{}),
		expiries: gauge, expiry: gauge.WithLabelValues(cfg.CertFile)}
	c.source.km.Store(km)
	// Both sides verify the peer's chain against the CA bundle; a client
	// also checks the server's name against the address it dialed. TLS
	// 1.3 only: every peer is a Duet process or a tool of its operators,
	// and grpc-go, grpcurl and Envoy speak it. (advancedtls copies the
	// configuration for each handshake, so session tickets never outlive
	// one and a resumed session never skips the current CA's check: add
	// no fixed ticket keys or client session cache.)
	var server, client credentials.TransportCredentials
	if server, err = advancedtls.NewServerCreds(&advancedtls.Options{
		IdentityOptions:   advancedtls.IdentityCertificateOptions{IdentityProvider: c.source},
		RootOptions:       advancedtls.RootCertificateOptions{RootProvider: c.source},
		RequireClientCert: true,
		VerificationType:  advancedtls.CertVerification,
		MinTLSVersion:     tls.VersionTLS13,
		MaxTLSVersion:     tls.VersionTLS13,
	}); err != nil {
		return nil, fmt.Errorf("mtls: %w", err)
	}
	if client, err = advancedtls.NewClientCreds(&advancedtls.Options{
		IdentityOptions:  advancedtls.IdentityCertificateOptions{IdentityProvider: c.source},
		RootOptions:      advancedtls.RootCertificateOptions{RootProvider: c.source},
		VerificationType: advancedtls.CertAndHostVerification,
		MinTLSVersion:    tls.VersionTLS13,
		MaxTLSVersion:    tls.VersionTLS13,
	}); err != nil {
		return nil, fmt.Errorf("mtls: %w", err)
	}
	c.server = &observed{TransportCredentials: server, side: "server", failures: failures.WithLabelValues("server"), log: cfg.Logger,
		sometimes: &rate.Sometimes{First: 3, Interval: 10 * time.Second}}
	c.client = &observed{TransportCredentials: client, side: "client", failures: failures.WithLabelValues("client"), log: cfg.Logger,
		sometimes: &rate.Sometimes{First: 3, Interval: 10 * time.Second}}
	c.expiry.Set(float64(leaf.NotAfter.Unix()))
	var watch context.Context
	watch, c.stop = context.WithCancel(context.WithoutCancel(ctx))
	go c.watch(watch)
	return c, nil
}

// Server returns the credentials of a gRPC server (kit/server's
// Config.Creds): callers must present a certificate the CA signed.
func (c *Credentials) Server() credentials.TransportCredentials { return c.server }

// Client returns the credentials of a gRPC client connection (kit/client's
// Config.Creds): it presents the process's certificate and checks the
// server's.
func (c *Credentials) Client() credentials.TransportCredentials { return c.client }

// observed counts and logs the handshakes its credentials fail: grpc-go
// logs them only at levels below its default (info on a server, warning
// on a client), so a refused peer left no trace.
type observed struct {
	credentials.TransportCredentials
	side     string
	failures prometheus.Counter
	log      *slog.Logger
	// sometimes bounds the log lines (a port scanner is not a log flood);
	// the counter counts every failure.
	sometimes *rate.Sometimes
}

func (o *observed) ServerHandshake(conn net.Conn) (net.Conn, credentials.AuthInfo, error) {
	out, info, err := o.TransportCredentials.ServerHandshake(conn)
	// A caller that closes at once, without a word, is a TCP probe.
	if err != nil && !errors.Is(err, io.EOF) {
		o.failed(conn, err)
	}
	return out, info, err
}

func (o *observed) ClientHandshake(ctx context.Context, authority string, conn net.Conn) (net.Conn, credentials.AuthInfo, error) {
	out, info, err := o.TransportCredentials.ClientHandshake(ctx, authority, conn)
	if err != nil && ctx.Err() == nil { // not a connection given up
		o.failed(conn, err, "authority", authority)
	}
	return out, info, err
}

func (o *observed) Clone() credentials.TransportCredentials {
	clone := *o
	clone.TransportCredentials = o.TransportCredentials.Clone()
	return &clone
}

// failed counts a failed handshake and logs it, some of the time, with
// attrs.
func (o *observed) failed(conn net.Conn, err error, attrs ...any) {
	o.failures.Inc()
	o.sometimes.Do(func() {
		o.log.Warn("mtls: TLS handshake failed (all counted in "+HandshakeFailuresMetric+", logged at most every 10 s)",
			append([]any{"side", o.side, "peer.address", conn.RemoteAddr().String(), "error", err}, attrs...)...)
	})
}

// Certificate returns the certificate in use and its key, for clients
// other than gRPC's that take a callback per connection (nats.go's
// ClientTLSConfig), so they present a rotated certificate from their
// next connection on.
func (c *Credentials) Certificate() (tls.Certificate, error) {
	return c.source.km.Load().Certs[0], nil
}

// Roots returns the CA bundle in use, for such clients to check their
// servers with.
func (c *Credentials) Roots() (*x509.CertPool, error) {
	return c.source.km.Load().Roots, nil
}

// Close stops reading the files and waits for the reader to end. The
// credentials go on serving handshakes with the last set read: close the
// servers and connections that use them first or after, as is handy.
func (c *Credentials) Close() {
	c.stop()
	<-c.done
	c.expiries.DeleteLabelValues(c.cfg.CertFile)
}

// watch reads the files every Refresh until ctx ends.
func (c *Credentials) watch(ctx context.Context) {
	defer close(c.done)
	t := time.NewTicker(c.cfg.Refresh)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			c.reload(ctx, time.Now())
		}
	}
}

// reload takes the files' contents if they changed and pass the check,
// and says what it did: once for each failure to read them, once for
// each set of contents refused in a row (a set refused for a time, not
// valid yet, is checked again at every refresh, and taken once it is),
// once when the certificate in use expires.
func (c *Credentials) reload(ctx context.Context, now time.Time) {
	log := c.cfg.Logger.With("cert_file", c.cfg.CertFile, "key_file", c.cfg.KeyFile, "ca_file", c.cfg.CAFile)
	// A certificate that expires in use (its rotation never came, or was
	// refused) fails every handshake from then on: say so once.
	if leaf := c.source.leaf(); !c.expiryLogged && now.After(leaf.NotAfter) {
		c.expiryLogged = true
		log.ErrorContext(ctx, "mtls: the certificate in use has expired; handshakes fail until valid files are read",
			"not_after", leaf.NotAfter.UTC())
	}
	contents, err := c.cfg.readSettled()
	if errors.Is(err, errChanging) {
		return // being written: read again at the next refresh
	}
	if err != nil {
		if err.Error() != c.readErr {
			c.readErr = err.Error()
			log.ErrorContext(ctx, "mtls: certificate files not read; the last good ones are still used", "error", err)
		}
		return
	}
	c.readErr = ""
	if same(contents, c.used) {
		c.refused = nil // a set refused before and read again is said again
		return
	}
	km, leaf, err := c.cfg.check(contents, now)
	if err != nil {
		if c.refused == nil || !same(contents, *c.refused) {
			log.ErrorContext(ctx, "mtls: new certificate files not used; the last good ones still are", "error", err)
		}
		c.refused = &contents
		return
	}
	c.source.km.Store(km)
	c.expiry.Set(float64(leaf.NotAfter.Unix()))
	c.used, c.refused, c.expiryLogged = contents, nil, false
	log.InfoContext(ctx, "mtls: certificate files reloaded", "subject", leaf.Subject.String(), "not_after", leaf.NotAfter.UTC())
}

// errChanging is readSettled's answer for files that changed between two
// reads.
var errChanging = errors.New("mtls: the files are changing")

// readSettled reads the files until two reads in a row agree (three at
// most), so a set read while a rotation replaced one file and not yet
// the next (a certificate with the old key, a new certificate with the
// old CA) is neither taken nor refused.
func (c Config) readSettled() ([3][]byte, error) {
	prev, err := c.read()
	for range 2 {
		if err != nil {
			return [3][]byte{}, err
		}
		var next [3][]byte
		if next, err = c.read(); err == nil && same(prev, next) {
			return next, nil
		}
		prev = next
	}
	if err != nil {
		return [3][]byte{}, err
	}
	return [3][]byte{}, errChanging
}

func same(a, b [3][]byte) bool {
	return bytes.Equal(a[0], b[0]) && bytes.Equal(a[1], b[1]) && bytes.Equal(a[2], b[2])
}

// read reads the CA file, then the certificate and the key.
func (c Config) read() ([3][]byte, error) {
	var out [3][]byte
	for i, name := range []string{c.CAFile, c.CertFile, c.KeyFile} {
		b, err := os.ReadFile(name)
		if err != nil {
			return [3][]byte{}, fmt.Errorf("mtls: %w", err)
		}
		out[i] = b
	}
	return out, nil
}

// check parses a set of contents (CA, certificate, key) and says which
// file is wrong and how.
func (c Config) check(contents [3][]byte, now time.Time) (*certprovider.KeyMaterial, *x509.Certificate, error) {
	caPEM, certPEM, keyPEM := contents[0], contents[1], contents[2]
	cas, err := certificates(caPEM)
	if err != nil {
		return nil, nil, fmt.Errorf("mtls: CA file %s: %w", c.CAFile, err)
	}
	chain, err := certificates(certPEM)
	if err != nil {
		return nil, nil, fmt.Errorf("mtls: certificate %s: %w", c.CertFile, err)
	}
	keys, err := pemBlocks(keyPEM)
	switch {
	case err != nil:
		return nil, nil, fmt.Errorf("mtls: key %s: %w", c.KeyFile, err)
	case len(keys) != 1 || !strings.HasSuffix(keys[0].Type, "PRIVATE KEY"):
		return nil, nil, fmt.Errorf("mtls: key %s: want one PEM private key, got %d blocks", c.KeyFile, len(keys))
	}
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, nil, fmt.Errorf("mtls: certificate %s with key %s: %w", c.CertFile, c.KeyFile, err)
	}
	leaf := chain[0]
	pair.Leaf = leaf
	switch {
	case now.Before(leaf.NotBefore):
		return nil, nil, fmt.Errorf("mtls: certificate %s is not valid before %s", c.CertFile, leaf.NotBefore.UTC().Format(time.RFC3339))
	case now.After(leaf.NotAfter):
		return nil, nil, fmt.Errorf("mtls: certificate %s expired at %s", c.CertFile, leaf.NotAfter.UTC().Format(time.RFC3339))
	}
	// A certificate restricted from a use the process makes of it fails
	// those handshakes, with an error that names neither the file nor the
	// cause.
	if eku := leaf.ExtKeyUsage; len(eku) > 0 && !slices.Contains(eku, x509.ExtKeyUsageAny) {
		for _, want := range []struct {
			use   Use
			usage x509.ExtKeyUsage
			name  string
		}{{Serve, x509.ExtKeyUsageServerAuth, "serverAuth (it serves)"}, {Call, x509.ExtKeyUsageClientAuth, "clientAuth (it calls services or NATS)"}} {
			if c.Use&want.use != 0 && !slices.Contains(eku, want.usage) {
				return nil, nil, fmt.Errorf("mtls: certificate %s lacks the extended key usage %s", c.CertFile, want.name)
			}
		}
	}
	roots := x509.NewCertPool()
	for _, ca := range cas {
		roots.AddCert(ca)
	}
	return &certprovider.KeyMaterial{Certs: []tls.Certificate{pair}, Roots: roots}, leaf, nil
}

// certificates parses data's PEM blocks, which must all be
// certificates.
func certificates(data []byte) ([]*x509.Certificate, error) {
	blocks, err := pemBlocks(data)
	if err != nil {
		return nil, err
	}
	var out []*x509.Certificate
	for _, block := range blocks {
		if block.Type != "CERTIFICATE" {
			return nil, fmt.Errorf("a %q PEM block where certificates were expected", block.Type)
		}
		cert, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, err
		}
		out = append(out, cert)
	}
	if len(out) == 0 {
		return nil, errors.New("holds no PEM certificate")
	}
	return out, nil
}

// pemBlocks decodes data as PEM blocks with nothing but space around
// them: a file cut short in a block, a block whose base64 does not
// decode, or text between blocks (which encoding/pem skips) is refused,
// rather than read as the blocks around it.
func pemBlocks(data []byte) ([]*pem.Block, error) {
	var out []*pem.Block
	rest := bytes.TrimSpace(data)
	for len(rest) > 0 {
		if !bytes.HasPrefix(rest, []byte("-----BEGIN ")) {
			return nil, errors.New("holds something other than whole PEM blocks (or a block cut short)")
		}
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			return nil, errors.New("holds something other than whole PEM blocks (or a block cut short)")
		}
		out = append(out, block)
		rest = bytes.TrimSpace(rest)
	}
	return out, nil
}

// source hands advancedtls the key material in use.
type source struct {
	km atomic.Pointer[certprovider.KeyMaterial]
}

var _ certprovider.Provider = (*source)(nil)

func (s *source) KeyMaterial(context.Context) (*certprovider.KeyMaterial, error) {
	return s.km.Load(), nil
}

// Close does nothing: Credentials.Close stops the reading.
func (s *source) Close() {}

func (s *source) leaf() *x509.Certificate { return s.km.Load().Certs[0].Leaf }

// PeerNames are the names of the certificate a call's caller presented,
// as gRPC's authorization policies match them: its URI names if it has
// any, else its DNS names, else its subject ("CN=operator,O=Shop"). None
// for a call without mutual TLS.
func PeerNames(ctx context.Context) []string {
	pr, ok := peer.FromContext(ctx)
	if !ok {
		return nil
	}
	info, ok := pr.AuthInfo.(credentials.TLSInfo)
	if !ok || len(info.State.PeerCertificates) == 0 {
		return nil
	}
	cert := info.State.PeerCertificates[0]
	switch {
	case len(cert.URIs) > 0:
		names := make([]string, len(cert.URIs))
		for i, u := range cert.URIs {
			names[i] = u.String()
		}
		return names
	case len(cert.DNSNames) > 0:
		return slices.Clone(cert.DNSNames)
	}
	return []string{cert.Subject.String()}
}
