package server_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/emptypb"

	orderv1 "github.com/duetkit/duet/gen/duet/order/v1"
	userv1 "github.com/duetkit/duet/gen/duet/user/v1"
	"github.com/duetkit/duet/kit/apierr"
	"github.com/duetkit/duet/kit/metrics"
	"github.com/duetkit/duet/kit/server"
	"github.com/duetkit/duet/kit/server/servertest"
	"github.com/duetkit/duet/kit/tracing/tracingtest"
)

// records is a slog.Handler that hands each record to the test.
type records chan slog.Record

func (r records) Enabled(context.Context, slog.Level) bool { return true }
func (r records) Handle(_ context.Context, rec slog.Record) error {
	select {
	case r <- rec.Clone():
	default: // never hold the server up; a line lost fails the test
	}
	return nil
}
func (r records) WithAttrs([]slog.Attr) slog.Handler { return r }
func (r records) WithGroup(string) slog.Handler      { return r }

// accessLine returns the level and code of the next access log line.
func (r records) accessLine(t *testing.T) (slog.Level, string) {
	t.Helper()
	level, code, _ := r.accessLineError(t)
	return level, code
}

// accessLineError is accessLine with the line's error.
func (r records) accessLineError(t *testing.T) (level slog.Level, code, errText string) {
	t.Helper()
	level, attrs := r.accessAttrs(t)
	return level, attrs["grpc.code"], attrs["grpc.error"]
}

// accessAttrs returns the level and the attributes of the next access log
// line.
func (r records) accessAttrs(t *testing.T) (slog.Level, map[string]string) {
	t.Helper()
	timeout := time.After(10 * time.Second)
	for {
		select {
		case rec := <-r:
			if rec.Message != "finished call" {
				continue
			}
			attrs := map[string]string{}
			rec.Attrs(func(a slog.Attr) bool {
				attrs[a.Key] = a.Value.String()
				return true
			})
			return rec.Level, attrs
		case <-timeout:
			t.Fatal("no access log line")
		}
	}
}

// TestAccessLogCode: the access line says the code the client got, at
// that code's level. A handler returning its context's error, bare or
// wrapped, was logged as Unknown at ERROR while the client (and the
// metrics) saw CANCELED or DEADLINE_EXCEEDED.
func TestAccessLogCode(t *testing.T) {
	errs := map[string]error{
		"00000000-0000-4000-8000-000000000001": fmt.Errorf("reading the user: %w", context.DeadlineExceeded),
		"00000000-0000-4000-8000-000000000002": context.Canceled,
		"00000000-0000-4000-8000-000000000003": fmt.Errorf("wrapped: %w", apierr.NotFound("USER_NOT_FOUND", "user", "x")),
		"00000000-0000-4000-8000-000000000004": errors.New("plain failure"),
	}
	svc := &users{get: func(ctx context.Context, req *userv1.GetUserRequest) (*userv1.GetUserResponse, error) {
		return nil, errs[req.GetId()]
	}}
	logged := make(records, 64)
	log := slog.New(logged)
	client := userv1.NewUserServiceClient(servertest.Start(t, server.Config{Name: "test", Logger: log}, svc.register))
	tests := []struct {
		id        string
		wantCode  codes.Code
		wantLevel slog.Level
	}{
		{"00000000-0000-4000-8000-000000000001", codes.DeadlineExceeded, slog.LevelWarn},
		{"00000000-0000-4000-8000-000000000002", codes.Canceled, slog.LevelInfo},
		{"00000000-0000-4000-8000-000000000003", codes.NotFound, slog.LevelInfo},
		{"00000000-0000-4000-8000-000000000004", codes.Unknown, slog.LevelError},
	}
	for _, tt := range tests {
		t.Run(tt.wantCode.String(), func(t *testing.T) {
			ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
			defer cancel()
			_, err := client.GetUser(ctx, &userv1.GetUserRequest{Id: tt.id})
			if got := apierr.Code(err); got != tt.wantCode {
				t.Fatalf("client got %v, want %v", err, tt.wantCode)
			}
			level, code := logged.accessLine(t)
			if code != tt.wantCode.String() || level != tt.wantLevel {
				t.Errorf("access log says %s at %v, want %s at %v", code, level, tt.wantCode, tt.wantLevel)
			}
		})
	}
}

