package events

import (
	"testing"
	"time"
)

// TestRestoreStreamLeavesAStreamThatIsThere: a publish no stream answers
// also happens while a cluster elects the stream's leader, with the
// stream there; restoring it then must not update it to OpenBus's
// configuration (an operator's replicas or limits would be undone). Only a
// stream the server does not have is created again.
func TestRestoreStreamLeavesAStreamThatIsThere(t *testing.T) {
	s, err := StartServer(ServerConfig{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Shutdown()
	nc, err := s.Connect("restore-test")
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	ctx := t.Context()
	bus, err := OpenBus(ctx, nc, BusConfig{})
	if err != nil {
		t.Fatal(err)
	}
	maxAge := func() time.Duration {
		t.Helper()
		st, err := bus.JS.Stream(ctx, bus.Stream)
		if err != nil {
			t.Fatal(err)
		}
		return st.CachedInfo().Config.MaxAge
	}
	// The operator's change.
	changed := *bus.streamConfig
	changed.MaxAge = DefaultMaxAge + time.Hour
	if _, err := bus.JS.UpdateStream(ctx, changed); err != nil {
		t.Fatal(err)
	}
	if created, err := bus.restoreStream(ctx); created || err != nil {
		t.Fatalf("restore of a stream that is there = %v, %v; want nothing done", created, err)
	}
	if got := maxAge(); got != changed.MaxAge {
		t.Errorf("the stream's MaxAge after a restore = %v, want the operator's %v", got, changed.MaxAge)
	}
	if err := bus.JS.DeleteStream(ctx, bus.Stream); err != nil {
		t.Fatal(err)
	}
	// Right after a delete the server may still be removing the old
	// stream's files and refuse the create ("error creating store for
	// stream", seen once under load); the relay and consumers call
	// restoreStream again on their next failure, so the test does too.
	for deadline := time.Now().Add(10 * time.Second); ; {
		created, err := bus.restoreStream(ctx)
		if created && err == nil {
			break
		}
		if err == nil || time.Now().After(deadline) {
			t.Fatalf("restore of a stream that is gone = %v, %v; want it created", created, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if got := maxAge(); got != DefaultMaxAge {
		t.Errorf("the stream created again has MaxAge %v, want OpenBus's %v", got, DefaultMaxAge)
	}
}
