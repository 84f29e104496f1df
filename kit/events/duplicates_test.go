package events_test

import (
	"strings"
	"testing"
	"time"

	"github.com/duetkit/duet/kit/events"
	"github.com/duetkit/duet/kit/events/eventstest"
)

// TestOpenBusDuplicates: the stream's deduplication window is
// BusConfig.Duplicates, DuplicateWindow by default (MaxAge if shorter),
// and opening the bus again with another window updates the existing
// stream, so a stream made with a longer window shrinks to the default on
// the next start.
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
		set, maxAge, want time.Duration
	}{
		{10 * time.Minute, 0, 10 * time.Minute},
		{0, 0, events.DuplicateWindow},
		{30 * time.Second, 0, 30 * time.Second},
		// The default never exceeds how long the stream keeps events,
		// which JetStream would refuse.
		{0, 20 * time.Second, 20 * time.Second},
	} {
		cfg := events.BusConfig{Duplicates: tt.set, MaxAge: tt.maxAge}
		if _, err := events.OpenBus(t.Context(), bus.Conn, cfg); err != nil {
			t.Fatalf("OpenBus(%+v): %v", cfg, err)
		}
		if got := window(); got != tt.want {
			t.Errorf("after OpenBus(%+v): window %v, want %v", cfg, got, tt.want)
		}
	}
	// A window set longer than MaxAge is refused before the server is
	// asked, naming the field, and leaves the stream as it was.
	cfg := events.BusConfig{Duplicates: time.Minute, MaxAge: 30 * time.Second}
	_, err := events.OpenBus(t.Context(), bus.Conn, cfg)
	if err == nil || !strings.Contains(err.Error(), "Duplicates") {
		t.Errorf("OpenBus(%+v) = %v, want an error naming Duplicates", cfg, err)
	}
	if got := window(); got != 20*time.Second {
		t.Errorf("after the refused OpenBus: window %v, want 20s", got)
	}
}
