package mtls_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	"github.com/duetkit/duet/kit/client"
	"github.com/duetkit/duet/kit/metrics"
	"github.com/duetkit/duet/kit/mtls"
	"github.com/duetkit/duet/kit/mtls/mtlstest"

	"github.com/duetkit/duet/internal/logbuffer"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// refresh is how often the tests' files are read again: short, so a
// rotation shows within the test's wait.
const refresh = 20 * time.Millisecond

// serve runs a gRPC health server over files' mutual TLS and returns its
// address.
func serve(t *testing.T, f mtls.Config) string {
	t.Helper()
	quiet(&f)
	creds, err := mtls.Load(t.Context(), f)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(creds.Close)
	srv := grpc.NewServer(grpc.Creds(creds.Server()))
	healthpb.RegisterHealthServer(srv, health.NewServer())
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { defer close(done); srv.Serve(lis) }()
	t.Cleanup(func() { srv.Stop(); <-done })
	return lis.Addr().String()
}

// check makes one health call to addr over a connection of its own with
// creds, and returns its error.
func check(t *testing.T, addr string, creds credentials.TransportCredentials) error {
	t.Helper()
	_, err := call(t, addr, creds)
	return err
}

// call makes one health call to addr over a connection of its own with
// creds, and returns the name of the CA that signed the server's
// certificate.
func call(t *testing.T, addr string, creds credentials.TransportCredentials) (issuer string, err error) {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(creds))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	var p peer.Peer
	if _, err = healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{}, grpc.Peer(&p)); err != nil {
		return "", err
	}
	info, ok := p.AuthInfo.(credentials.TLSInfo)
	if !ok || len(info.State.PeerCertificates) == 0 {
		t.Fatalf("the call's peer has no TLS certificate: %#v", p.AuthInfo)
	}
	return info.State.PeerCertificates[0].Issuer.CommonName, nil
}

// servedBy calls addr with creds until a call succeeds with a server
// certificate the CA named issuer signed (files being read again), and
// returns the last outcome after 10 s of others.
func servedBy(t *testing.T, addr string, creds credentials.TransportCredentials, issuer string) error {
	t.Helper()
	var err error
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(refresh) {
		var got string
		if got, err = call(t, addr, creds); err == nil && got == issuer {
			return nil
		} else if err == nil {
			err = fmt.Errorf("served with a certificate %s signed", got)
		}
	}
	return err
}

// clientOf loads f as a client's credentials.
func clientOf(t *testing.T, f mtls.Config) credentials.TransportCredentials {
	t.Helper()
	quiet(&f)
	c, err := mtls.Load(t.Context(), f)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c.Client()
}

// quiet sends f's reloads' log lines nowhere, unless a test watches them.
func quiet(f *mtls.Config) {
	if f.Logger == nil {
		f.Logger = slog.New(slog.DiscardHandler)
	}
}

// refused says whether err is a call the TLS handshake stopped.
func refused(err error) bool {
	return status.Code(err) == codes.Unavailable
}

func TestMutualTLS(t *testing.T) {
	ca := mtlstest.NewCA(t, "duet")
	other := mtlstest.NewCA(t, "other")
	cfg := ca.Write(t, t.TempDir(), refresh, []string{"127.0.0.1"})
	var logs logbuffer.Buffer
	cfg.Logger, cfg.Metrics = slog.New(slog.NewTextHandler(&logs, nil)), metrics.New()
	addr := serve(t, cfg)

	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(ca.PEM())
	tests := []struct {
		name  string
		creds credentials.TransportCredentials
		ok    bool
	}{
		{"a certificate the CA signed", clientOf(t, ca.Write(t, t.TempDir(), refresh, []string{"client"})), true},
		{"plaintext", insecure.NewCredentials(), false},
		{"TLS without a certificate", credentials.NewTLS(&tls.Config{RootCAs: roots, ServerName: "127.0.0.1"}), false},
		{"a certificate another CA signed", clientOf(t, other.Write(t, t.TempDir(), refresh, []string{"client"}, ca)), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := check(t, addr, tt.creds)
			switch {
			case tt.ok && err != nil:
				t.Fatalf("call failed: %v", err)
			case !tt.ok && !refused(err):
				t.Fatalf("call answered %v, want refused (UNAVAILABLE)", err)
			}
		})
	}
	// The server saw the three refused handshakes: counted, and logged.
	// (A refused client retries; the counter counts every attempt.)
	// (The server counts after its alert went out: wait for it.)
	var n float64
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(refresh) {
		if n = handshakeFailures(t, cfg.Metrics, "server"); n >= 3 {
			break
		}
	}
	if n < 3 {
		t.Errorf("%s{side=server} = %v, want at least 3", mtls.HandshakeFailuresMetric, n)
	}
	if n := strings.Count(logs.String(), "TLS handshake failed"); n < 1 || n > 3 {
		t.Errorf("%d log lines of failed handshakes, want 1 to 3:\n%s", n, logs.String())
	}
}

