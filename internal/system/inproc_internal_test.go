package system

import (
	"context"
	"net"
	"testing"

	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/test/bufconn"
)

// TestInprocCreds: a name reaches the server over an in-memory
// connection only; over any other, the same bytes are the start of
// HTTP/2 as far as the server knows, and the connection is nameless.
func TestInprocCreds(t *testing.T) {
	lis := bufconn.Listen(1 << 12)
	defer lis.Close()
	for _, tc := range []struct {
		name     string
		wrap     bool // through inprocListener
		want     string
		readBack bool // the server leaves the preamble unread
	}{
		{name: "order", wrap: true, want: "order"},
		{name: "", wrap: true, want: ""},
		{name: "order", wrap: false, want: "", readBack: true},
	} {
		accepted := make(chan net.Conn, 1)
		go func() { // Dial waits for an Accept
			var server net.Conn
			if tc.wrap {
				server, _ = inprocListener{lis}.Accept()
			} else {
				server, _ = lis.Accept()
			}
			accepted <- server
		}()
		client, err := lis.DialContext(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		server := <-accepted
		done := make(chan error, 1)
		go func() {
			_, _, err := inprocCreds{name: tc.name}.ClientHandshake(context.Background(), "x", client)
			done <- err
		}()
		_, info, err := inprocCreds{}.ServerHandshake(server)
		if err != nil {
			t.Fatal(err)
		}
		if err := <-done; err != nil {
			t.Fatal(err)
		}
		ctx := peer.NewContext(t.Context(), &peer.Peer{AuthInfo: info})
		got := inprocPeerNames(ctx)
		if (tc.want == "" && got != nil) || (tc.want != "" && (len(got) != 1 || got[0] != tc.want)) {
			t.Errorf("%q, wrapped %v: names %v, want %q", tc.name, tc.wrap, got, tc.want)
		}
		if tc.readBack {
			b := make([]byte, 6)
			if _, err := server.Read(b); err != nil || string(b[1:]) != "order" {
				t.Errorf("an unwrapped connection's bytes: %q, %v", b, err)
			}
		}
		if info.AuthType() != "inproc" {
			t.Errorf("auth type %q", info.AuthType())
		}
		client.Close()
		server.Close()
	}
	if names := inprocPeerNames(t.Context()); names != nil {
		t.Errorf("no peer: names %v", names)
	}
}