// TestUnknownMethod: a call of a method no service here has, of an
// unknown service or a known one, fails UNIMPLEMENTED with reason
// UNKNOWN_METHOD, as grpc-go's would without the reason, and is logged and
// counted: grpc-go refused it before any interceptor, so it showed
// nowhere on the server.
func TestUnknownMethod(t *testing.T) {
	logged := make(records, 64)
	m := metrics.New()
	svc := &users{}
	conn := servertest.Start(t, server.Config{Name: "test", Logger: slog.New(logged), Metrics: m}, svc.register)
	for _, method := range []string{"/duet.user.v1.UserService/Missing", "/no.such.v1.Service/Call"} {
		t.Run(method, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
			defer cancel()
			err := conn.Invoke(ctx, method, &emptypb.Empty{}, &emptypb.Empty{})
			if apierr.Code(err) != codes.Unimplemented || apierr.Reason(err) != apierr.ReasonUnknownMethod || !strings.Contains(err.Error(), method) {
				t.Fatalf("call of %s = %v, want UNIMPLEMENTED %s naming the method", method, err, apierr.ReasonUnknownMethod)
			}
			// At INFO, the caller's mistake, not at ERROR as an
			// UNIMPLEMENTED from a handler.
			if level, code := logged.accessLine(t); code != codes.Unimplemented.String() || level != slog.LevelInfo {
				t.Errorf("access log says %s at %v, want Unimplemented at INFO", code, level)
			}
			service, name, _ := strings.Cut(strings.TrimPrefix(method, "/"), "/")
			if n := handled(t, m, service, name, "Unimplemented"); n != 1 {
				t.Errorf("grpc_server_handled_total for %s, Unimplemented = %v, want 1", method, n)
			}
		})
	}
}

// TestUnknownMethodLongName: a method name as long as the headers allow
// is cut short in the error and the access log.
func TestUnknownMethodLongName(t *testing.T) {
	logged := make(records, 64)
	conn := servertest.Start(t, server.Config{Name: "test", Logger: slog.New(logged), Metrics: metrics.New()}, (&users{}).register)
	method := "/no.such.v1.Service/" + strings.Repeat("M", 30000)
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	err := conn.Invoke(ctx, method, &emptypb.Empty{}, &emptypb.Empty{})
	if apierr.Reason(err) != apierr.ReasonUnknownMethod || len(err.Error()) > 400 {
		t.Fatalf("call of a 30 KB method name = %d bytes of error (%.80s…), want UNKNOWN_METHOD in under 400", len(err.Error()), err)
	}
	if _, _, errText := logged.accessLineError(t); len(errText) > 400 {
		t.Errorf("access log's error is %d bytes, want under 400", len(errText))
	}
}

// TestOddMethodNameLogged: a method name not shaped like a gRPC method's
// is logged under service and method "unknown", as the metrics count it
// ("/pkg.S/a/b" was logged as method b of a service "pkg.S/a"), the name
// itself in the error.
func TestOddMethodNameLogged(t *testing.T) {
	logged := make(records, 64)
	conn := servertest.Start(t, server.Config{Name: "test", Logger: slog.New(logged), Metrics: metrics.New()}, (&users{}).register)
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	if err := conn.Invoke(ctx, "/no.such.v1.Service/a/b", &emptypb.Empty{}, &emptypb.Empty{}); status.Code(err) != codes.Unimplemented {
		t.Fatalf("call: %v, want UNIMPLEMENTED", err)
	}
	_, attrs := logged.accessAttrs(t)
	if attrs["grpc.service"] != "unknown" || attrs["grpc.method"] != "unknown" || !strings.Contains(attrs["grpc.error"], "/no.such.v1.Service/a/b") {
		t.Errorf("logged service %q, method %q, error %q; want unknown, unknown and the name in the error", attrs["grpc.service"], attrs["grpc.method"], attrs["grpc.error"])
	}
}

