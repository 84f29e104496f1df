package server_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	reflectionpb "google.golang.org/grpc/reflection/grpc_reflection_v1"
	"google.golang.org/grpc/status"

	inventoryv1 "github.com/duetkit/duet/gen/duet/inventory/v1"
	orderv1 "github.com/duetkit/duet/gen/duet/order/v1"
	userv1 "github.com/duetkit/duet/gen/duet/user/v1"
	"github.com/duetkit/duet/internal/logbuffer"
	"github.com/duetkit/duet/kit/apierr"
	"github.com/duetkit/duet/kit/requestid"
	"github.com/duetkit/duet/kit/server"
	"github.com/duetkit/duet/kit/server/servertest"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		// OpenTelemetry's and glog's process-wide workers are not ours.
		goleak.IgnoreTopFunction("go.opencensus.io/stats/view.(*worker).start"),
	)
}

// users is a UserService whose GetUser runs a test-chosen function.
type users struct {
	userv1.UnimplementedUserServiceServer
	get func(ctx context.Context, req *userv1.GetUserRequest) (*userv1.GetUserResponse, error)
}

func (u *users) GetUser(ctx context.Context, req *userv1.GetUserRequest) (*userv1.GetUserResponse, error) {
	return u.get(ctx, req)
}

func (u *users) register(r grpc.ServiceRegistrar) { userv1.RegisterUserServiceServer(r, u) }

const validID = "0b7f5b4e-8a1e-4f57-9d7e-0d4b8f3e2a11"

func TestServerChain(t *testing.T) {
	var seen struct {
		sync.Mutex
		requestID   string
		hasDeadline bool
	}
	svc := &users{get: func(ctx context.Context, req *userv1.GetUserRequest) (*userv1.GetUserResponse, error) {
		seen.Lock()
		seen.requestID = requestid.FromContext(ctx)
		_, seen.hasDeadline = ctx.Deadline()
		seen.Unlock()
		switch req.GetId() {
		case "00000000-0000-4000-8000-000000000001":
			panic("secret database password leaked in panic")
		case "00000000-0000-4000-8000-000000000002":
			return nil, apierr.NotFound("USER_NOT_FOUND", "user", req.GetId())
		}
		return &userv1.GetUserResponse{User: &userv1.User{Id: req.GetId()}}, nil
	}}
	conn := servertest.Start(t, server.Config{Name: "test"}, svc.register)
	users := userv1.NewUserServiceClient(conn)

	tests := []struct {
		name       string
		id         string
		wantCode   codes.Code
		wantReason string
		wantField  string
	}{
		{name: "ok", id: validID, wantCode: codes.OK},
		{name: "validation names the field", id: "not-a-uuid", wantCode: codes.InvalidArgument, wantReason: apierr.ReasonInvalidArgument, wantField: "id"},
		{name: "panic is internal and hides its cause", id: "00000000-0000-4000-8000-000000000001", wantCode: codes.Internal, wantReason: apierr.ReasonInternal},
		{name: "handler error keeps its reason", id: "00000000-0000-4000-8000-000000000002", wantCode: codes.NotFound, wantReason: "USER_NOT_FOUND"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			_, err := users.GetUser(ctx, &userv1.GetUserRequest{Id: tt.id})
			if got := apierr.Code(err); got != tt.wantCode {
				t.Fatalf("code = %v, want %v (err %v)", got, tt.wantCode, err)
			}
			if got := apierr.Reason(err); got != tt.wantReason {
				t.Errorf("reason = %q, want %q", got, tt.wantReason)
			}
			if tt.wantField != "" {
				fv := apierr.FieldViolations(err)
				if len(fv) != 1 || fv[0].Field != tt.wantField {
					t.Errorf("field violations = %+v, want one on %q", fv, tt.wantField)
				}
			}
			if tt.wantCode == codes.Internal && err != nil && (strings.Contains(err.Error(), "secret") || strings.Contains(err.Error(), "panic")) {
				t.Errorf("internal error leaks its cause: %v", err)
			}
		})
	}
}

