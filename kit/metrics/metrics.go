// Package metrics holds a process's Prometheus registry with gRPC RED
// metrics (requests, errors by code, duration histograms) for both the
// server and the client side, and serves them over HTTP.
package metrics

import (
	"errors"
	"net/http"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Metrics is one registry and the gRPC collectors registered on it. Every
// server and client of a process should share one, since Prometheus rejects
// a second registration of the same metric names.
type Metrics struct {
	// Registry holds every collector; register your own on it too.
	Registry *prometheus.Registry
	// Server counts and times calls handled by gRPC servers.
	Server *ServerMetrics
	// Client counts and times calls made by gRPC clients.
	Client *ClientMetrics
}

// New returns a registry with Go runtime, process and gRPC collectors.
func New() *Metrics {
	buckets := handlingBuckets()
	m := &Metrics{
		Registry: prometheus.NewRegistry(),
		Server:   NewServerMetrics(buckets),
		Client:   NewClientMetrics(buckets),
	}
	m.Registry.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		m.Server,
		m.Client,
	)
	return m
}

// handlingBuckets returns the upper bounds of the gRPC handling-time
// histograms: 0.5 ms to about 12 s, in steps of 2.5x.
func handlingBuckets() []float64 { return prometheus.ExponentialBuckets(0.0005, 2.5, 12) }

var defaultMetrics = sync.OnceValue(New)

// Default returns the process-wide Metrics, made on first use.
func Default() *Metrics { return defaultMetrics() }

// Register registers c on reg and returns it, or returns the collector of
// the same description registered already (by another component of the
// process: several relays, a service opened twice), so that components
// may each register what they need. On any other failure it returns c,
// unregistered but usable, with the error.
func Register[C prometheus.Collector](reg prometheus.Registerer, c C) (C, error) {
	err := reg.Register(c)
	if err == nil {
		return c, nil
	}
	var already prometheus.AlreadyRegisteredError
	if errors.As(err, &already) {
		if existing, ok := already.ExistingCollector.(C); ok {
			return existing, nil
		}
	}
	return c, err
}

// Handler serves the registry in the Prometheus text format, for /metrics.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.Registry, promhttp.HandlerOpts{Registry: m.Registry})
}