// TestOddMethodNamesNotTraced: with an exporter, a server span was named
// after whatever method name the client sent, before any interceptor, 60
// KB of it if the headers allowed; calls of names not shaped like a gRPC
// method's are no longer traced (they are logged and counted), others
// still are.
func TestOddMethodNamesNotTraced(t *testing.T) {
	rec := tracingtest.Record(t)
	conn := servertest.Start(t, server.Config{Name: "test", Logger: slog.New(slog.DiscardHandler), Metrics: metrics.New()}, (&users{}).register)
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	for _, method := range []string{"/no.such.v1.Service/" + strings.Repeat("M", 30000), "/no.such.v1.Service/a/b", "/no.such.v1.Service/Call"} {
		if err := conn.Invoke(ctx, method, &emptypb.Empty{}, &emptypb.Empty{}); status.Code(err) != codes.Unimplemented {
			t.Fatalf("call of %.60s: %v, want UNIMPLEMENTED", method, err)
		}
	}
	// The server span of the last call ends after the client has its
	// answer; the calls before it ended before it began.
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		var names []string
		found := false
		for _, s := range rec.Ended() {
			if s.SpanKind() != trace.SpanKindServer {
				continue
			}
			names = append(names, s.Name())
			if len(s.Name()) > 256 || strings.Contains(s.Name(), "a/b") {
				t.Fatalf("a server span named %.80q…", s.Name())
			}
			found = found || s.Name() == "no.such.v1.Service/Call"
		}
		if found {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("no server span for the well-formed unknown method; server spans: %q", names)
		}
	}
}

// TestOwnUnknownServiceHandler: an UnknownServiceHandler in Config.Options
// replaces the kit's.
func TestOwnUnknownServiceHandler(t *testing.T) {
	own := grpc.UnknownServiceHandler(func(any, grpc.ServerStream) error { return status.Error(codes.NotFound, "proxied nowhere") })
	conn := servertest.Start(t, server.Config{Name: "test", Logger: slog.New(slog.DiscardHandler), Metrics: metrics.New(), Options: []grpc.ServerOption{own}}, (&users{}).register)
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	if err := conn.Invoke(ctx, "/no.such.v1.Service/Call", &emptypb.Empty{}, &emptypb.Empty{}); status.Code(err) != codes.NotFound {
		t.Errorf("call of an unknown method = %v, want the own handler's NOT_FOUND", err)
	}
}

// handled returns grpc_server_handled_total's count for the method and
// code in m, 0 when there is no such series.
func handled(t *testing.T, m *metrics.Metrics, service, method, code string) float64 {
	t.Helper()
	return count(t, m, "grpc_server_handled_total", map[string]string{"grpc_service": service, "grpc_method": method, "grpc_code": code})
}

// count returns the value of the counter family's series in m whose
// labels include want, 0 when there is none.
func count(t *testing.T, m *metrics.Metrics, family string, want map[string]string) float64 {
	t.Helper()
	families, err := m.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		if f.GetName() != family {
			continue
		}
	series:
		for _, s := range f.GetMetric() {
			labels := map[string]string{}
			for _, l := range s.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			for k, v := range want {
				if labels[k] != v {
					continue series
				}
			}
			return s.GetCounter().GetValue()
		}
	}
	return 0
}

// failingWatch is an OrderService whose WatchOrder fails with err.
type failingWatch struct {
	orderv1.UnimplementedOrderServiceServer
	err error
}

func (f failingWatch) WatchOrder(*orderv1.WatchOrderRequest, grpc.ServerStreamingServer[orderv1.WatchOrderResponse]) error {
	return f.err
}

