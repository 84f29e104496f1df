package metrics_test

import (
	"context"
	"fmt"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"

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
