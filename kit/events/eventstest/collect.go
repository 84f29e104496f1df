package eventstest

import (
	"context"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/duetkit/duet/kit/events"
)

// WaitTimeout bounds how long Collector.Wait waits for events.
const WaitTimeout = 15 * time.Second

// Collector keeps the events a test consumer receives, in order of arrival,
// so a test can check what a service published.
type Collector struct {
	mu   sync.Mutex
	msgs []events.Message
}

// Collect consumes the events on bus whose subjects match subjects
// (relative, wildcards allowed, as in events.ConsumerConfig) until the test
// ends, under a durable consumer of its own. Start it before the events are
// published or after: a new durable consumer starts at the stream's
// beginning. A consumer error fails the test when it ends.
func Collect(t testing.TB, bus *events.Bus, subjects ...string) *Collector {
	t.Helper()
	c := &Collector{}
	cfg := events.ConsumerConfig{Durable: "eventstest-" + Unique(t), Subjects: subjects}
	// Not t.Context: the consumer must stop when this cleanup says so,
	// and report how it stopped.
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- events.Consume(ctx, bus, cfg, func(_ context.Context, m events.Message) error {
			c.mu.Lock()
			c.msgs = append(c.msgs, m)
			c.mu.Unlock()
			return nil
		})
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("eventstest: Consume: %v", err)
		}
	})
	return c
}

// Wait returns the events received so far once there are at least n,
// failing the test if they have not come within WaitTimeout. A test that
// wants exactly n publishes a last, expected event and waits for it: events
// arrive in order, so nothing unwanted can still be on its way before it.
func (c *Collector) Wait(t testing.TB, n int) []events.Message {
	t.Helper()
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	deadline := time.After(WaitTimeout)
	for {
		c.mu.Lock()
		got := slices.Clone(c.msgs)
		c.mu.Unlock()
		if len(got) >= n {
			return got
		}
		select {
		case <-deadline:
			t.Fatalf("eventstest: got %d events, want %d", len(got), n)
		case <-tick.C:
		}
	}
}
