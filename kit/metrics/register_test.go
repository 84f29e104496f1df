package metrics_test

import (
	"fmt"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/duetkit/duet/kit/metrics"
)

// TestRegister: the first registration keeps its collector, a second of
// the same description gets the first back, and one that clashes (the
// name taken by another kind) gets its own, unregistered, with the error.
func TestRegister(t *testing.T) {
	reg := prometheus.NewRegistry()
	newGauge := func() *prometheus.GaugeVec {
		return prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "duet_test_gauge", Help: "A test gauge."}, []string{"kind"})
	}
	first, err := metrics.Register(reg, newGauge())
	if err != nil {
		t.Fatal(err)
	}
	second, err := metrics.Register(reg, newGauge())
	if err != nil || second != first {
		t.Fatalf("second Register = %p, %v; want the first, %p", second, err, first)
	}
	clash := prometheus.NewCounter(prometheus.CounterOpts{Name: "duet_test_gauge", Help: "Not a gauge."})
	if got, err := metrics.Register(reg, clash); err == nil || got != clash {
		t.Fatalf("Register of a clashing collector = %v, %v; want it back with an error", got, err)
	}
}

func ExampleRegister() {
	reg := prometheus.NewRegistry()
	gauge := func() prometheus.Gauge {
		return prometheus.NewGauge(prometheus.GaugeOpts{Name: "duet_example_pending", Help: "Pending work."})
	}
	// Two components of one process each register what they need; the
	// second gets the first's gauge, so both set one series.
	a, _ := metrics.Register(reg, gauge())
	b, _ := metrics.Register(reg, gauge())
	a.Set(3)
	fmt.Println(a == b)
	// Output: true
}
