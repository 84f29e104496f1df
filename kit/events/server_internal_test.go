package events

import (
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
