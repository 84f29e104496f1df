package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	natsserver "github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	userv1 "github.com/duetkit/duet/gen/duet/user/v1"
	"github.com/duetkit/duet/kit/events/eventstest"
	"github.com/duetkit/duet/kit/mtls/mtlstest"
)

// TestServeNATSOverMutualTLS: with a NATS URL of tls:// servers, a
// component connects with its own certificate and CA, to a NATS server
// that refuses clients without a certificate the CA signed, and its
// events get there.
func TestServeNATSOverMutualTLS(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	ca := mtlstest.NewCA(t, "duet test")
	certPEM, keyPEM := ca.Issue(t, mtlstest.Leaf{Names: []string{"127.0.0.1"}})
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(ca.PEM())
	ns, err := natsserver.NewServer(&natsserver.Options{
		Host: "127.0.0.1", Port: -1, NoLog: true, NoSigs: true,
		JetStream: true, StoreDir: t.TempDir(),
		TLS: true, TLSVerify: true, TLSTimeout: 5,
		TLSConfig: &tls.Config{Certificates: []tls.Certificate{pair}, ClientCAs: roots,
			ClientAuth: tls.RequireAndVerifyClientCert, MinVersion: tls.VersionTLS12},
	})
	if err != nil {
		t.Fatal(err)
	}
	go ns.Start()
	t.Cleanup(ns.Shutdown)
	if !ns.ReadyForConnections(10 * time.Second) {
		t.Fatal("NATS did not start")
	}
	url := "tls://" + ns.Addr().String()

	// Without a certificate the server refuses the connection.
	if nc, err := nats.Connect(url, nats.RootCAs(writeTemp(t, ca.PEM())), nats.Timeout(5*time.Second)); err == nil {
		nc.Close()
		t.Fatal("the test's NATS took a client without a certificate")
	}

	id := eventstest.Unique(t)
	stream := "TEST_" + id
	f := ca.Write(t, t.TempDir(), 0, []string{"user", "127.0.0.1"})
	user := startComponent(t, ctx, "user", "--data-dir", t.TempDir(), "--nats-url", url,
		"--event-stream", stream, "--event-prefix", "t"+id,
		"--tls-cert", f.CertFile, "--tls-key", f.KeyFile, "--tls-ca", f.CAFile)
	conn := dialAs(t, ca, "caller", user.addr)
	if _, err := userv1.NewUserServiceClient(conn).CreateUser(ctx, &userv1.CreateUserRequest{Email: "tls@example.com", Name: "TLS"}); err != nil {
		t.Fatal(err)
	}

	// A service's certificate must allow clientAuth to reach NATS over
	// TLS; the inventory service, which does not use NATS, needs none.
	serverOnly := func(name string) []string {
		dir := t.TempDir()
		cert, key := ca.Issue(t, mtlstest.Leaf{Names: []string{name, "127.0.0.1"}, Usages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}})
		files := []string{filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem"), filepath.Join(dir, "ca.pem")}
		for i, data := range [][]byte{cert, key, ca.PEM()} {
			mtlstest.WriteFile(t, files[i], data)
		}
		return []string{"--tls-cert", files[0], "--tls-key", files[1], "--tls-ca", files[2]}
	}
	// Bounded: were the certificate taken, the service would serve on.
	short, cancelShort := context.WithTimeout(ctx, 10*time.Second)
	err = run(short, append([]string{"serve", "payment", "--listen", "127.0.0.1:0", "--data-dir", t.TempDir(), "--nats-url", url}, serverOnly("payment")...), io.Discard, io.Discard)
	cancelShort()
	if err == nil || !strings.Contains(err.Error(), "clientAuth") {
		t.Errorf("payment with a serverAuth-only certificate and NATS over TLS: %v, want an error naming clientAuth", err)
	}
	startComponent(t, ctx, "inventory", append([]string{"--data-dir", t.TempDir(), "--nats-url", url}, serverOnly("inventory")...)...)

	// The user's event reaches the stream, read here over TLS too.
	nc, err := nats.Connect(url, nats.ClientCert(f.CertFile, f.KeyFile), nats.RootCAs(f.CAFile))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	var msgs uint64
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if s, err := js.Stream(ctx, stream); err == nil {
			if info, err := s.Info(ctx); err == nil {
				if msgs = info.State.Msgs; msgs > 0 {
					break
				}
			}
		}
	}
	if msgs == 0 {
		t.Fatalf("no event reached the stream over TLS; the service said:\n%s", user.stderr.String())
	}
}

// writeTemp writes data to a file of its own and returns its name.
func writeTemp(t *testing.T, data []byte) string {
	t.Helper()
	f, err := os.CreateTemp(t.TempDir(), "pem")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.Write(data); err != nil {
		t.Fatal(err)
	}
	return f.Name()
}