func TestRequestIDAndDefaultDeadline(t *testing.T) {
	got := make(chan [2]any, 1)
	svc := &users{get: func(ctx context.Context, req *userv1.GetUserRequest) (*userv1.GetUserResponse, error) {
		_, ok := ctx.Deadline()
		got <- [2]any{requestid.FromContext(ctx), ok}
		return &userv1.GetUserResponse{}, nil
	}}
	srv := servertest.NewServer(t, server.Config{DefaultTimeout: time.Minute}, svc.register)
	// A bare grpc-go client sends no deadline and no request id.
	raw := rawClient(t, srv.Addr)

	var trailer metadata.MD
	if _, err := userv1.NewUserServiceClient(raw).GetUser(context.Background(), &userv1.GetUserRequest{Id: validID}, grpc.Trailer(&trailer)); err != nil {
		t.Fatal(err)
	}
	v := <-got
	id, hasDeadline := v[0].(string), v[1].(bool)
	if !requestid.Valid(id) {
		t.Errorf("handler saw request id %q, want a generated one", id)
	}
	if h := trailer.Get(requestid.Header); len(h) != 1 || h[0] != id {
		t.Errorf("response trailer %s = %v, want [%s]", requestid.Header, h, id)
	}
	if !hasDeadline {
		t.Error("call without deadline got none from the server default")
	}

	// The kit client forwards the request id of its context; the server
	// does not send back an id the caller already has.
	ctx := requestid.NewContext(context.Background(), "req-123")
	trailer = nil
	if _, err := userv1.NewUserServiceClient(srv.Conn).GetUser(ctx, &userv1.GetUserRequest{Id: validID}, grpc.Trailer(&trailer)); err != nil {
		t.Fatal(err)
	}
	if v := <-got; v[0] != "req-123" {
		t.Errorf("handler saw request id %q, want req-123", v[0])
	}
	if h := trailer.Get(requestid.Header); len(h) != 0 {
		t.Errorf("response trailer %s = %v for a caller that sent its own id, want none", requestid.Header, h)
	}
}

func TestShutdownDrainsInFlightCalls(t *testing.T) {
	const inFlight = 8
	started := make(chan struct{}, inFlight)
	release := make(chan struct{})
	svc := &users{get: func(ctx context.Context, req *userv1.GetUserRequest) (*userv1.GetUserResponse, error) {
		started <- struct{}{}
		<-release
		return &userv1.GetUserResponse{User: &userv1.User{Id: req.GetId()}}, nil
	}}
	srv := servertest.NewServer(t, server.Config{DrainTimeout: 30 * time.Second}, svc.register)
	users := userv1.NewUserServiceClient(srv.Conn)
	health := healthpb.NewHealthClient(srv.Conn)

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if st, err := health.Check(ctx, &healthpb.HealthCheckRequest{}); err != nil || st.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("health before shutdown = %v, %v; want SERVING", st.GetStatus(), err)
	}

	var failed atomic.Int32
	var wg sync.WaitGroup
	for i := 0; i < inFlight; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := users.GetUser(ctx, &userv1.GetUserRequest{Id: validID}); err != nil {
				t.Errorf("in-flight call failed: %v", err)
				failed.Add(1)
			}
		}()
	}
	for i := 0; i < inFlight; i++ {
		select {
		case <-started:
		case <-ctx.Done():
			t.Fatalf("%d of %d calls reached the handler", i, inFlight)
		}
	}
	// Health turns NOT_SERVING while calls are still running.
	shutdown := startShutdown(t, ctx, srv)
	select {
	case <-shutdown:
		t.Fatal("Shutdown returned while calls were in flight")
	default:
	}
	close(release)
	wg.Wait()
	<-shutdown
	if failed.Load() != 0 {
		t.Fatalf("%d of %d in-flight calls lost during drain", failed.Load(), inFlight)
	}
}

