package gateway

import (
	"net"
	"net/http"
	"slices"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	orderv1 "github.com/duetkit/duet/gen/duet/order/v1"
)

func TestHealthz(t *testing.T) {
	e := newEnv(t)
	e.orders.health.SetServingStatus(orderv1.OrderService_ServiceDesc.ServiceName, healthpb.HealthCheckResponse_NOT_SERVING)
	resp := e.do(t, "GET", "/healthz", nil)
	if resp.status != http.StatusOK || get(resp.json(t), "status") != "ok" {
		t.Fatalf("healthz: %d %s (must not depend on backends)", resp.status, resp.body)
	}
}

func TestReadyz(t *testing.T) {
	e := newEnv(t)
	orderService := orderv1.OrderService_ServiceDesc.ServiceName
	tests := []struct {
		name     string
		change   func()
		status   int
		notReady []string
		backends map[string]string
	}{
		{
			name:     "all serving",
			change:   func() {},
			status:   http.StatusOK,
			backends: map[string]string{"user": "SERVING", "order": "SERVING", "payment": "SERVING"},
		},
		{
			name:     "order not serving",
			change:   func() { e.orders.health.SetServingStatus(orderService, healthpb.HealthCheckResponse_NOT_SERVING) },
			status:   http.StatusServiceUnavailable,
			notReady: []string{"order"},
			backends: map[string]string{"user": "SERVING", "order": "NOT_SERVING", "payment": "SERVING"},
		},
		{
			name:     "order back",
			change:   func() { e.orders.health.SetServingStatus(orderService, healthpb.HealthCheckResponse_SERVING) },
			status:   http.StatusOK,
			backends: map[string]string{"user": "SERVING", "order": "SERVING", "payment": "SERVING"},
		},
		{
			name:     "payment draining",
			change:   func() { e.payments.health.Shutdown() },
			status:   http.StatusServiceUnavailable,
			notReady: []string{"payment"},
			backends: map[string]string{"user": "SERVING", "order": "SERVING", "payment": "NOT_SERVING"},
		},
		{
			name:     "user gone",
			change:   func() { e.users.srv.Stop() },
			status:   http.StatusServiceUnavailable,
			notReady: []string{"user", "payment"},
			backends: map[string]string{"user": "UNAVAILABLE", "order": "SERVING", "payment": "NOT_SERVING"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.change()
			resp := e.do(t, "GET", "/readyz", nil)
			if resp.status != tt.status {
				t.Fatalf("status %d, want %d: %s", resp.status, tt.status, resp.body)
			}
			m := resp.json(t)
			for name, want := range tt.backends {
				if got := get(m, "backends."+name); got != want {
					t.Errorf("backends.%s = %v, want %s", name, got, want)
				}
			}
			var notReady []string
			for _, n := range anySlice(get(m, "notReady")) {
				notReady = append(notReady, n.(string))
			}
			slices.Sort(notReady)
			want := slices.Clone(tt.notReady)
			slices.Sort(want)
			if !slices.Equal(notReady, want) {
				t.Errorf("notReady %v, want %v", notReady, want)
			}
			if resp.header.Get("Cache-Control") != "no-store" {
				t.Error("readyz answer may be cached")
			}
			if want := map[bool]string{true: "1"}[tt.status == http.StatusServiceUnavailable]; resp.header.Get("Retry-After") != want {
				t.Errorf("Retry-After %q, want %q", resp.header.Get("Retry-After"), want)
			}
		})
	}
}

func anySlice(v any) []any { s, _ := v.([]any); return s }

// TestReadyzOverallStatus checks the fallback for servers that report only
// the overall ("") status, not one per service.
func TestReadyzOverallStatus(t *testing.T) {
	bare := startBackend(t, "", func(grpc.ServiceRegistrar) {})
	e := newEnv(t, func(c *Config) { c.Users = bare.conn })
	if resp := e.do(t, "GET", "/readyz", nil); resp.status != http.StatusOK {
		t.Fatalf("status %d: %s", resp.status, resp.body)
	}
	bare.health.SetServingStatus("", healthpb.HealthCheckResponse_NOT_SERVING)
	resp := e.do(t, "GET", "/readyz", nil)
	if resp.status != http.StatusServiceUnavailable || get(resp.json(t), "backends.user") != "NOT_SERVING" {
		t.Fatalf("status %d: %s", resp.status, resp.body)
	}
}

// TestMarkNotReady: after MarkNotReady, /readyz answers 503 "shutting
// down" (with Retry-After, as every 503) while every backend is SERVING,
// and the API is served as before.
func TestMarkNotReady(t *testing.T) {
	e := newEnv(t)
	if resp := e.do(t, "GET", "/readyz", nil); resp.status != http.StatusOK {
		t.Fatalf("before MarkNotReady: status %d: %s", resp.status, resp.body)
	}
	e.gw.MarkNotReady()
	resp := e.do(t, "GET", "/readyz", nil)
	if resp.status != http.StatusServiceUnavailable || get(resp.json(t), "status") != "shutting down" || resp.header.Get("Retry-After") == "" {
		t.Errorf("after MarkNotReady: status %d, Retry-After %q: %s; want 503 shutting down with Retry-After", resp.status, resp.header.Get("Retry-After"), resp.body)
	}
	if resp := e.do(t, "GET", "/v1/users/"+knownUserID, nil); resp.status != http.StatusOK {
		t.Errorf("GetUser after MarkNotReady: status %d: %s", resp.status, resp.body)
	}
}

// TestReadyzIsBounded checks that a backend that accepts connections but
// never speaks makes /readyz fail within ReadyTimeout instead of hanging.
func TestReadyzIsBounded(t *testing.T) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var (
		mu     sync.Mutex
		held   []net.Conn
		accept sync.WaitGroup
	)
	accept.Go(func() {
		for {
			c, err := lis.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			held = append(held, c)
			mu.Unlock()
		}
	})
	mute, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = mute.Close()
		_ = lis.Close()
		accept.Wait()
		mu.Lock()
		defer mu.Unlock()
		for _, c := range held {
			_ = c.Close()
		}
	})

	// Long enough for the other backends' first connection and health
	// check on a loaded machine (300 ms was not always): they share it.
	const timeout = 2 * time.Second
	e := newEnv(t, func(c *Config) { c.Payments = mute; c.ReadyTimeout = timeout })
	start := time.Now()
	resp := e.do(t, "GET", "/readyz", nil)
	elapsed := time.Since(start)
	if resp.status != http.StatusServiceUnavailable {
		t.Fatalf("status %d: %s", resp.status, resp.body)
	}
	if got := get(resp.json(t), "backends.payment"); got != "DEADLINE_EXCEEDED" {
		t.Errorf("backends.payment = %v, want DEADLINE_EXCEEDED", got)
	}
	if get(resp.json(t), "backends.user") != "SERVING" {
		t.Errorf("a hung backend spoiled the others: %s", resp.body)
	}
	if elapsed > timeout+2*time.Second {
		t.Errorf("readyz took %v with a %v timeout", elapsed, timeout)
	}
}
