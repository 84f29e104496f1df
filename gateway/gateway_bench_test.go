package gateway

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/test/bufconn"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	userv1 "github.com/duetkit/duet/gen/duet/user/v1"
)

// benchUser is a user as the user service returns it: every field set.
func benchUser(i int) *userv1.User {
	t := time.Date(2026, 11, 21, 6, 0, 0, 123456789, time.UTC)
	return &userv1.User{
		Id:         fmt.Sprintf("3f9a4c1e-8b2d-4e6f-9a0b-%012d", i),
		Email:      fmt.Sprintf("user%d@example.com", i),
		Name:       fmt.Sprintf("Bench User %d", i),
		CreateTime: timestamppb.New(t),
		UpdateTime: timestamppb.New(t.Add(time.Hour)),
	}
}

// benchMessages are the small and medium responses of bench's REST
// scenario: one user, and a page of 20.
func benchMessages() []struct {
	name string
	msg  proto.Message
} {
	page := &userv1.ListUsersResponse{NextPageToken: strings.Repeat("t", 60)}
	for i := range 20 {
		page.Users = append(page.Users, benchUser(i))
	}
	return []struct {
		name string
		msg  proto.Message
	}{
		{"GetUserResponse", &userv1.GetUserResponse{User: benchUser(1)}},
		{"ListUsersResponse20", page},
	}
}

// BenchmarkMarshal compares the gateway's response marshaler with plain
// protojson (the same output settings) and with protobuf binary, the cost
// a gRPC client pays instead.
//
//	go test -run '^$' -bench Marshal -benchmem ./gateway
func BenchmarkMarshal(b *testing.B) {
	gw := newJSONMarshaler()
	pj := protojson.MarshalOptions{UseProtoNames: false, EmitUnpopulated: false}
	for _, m := range benchMessages() {
		b.Run(m.name+"/gateway", func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := gw.Marshal(m.msg); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(m.name+"/protojson", func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := pj.Marshal(m.msg); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(m.name+"/proto-binary", func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := proto.Marshal(m.msg); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkUnmarshal compares decoding a CreateUser body through the
// gateway's decoder (the path the generated handlers take) with protojson.
func BenchmarkUnmarshal(b *testing.B) {
	body := `{"email":"ada@example.com","name":"Ada Lovelace"}`
	gw := newJSONMarshaler()
	b.Run("gateway-decoder", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			var req userv1.CreateUserRequest
			if err := gw.NewDecoder(strings.NewReader(body)).Decode(&req); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("protojson", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			var req userv1.CreateUserRequest
			if err := protojson.Unmarshal([]byte(body), &req); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// fixedUsers answers GetUser and ListUsers from fixed data, without the
// bookkeeping of the test fakes.
type fixedUsers struct {
	userv1.UnimplementedUserServiceServer
	page *userv1.ListUsersResponse
}

func (f *fixedUsers) GetUser(_ context.Context, req *userv1.GetUserRequest) (*userv1.GetUserResponse, error) {
	u := benchUser(1)
	u.Id = req.GetId()
	return &userv1.GetUserResponse{User: u}, nil
}

func (f *fixedUsers) ListUsers(context.Context, *userv1.ListUsersRequest) (*userv1.ListUsersResponse, error) {
	return f.page, nil
}

// BenchmarkGetUser compares a whole GetUser through Gateway.ServeHTTP
// (routing, request id, access log, deadline, the gRPC call, JSON
// marshalling), over REST and in the Connect protocol (connect-go's
// handler, JSON), with the gRPC call alone and with the gRPC call plus
// protojson — the least any JSON edge must do. The backend is a bare
// grpc-go server over an in-memory connection.
//
//	go test -run '^$' -bench GetUser -benchmem ./gateway
func BenchmarkGetUser(b *testing.B) {
	page := &userv1.ListUsersResponse{}
	for i := range 20 {
		page.Users = append(page.Users, benchUser(i))
	}
	lis := bufconn.Listen(1 << 20)
	srv := grpc.NewServer()
	userv1.RegisterUserServiceServer(srv, &fixedUsers{page: page})
	served := make(chan struct{})
	go func() {
		defer close(served)
		_ = srv.Serve(lis)
	}()
	conn, err := grpc.NewClient("passthrough:///bufconn",
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return lis.DialContext(ctx) }),
		grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		conn.Close()
		srv.Stop()
		<-served
	})
	// The access log on, at info, to nowhere: as `duet up` runs it.
	gw, err := New(b.Context(), Config{
		Users: conn, Orders: conn, Payments: conn,
		Logger: slog.New(slog.NewJSONHandler(io.Discard, &slog.HandlerOptions{Level: slog.LevelInfo})),
	})
	if err != nil {
		b.Fatal(err)
	}
	users := userv1.NewUserServiceClient(conn)
	pj := protojson.MarshalOptions{}
	const id = "3f9a4c1e-8b2d-4e6f-9a0b-1c2d3e4f5a6b"

	for _, c := range []struct {
		name, path string
		// procedure and body are the same call in the Connect protocol.
		procedure, body string
		grpc            func(ctx context.Context) (proto.Message, error)
	}{
		{"GetUser", "/v1/users/" + id, userv1.UserService_GetUser_FullMethodName, `{"id":"` + id + `"}`, func(ctx context.Context) (proto.Message, error) {
			return users.GetUser(ctx, &userv1.GetUserRequest{Id: id})
		}},
		{"ListUsers20", "/v1/users?pageSize=20", userv1.UserService_ListUsers_FullMethodName, `{"pageSize":20}`, func(ctx context.Context) (proto.Message, error) {
			return users.ListUsers(ctx, &userv1.ListUsersRequest{PageSize: 20})
		}},
	} {
		b.Run(c.name+"/gateway", func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				rec := httptest.NewRecorder()
				gw.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, c.path, nil))
				if rec.Code != http.StatusOK {
					b.Fatalf("status %d: %s", rec.Code, rec.Body)
				}
			}
		})
		b.Run(c.name+"/connect", func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				rec := httptest.NewRecorder()
				req := httptest.NewRequest(http.MethodPost, c.procedure, strings.NewReader(c.body))
				req.Header.Set("Content-Type", "application/json")
				gw.ServeHTTP(rec, req)
				if rec.Code != http.StatusOK {
					b.Fatalf("status %d: %s", rec.Code, rec.Body)
				}
			}
		})
		b.Run(c.name+"/grpc", func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := c.grpc(b.Context()); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(c.name+"/grpc+protojson", func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				resp, err := c.grpc(b.Context())
				if err != nil {
					b.Fatal(err)
				}
				if _, err := pj.Marshal(resp); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
