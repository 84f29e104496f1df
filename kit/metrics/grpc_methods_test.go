package metrics_test

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/duetkit/duet/kit/metrics"
)

// TestClientChosenMethodNames: behind an UnknownServiceHandler the method
// name is whatever the client sends. Each new name made three series
// (started, handled, the histogram) without limit, and a name that is not
// UTF-8 made the Prometheus client panic outside the recovery interceptor,
// taking the process down.
func TestClientChosenMethodNames(t *testing.T) {
	m := metrics.NewServerMetrics(nil)
	reg := prometheus.NewRegistry()
	reg.MustRegister(m)
	intercept := m.UnaryServerInterceptor()
	ok := func(context.Context, any) (any, error) { return nil, nil }
	call := func(method string) {
		t.Helper()
		defer func() {
			if p := recover(); p != nil {
				t.Fatalf("call of %q panicked: %v", method, p)
			}
		}()
		if _, err := intercept(t.Context(), nil, &grpc.UnaryServerInfo{FullMethod: method}, ok); err != nil {
			t.Fatal(err)
		}
	}
	call("/x.Y/\xff")
	const names = 3000
	for i := range names {
		call(fmt.Sprintf("/x.Y/M%d", i))
	}
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		methods, total := map[string]bool{}, 0.0
		for _, s := range f.GetMetric() {
			for _, l := range s.GetLabel() {
				if l.GetName() == "grpc_method" {
					methods[l.GetValue()] = true
				}
			}
			total += s.GetCounter().GetValue() + float64(s.GetHistogram().GetSampleCount())
		}
		// 1024 names of their own, then one "unknown" for the rest.
		if len(methods) > 1025 || !methods["unknown"] {
			t.Errorf("%s: %d method labels, want at most 1025 with \"unknown\"", f.GetName(), len(methods))
		}
		if total != names+1 {
			t.Errorf("%s counts %v calls, want %d: every call still counts", f.GetName(), total, names+1)
		}
	}
}

// TestOddMethodNames: a name that is not the shape of a gRPC method's, or
// is longer than any, counts as "unknown": each series repeats its name
// on every scrape (a 60 KB name, which the headers allow, made a 100 MB
// scrape of 100 calls), and "/pkg.S/a/b" would count as a method "a/b" of
// the real service pkg.S. Well-formed names keep their own labels.
func TestOddMethodNames(t *testing.T) {
	tests := []struct {
		name, wantService, wantMethod string
	}{
		{"/pkg.v1.Service/Method_2", "pkg.v1.Service", "Method_2"},
		{"/pkg.v1.Service/Get/User", "unknown", "unknown"},
		{"/pkg.v1.Service/" + strings.Repeat("M", 300), "unknown", "unknown"},
		{"/pkg.v1.Service/", "unknown", "unknown"},
		{"//Method", "unknown", "unknown"},
		{"/pkg v1/Method", "unknown", "unknown"},
		{"/.a../M", "unknown", "unknown"},
		{"/pkg.v1.Service/2Method", "unknown", "unknown"},
		{"/pkg.v1.Service/Méthode", "unknown", "unknown"},
		{"/x.Y/\xff", "unknown", "unknown"},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("%.40q", tt.name), func(t *testing.T) {
			m := metrics.NewServerMetrics(nil)
			reg := prometheus.NewRegistry()
			reg.MustRegister(m)
			ok := func(context.Context, any) (any, error) { return nil, nil }
			if _, err := m.UnaryServerInterceptor()(t.Context(), nil, &grpc.UnaryServerInfo{FullMethod: tt.name}, ok); err != nil {
				t.Fatal(err)
			}
			families, err := reg.Gather()
			if err != nil {
				t.Fatal(err)
			}
			handled := 0.0
			for _, f := range families {
				for _, s := range f.GetMetric() {
					labels := map[string]string{}
					for _, l := range s.GetLabel() {
						labels[l.GetName()] = l.GetValue()
					}
					if labels["grpc_service"] != tt.wantService || labels["grpc_method"] != tt.wantMethod {
						t.Fatalf("%s counted under %s/%s, want %s/%s", f.GetName(), labels["grpc_service"], labels["grpc_method"], tt.wantService, tt.wantMethod)
					}
					if f.GetName() == "grpc_server_handled_total" {
						handled += s.GetCounter().GetValue()
					}
				}
			}
			if handled != 1 {
				t.Errorf("grpc_server_handled_total counts %v calls, want the 1 made", handled)
			}
		})
	}
}