// TestWrappedStatusErrors: a handler that wraps a status error (an
// apierr.Error) with context of its own answers the status as it was
// made. grpc-go sent the whole chain's text as the message ("reading the
// user: rpc error: code = NotFound reason = ..."), the handler's insides.
func TestWrappedStatusErrors(t *testing.T) {
	notFound := apierr.NotFound("USER_NOT_FOUND", "user", validID)
	wrapped := fmt.Errorf("reading the user: %w", notFound)
	users := &users{get: func(context.Context, *userv1.GetUserRequest) (*userv1.GetUserResponse, error) {
		return nil, wrapped
	}}
	logged := make(records, 64)
	conn := servertest.Start(t, server.Config{Name: "test", Logger: slog.New(logged)}, func(r grpc.ServiceRegistrar) {
		users.register(r)
		orderv1.RegisterOrderServiceServer(r, failingWatch{err: wrapped})
	})
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	_, unaryErr := userv1.NewUserServiceClient(conn).GetUser(ctx, &userv1.GetUserRequest{Id: validID})
	// The server's own log keeps the whole error.
	if _, _, errText := logged.accessLineError(t); !strings.Contains(errText, "reading the user") {
		t.Errorf("access log error %q, want the handler's whole error", errText)
	}
	var streamErr error
	if stream, err := orderv1.NewOrderServiceClient(conn).WatchOrder(ctx, &orderv1.WatchOrderRequest{Id: validID}); err != nil {
		streamErr = err
	} else {
		_, streamErr = stream.Recv()
	}
	if _, _, errText := logged.accessLineError(t); !strings.Contains(errText, "reading the user") {
		t.Errorf("stream access log error %q, want the handler's whole error", errText)
	}
	want := status.Convert(notFound).Message()
	for name, err := range map[string]error{"unary": unaryErr, "stream": streamErr} {
		if got := status.Convert(err).Message(); got != want || apierr.Reason(err) != "USER_NOT_FOUND" {
			t.Errorf("%s: message %q, reason %q; want %q, USER_NOT_FOUND", name, got, apierr.Reason(err), want)
		}
	}
}

// TestHealthWatchLoggedAtDebug: every kit/client connection keeps a
// health Watch open, which ends at each connection's max age and at each
// Shutdown: an INFO or WARN line per client each time, about no call of
// the service's. A Watch refused keeps its code's level: its client never
// sees the server healthy.
func TestHealthWatchLoggedAtDebug(t *testing.T) {
	refuse := func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		return status.Error(codes.PermissionDenied, "no credentials")
	}
	tests := []struct {
		name      string
		end       string // how the Watch ends: "client", "shutdown" or "refused"
		wantLevel slog.Level
	}{
		{"ended by its client", "client", slog.LevelDebug},
		{"ended by Shutdown", "shutdown", slog.LevelDebug},
		{"refused", "refused", slog.LevelWarn},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			logged := make(records, 64)
			cfg := server.Config{Name: "test", Logger: slog.New(logged)}
			if tt.end == "refused" {
				cfg.StreamInterceptors = []grpc.StreamServerInterceptor{refuse}
			}
			srv := servertest.NewServer(t, cfg, (&users{}).register)
			ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
			defer cancel()
			if tt.end == "refused" {
				// kit/client's own Watch, opened as the connection is.
				srv.Conn.Connect()
			} else {
				watchCtx, endWatch := context.WithCancel(ctx)
				defer endWatch()
				watch, err := healthpb.NewHealthClient(srv.Conn).Watch(watchCtx, &healthpb.HealthCheckRequest{})
				if err != nil {
					t.Fatal(err)
				}
				if _, err := watch.Recv(); err != nil {
					t.Fatal(err)
				}
				if tt.end == "client" {
					endWatch()
				} else {
					// Shutdown ends the Watches with UNAVAILABLE; the
					// client's connection stays open meanwhile.
					go srv.Server.Shutdown(ctx)
				}
			}
			for {
				select {
				case rec := <-logged:
					method := ""
					rec.Attrs(func(a slog.Attr) bool {
						if a.Key == "grpc.method" {
							method = a.Value.String()
						}
						return true
					})
					if rec.Message != "finished call" || method != "Watch" {
						continue
					}
					if rec.Level != tt.wantLevel {
						t.Errorf("the health Watch's line is at %v, want %v", rec.Level, tt.wantLevel)
					}
					return
				case <-ctx.Done():
					t.Fatal("no access log line for the health Watch")
				}
			}
		})
	}
}