// TestServeOnAnotherListenerKeepsHealth: a status set after the first
// Serve (a service reporting its database lost, say) stays as set when
// the server serves one more listener; every Serve marked everything
// SERVING again.
func TestServeOnAnotherListenerKeepsHealth(t *testing.T) {
	srv := servertest.NewServer(t, server.Config{}, (&users{}).register)
	name := userv1.UserService_ServiceDesc.ServiceName
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	// Answered: the first Serve has marked everything SERVING.
	if _, err := healthpb.NewHealthClient(srv.Conn).Check(ctx, &healthpb.HealthCheckRequest{}, grpc.WaitForReady(true)); err != nil {
		t.Fatal(err)
	}
	srv.Health().SetServingStatus(name, healthpb.HealthCheckResponse_NOT_SERVING)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(lis) }()
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	// Answered over the second listener: its Serve has run.
	resp, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{Service: name}, grpc.WaitForReady(true))
	if err != nil {
		t.Fatal(err)
	}
	if resp.GetStatus() != healthpb.HealthCheckResponse_NOT_SERVING {
		t.Errorf("%s after a second Serve = %v, want NOT_SERVING as set", name, resp.GetStatus())
	}
	conn.Close()
	srv.Close()
	if err := <-served; err != nil {
		t.Errorf("second Serve = %v", err)
	}
}

// TestNotReadyAtStart: a server that must warm up before taking calls
// could not say so: whatever it set before Serve, Serve marked SERVING.
func TestNotReadyAtStart(t *testing.T) {
	ann := &users{get: func(_ context.Context, req *userv1.GetUserRequest) (*userv1.GetUserResponse, error) {
		return &userv1.GetUserResponse{User: &userv1.User{Id: req.GetId()}}, nil
	}}
	srv := servertest.NewServer(t, server.Config{NotReadyAtStart: true}, ann.register)
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	raw := rawClient(t, srv.Addr)
	for _, name := range []string{"", userv1.UserService_ServiceDesc.ServiceName} {
		resp, err := healthpb.NewHealthClient(raw).Check(ctx, &healthpb.HealthCheckRequest{Service: name}, grpc.WaitForReady(true))
		if err != nil || resp.GetStatus() != healthpb.HealthCheckResponse_NOT_SERVING {
			t.Fatalf("health of %q while serving, not ready: %v, %v; want NOT_SERVING", name, resp.GetStatus(), err)
		}
	}
	// A call that comes anyway is served; kit/client sends none.
	req := &userv1.GetUserRequest{Id: "0b7f5b4e-8a1e-4f57-9d7e-0d4b8f3e2a11"}
	if _, err := userv1.NewUserServiceClient(raw).GetUser(ctx, req); err != nil {
		t.Errorf("a call to a server not ready yet: %v", err)
	}
	if _, err := userv1.NewUserServiceClient(srv.Conn).GetUser(ctx, req); status.Code(err) != codes.Unavailable {
		t.Errorf("kit/client's call to a server not ready yet: %v, want UNAVAILABLE", err)
	}
	srv.SetServing(true)
	if resp, err := healthpb.NewHealthClient(raw).Check(ctx, &healthpb.HealthCheckRequest{}); err != nil || resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("health once ready: %v, %v; want SERVING", resp.GetStatus(), err)
	}
	// kit/client learns it over its health Watch.
	for {
		_, err := userv1.NewUserServiceClient(srv.Conn).GetUser(ctx, req)
		if err == nil {
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("kit/client's calls still fail once the server is ready: %v", err)
		}
	}
}

// startShutdown runs srv.Shutdown in the background and returns once
// health reads NOT_SERVING; the channel closes when Shutdown returns.
func startShutdown(t *testing.T, ctx context.Context, srv *servertest.Server) <-chan struct{} {
	t.Helper()
	done := make(chan struct{})
	go func() {
		srv.Shutdown(ctx)
		close(done)
	}()
	waitFor(t, ctx, func() bool {
		resp, err := healthCheckDirect(ctx, srv.Server)
		return err == nil && resp == healthpb.HealthCheckResponse_NOT_SERVING
	})
	return done
}

// healthCheckDirect asks the health service in process, since the listener
// stops taking new connections once draining starts.
func healthCheckDirect(ctx context.Context, srv *server.Server) (healthpb.HealthCheckResponse_ServingStatus, error) {
	resp, err := srv.Health().Check(ctx, &healthpb.HealthCheckRequest{})
	return resp.GetStatus(), err
}