// handshakeFailures reads HandshakeFailuresMetric of side from m.
func handshakeFailures(t *testing.T, m *metrics.Metrics, side string) float64 {
	t.Helper()
	families, err := m.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		for _, metric := range f.GetMetric() {
			if f.GetName() == mtls.HandshakeFailuresMetric && metric.GetLabel()[0].GetValue() == side {
				return metric.GetCounter().GetValue()
			}
		}
	}
	return 0
}

// TestServerChecked: a client checks the server's certificate: its CA,
// and its names against the address dialed (an IP address, or the host
// of a dns:/// target).
func TestServerChecked(t *testing.T) {
	ca, other := mtlstest.NewCA(t, "duet"), mtlstest.NewCA(t, "other")
	client := clientOf(t, ca.Write(t, t.TempDir(), refresh, []string{"client"}))
	named := serve(t, ca.Write(t, t.TempDir(), refresh, []string{"localhost"}))
	clientCfg := ca.Write(t, t.TempDir(), refresh, []string{"client"})
	clientCfg.Metrics = metrics.New()
	counted := clientOf(t, clientCfg)
	_, port, _ := net.SplitHostPort(named)
	tests := []struct {
		name, target string
		ok           bool
	}{
		{"the name dialed", "dns:///localhost:" + port, true},
		{"an address the certificate does not name", named, false},
		{"a server another CA signed", serve(t, other.Write(t, t.TempDir(), refresh, []string{"127.0.0.1"}, ca)), false},
	}
	if err := check(t, named, counted); !refused(err) {
		t.Fatalf("a server named localhost at 127.0.0.1: %v, want refused", err)
	}
	if n := handshakeFailures(t, clientCfg.Metrics, "client"); n < 1 {
		t.Errorf("%s{side=client} = %v, want at least 1", mtls.HandshakeFailuresMetric, n)
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := check(t, tt.target, client)
			switch {
			case tt.ok && err != nil:
				t.Fatalf("call failed: %v", err)
			case !tt.ok && !refused(err):
				t.Fatalf("call answered %v, want refused (UNAVAILABLE)", err)
			}
		})
	}
}

// TestRotation: new files take effect without a restart, on both sides:
// once the server's and a client's files are replaced by ones a new CA
// signed, the rotated client (which presents and trusts the new CA's
// only) is served with the server's new certificate, and a client of the
// old CA, served before, is refused.
func TestRotation(t *testing.T) {
	old, next := mtlstest.NewCA(t, "old"), mtlstest.NewCA(t, "next")
	serverDir, clientDir := t.TempDir(), t.TempDir()
	addr := serve(t, old.Write(t, serverDir, refresh, []string{"127.0.0.1"}))
	rotating := clientOf(t, old.Write(t, clientDir, refresh, []string{"client"}))
	stale := clientOf(t, old.Write(t, t.TempDir(), refresh, []string{"client"}, old, next))
	if err := servedBy(t, addr, rotating, "old"); err != nil {
		t.Fatalf("before the rotation: %v", err)
	}
	if err := check(t, addr, stale); err != nil {
		t.Fatalf("before the rotation, the client of the old CA: %v", err)
	}

	next.Write(t, serverDir, refresh, []string{"127.0.0.1"})
	next.Write(t, clientDir, refresh, []string{"client"})
	if err := servedBy(t, addr, rotating, "next"); err != nil {
		t.Fatalf("after the rotation, the rotated client: %v", err)
	}
	if err := check(t, addr, stale); !refused(err) {
		t.Fatalf("after the rotation, a client of the old CA: %v, want refused", err)
	}
}

// TestBadFilesKeepTheLastGood: a set of files that fails the check (a
// rotation half done) leaves the credentials as they were, and is said
// once in the log; a good set after it is taken.
func TestBadFilesKeepTheLastGood(t *testing.T) {
	ca, next := mtlstest.NewCA(t, "duet"), mtlstest.NewCA(t, "next")
	dir := t.TempDir()
	cfg := ca.Write(t, dir, refresh, []string{"127.0.0.1"})
	var logs logbuffer.Buffer
	cfg.Logger = slog.New(slog.NewTextHandler(&logs, nil))
	addr := serve(t, cfg)
	client := clientOf(t, ca.Write(t, t.TempDir(), refresh, []string{"client"}, ca, next))

	// A key of another certificate, the CA file cut short.
	_, otherKey := ca.Issue(t, mtlstest.Leaf{Names: []string{"127.0.0.1"}})
	mtlstest.WriteFile(t, cfg.KeyFile, otherKey)
	logs.WaitFor(t, "private key does not match", 10*time.Second)
	if err := servedBy(t, addr, client, "duet"); err != nil {
		t.Fatalf("with a key that does not match, the server: %v", err)
	}
	full := append(ca.PEM(), next.PEM()...)
	mtlstest.WriteFile(t, cfg.CAFile, full[:len(full)-40])
	logs.WaitFor(t, "cut short", 10*time.Second)
	if err := servedBy(t, addr, client, "duet"); err != nil {
		t.Fatalf("with a CA file cut short, the server: %v", err)
	}

	next.Write(t, dir, refresh, []string{"127.0.0.1"}, ca, next)
	if err := servedBy(t, addr, client, "next"); err != nil {
		t.Fatalf("a good set after the bad ones: %v", err)
	}
}

