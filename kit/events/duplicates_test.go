package events_test

import (
	"testing"
	"time"

	"github.com/duetkit/duet/kit/events"
	"github.com/duetkit/duet/kit/events/eventstest"
)

// TestOpenBusDuplicates: the stream's deduplication window is
// BusConfig.Duplicates, DuplicateWindow by default, and opening the bus
// again with another window updates the existing stream, so a stream made
// with a longer window shrinks to the default on the next start.
func TestOpenBusDuplicates(t *testing.T) {
	bus := eventstest.Embedded(t)
	window := func() time.Duration {
		t.Helper()
		s, err := bus.JS.Stream(t.Context(), bus.Stream)
		if err != nil {
			t.Fatal(err)
		}
		return s.CachedInfo().Config.Duplicates
	}
	if got := window(); got != events.DuplicateWindow {
		t.Fatalf("new stream: window %v, want %v", got, events.DuplicateWindow)
	}
	for _, tt := range []struct {
		set, want time.Duration
	}{
		{10 * time.Minute, 10 * time.Minute},
		{0, events.DuplicateWindow},
		{30 * time.Second, 30 * time.Second},
	} {
		if _, err := events.OpenBus(t.Context(), bus.Conn, events.BusConfig{Duplicates: tt.set}); err != nil {
			t.Fatalf("OpenBus(Duplicates %v): %v", tt.set, err)
		}
		if got := window(); got != tt.want {
			t.Errorf("after OpenBus(Duplicates %v): window %v, want %v", tt.set, got, tt.want)
		}
	}
}
