package client_test

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/status"

	userv1 "github.com/duetkit/duet/gen/duet/user/v1"
	"github.com/duetkit/duet/kit/apierr"
	"github.com/duetkit/duet/kit/client"
	"github.com/duetkit/duet/kit/server"
	"github.com/duetkit/duet/kit/server/servertest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// flaky fails every call with a bare UNAVAILABLE (as a server that is not
// ready would) until it has failed `failures` times.
type flaky struct {
	userv1.UnimplementedUserServiceServer
	failures int32
	gets     atomic.Int32
	creates  atomic.Int32
}

func (f *flaky) GetUser(ctx context.Context, req *userv1.GetUserRequest) (*userv1.GetUserResponse, error) {
	if f.gets.Add(1) <= f.failures {
		return nil, status.Error(codes.Unavailable, "not ready")
	}
	return &userv1.GetUserResponse{User: &userv1.User{Id: req.GetId()}}, nil
}

func (f *flaky) CreateUser(ctx context.Context, req *userv1.CreateUserRequest) (*userv1.CreateUserResponse, error) {
	if f.creates.Add(1) <= f.failures {
		return nil, status.Error(codes.Unavailable, "not ready")
	}
	return &userv1.CreateUserResponse{User: &userv1.User{Email: req.GetEmail()}}, nil
}

// serve runs impl behind kit/server for the test and returns its address,
// for the client under test to dial.
func serve(t *testing.T, impl userv1.UserServiceServer) string {
	t.Helper()
	return servertest.NewServer(t, server.Config{}, func(r grpc.ServiceRegistrar) { userv1.RegisterUserServiceServer(r, impl) }).Addr
}

