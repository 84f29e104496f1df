package server_test

import (
	"cmp"
	"context"
	"log/slog"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/encoding"
	protoenc "google.golang.org/grpc/encoding/proto"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/mem"
	"google.golang.org/grpc/metadata"
	reflectionpb "google.golang.org/grpc/reflection/grpc_reflection_v1"
	"google.golang.org/protobuf/types/known/emptypb"

	userv1 "github.com/duetkit/duet/gen/duet/user/v1"
	"github.com/duetkit/duet/kit/apierr"
	"github.com/duetkit/duet/kit/logger"
	"github.com/duetkit/duet/kit/metrics"
	"github.com/duetkit/duet/kit/server"
	"github.com/duetkit/duet/kit/server/servertest"
)

// rawCodec is grpc-go's proto codec, except that a *[]byte goes on the
// wire as the bytes it holds: a client sending what is not a message.
type rawCodec struct{ encoding.CodecV2 }

func (c rawCodec) Marshal(v any) (mem.BufferSlice, error) {
	if b, ok := v.(*[]byte); ok {
		return mem.BufferSlice{mem.SliceBuffer(*b)}, nil
	}
	return c.CodecV2.Marshal(v)
}

// methodLine returns the level and attributes of the next access log line
// of method (a short name, "GetUser").
func (r records) methodLine(t *testing.T, method string) (slog.Level, map[string]string) {
	t.Helper()
	for {
		level, attrs := r.accessAttrs(t)
		if attrs["grpc.method"] == method {
			return level, attrs
		}
	}
}

// TestUnreadRequest: a unary call whose request the server cannot read
// (over MaxRecvMsgSize, bytes that are not the method's message, none at
// all, or none before the deadline) is logged and counted like any other
// call, with the code grpc-go answered; the INTERNAL of bytes that are not
// a message at INFO, the client's doing. grpc-go reads the request before
// any interceptor runs, and such calls showed in neither the access log
// nor the metrics.
func TestUnreadRequest(t *testing.T) {
	const limit = 1024
	tests := []struct {
		name      string
		method    string // "": GetUser
		send      func(ctx context.Context, conn *grpc.ClientConn) error
		wantCode  codes.Code
		wantLevel slog.Level
	}{
		{"too large", "", func(ctx context.Context, conn *grpc.ClientConn) error {
			_, err := userv1.NewUserServiceClient(conn).GetUser(ctx, &userv1.GetUserRequest{Id: strings.Repeat("a", 2*limit)})
			return err
		}, codes.ResourceExhausted, slog.LevelWarn},
		{"cut short", "", sendRaw(userv1.UserService_GetUser_FullMethodName, []byte{0x0a, 0x05, 'a'}), codes.Internal, slog.LevelInfo},
		{"not UTF-8", "", sendRaw(userv1.UserService_GetUser_FullMethodName, []byte{0x0a, 0x01, 0xff}), codes.Internal, slog.LevelInfo},
		{"health check cut short", healthpb.Health_Check_FullMethodName, sendRaw(healthpb.Health_Check_FullMethodName, []byte{0x0a, 0x05, 'a'}), codes.Internal, slog.LevelInfo},
		{"no message", "", func(ctx context.Context, conn *grpc.ClientConn) error {
			cs, err := conn.NewStream(ctx, &grpc.StreamDesc{ClientStreams: true, ServerStreams: true}, userv1.UserService_GetUser_FullMethodName)
			if err != nil {
				return err
			}
			if err := cs.CloseSend(); err != nil {
				return err
			}
			return cs.RecvMsg(new(userv1.GetUserResponse))
		}, codes.Internal, slog.LevelInfo},
		{"never sent", "", func(ctx context.Context, conn *grpc.ClientConn) error {
			// Headers only, and no deadline: the server's default ends it.
			cs, err := conn.NewStream(ctx, &grpc.StreamDesc{ClientStreams: true, ServerStreams: true}, userv1.UserService_GetUser_FullMethodName)
			if err != nil {
				return err
			}
			return cs.RecvMsg(new(userv1.GetUserResponse))
		}, codes.DeadlineExceeded, slog.LevelWarn},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var called atomic.Bool
			svc := &users{get: func(ctx context.Context, req *userv1.GetUserRequest) (*userv1.GetUserResponse, error) {
				called.Store(true)
				return &userv1.GetUserResponse{}, nil
			}}
			logged := make(records, 64)
			m := metrics.New()
			srv := servertest.NewServer(t, server.Config{
				Name: "test", Logger: slog.New(logger.NewHandler(logged)), Metrics: m,
				MaxRecvMsgSize: limit, DefaultTimeout: 200 * time.Millisecond,
			}, svc.register)
			conn := rawClient(t, srv.Addr)
			// No deadline goes to the server (the last case's comes from
			// its default); the test's bound is a cancel.
			ctx, cancel := context.WithCancel(t.Context())
			defer cancel()
			bound := time.AfterFunc(10*time.Second, cancel)
			defer bound.Stop()

			// The id the line must carry.
			ctx = metadata.AppendToOutgoingContext(ctx, "x-request-id", "unread-1")
			err := tt.send(ctx, conn)
			if apierr.Code(err) != tt.wantCode {
				t.Fatalf("client got %v, want %v", err, tt.wantCode)
			}
			if called.Load() {
				t.Error("the handler ran")
			}
			method := cmp.Or(tt.method, userv1.UserService_GetUser_FullMethodName)
			service, name, _ := strings.Cut(method[1:], "/")
			level, attrs := logged.methodLine(t, name)
			if attrs["grpc.code"] != tt.wantCode.String() || level != tt.wantLevel || attrs["grpc.method_type"] != "unary" {
				t.Errorf("access log says %s (%s) at %v, want %v (unary) at %v", attrs["grpc.code"], attrs["grpc.method_type"], level, tt.wantCode, tt.wantLevel)
			}
			if attrs["request_id"] != "unread-1" {
				t.Errorf("access line's request id = %q, want the caller's, unread-1", attrs["request_id"])
			}
			labels := map[string]string{"grpc_type": "unary", "grpc_service": service, "grpc_method": name}
			if n := count(t, m, "grpc_server_started_total", labels); n != 1 {
				t.Errorf("grpc_server_started_total = %v, want 1", n)
			}
			if n := count(t, m, "grpc_server_msg_received_total", labels); n != 0 {
				t.Errorf("grpc_server_msg_received_total = %v, want 0: the request was never read", n)
			}
			if n := handled(t, m, service, name, tt.wantCode.String()); n != 1 {
				t.Errorf("grpc_server_handled_total, %v = %v, want 1", tt.wantCode, n)
			}
		})
	}
}