func TestLoadRefuses(t *testing.T) {
	ca := mtlstest.NewCA(t, "duet")
	dir := t.TempDir()
	good := ca.Write(t, dir, refresh, []string{"127.0.0.1"})
	write := func(name string, data []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, data, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	issued := func(name string, leaf mtlstest.Leaf) mtls.Config {
		cert, key := ca.Issue(t, leaf)
		f := good
		f.CertFile, f.KeyFile = write(name+".pem", cert), write(name+".key", key)
		return f
	}
	otherKey := good
	_, key := ca.Issue(t, mtlstest.Leaf{Names: []string{"x"}})
	otherKey.KeyFile = write("other.key", key)
	caPEM := ca.PEM()
	cutCA := good
	cutCA.CAFile = write("cut-ca.pem", caPEM[:len(caPEM)-40])
	keyAsCert := good
	keyAsCert.CAFile = write("key-as-ca.pem", key)
	serverOnly := issued("server", mtlstest.Leaf{Usages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}})
	clientOnly := issued("client", mtlstest.Leaf{Usages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}})
	textCA := good
	textCA.CAFile = write("text-ca.pem", append(append(slices.Clone(caPEM), "a note\n"...), caPEM...))
	twoKeys := good
	twoKeys.KeyFile = write("two.key", append(append([]byte{}, key...), key...))
	emptyCA := good
	emptyCA.CAFile = write("empty-ca.pem", nil)
	badCA := good
	badCA.CAFile = write("bad-ca.pem", []byte("no PEM here"))
	missingCA := good
	missingCA.CAFile = filepath.Join(dir, "missing.pem")
	noCA := good
	noCA.CAFile = ""
	negative := good
	negative.Refresh = -time.Second

	tests := []struct {
		name string
		f    mtls.Config
		want string
	}{
		{"no CA file", noCA, "all needed"},
		{"negative refresh", negative, "negative"},
		{"key of another certificate", otherKey, "private key does not match"},
		{"CA file not PEM", badCA, "something other than whole PEM blocks"},
		{"text between CA blocks", textCA, "something other than whole PEM blocks"},
		{"two keys", twoKeys, "want one PEM private key, got 2"},
		{"CA file empty", emptyCA, "holds no PEM certificate"},
		{"CA file cut short", cutCA, "cut short"},
		{"CA file holding a key", keyAsCert, `"PRIVATE KEY" PEM block`},
		{"CA file missing", missingCA, "missing.pem"},
		{"expired", issued("expired", mtlstest.Leaf{NotBefore: time.Now().Add(-2 * time.Hour), NotAfter: time.Now().Add(-time.Hour)}), "expired"},
		{"not yet valid", issued("future", mtlstest.Leaf{NotBefore: time.Now().Add(time.Hour), NotAfter: time.Now().Add(2 * time.Hour)}), "not valid before"},
		{"server only, to serve and call", serverOnly, "clientAuth"},
		{"client only, to serve and call", clientOnly, "serverAuth"},
		{"server only, to call", withUse(serverOnly, mtls.Call), "clientAuth"},
		{"client only, to serve", withUse(clientOnly, mtls.Serve), "serverAuth"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := mtls.Load(t.Context(), tt.f)
			if err == nil {
				c.Close()
				t.Fatal("loaded")
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error %q does not say %q", err, tt.want)
			}
		})
	}
	for name, f := range map[string]mtls.Config{"the good files": good, "server only, to serve": withUse(serverOnly, mtls.Serve), "client only, to call": withUse(clientOnly, mtls.Call)} {
		c, err := mtls.Load(t.Context(), f)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		c.Close()
	}
}

func withUse(c mtls.Config, use mtls.Use) mtls.Config {
	c.Use = use
	return c
}

// TestStaticTargetOverMutualTLS: each replica of a kit/client static:///
// list is checked against its own entry's host, not against the whole
// list, which no certificate names.
func TestStaticTargetOverMutualTLS(t *testing.T) {
	ca := mtlstest.NewCA(t, "duet")
	cfg := ca.Write(t, t.TempDir(), refresh, []string{"127.0.0.1"})
	a, b := serve(t, cfg), serve(t, cfg)
	conn, err := client.New("static:///"+a+","+b, client.Config{Creds: clientOf(t, ca.Write(t, t.TempDir(), refresh, []string{"client"}))})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	seen := map[string]bool{}
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	for !seen[a] || !seen[b] {
		var p peer.Peer
		if _, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{}, grpc.Peer(&p)); err != nil {
			t.Fatalf("a call over the static list: %v (replicas reached: %v)", err, seen)
		}
		seen[p.Addr.String()] = true
	}
}