// TestPeerChosenCodes: a peer (a backend behind the client metrics, or a
// status passed through by a handler) may end calls with any number as
// grpc-status. Each number made a series of its own, "Code(N)", per
// method, without limit; they count as Unknown, as gRPC reads codes it
// does not know. grpcprom labels them "Code(N)": the one place where
// these metrics differ from it on purpose.
func TestPeerChosenCodes(t *testing.T) {
	const calls = 200
	peerCode := func(i int) error { return status.Error(codes.Code(17+i), "peer's own code") }
	tests := []struct {
		name    string
		handled string
		newCall func(*prometheus.Registry) func(i int) error
	}{
		{
			name:    "server",
			handled: "grpc_server_handled_total",
			newCall: func(reg *prometheus.Registry) func(int) error {
				m := metrics.NewServerMetrics(nil)
				reg.MustRegister(m)
				intercept := m.UnaryServerInterceptor()
				return func(i int) error {
					_, err := intercept(t.Context(), nil, &grpc.UnaryServerInfo{FullMethod: "/x.Y/M"},
						func(context.Context, any) (any, error) { return nil, peerCode(i) })
					return err
				}
			},
		},
		{
			name:    "client",
			handled: "grpc_client_handled_total",
			newCall: func(reg *prometheus.Registry) func(int) error {
				m := metrics.NewClientMetrics(nil)
				reg.MustRegister(m)
				intercept := m.UnaryClientInterceptor()
				return func(i int) error {
					return intercept(t.Context(), "/x.Y/M", nil, nil, nil,
						func(context.Context, string, any, any, *grpc.ClientConn, ...grpc.CallOption) error {
							return peerCode(i)
						})
				}
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			reg := prometheus.NewRegistry()
			call := tt.newCall(reg)
			for i := range calls {
				if err := call(i); status.Code(err) != codes.Code(17+i) {
					t.Fatalf("the call's error became %v", err)
				}
			}
			families, err := reg.Gather()
			if err != nil {
				t.Fatal(err)
			}
			for _, f := range families {
				if f.GetName() != tt.handled {
					continue
				}
				if n := len(f.GetMetric()); n != 1 {
					t.Fatalf("%d handled series, want 1", n)
				}
				s := f.GetMetric()[0]
				for _, l := range s.GetLabel() {
					if l.GetName() == "grpc_code" && l.GetValue() != codes.Unknown.String() {
						t.Errorf("grpc_code = %q, want %q", l.GetValue(), codes.Unknown)
					}
				}
				if got := s.GetCounter().GetValue(); got != calls {
					t.Errorf("handled counts %v calls, want %d", got, calls)
				}
				return
			}
			t.Fatalf("no %s", tt.handled)
		})
	}
}

// TestKnownMethodsOutlastJunk: once a server with an UnknownServiceHandler
// had seen 1,024 method names of its clients' choosing, its own methods
// not yet called counted as "unknown". Told its methods (KnownMethods,
// which kit/server calls in Serve), it counts them by name whatever came
// before; they make no series until called.
func TestKnownMethodsOutlastJunk(t *testing.T) {
	m := metrics.NewServerMetrics(nil)
	reg := prometheus.NewRegistry()
	reg.MustRegister(m)
	m.KnownMethods(map[string]grpc.ServiceInfo{
		"duet.notification.v1.NotificationService": {Methods: []grpc.MethodInfo{{Name: "ListNotifications"}}},
	})
	if families, err := reg.Gather(); err != nil || len(families) != 0 {
		t.Fatalf("known methods made series before any call: %v (%v)", families, err)
	}
	stream := m.StreamServerInterceptor()
	bidi := func(method string) {
		t.Helper()
		info := &grpc.StreamServerInfo{FullMethod: method, IsClientStream: true, IsServerStream: true}
		if err := stream(nil, fakeStream{ctx: t.Context()}, info, func(any, grpc.ServerStream) error { return nil }); err != nil {
			t.Fatal(err)
		}
	}
	for i := range 2000 { // what an UnknownServiceHandler lets through
		bidi(fmt.Sprintf("/junk.Service/M%d", i))
	}
	// A server that starts later in the process, sharing the metrics.
	m.KnownMethods(map[string]grpc.ServiceInfo{
		"duet.notification.v1.NotificationService": {Methods: []grpc.MethodInfo{{Name: "Subscribe", IsClientStream: true, IsServerStream: true}}},
	})
	bidi("/duet.notification.v1.NotificationService/Subscribe")
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var found bool
	for _, f := range families {
		if f.GetName() != "grpc_server_started_total" {
			continue
		}
		for _, s := range f.GetMetric() {
			for _, l := range s.GetLabel() {
				if l.GetName() == "grpc_method" && l.GetValue() == "Subscribe" {
					found = s.GetCounter().GetValue() == 1
				}
			}
		}
	}
	if !found {
		t.Error("Subscribe, called once after 2,000 junk names, is not counted under its own name")
	}
}

// fakeStream is a grpc.ServerStream with a context and nothing else.
type fakeStream struct {
	grpc.ServerStream
	ctx context.Context
}

func (f fakeStream) Context() context.Context { return f.ctx }