// TestUnreadStreamMessage: a stream's message that is not its method's
// message ends the stream INTERNAL, as grpc-go answers it, and its access
// line is at INFO, as a unary call's: the client's doing. It was at ERROR,
// a bug of the server's by its level.
func TestUnreadStreamMessage(t *testing.T) {
	for _, method := range []string{healthpb.Health_Watch_FullMethodName, reflectionpb.ServerReflection_ServerReflectionInfo_FullMethodName} {
		t.Run(method, func(t *testing.T) {
			logged := make(records, 64)
			srv := servertest.NewServer(t, server.Config{Name: "test", Logger: slog.New(logged), Metrics: metrics.New()}, (&users{}).register)
			ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
			defer cancel()
			cs, err := rawClient(t, srv.Addr).NewStream(ctx, &grpc.StreamDesc{ClientStreams: true, ServerStreams: true}, method,
				grpc.ForceCodecV2(rawCodec{encoding.GetCodecV2(protoenc.Name)}))
			if err != nil {
				t.Fatal(err)
			}
			if err := cs.SendMsg(&[]byte{0x0a, 0x05, 'a'}); err != nil {
				t.Fatal(err)
			}
			if err := cs.RecvMsg(new(emptypb.Empty)); apierr.Code(err) != codes.Internal {
				t.Fatalf("stream sent bytes that are not a message ended with %v, want INTERNAL", err)
			}
			_, name, _ := strings.Cut(method[1:], "/")
			if level, attrs := logged.methodLine(t, name); attrs["grpc.code"] != "Internal" || level != slog.LevelInfo {
				t.Errorf("access log says %s at %v, want Internal at INFO", attrs["grpc.code"], level)
			}
		})
	}
}

// sendRaw calls method with body as the request's bytes.
func sendRaw(method string, body []byte) func(ctx context.Context, conn *grpc.ClientConn) error {
	return func(ctx context.Context, conn *grpc.ClientConn) error {
		return conn.Invoke(ctx, method, &body, new(emptypb.Empty),
			grpc.ForceCodecV2(rawCodec{encoding.GetCodecV2(protoenc.Name)}))
	}
}

// rawClient is a plain grpc-go client of addr, closed at the test's end:
// none of kit/client's steps (retries, health checks, validation), which
// would refuse or change what tests send.
func rawClient(t *testing.T, addr string) *grpc.ClientConn {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}
