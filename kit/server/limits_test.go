package server_test

import (
	"context"
	"log/slog"
	"runtime"
	"strings"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/encoding"
	protoenc "google.golang.org/grpc/encoding/proto"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/mem"
	reflectionpb "google.golang.org/grpc/reflection/grpc_reflection_v1"
	"google.golang.org/grpc/status"

	userv1 "github.com/duetkit/duet/gen/duet/user/v1"
	"github.com/duetkit/duet/internal/h2conn"
	"github.com/duetkit/duet/kit/apierr"
	"github.com/duetkit/duet/kit/server"
	"github.com/duetkit/duet/kit/server/servertest"
)

// TestDeadlineFromHeaders: a unary call whose client sends headers and
// never the request message, without a deadline, ends at the server's
// default deadline; it used to hold a handler goroutine for as long as the
// client kept its connection, since the default was set only once the
// message had come.
func TestDeadlineFromHeaders(t *testing.T) {
	svc := &users{get: func(ctx context.Context, req *userv1.GetUserRequest) (*userv1.GetUserResponse, error) {
		return &userv1.GetUserResponse{}, nil
	}}
	srv := servertest.NewServer(t, server.Config{DefaultTimeout: 100 * time.Millisecond}, svc.register)
	raw := rawClient(t, srv.Addr)
	// No deadline may go to the server, so the test's bound is a cancel.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	bound := time.AfterFunc(10*time.Second, cancel)
	defer bound.Stop()
	for _, method := range []string{userv1.UserService_GetUser_FullMethodName, healthpb.Health_Check_FullMethodName, healthpb.Health_List_FullMethodName} {
		// A stream on a unary method sends its headers at once and its
		// message only on SendMsg, which never comes.
		cs, err := raw.NewStream(ctx, &grpc.StreamDesc{ClientStreams: true, ServerStreams: true}, method)
		if err != nil {
			t.Fatal(err)
		}
		err = cs.RecvMsg(new(userv1.GetUserResponse))
		if status.Code(err) != codes.DeadlineExceeded {
			t.Fatalf("%s: call that never sent its message ended with %v, want DeadlineExceeded at the server's default", method, err)
		}
	}
}

// TestLimitsAdvertised: the server tells every client how many calls one
// connection may have open and how much metadata a call may carry.
// grpc-go's defaults are no limit on calls, not advertised, which leaves
// its rapid-reset defence off, and 16 MiB of metadata, which HPACK lets a
// client send in a few kilobytes.
func TestLimitsAdvertised(t *testing.T) {
	tests := []struct {
		name                string
		cfg                 server.Config
		streams, headerList uint32
	}{
		{"default", server.Config{}, server.DefaultMaxConcurrentStreams, server.DefaultMaxHeaderListSize},
		{"configured", server.Config{MaxConcurrentStreams: 7, MaxHeaderListSize: 8 << 10}, 7, 8 << 10},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := servertest.NewServer(t, tt.cfg, (&users{}).register)
			h2conn.Dial(t, srv.Addr, map[http2.SettingID]uint32{
				http2.SettingMaxConcurrentStreams: tt.streams,
				http2.SettingMaxHeaderListSize:    tt.headerList,
			})
		})
	}
}

// TestHealthWatchNamesNotKept: a health Watch names any service it likes;
// once the stream ends the server must not keep the name. grpc-go before
// v1.85.0 kept every name ever watched, so a client could pin memory 4 MB
// a call.
func TestHealthWatchNamesNotKept(t *testing.T) {
	srv := servertest.NewServer(t, server.Config{}, (&users{}).register)
	health := healthpb.NewHealthClient(srv.Conn)
	heap := func() uint64 {
		runtime.GC()
		var m runtime.MemStats
		runtime.ReadMemStats(&m)
		return m.HeapAlloc
	}
	before := heap()
	const watches, nameLen = 32, 1 << 20
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for i := range watches {
		wctx, wcancel := context.WithCancel(ctx)
		name := strings.Repeat(string(rune('a'+i%26)), nameLen-2) + string(rune('a'+i/26)) + "x"
		w, err := health.Watch(wctx, &healthpb.HealthCheckRequest{Service: name})
		if err != nil {
			t.Fatal(err)
		}
		if r, err := w.Recv(); err != nil || r.GetStatus() != healthpb.HealthCheckResponse_SERVICE_UNKNOWN {
			t.Fatalf("watch of an unknown service: %v, %v", r, err)
		}
		wcancel()
	}
	// The server ends each Watch once it sees the cancel; what it kept
	// shows once they have all ended.
	const slack = 8 << 20
	waitFor(t, ctx, func() bool { return heap() < before+slack })
}

// panickyCodec is grpc-go's proto codec, except that it panics decoding a
// reflection request for the host "panic".
type panickyCodec struct{ encoding.CodecV2 }

func (c panickyCodec) Unmarshal(data mem.BufferSlice, v any) error {
	if err := c.CodecV2.Unmarshal(data, v); err != nil {
		return err
	}
	if r, ok := v.(*reflectionpb.ServerReflectionRequest); ok && r.GetHost() == "panic" {
		panic("codec exploded")
	}
	return nil
}

// TestPanicReceivingOnBidiStream: a panic while a bidirectional stream's
// message is received, which the kit runs on a goroutine of its own so
// that Shutdown can end the stream, is INTERNAL for that call, as it is on
// any other stream, and not the end of the process.
func TestPanicReceivingOnBidiStream(t *testing.T) {
	srv := servertest.NewServer(t, server.Config{
		Logger:  slog.New(slog.DiscardHandler),
		Options: []grpc.ServerOption{grpc.ForceServerCodecV2(panickyCodec{encoding.GetCodecV2(protoenc.Name)})},
	}, (&users{}).register)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	stream, err := reflectionpb.NewServerReflectionClient(srv.Conn).ServerReflectionInfo(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.Send(&reflectionpb.ServerReflectionRequest{Host: "panic", MessageRequest: &reflectionpb.ServerReflectionRequest_ListServices{}}); err != nil {
		t.Fatal(err)
	}
	if _, err := stream.Recv(); apierr.Code(err) != codes.Internal {
		t.Fatalf("stream whose message panicked the codec ended with %v, want INTERNAL", err)
	}
}
