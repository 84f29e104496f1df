package access_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	testpb "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/status"

	"github.com/duetkit/duet/internal/logbuffer"
	"github.com/duetkit/duet/kit/access"
	"github.com/duetkit/duet/kit/apierr"
	"github.com/duetkit/duet/kit/mtls"
	"github.com/duetkit/duet/kit/mtls/mtlstest"
	"github.com/duetkit/duet/kit/server"
)

var _ server.Authorizer = (*access.Policy)(nil)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

const refresh = 20 * time.Millisecond

// policy lets "order" make EmptyCall and "watcher" open the stream, and
// refuses any "intruder*" whatever the allow rules say.
const policy = `{
  "name": "test",
  "deny_rules": [{"name": "intruders", "source": {"principals": ["intruder*"]}, "request": {"paths": ["*"]}}],
  "allow_rules": [
    {"name": "order", "source": {"principals": ["order"]}, "request": {"paths": ["/grpc.testing.TestService/EmptyCall"]}},
    {"name": "watcher", "source": {"principals": ["watcher", "intruder-watcher"]}, "request": {"paths": ["/grpc.testing.TestService/StreamingOutputCall"]}}
  ]
}`

type testService struct {
	testpb.UnimplementedTestServiceServer
}

func (testService) EmptyCall(context.Context, *testpb.Empty) (*testpb.Empty, error) {
	return &testpb.Empty{}, nil
}

func (testService) StreamingOutputCall(_ *testpb.StreamingOutputCallRequest, stream grpc.ServerStreamingServer[testpb.StreamingOutputCallResponse]) error {
	return stream.Send(&testpb.StreamingOutputCallResponse{})
}

// fixture is a server over mutual TLS behind a policy, and a CA to make
// its callers.
type fixture struct {
	ca     *mtlstest.CA
	addr   string
	policy string // the policy file
	logs   *logbuffer.Buffer
}

func newFixture(t *testing.T, policyJSON string) *fixture {
	t.Helper()
	f := &fixture{ca: mtlstest.NewCA(t, "duet"), policy: filepath.Join(t.TempDir(), "policy.json"), logs: &logbuffer.Buffer{}}
	mtlstest.WriteFile(t, f.policy, []byte(policyJSON))
	p, err := access.Load(t.Context(), access.Config{PolicyFile: f.policy, Refresh: refresh, Logger: slog.New(slog.NewTextHandler(f.logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Close)
	tlsCfg := f.ca.Write(t, t.TempDir(), time.Hour, []string{"127.0.0.1"})
	tlsCfg.Logger = slog.New(slog.DiscardHandler)
	creds, err := mtls.Load(t.Context(), tlsCfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(creds.Close)
	srv := grpc.NewServer(grpc.Creds(creds.Server()),
		grpc.ChainUnaryInterceptor(p.UnaryInterceptor()), grpc.ChainStreamInterceptor(p.StreamInterceptor()))
	testpb.RegisterTestServiceServer(srv, testService{})
	healthpb.RegisterHealthServer(srv, health.NewServer())
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { defer close(done); srv.Serve(lis) }()
	t.Cleanup(func() { srv.Stop(); <-done })
	f.addr = lis.Addr().String()
	return f
}

// caller connects as a certificate named name.
func (f *fixture) caller(t *testing.T, name string) *grpc.ClientConn {
	t.Helper()
	cfg := f.ca.Write(t, t.TempDir(), time.Hour, []string{name})
	cfg.Logger = slog.New(slog.DiscardHandler)
	creds, err := mtls.Load(t.Context(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(creds.Close)
	conn, err := grpc.NewClient(f.addr, grpc.WithTransportCredentials(creds.Client()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// call makes a call of kind ("unary", "stream" or "health") on conn.
func call(t *testing.T, conn *grpc.ClientConn, kind string) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	switch kind {
	case "unary":
		_, err := testpb.NewTestServiceClient(conn).EmptyCall(ctx, &testpb.Empty{})
		return err
	case "stream":
		stream, err := testpb.NewTestServiceClient(conn).StreamingOutputCall(ctx, &testpb.StreamingOutputCallRequest{})
		if err != nil {
			return err
		}
		for {
			if _, err := stream.Recv(); errors.Is(err, io.EOF) {
				return nil
			} else if err != nil {
				return err
			}
		}
	default:
		_, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{})
		return err
	}
}

func TestPolicy(t *testing.T) {
	f := newFixture(t, policy)
	tests := []struct {
		caller, kind string
		allowed      bool
	}{
		{"order", "unary", true},
		{"order", "stream", false},
		{"watcher", "stream", true},
		{"watcher", "unary", false},
		{"gateway", "unary", false},
		{"intruder-watcher", "stream", false}, // a deny rule wins
		{"gateway", "health", true},           // health answers any caller
		{"intruder-1", "health", true},
	}
	for _, tt := range tests {
		t.Run(tt.caller+" "+tt.kind, func(t *testing.T) {
			err := call(t, f.caller(t, tt.caller), tt.kind)
			switch {
			case tt.allowed && err != nil:
				t.Fatalf("refused: %v", err)
			case !tt.allowed && (status.Code(err) != codes.PermissionDenied || !apierr.Is(err, access.ReasonCallerNotAllowed)):
				t.Fatalf("answered %v, want PERMISSION_DENIED %s", err, access.ReasonCallerNotAllowed)
			}
		})
	}
}

// TestPolicyReloaded: a new policy applies without a restart; one that
// does not parse is logged and the last good one kept.
func TestPolicyReloaded(t *testing.T) {
	f := newFixture(t, policy)
	gateway := f.caller(t, "gateway")
	if err := call(t, gateway, "unary"); status.Code(err) != codes.PermissionDenied {
		t.Fatalf("before the change: %v, want PERMISSION_DENIED", err)
	}
	mtlstest.WriteFile(t, f.policy, []byte(strings.Replace(policy, `"principals": ["order"]`, `"principals": ["order", "gateway"]`, 1)))
	var err error
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(refresh) {
		if err = call(t, gateway, "unary"); err == nil {
			break
		}
	}
	if err != nil {
		t.Fatalf("after the change the gateway is still refused: %v", err)
	}

	mtlstest.WriteFile(t, f.policy, []byte(`{"name": "broken", `))
	for deadline := time.Now().Add(10 * time.Second); !strings.Contains(f.logs.String(), "new policy not used"); time.Sleep(refresh) {
		if time.Now().After(deadline) {
			t.Fatalf("no log of the broken policy:\n%s", f.logs.String())
		}
	}
	if err := call(t, gateway, "unary"); err != nil {
		t.Fatalf("with a broken policy file the last good policy was dropped: %v", err)
	}
}

func TestLoadRefuses(t *testing.T) {
	dir := t.TempDir()
	write := func(name, data string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(data), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	tests := []struct {
		name string
		cfg  access.Config
		want string
	}{
		{"no file", access.Config{}, "a policy file is needed"},
		{"missing", access.Config{PolicyFile: filepath.Join(dir, "missing.json")}, "missing.json"},
		{"not JSON", access.Config{PolicyFile: write("bad.json", "{")}, "bad.json"},
		{"no allow rules", access.Config{PolicyFile: write("empty.json", `{"name": "x"}`)}, "empty.json"},
		{"negative refresh", access.Config{PolicyFile: write("ok.json", policy), Refresh: -time.Second}, "negative"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := access.Load(t.Context(), tt.cfg)
			if err == nil {
				p.Close()
				t.Fatal("loaded")
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error %q does not say %q", err, tt.want)
			}
		})
	}
}
