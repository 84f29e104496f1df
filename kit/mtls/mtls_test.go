package mtls_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"net"
	"os"
	"path/filepath"
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
	"google.golang.org/grpc/status"

	"github.com/duetkit/duet/kit/mtls"
	"github.com/duetkit/duet/kit/mtls/mtlstest"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// refresh is how often the tests' files are read again: short, so a
// rotation shows within the test's wait.
const refresh = 20 * time.Millisecond

// serve runs a gRPC health server over files' mutual TLS and returns its
// address.
func serve(t *testing.T, f mtls.Files) string {
	t.Helper()
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
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(creds))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	_, err = healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{})
	return err
}

// served calls addr with creds until a call succeeds, for files to be read
// again, and returns the last call's error after 10 s of failures.
func served(t *testing.T, addr string, creds credentials.TransportCredentials) error {
	t.Helper()
	var err error
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(refresh) {
		if err = check(t, addr, creds); err == nil {
			return nil
		}
	}
	return err
}

// clientOf loads f as a client's credentials.
func clientOf(t *testing.T, f mtls.Files) credentials.TransportCredentials {
	t.Helper()
	c, err := mtls.Load(t.Context(), f)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c.Client()
}

// refused says whether err is a call the TLS handshake stopped.
func refused(err error) bool {
	return status.Code(err) == codes.Unavailable
}

func TestMutualTLS(t *testing.T) {
	ca := mtlstest.NewCA(t, "duet")
	other := mtlstest.NewCA(t, "other")
	addr := serve(t, ca.Write(t, t.TempDir(), refresh, []string{"127.0.0.1"}))

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
}

// TestServerNameChecked: a client refuses a server whose certificate does
// not name the address it dialed, though its CA signed it.
func TestServerNameChecked(t *testing.T) {
	ca := mtlstest.NewCA(t, "duet")
	addr := serve(t, ca.Write(t, t.TempDir(), refresh, []string{"user.internal"}))
	err := check(t, addr, clientOf(t, ca.Write(t, t.TempDir(), refresh, []string{"client"})))
	if !refused(err) || !strings.Contains(err.Error(), "127.0.0.1") {
		t.Fatalf("call to a server named user.internal at 127.0.0.1 answered %v, want refused naming 127.0.0.1", err)
	}
}

// TestRotation: new files take effect without a restart, on both sides:
// once the server's and a client's files are replaced by ones a new CA
// signed, the new client is served and a client of the old CA refused.
func TestRotation(t *testing.T) {
	old, next := mtlstest.NewCA(t, "old"), mtlstest.NewCA(t, "next")
	serverDir, clientDir := t.TempDir(), t.TempDir()
	addr := serve(t, old.Write(t, serverDir, refresh, []string{"127.0.0.1"}))
	rotating := clientOf(t, old.Write(t, clientDir, refresh, []string{"client"}))
	stale := clientOf(t, old.Write(t, t.TempDir(), refresh, []string{"client"}))
	if err := check(t, addr, rotating); err != nil {
		t.Fatalf("before the rotation: %v", err)
	}

	next.Write(t, serverDir, refresh, []string{"127.0.0.1"})
	next.Write(t, clientDir, refresh, []string{"client"})
	if err := served(t, addr, rotating); err != nil {
		t.Fatalf("after the rotation, the rotated client is still refused: %v", err)
	}
	if err := check(t, addr, stale); !refused(err) {
		t.Fatalf("after the rotation, a client of the old CA: %v, want refused", err)
	}
}

// TestBadFilesKeepTheLastGood: a certificate that does not parse (a
// rotation half written) leaves the server's identity as it was. The CA
// file, read after the certificate at each refresh, shows when the bad
// certificate has been read: it adds a second CA, whose clients are
// served from then on.
func TestBadFilesKeepTheLastGood(t *testing.T) {
	ca, added := mtlstest.NewCA(t, "duet"), mtlstest.NewCA(t, "added")
	f := ca.Write(t, t.TempDir(), refresh, []string{"127.0.0.1"})
	addr := serve(t, f)
	client := clientOf(t, ca.Write(t, t.TempDir(), refresh, []string{"client"}))
	addedClient := clientOf(t, added.Write(t, t.TempDir(), refresh, []string{"client"}, ca))

	mtlstest.WriteFile(t, f.CertFile, []byte("not a certificate"))
	mtlstest.WriteFile(t, f.CAFile, append(ca.PEM(), added.PEM()...))
	if err := served(t, addr, addedClient); err != nil {
		t.Fatalf("the CA file was never read again: %v", err)
	}
	if err := check(t, addr, client); err != nil {
		t.Fatalf("after reading a certificate that does not parse, the server refused: %v", err)
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
	issued := func(name string, leaf mtlstest.Leaf) mtls.Files {
		cert, key := ca.Issue(t, leaf)
		f := good
		f.CertFile, f.KeyFile = write(name+".pem", cert), write(name+".key", key)
		return f
	}
	otherKey := good
	_, key := ca.Issue(t, mtlstest.Leaf{Names: []string{"x"}})
	otherKey.KeyFile = write("other.key", key)
	elsewhere := good
	elsewhere.KeyFile = filepath.Join(t.TempDir(), "key.pem")
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
		f    mtls.Files
		want string
	}{
		{"no CA file", noCA, "all needed"},
		{"key elsewhere", elsewhere, "same directory"},
		{"negative refresh", negative, "negative"},
		{"key of another certificate", otherKey, "private key does not match"},
		{"CA file not PEM", badCA, "no PEM certificate"},
		{"CA file missing", missingCA, "missing.pem"},
		{"expired", issued("expired", mtlstest.Leaf{NotBefore: time.Now().Add(-2 * time.Hour), NotAfter: time.Now().Add(-time.Hour)}), "expired"},
		{"not yet valid", issued("future", mtlstest.Leaf{NotBefore: time.Now().Add(time.Hour), NotAfter: time.Now().Add(2 * time.Hour)}), "not valid before"},
		{"server only", issued("server", mtlstest.Leaf{Usages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}), "clientAuth"},
		{"client only", issued("client", mtlstest.Leaf{Usages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}), "serverAuth"},
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
	c, err := mtls.Load(t.Context(), good)
	if err != nil {
		t.Fatalf("the good files: %v", err)
	}
	c.Close()
}