func TestShutdownCutsOffAfterDrainTimeout(t *testing.T) {
	started := make(chan struct{}, 1)
	svc := &users{get: func(ctx context.Context, req *userv1.GetUserRequest) (*userv1.GetUserResponse, error) {
		started <- struct{}{}
		<-ctx.Done() // a handler that never finishes on its own
		return nil, ctx.Err()
	}}
	srv := servertest.NewServer(t, server.Config{DrainTimeout: 50 * time.Millisecond}, svc.register)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	errc := make(chan error, 1)
	go func() {
		_, err := userv1.NewUserServiceClient(srv.Conn).GetUser(ctx, &userv1.GetUserRequest{Id: validID})
		errc <- err
	}()
	<-started
	srv.Shutdown(ctx)
	err := <-errc
	if err == nil || errors.Is(err, context.DeadlineExceeded) || apierr.Code(err) == codes.DeadlineExceeded {
		t.Fatalf("call after forced stop = %v; want it cut off promptly", err)
	}
}

// waitFor polls cond until it holds or ctx ends.
func waitFor(t *testing.T, ctx context.Context, cond func() bool) {
	t.Helper()
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		select {
		case <-ctx.Done():
			t.Fatal("condition not met before deadline")
		case <-tick.C:
		}
	}
}

// TestStreamWorkers runs more calls at once than the server keeps workers
// for: every call must be running at the same time (those that find the
// workers busy get goroutines of their own), and goleak (TestMain) checks
// that Shutdown, at the test's cleanup, ends the workers.
func TestStreamWorkers(t *testing.T) {
	tests := []struct {
		name    string
		workers int
	}{
		{name: "default", workers: 0},
		{name: "fewer workers than calls", workers: 2},
		{name: "none", workers: -1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			const calls = 12
			started := make(chan struct{}, calls)
			release := make(chan struct{})
			svc := &users{get: func(ctx context.Context, req *userv1.GetUserRequest) (*userv1.GetUserResponse, error) {
				started <- struct{}{}
				select {
				case <-release:
				case <-ctx.Done():
					return nil, ctx.Err()
				}
				return &userv1.GetUserResponse{User: &userv1.User{Id: req.GetId()}}, nil
			}}
			srv := servertest.NewServer(t, server.Config{StreamWorkers: tt.workers}, svc.register)
			users := userv1.NewUserServiceClient(srv.Conn)
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			var wg sync.WaitGroup
			errs := make(chan error, calls)
			for range calls {
				wg.Go(func() {
					_, err := users.GetUser(ctx, &userv1.GetUserRequest{Id: validID})
					errs <- err
				})
			}
			for i := range calls {
				select {
				case <-started:
				case <-ctx.Done():
					t.Fatalf("only %d of %d calls ran at once", i, calls)
				}
			}
			close(release)
			wg.Wait()
			close(errs)
			for err := range errs {
				if err != nil {
					t.Errorf("call failed: %v", err)
				}
			}
		})
	}
}

// TestStreamWorkersBound: a worker count past MaxStreamWorkers is refused,
// not wrapped into grpc-go's uint32.
func TestStreamWorkersBound(t *testing.T) {
	for _, n := range []int{server.MaxStreamWorkers + 1, 1 << 32} {
		if srv, err := server.New(server.Config{StreamWorkers: n}); err == nil {
			srv.GRPC().Stop()
			t.Errorf("StreamWorkers %d: no error", n)
		} else if !strings.Contains(err.Error(), "StreamWorkers") {
			t.Errorf("StreamWorkers %d: error %q does not name the field", n, err)
		}
	}
	srv, err := server.New(server.Config{StreamWorkers: server.MaxStreamWorkers})
	if err != nil {
		t.Fatalf("StreamWorkers = MaxStreamWorkers: %v", err)
	}
	srv.GRPC().Stop()
}

// importer is an InventoryService whose ImportStock, a client stream,
// tells started and then reads until the client closes its side.
type importer struct {
	inventoryv1.UnimplementedInventoryServiceServer
	started chan struct{}
}

func (i *importer) ImportStock(stream grpc.ClientStreamingServer[inventoryv1.ImportStockRequest, inventoryv1.ImportStockResponse]) error {
	i.started <- struct{}{}
	for {
		if _, err := stream.Recv(); err == io.EOF {
			return stream.SendAndClose(&inventoryv1.ImportStockResponse{})
		} else if err != nil {
			return err
		}
	}
}

// watcher is an OrderService whose WatchOrder sends one state, then a
// second once release is closed.
type watcher struct {
	orderv1.UnimplementedOrderServiceServer
	release chan struct{}
}

