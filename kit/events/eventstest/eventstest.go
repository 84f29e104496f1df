// Package eventstest gives tests a fresh events.Bus on every NATS available:
// an embedded server always, and the external server named by
// DUET_TEST_NATS_URL when it is set. Each Bus has its own stream and subject
// prefix, so tests can run in parallel on one server without seeing each
// other's events.
package eventstest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/duetkit/duet/kit/events"
	"github.com/duetkit/duet/kit/sqldb/sqldbtest"
)

// NATSEnv is the environment variable holding the URL of an external NATS
// server with JetStream that tests may create and delete streams on.
const NATSEnv = "DUET_TEST_NATS_URL"

// Buses returns one Bus per available NATS, keyed "embedded" and, when
// NATSEnv is set, "external". The embedded server stores under a temporary
// directory and is shut down, and the external stream deleted, when the test
// ends.
func Buses(t testing.TB) map[string]*events.Bus {
	t.Helper()
	buses := map[string]*events.Bus{"embedded": Embedded(t)}
	if url := os.Getenv(NATSEnv); url != "" {
		buses["external"] = External(t, url)
	}
	return buses
}

// Run calls fn once per Bus from Buses, each in a subtest named for it.
func Run(t *testing.T, fn func(t *testing.T, bus *events.Bus)) {
	t.Helper()
	for name, bus := range Buses(t) {
		t.Run(name, func(t *testing.T) { fn(t, bus) })
	}
}

// Matrix runs fn once per database dialect (see sqldbtest) and NATS
// available, in subtests named like "sqlite/embedded", each with a fresh
// database and a fresh Bus of its own: component tests of services that
// publish or consume events need both, and sharing either between subtests
// would let one see the other's events.
func Matrix(t *testing.T, fn func(t *testing.T, dbURL string, bus *events.Bus)) {
	t.Helper()
	dialects := []string{"sqlite"}
	if os.Getenv(sqldbtest.PostgresEnv) != "" {
		dialects = append(dialects, "postgres")
	}
	buses := []string{"embedded"}
	natsURL := os.Getenv(NATSEnv)
	if natsURL != "" {
		buses = append(buses, "external")
	}
	for _, dialect := range dialects {
		for _, kind := range buses {
			t.Run(dialect+"/"+kind, func(t *testing.T) {
				bus := Embedded
				if kind == "external" {
					bus = func(t testing.TB) *events.Bus { return External(t, natsURL) }
				}
				fn(t, sqldbtest.URLs(t)[dialect], bus(t))
			})
		}
	}
}

// Embedded starts an embedded NATS server without a listener in a temporary
// directory and returns a Bus on it with the default stream and prefix.
func Embedded(t testing.TB) *events.Bus {
	t.Helper()
	srv, err := events.StartServer(events.ServerConfig{Dir: t.TempDir()})
	if err != nil {
		t.Fatalf("eventstest: %v", err)
	}
	t.Cleanup(srv.Shutdown)
	nc, err := srv.Connect(t.Name())
	if err != nil {
		t.Fatalf("eventstest: %v", err)
	}
	t.Cleanup(nc.Close) // runs before Shutdown: cleanups run last-in first-out
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	bus, err := events.OpenBus(ctx, nc, events.BusConfig{})
	if err != nil {
		t.Fatalf("eventstest: %v", err)
	}
	return bus
}

// External returns a Bus on the NATS server at url with a unique stream and
// prefix, deleting the stream when the test ends.
func External(t testing.TB, url string) *events.Bus {
	t.Helper()
	nc, err := events.Connect(url, t.Name())
	if err != nil {
		t.Fatalf("eventstest: %s: %v", NATSEnv, err)
	}
	t.Cleanup(nc.Close)
	suffix := Unique(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	bus, err := events.OpenBus(ctx, nc, events.BusConfig{
		Stream: "TEST_" + strings.ToUpper(suffix),
		Prefix: "test" + suffix,
		MaxAge: time.Hour, // in case cleanup never runs
	})
	if err != nil {
		t.Fatalf("eventstest: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := bus.JS.DeleteStream(ctx, bus.Stream); err != nil {
			t.Errorf("eventstest: delete stream %s: %v", bus.Stream, err)
		}
	})
	return bus
}

// Unique returns a short random hex string for names that must not clash
// between tests sharing a server, such as durable consumer names.
func Unique(t testing.TB) string {
	t.Helper()
	var b [6]byte
	if _, err := rand.Read(b[:]); err != nil {
		t.Fatalf("eventstest: random name: %v", err)
	}
	return hex.EncodeToString(b[:])
}
