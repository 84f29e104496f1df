package gateway

import (
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"google.golang.org/grpc"

	userv1 "github.com/duetkit/duet/gen/duet/user/v1"
	"github.com/duetkit/duet/kit/server"
	"github.com/duetkit/duet/kit/server/servertest"
)

// TestLargeHeadersToKitBackends: headers the gateway takes reach a
// kit/server backend, whose metadata bound is 64 KiB; larger ones get 431
// at the gateway. With the gateway taking 64 KiB of headers (and 4 KiB
// more, as net/http does), a 66 KB one passed the gateway and was refused
// by the backend's client transport: a 500 for the client's mistake.
func TestLargeHeadersToKitBackends(t *testing.T) {
	quiet := slog.New(slog.DiscardHandler)
	users := servertest.NewServer(t, server.Config{Logger: quiet}, func(r grpc.ServiceRegistrar) {
		userv1.RegisterUserServiceServer(r, heldUsers{})
	})
	none := startBackend(t, "", func(grpc.ServiceRegistrar) {})
	gw, err := New(t.Context(), Config{Users: users.Conn, Orders: none.conn, Payments: none.conn, Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewUnstartedServer(nil)
	ts.Config = gw.Server("")
	ts.Start()
	defer ts.Close()
	tests := []struct {
		name, header string
		size, count  int // count headers of size bytes (one when 0)
		want         int
		forwardedFor int // bytes of an X-Forwarded-For, also forwarded
	}{
		{"30 KB bearer token", "Authorization", 30_000, 0, http.StatusOK, 0},
		{"30 KB of metadata", "Grpc-Metadata-Blob", 30_000, 0, http.StatusOK, 0},
		{"66 KB of metadata", "Grpc-Metadata-Blob", 66_000, 0, http.StatusRequestHeaderFieldsTooLarge, 0},
		// Small headers count 32 bytes more each as metadata: these pass
		// MaxHeaderBytes and would exceed what the backend takes.
		{"1,500 small Authorization headers", "Authorization", 1, 1500, http.StatusRequestHeaderFieldsTooLarge, 0},
		{"1,500 small metadata headers", "Grpc-Metadata-Blob", 1, 1500, http.StatusRequestHeaderFieldsTooLarge, 0},
		{"500 small metadata headers", "Grpc-Metadata-Blob", 1, 500, http.StatusOK, 0},
		// Each under its share, together over: grpc-gateway forwards
		// X-Forwarded-For as well.
		{"1,068 small Authorization headers and a long X-Forwarded-For", "Authorization", 1, 1068, http.StatusRequestHeaderFieldsTooLarge, 17_000},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req, _ := http.NewRequestWithContext(t.Context(), "GET", ts.URL+"/v1/users/"+knownUserID, nil)
			req.Header.Set(tt.header, "Bearer "+strings.Repeat("x", tt.size))
			for range tt.count - 1 {
				req.Header.Add(tt.header, strings.Repeat("x", tt.size))
			}
			if tt.forwardedFor > 0 {
				req.Header.Set("X-Forwarded-For", strings.Repeat("1", tt.forwardedFor))
			}
			resp, err := ts.Client().Do(req)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != tt.want {
				t.Errorf("HTTP %d, want %d: %s", resp.StatusCode, tt.want, body)
			}
			// (net/http answers headers over MaxHeaderBytes itself, in plain text.)
			if tt.count > 0 && resp.StatusCode != http.StatusOK && resp.Header.Get("Content-Type") != "application/json" {
				t.Errorf("HTTP %d with Content-Type %q, want a JSON error: %s", resp.StatusCode, resp.Header.Get("Content-Type"), body)
			}
		})
	}
}