// fastRetries returns a kit/client UserService client of f, served for
// the test, whose retries wait milliseconds.
func fastRetries(t *testing.T, f userv1.UserServiceServer) userv1.UserServiceClient {
	t.Helper()
	conn, err := client.New(serve(t, f), client.Config{Retry: client.Retry{InitialBackoff: time.Millisecond, MaxBackoff: 5 * time.Millisecond}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return userv1.NewUserServiceClient(conn)
}

func TestRetriesOnlyIdempotentMethods(t *testing.T) {
	tests := []struct {
		name      string
		call      func(context.Context, userv1.UserServiceClient) error
		count     func(*flaky) int32
		wantCode  codes.Code
		wantCalls int32
	}{
		{
			name: "GetUser is NO_SIDE_EFFECTS: retried until it works",
			call: func(ctx context.Context, c userv1.UserServiceClient) error {
				_, err := c.GetUser(ctx, &userv1.GetUserRequest{Id: "0b7f5b4e-8a1e-4f57-9d7e-0d4b8f3e2a11"})
				return err
			},
			count:     func(f *flaky) int32 { return f.gets.Load() },
			wantCode:  codes.OK,
			wantCalls: 3,
		},
		{
			name: "CreateUser is not idempotent: tried once",
			call: func(ctx context.Context, c userv1.UserServiceClient) error {
				_, err := c.CreateUser(ctx, &userv1.CreateUserRequest{Email: "a@example.com", Name: "A"})
				return err
			},
			count:     func(f *flaky) int32 { return f.creates.Load() },
			wantCode:  codes.Unavailable,
			wantCalls: 1,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := &flaky{failures: 2}
			users := fastRetries(t, f)
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			err := tt.call(ctx, users)
			if got := apierr.Code(err); got != tt.wantCode {
				t.Fatalf("code = %v, want %v (%v)", got, tt.wantCode, err)
			}
			if got := tt.count(f); got != tt.wantCalls {
				t.Errorf("server saw %d calls, want %d", got, tt.wantCalls)
			}
		})
	}
}

// TestRetriesThrottled: against a peer that fails every call, retries
// stop once about five attempts in a row have failed (gRFC A6 throttling),
// instead of every call being tried MaxAttempts times (40 attempts for 10
// calls).
func TestRetriesThrottled(t *testing.T) {
	f := &flaky{failures: 1 << 30}
	users := fastRetries(t, f)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	const calls = 10
	for range calls {
		if _, err := users.GetUser(ctx, &userv1.GetUserRequest{Id: "0b7f5b4e-8a1e-4f57-9d7e-0d4b8f3e2a11"}); apierr.Code(err) != codes.Unavailable {
			t.Fatalf("GetUser = %v, want UNAVAILABLE", err)
		}
	}
	// The first call's four attempts spend the tokens down to the
	// threshold; every later call is tried once.
	if got := f.gets.Load(); got > 4+calls-1 {
		t.Errorf("the peer saw %d attempts for %d calls, want at most %d", got, calls, 4+calls-1)
	}
}

func TestServiceConfig(t *testing.T) {
	js, err := client.ServiceConfig(client.Config{Services: []string{"duet.user.v1.UserService"}, Timeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	var sc struct {
		LoadBalancingConfig []map[string]any `json:"loadBalancingConfig"`
		HealthCheckConfig   *struct {
			ServiceName *string `json:"serviceName"`
		} `json:"healthCheckConfig"`
		MethodConfig []struct {
			Name        []struct{ Service, Method string } `json:"name"`
			Timeout     string                             `json:"timeout"`
			RetryPolicy *struct {
				RetryableStatusCodes []string `json:"retryableStatusCodes"`
			} `json:"retryPolicy"`
		} `json:"methodConfig"`
	}
	if err := json.Unmarshal([]byte(js), &sc); err != nil {
		t.Fatal(err)
	}
	if _, ok := sc.LoadBalancingConfig[0]["round_robin"]; !ok {
		t.Errorf("load balancing = %v, want round_robin", sc.LoadBalancingConfig)
	}
	if hc := sc.HealthCheckConfig; hc == nil || hc.ServiceName == nil || *hc.ServiceName != "" {
		t.Errorf("healthCheckConfig = %+v, want the whole server's health (serviceName \"\")", hc)
	}
	if off, err := client.ServiceConfig(client.Config{DisableHealthCheck: true}); err != nil || strings.Contains(off, "healthCheckConfig") {
		t.Errorf("with DisableHealthCheck: %s, %v; want no healthCheckConfig", off, err)
	}
	retried := map[string]bool{}
	timed := map[string]string{}
	for _, mc := range sc.MethodConfig {
		for _, n := range mc.Name {
			timed[n.Method] = mc.Timeout
			if mc.RetryPolicy != nil {
				retried[n.Method] = true
			}
		}
	}
	want := map[string]bool{"GetUser": true, "ListUsers": true, "CreateUser": false, "UpdateUser": false}
	for m, r := range want {
		if retried[m] != r {
			t.Errorf("%s retried = %v, want %v", m, retried[m], r)
		}
		if timed[m] != "2s" {
			t.Errorf("%s timeout = %q, want 2s", m, timed[m])
		}
	}
	if _, err := client.ServiceConfig(client.Config{Services: []string{"no.such.Service"}}); err == nil {
		t.Error("unknown service accepted")
	}
	// grpc-go refused the retry policy it made, naming no setting.
	if _, err := client.New("127.0.0.1:1", client.Config{Retry: client.Retry{MaxBackoff: -time.Second}}); err == nil || !strings.Contains(err.Error(), "MaxBackoff must not be negative") {
		t.Errorf("a negative backoff gave %v, want an error naming it", err)
	}
}

// TestNewAcceptsEveryConfig: settings a caller may well choose gave a
// service config grpc-go refuses, so New failed: durations of ~11.6 days
// or more, or under 100 µs (%g wrote them with an exponent), MaxAttempts
// 1 (grpc-go wants 2 or more in a retry policy) and a service listed
// twice (a method named twice).
func TestNewAcceptsEveryConfig(t *testing.T) {
	user := []string{"duet.user.v1.UserService"}
	tests := []struct {
		name      string
		cfg       client.Config
		timeout   string // of GetUser
		retryable bool   // GetUser has a retry policy
	}{
		{"a long timeout", client.Config{Services: user, Timeout: 300 * time.Hour}, "1080000s", true},
		{"a short timeout", client.Config{Services: user, Timeout: 50 * time.Microsecond}, "0.00005s", true},
		{"a short backoff", client.Config{Services: user, Retry: client.Retry{InitialBackoff: 20 * time.Microsecond}}, "10s", true},
		{"one attempt", client.Config{Services: user, Retry: client.Retry{MaxAttempts: 1}}, "10s", false},
		{"a service twice", client.Config{Services: append(user, user...)}, "10s", true},
		// Durations whose float seconds are not short: "1.1400000000000001s"
		// made New fail with an invalid service config.
		{"a timeout of 1.14 s", client.Config{Services: user, Timeout: 1140 * time.Millisecond}, "1.14s", true},
		{"a backoff of 1.36 s", client.Config{Services: user, Retry: client.Retry{InitialBackoff: 1360 * time.Millisecond, MaxBackoff: 1570 * time.Millisecond}}, "10s", true},
		{"a nanosecond over", client.Config{Services: user, Timeout: time.Second + time.Nanosecond}, "1.000000001s", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			conn, err := client.New("127.0.0.1:1", tt.cfg)
			if err != nil {
				t.Fatalf("New: %v", err)
			}
			conn.Close()
			js, err := client.ServiceConfig(tt.cfg)
			if err != nil {
				t.Fatal(err)
			}
			var sc struct {
				MethodConfig []struct {
					Name        []struct{ Method string } `json:"name"`
					Timeout     string                    `json:"timeout"`
					RetryPolicy json.RawMessage           `json:"retryPolicy"`
				} `json:"methodConfig"`
			}
			if err := json.Unmarshal([]byte(js), &sc); err != nil {
				t.Fatal(err)
			}
			for _, mc := range sc.MethodConfig {
				for _, n := range mc.Name {
					if n.Method == "GetUser" && (mc.Timeout != tt.timeout || (mc.RetryPolicy != nil) != tt.retryable) {
						t.Errorf("GetUser: timeout %q, retry policy %s; want %q, retried %v", mc.Timeout, mc.RetryPolicy, tt.timeout, tt.retryable)
					}
				}
			}
		})
	}
}

// decided answers UNAVAILABLE with an ErrorInfo: the application handled the
// call and chose to fail it for now.
type decided struct {
	userv1.UnimplementedUserServiceServer
	gets atomic.Int32
}

func (d *decided) GetUser(ctx context.Context, req *userv1.GetUserRequest) (*userv1.GetUserResponse, error) {
	d.gets.Add(1)
	return nil, apierr.Unavailable("PROVIDER_UNAVAILABLE", "try later", time.Second)
}

// decidedThenBlip answers CreateUser with a decided UNAVAILABLE (as
// payment's PROVIDER_UNAVAILABLE) and GetUser with one bare UNAVAILABLE, a
// transport blip, then success.
type decidedThenBlip struct {
	userv1.UnimplementedUserServiceServer
	gets atomic.Int32
}

func (d *decidedThenBlip) CreateUser(context.Context, *userv1.CreateUserRequest) (*userv1.CreateUserResponse, error) {
	return nil, apierr.Unavailable("PROVIDER_UNAVAILABLE", "try later", time.Second)
}

func (d *decidedThenBlip) GetUser(_ context.Context, req *userv1.GetUserRequest) (*userv1.GetUserResponse, error) {
	if d.gets.Add(1) == 1 {
		return nil, status.Error(codes.Unavailable, "not ready")
	}
	return &userv1.GetUserResponse{User: &userv1.User{Id: req.GetId()}}, nil
}

// TestDecidedFailuresKeepRetries: decided failures, which are never
// retried, do not count against the connection's retry throttling. With a
// retry pushback of -1 marking them, grpc-go counted each, and after five
// a blip on another method was no longer retried.
func TestDecidedFailuresKeepRetries(t *testing.T) {
	d := &decidedThenBlip{}
	users := fastRetries(t, d)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for range 8 {
		if _, err := users.CreateUser(ctx, &userv1.CreateUserRequest{Email: "a@example.com", Name: "A"}); apierr.Reason(err) != "PROVIDER_UNAVAILABLE" {
			t.Fatalf("CreateUser = %v, want PROVIDER_UNAVAILABLE", err)
		}
	}
	if _, err := users.GetUser(ctx, &userv1.GetUserRequest{Id: "0b7f5b4e-8a1e-4f57-9d7e-0d4b8f3e2a11"}); err != nil {
		t.Errorf("GetUser after decided failures of another method: %v (%d attempts); a blip was not retried", err, d.gets.Load())
	}
}

func TestDecidedUnavailableIsNotRetried(t *testing.T) {
	d := &decided{}
	conn, err := client.New(serve(t, d), client.Config{Retry: client.Retry{InitialBackoff: time.Millisecond, MaxBackoff: 5 * time.Millisecond}})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err = userv1.NewUserServiceClient(conn).GetUser(ctx, &userv1.GetUserRequest{Id: "0b7f5b4e-8a1e-4f57-9d7e-0d4b8f3e2a11"})
	if apierr.Reason(err) != "PROVIDER_UNAVAILABLE" {
		t.Fatalf("err = %v, want PROVIDER_UNAVAILABLE", err)
	}
	if d, ok := apierr.RetryDelay(err); !ok || d != time.Second {
		t.Errorf("RetryInfo = %v, %v; want 1s for the caller", d, ok)
	}
	if got := d.gets.Load(); got != 1 {
		t.Errorf("server saw %d calls, want 1: a decided failure must not be retried by the transport", got)
	}
}

// TestReconnectsSoonAfterPeerGoesAway checks that a connection whose peer
// is gone tries again within about a second and a half, not after grpc-go's
// default waits (1 s, then 1.6, 2.6, 4.1 s...), which kept calls failing
// for most of a second after a peer that restarted quickly was back.
// While waiting to try again, a connection fails calls at once.
func TestReconnectsSoonAfterPeerGoesAway(t *testing.T) {
	const want = 6 // with grpc-go's defaults the sixth attempt comes after ~16 s
	attempts := make(chan struct{}, want)
	conn, err := client.New("passthrough:///gone", client.Config{Options: []grpc.DialOption{
		grpc.WithContextDialer(func(context.Context, string) (net.Conn, error) {
			select {
			case attempts <- struct{}{}:
			default:
			}
			return nil, errors.New("connection refused")
		}),
	}})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.Connect()
	deadline := time.NewTimer(10 * time.Second)
	defer deadline.Stop()
	for n := 0; n < want; n++ {
		select {
		case <-attempts:
		case <-deadline.C:
			t.Fatalf("%d connection attempts in 10 s, want %d", n, want)
		}
	}
}

// TestKeepaliveDefaults: a Config.Keepalive that sets some fields takes
// the defaults for the zero ones. Setting only Timeout made Time 0, which
// was raised to the 10 s floor: pings three times as often as the
// default, and GOAWAY too_many_pings from servers that enforce grpc-go's.
func TestKeepaliveDefaults(t *testing.T) {
	tests := []struct {
		name    string
		in, out keepalive.ClientParameters
	}{
		{"zero", keepalive.ClientParameters{}, keepalive.ClientParameters{Time: 30 * time.Second, Timeout: 10 * time.Second, PermitWithoutStream: true}},
		{"timeout only", keepalive.ClientParameters{Timeout: 20 * time.Second}, keepalive.ClientParameters{Time: 30 * time.Second, Timeout: 20 * time.Second}},
		{"without stream only", keepalive.ClientParameters{PermitWithoutStream: true}, keepalive.ClientParameters{Time: 30 * time.Second, Timeout: 10 * time.Second, PermitWithoutStream: true}},
		{"too often", keepalive.ClientParameters{Time: time.Second}, keepalive.ClientParameters{Time: 10 * time.Second, Timeout: 10 * time.Second}},
		{"as given", keepalive.ClientParameters{Time: 5 * time.Minute, Timeout: time.Second}, keepalive.ClientParameters{Time: 5 * time.Minute, Timeout: time.Second}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := client.KeepaliveParams(tt.in); got != tt.out {
				t.Errorf("keepalive %+v became %+v, want %+v", tt.in, got, tt.out)
			}
		})
	}
}
