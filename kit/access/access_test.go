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
    {"name": "watcher", "source": {"principals": ["watcher", "intruder-watcher"]}, "request": {"paths": ["/grpc.testing.TestService/StreamingOutputCall"]}},
    {"name": "spiffe", "source": {"principals": ["spiffe://duet/order"]}, "request": {"paths": ["/grpc.testing.TestService/EmptyCall"]}},
    {"name": "refused by the handler", "source": {"principals": ["order"]}, "request": {"paths": ["/grpc.testing.TestService/UnaryCall"]}}
  ]
}`

type testService struct {
	testpb.UnimplementedTestServiceServer
}

func (testService) EmptyCall(context.Context, *testpb.Empty) (*testpb.Empty, error) {
	return &testpb.Empty{}, nil
}

// UnaryCall refuses on its own account, with a reason of its own.
func (testService) UnaryCall(context.Context, *testpb.SimpleRequest) (*testpb.SimpleResponse, error) {
	return nil, apierr.New(codes.PermissionDenied, "NOT_YOUR_ORDER", "the handler's own refusal")
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
	// Unknown methods go through the interceptors, as kit/server's do.
	unknown := func(any, grpc.ServerStream) error { return status.Error(codes.Unimplemented, "unknown method") }
	srv := grpc.NewServer(grpc.Creds(creds.Server()), grpc.UnknownServiceHandler(unknown),
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

// caller connects as a certificate with names (comma-separated).
func (f *fixture) caller(t *testing.T, names string) *grpc.ClientConn {
	t.Helper()
	cfg := f.ca.Write(t, t.TempDir(), time.Hour, strings.Split(names, ","))
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
	case "handler refuses":
		_, err := testpb.NewTestServiceClient(conn).UnaryCall(ctx, &testpb.SimpleRequest{})
		return err
	case "health watch":
		stream, err := healthpb.NewHealthClient(conn).Watch(ctx, &healthpb.HealthCheckRequest{})
		if err != nil {
			return err
		}
		_, err = stream.Recv()
		return err
	default:
		_, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{})
		return err
	}
}

func TestPolicy(t *testing.T) {
	f := newFixture(t, policy)
	tests := []struct {
		caller, kind string
		want         string // the refusal's reason; "" for none
	}{
		{"order", "unary", ""},
		{"order", "stream", access.ReasonCallerNotAllowed},
		{"watcher", "stream", ""},
		{"watcher", "unary", access.ReasonCallerNotAllowed},
		{"gateway", "unary", access.ReasonCallerNotAllowed},
		{"intruder-watcher", "stream", access.ReasonCallerNotAllowed}, // a deny rule wins
		{"gateway", "health", ""},                                     // health answers any caller
		{"intruder-1", "health watch", ""},
		// A handler's own refusal is passed on as it is.
		{"order", "handler refuses", "NOT_YOUR_ORDER"},
		// A certificate's URI names hide its DNS names from the policy.
		{"spiffe://duet/order", "unary", ""},
		{"spiffe://duet/gateway,order", "unary", access.ReasonCallerNotAllowed},
	}
	for _, tt := range tests {
		t.Run(tt.caller+" "+tt.kind, func(t *testing.T) {
			err := call(t, f.caller(t, tt.caller), tt.kind)
			switch {
			case tt.want == "" && err != nil:
				t.Fatalf("refused: %v", err)
			case tt.want != "" && (status.Code(err) != codes.PermissionDenied || !apierr.Is(err, tt.want)):
				t.Fatalf("answered %v, want PERMISSION_DENIED %s", err, tt.want)
			}
		})
	}
	for _, want := range []string{`principal=intruder-watcher`, `principal=spiffe://duet/gateway`} {
		if !strings.Contains(f.logs.String(), want) {
			t.Errorf("the refusals' log lines do not say %s:\n%s", want, f.logs.String())
		}
	}
}

// TestLongMethodCut: a refusal repeats at most 256 bytes of a made-up
// method name, which a caller may send as long as its headers.
func TestLongMethodCut(t *testing.T) {
	f := newFixture(t, policy)
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	long := "/grpc.testing.TestService/" + strings.Repeat("x", 10000)
	err := f.caller(t, "gateway").Invoke(ctx, long, &testpb.Empty{}, &testpb.Empty{})
	if status.Code(err) != codes.PermissionDenied || len(status.Convert(err).Message()) > 400 {
		t.Fatalf("answered %d bytes: %.300v", len(status.Convert(err).Message()), err)
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

	// Two broken files in turn, then none: each said once, the last good
	// policy kept throughout.
	mtlstest.WriteFile(t, f.policy, []byte(`{"name": "broken", `))
	f.logs.WaitFor(t, "failed to unmarshal policy", 10*time.Second)
	mtlstest.WriteFile(t, f.policy, []byte(`{"name": "no rules"}`))
	f.logs.WaitFor(t, "allow_rules", 10*time.Second)
	if err := os.Remove(f.policy); err != nil {
		t.Fatal(err)
	}
	f.logs.WaitFor(t, "policy file not read", 10*time.Second)
	if err := call(t, gateway, "unary"); err != nil {
		t.Fatalf("with a broken policy file the last good policy was dropped: %v", err)
	}
}

// TestReloadSaysEachOnce: a policy refused, or a file that cannot be
// read, is logged once however often it is read again; a new one is
// logged again.
func TestReloadSaysEachOnce(t *testing.T) {
	file := filepath.Join(t.TempDir(), "policy.json")
	mtlstest.WriteFile(t, file, []byte(policy))
	var logs logbuffer.Buffer
	// Refresh an hour: the test's readings are the only ones.
	p, err := access.Load(t.Context(), access.Config{PolicyFile: file, Refresh: time.Hour, Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	steps := []struct {
		name   string
		change func()
		counts map[string]int
	}{
		{"broken", func() { mtlstest.WriteFile(t, file, []byte(`{"name": "broken", `)) }, map[string]int{"new policy not used": 1}},
		{"broken otherwise", func() { mtlstest.WriteFile(t, file, []byte(`{"name": "broken" `)) }, map[string]int{"new policy not used": 2}},
		{"gone", func() {
			if err := os.Remove(file); err != nil {
				t.Fatal(err)
			}
		}, map[string]int{"not read": 1, "new policy not used": 2}},
		{"the first again", func() { mtlstest.WriteFile(t, file, []byte(policy)) }, map[string]int{"not read": 1, "reloaded": 0}},
		{"a new one", func() { mtlstest.WriteFile(t, file, []byte(strings.Replace(policy, `"test"`, `"new"`, 1))) }, map[string]int{"reloaded": 1}},
	}
	for _, step := range steps {
		step.change()
		for range 3 {
			p.Reload(t.Context())
		}
		for text, want := range step.counts {
			if got := strings.Count(logs.String(), text); got != want {
				t.Fatalf("after %s: %d lines saying %q, want %d:\n%s", step.name, got, text, want, logs.String())
			}
		}
	}
	// Every line names the file, as policy_file.
	for _, line := range strings.Split(strings.TrimSpace(logs.String()), "\n") {
		if !strings.Contains(line, "policy_file="+file) {
			t.Errorf("a line does not name the policy file: %s", line)
		}
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
		{"a second policy after it", access.Config{PolicyFile: write("two.json", policy+policy)}, "text after the policy"},
		{"a brace after it", access.Config{PolicyFile: write("brace.json", policy+"}")}, "text after the policy"},
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
