package events

import (
	"strings"
	"testing"
	"time"
)

// TestInProcessConnectionReconnects: an in-process connection the embedded
// server closes while it keeps running (a slow consumer, missed pings, an
// operator's kick) comes back, instead of leaving the process off the bus.
func TestInProcessConnectionReconnects(t *testing.T) {
	s, err := StartServer(ServerConfig{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Shutdown()
	nc, err := s.Connect("reconnect-test")
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	id, err := nc.GetClientID()
	if err != nil {
		t.Fatal(err)
	}
	if err := s.ns.DisconnectClientByID(id); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for nc.Stats().Reconnects == 0 || !nc.IsConnected() {
		if time.Now().After(deadline) {
			t.Fatalf("not reconnected: status %v, %d reconnects", nc.Status(), nc.Stats().Reconnects)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err := nc.Flush(); err != nil {
		t.Errorf("Flush after reconnecting: %v", err)
	}
}

// TestStoreDirectoryLocked: a second server on a store directory in use is
// refused, before it touches the store; once the first has shut down, the
// directory is free again.
func TestStoreDirectoryLocked(t *testing.T) {
	dir := t.TempDir()
	first, err := StartServer(ServerConfig{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	if second, err := StartServer(ServerConfig{Dir: dir}); err == nil {
		second.Shutdown()
		first.Shutdown()
		t.Fatal("a second server started on a store directory in use")
	} else if !strings.Contains(err.Error(), "in use by another process") {
		t.Errorf("second server: %v, want the directory named in use", err)
	}
	first.Shutdown()
	again, err := StartServer(ServerConfig{Dir: dir})
	if err != nil {
		t.Fatalf("after the first shut down: %v", err)
	}
	again.Shutdown()
}