func (w *watcher) WatchOrder(req *orderv1.WatchOrderRequest, stream grpc.ServerStreamingServer[orderv1.WatchOrderResponse]) error {
	for range 2 {
		if err := stream.Send(&orderv1.WatchOrderResponse{Order: &orderv1.Order{Id: req.GetId()}}); err != nil {
			return err
		}
		select {
		case <-w.release:
		case <-stream.Context().Done():
			return stream.Context().Err()
		}
	}
	return nil
}

// TestShutdownEndsLongLivedStreams: Shutdown ends server-streaming and
// bidirectional calls at once, with UNAVAILABLE SHUTTING_DOWN, rather than
// waiting out the drain timeout for streams that never end by themselves;
// a client stream, and a server stream listed in FiniteStreams, drain like
// unary calls.
func TestShutdownEndsLongLivedStreams(t *testing.T) {
	imp := &importer{started: make(chan struct{}, 1)}
	watch := &watcher{release: make(chan struct{})}
	srv := servertest.NewServer(t, server.Config{
		DrainTimeout:  time.Minute,
		FiniteStreams: []string{orderv1.OrderService_WatchOrder_FullMethodName},
	}, func(r grpc.ServiceRegistrar) {
		inventoryv1.RegisterInventoryServiceServer(r, imp)
		orderv1.RegisterOrderServiceServer(r, watch)
	})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()

	healthWatch, err := healthpb.NewHealthClient(srv.Conn).Watch(ctx, &healthpb.HealthCheckRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if resp, err := healthWatch.Recv(); err != nil || resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("health watch = %v, %v; want SERVING", resp.GetStatus(), err)
	}
	reflect, err := reflectionpb.NewServerReflectionClient(srv.Conn).ServerReflectionInfo(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := reflect.Send(&reflectionpb.ServerReflectionRequest{MessageRequest: &reflectionpb.ServerReflectionRequest_ListServices{}}); err != nil {
		t.Fatal(err)
	}
	if _, err := reflect.Recv(); err != nil {
		t.Fatal(err)
	}
	upload, err := inventoryv1.NewInventoryServiceClient(srv.Conn).ImportStock(ctx)
	if err != nil {
		t.Fatal(err)
	}
	<-imp.started
	finite, err := orderv1.NewOrderServiceClient(srv.Conn).WatchOrder(ctx, &orderv1.WatchOrderRequest{Id: validID})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := finite.Recv(); err != nil {
		t.Fatal(err)
	}

	shutdown := make(chan struct{})
	go func() {
		srv.Shutdown(ctx)
		close(shutdown)
	}()
	shuttingDown := func(what string, err error) {
		t.Helper()
		if apierr.Code(err) != codes.Unavailable || apierr.Reason(err) != apierr.ReasonShuttingDown {
			t.Errorf("%s ended with %v, want UNAVAILABLE %s", what, err, apierr.ReasonShuttingDown)
		}
		if d, ok := apierr.RetryDelay(err); !ok || d != server.ShutdownRetryAfter {
			t.Errorf("%s's retry delay = %v, %v; want %v", what, d, ok, server.ShutdownRetryAfter)
		}
	}
	// The health watch is told NOT_SERVING before it ends.
	if resp, err := healthWatch.Recv(); err != nil || resp.GetStatus() != healthpb.HealthCheckResponse_NOT_SERVING {
		t.Errorf("health watch during shutdown = %v, %v; want NOT_SERVING first", resp.GetStatus(), err)
	}
	_, err = healthWatch.Recv()
	shuttingDown("health watch", err)
	_, err = reflect.Recv()
	shuttingDown("reflection stream", err)

	select {
	case <-shutdown:
		t.Fatal("Shutdown returned while an upload and a finite stream were in flight")
	default:
	}
	close(watch.release)
	if _, err := finite.Recv(); err != nil {
		t.Errorf("finite stream's second state: %v", err)
	}
	if _, err := finite.Recv(); err != io.EOF {
		t.Errorf("finite stream ended with %v, want its own end", err)
	}
	if _, err := upload.CloseAndRecv(); err != nil {
		t.Errorf("upload during shutdown: %v", err)
	}
	select {
	case <-shutdown:
	case <-ctx.Done():
		t.Fatal("Shutdown did not return once the upload and the finite stream ended")
	}
}

// TestNotServingDelay: a caller that reaches the server through a
// balancer polling health (a Kubernetes Service, a proxy), not through
// kit/client's Watch, kept being sent to it until the next probe; Shutdown
// closed the listener as it reported NOT_SERVING, so those calls met a
// refused connection. With NotServingDelay the server reports NOT_SERVING
// and goes on serving new connections for the delay.
func TestNotServingDelay(t *testing.T) {
	ok := func(_ context.Context, req *userv1.GetUserRequest) (*userv1.GetUserResponse, error) {
		return &userv1.GetUserResponse{User: &userv1.User{Id: req.GetId()}}, nil
	}
	// Long enough for a call made once NOT_SERVING shows to land within
	// it on a loaded machine; the delay's end is waited for, not timed.
	const delay = 3 * time.Second
	srv := servertest.NewServer(t, server.Config{NotServingDelay: delay}, (&users{get: ok}).register)
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	if _, err := userv1.NewUserServiceClient(srv.Conn).GetUser(ctx, &userv1.GetUserRequest{Id: validID}); err != nil {
		t.Fatal(err)
	}
	shutdown := startShutdown(t, ctx, srv)
	// A new caller, as a balancer that has not probed yet sends one.
	late := rawClient(t, srv.Addr)
	if _, err := userv1.NewUserServiceClient(late).GetUser(ctx, &userv1.GetUserRequest{Id: validID}); err != nil {
		t.Errorf("a call while NOT_SERVING within the delay: %v", err)
	}
	select {
	case <-shutdown:
	case <-ctx.Done():
		t.Fatal("Shutdown did not return after its delay")
	}
	// After the delay the server takes no new calls.
	gone := rawClient(t, srv.Addr)
	if _, err := userv1.NewUserServiceClient(gone).GetUser(ctx, &userv1.GetUserRequest{Id: validID}); apierr.Code(err) != codes.Unavailable {
		t.Errorf("a call after Shutdown: %v, want UNAVAILABLE", err)
	}
}

// refuseAll is an Authorizer that refuses every call and counts them.
type refuseAll struct{ calls atomic.Int32 }

func (r *refuseAll) UnaryInterceptor() grpc.UnaryServerInterceptor {
	return func(ctx context.Context, _ any, _ *grpc.UnaryServerInfo, _ grpc.UnaryHandler) (any, error) {
		r.calls.Add(1)
		return nil, apierr.New(codes.PermissionDenied, "NOT_YOU", "refused")
	}
}

func (r *refuseAll) StreamInterceptor() grpc.StreamServerInterceptor {
	return func(any, grpc.ServerStream, *grpc.StreamServerInfo, grpc.StreamHandler) error {
		r.calls.Add(1)
		return apierr.New(codes.PermissionDenied, "NOT_YOU", "refused")
	}
}

// TestAuthorizerBeforeValidation: the Authorizer decides before the
// request is validated (a refused caller learns nothing of its rules) and
// after the access log, which records the refusal.
func TestAuthorizerBeforeValidation(t *testing.T) {
	var logs logbuffer.Buffer
	auth := &refuseAll{}
	conn := servertest.Start(t, server.Config{Name: "test", Authorizer: auth, Logger: slog.New(slog.NewJSONHandler(&logs, nil))},
		(&users{}).register)
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	_, err := userv1.NewUserServiceClient(conn).GetUser(ctx, &userv1.GetUserRequest{Id: "not-a-uuid"})
	if apierr.Code(err) != codes.PermissionDenied || apierr.Reason(err) != "NOT_YOU" {
		t.Fatalf("an invalid request from a refused caller: %v, want the Authorizer's PERMISSION_DENIED", err)
	}
	if auth.calls.Load() != 1 {
		t.Fatalf("the Authorizer ran %d times, want 1", auth.calls.Load())
	}
	found := false
	for deadline := time.Now().Add(5 * time.Second); !found && time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		for _, rec := range logs.Lines(t) {
			if rec["grpc.method"] == "GetUser" && rec["grpc.code"] == "PermissionDenied" {
				found = true
			}
		}
	}
	if !found {
		t.Errorf("no access log line for the refused call:\n%s", logs.String())
	}
}
