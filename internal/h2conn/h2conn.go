// Package h2conn opens raw HTTP/2 connections for tests that check what a
// server advertises, or that send frames no client library would.
package h2conn

import (
	"net"
	"testing"
	"time"

	"golang.org/x/net/http2"
)

// Dial connects to addr over HTTP/2 without TLS (prior knowledge), sends
// the client preface and settings, and checks that the server's first
// SETTINGS frame holds want. The connection, closed at the test's end,
// has a 20 s deadline; the framer goes on over it.
func Dial(t testing.TB, addr string, want map[http2.SettingID]uint32, settings ...http2.Setting) (*net.TCPConn, *http2.Framer) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	_ = c.SetDeadline(time.Now().Add(20 * time.Second))
	if _, err := c.Write([]byte(http2.ClientPreface)); err != nil {
		t.Fatal(err)
	}
	fr := http2.NewFramer(c, c)
	if err := fr.WriteSettings(settings...); err != nil {
		t.Fatal(err)
	}
	for {
		f, err := fr.ReadFrame()
		if err != nil {
			t.Fatalf("no SETTINGS from the server: %v", err)
		}
		sf, ok := f.(*http2.SettingsFrame)
		if !ok || sf.IsAck() {
			continue
		}
		for id, v := range want {
			if got, ok := sf.Value(id); !ok || got != v {
				t.Errorf("%v = %d (sent: %v), want %d", id, got, ok, v)
			}
		}
		return c.(*net.TCPConn), fr
	}
}
