package gateway

import (
	"fmt"
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
	serve := func(trust bool) *httptest.Server {
		gw, err := New(t.Context(), Config{Users: users.Conn, Orders: none.conn, Payments: none.conn, Logger: quiet, TrustTraceContext: trust})
		if err != nil {
			t.Fatal(err)
		}
		ts := httptest.NewUnstartedServer(nil)
		ts.Config = gw.Server("")
		ts.Start()
		t.Cleanup(ts.Close)
		return ts
	}
	plain, trusting := serve(false), serve(true)
	tests := []struct {
		name, header string
		size, count  int // count headers of size bytes (one when 0)
		want         int
		forwardedFor []int // bytes of each X-Forwarded-For, also forwarded
		// forwardedHost, when set, is the X-Forwarded-Host; host bytes
		// of the request's host, which grpc-gateway forwards in its
		// place when forwardedHost is not printable ASCII.
		forwardedHost string
		host          int
		// connect: the call is Connect's POST of GetUser, whose
		// Authorization alone goes on to the service.
		connect bool
		// tracestate, when set, is sent to a gateway that trusts the
		// caller's trace context, and so passes it on.
		tracestate string
	}{
		{name: "30 KB bearer token", header: "Authorization", size: 30_000, want: http.StatusOK},
		{name: "30 KB of metadata", header: "Grpc-Metadata-Blob", size: 30_000, want: http.StatusOK},
		{name: "66 KB of metadata", header: "Grpc-Metadata-Blob", size: 66_000, want: http.StatusRequestHeaderFieldsTooLarge},
		// Small headers count 32 bytes more each as metadata: these pass
		// MaxHeaderBytes and would exceed what the backend takes.
		{name: "1,500 small Authorization headers", header: "Authorization", size: 1, count: 1500, want: http.StatusRequestHeaderFieldsTooLarge},
		{name: "1,500 small metadata headers", header: "Grpc-Metadata-Blob", size: 1, count: 1500, want: http.StatusRequestHeaderFieldsTooLarge},
		{name: "500 small metadata headers", header: "Grpc-Metadata-Blob", size: 1, count: 500, want: http.StatusOK},
		// Each under its share, together over: grpc-gateway forwards
		// X-Forwarded-For and -Host as well. Counting only the first
		// X-Forwarded-For, or the X-Forwarded-Host grpc-gateway drops
		// for the request's host, let these through to a 500.
		{name: "1,068 small Authorization headers and a long X-Forwarded-For", header: "Authorization", size: 1, count: 1068,
			want: http.StatusRequestHeaderFieldsTooLarge, forwardedFor: []int{17_000}},
		{name: "1,060 small Authorization headers and a long second X-Forwarded-For", header: "Authorization", size: 1, count: 1060,
			want: http.StatusRequestHeaderFieldsTooLarge, forwardedFor: []int{1, 17_000}},
		{name: "1,060 small Authorization headers, a non-ASCII X-Forwarded-Host and a long host", header: "Authorization", size: 1, count: 1060,
			want: http.StatusRequestHeaderFieldsTooLarge, forwardedHost: "h\u00e9", host: 17_000},
		{name: "1,060 small Authorization headers and a short host", header: "Authorization", size: 1, count: 1060,
			want: http.StatusOK, host: 100},
		// Connect forwards Authorization only: other headers, and the
		// X-Forwarded-For that REST passes on, are not refused for a
		// size they never take on the way.
		{name: "Connect: 1,500 small metadata headers", header: "Grpc-Metadata-Blob", size: 1, count: 1500, want: http.StatusOK, connect: true},
		{name: "Connect: 1,068 small Authorization headers and a long X-Forwarded-For", header: "Authorization", size: 1, count: 1068,
			want: http.StatusOK, forwardedFor: []int{17_000}, connect: true},
		{name: "Connect: 1,500 small Authorization headers", header: "Authorization", size: 1, count: 1500, want: http.StatusBadRequest, connect: true},
		// A trusted tracestate goes on beside them: OpenTelemetry takes
		// one of 32 entries of 513 bytes. These were a 500.
		{name: "1,060 small Authorization headers and a long trusted tracestate", header: "Authorization", size: 1, count: 1060,
			want: http.StatusRequestHeaderFieldsTooLarge, tracestate: longTracestate()},
		{name: "Connect: 1,060 small Authorization headers and a long trusted tracestate", header: "Authorization", size: 1, count: 1060,
			want: http.StatusBadRequest, connect: true, tracestate: longTracestate()},
		{name: "500 small Authorization headers and a long trusted tracestate", header: "Authorization", size: 1, count: 500,
			want: http.StatusOK, tracestate: longTracestate()},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ts := plain
			if tt.tracestate != "" {
				ts = trusting
			}
			req, _ := http.NewRequestWithContext(t.Context(), "GET", ts.URL+"/v1/users/"+knownUserID, nil)
			if tt.connect {
				req, _ = http.NewRequestWithContext(t.Context(), "POST", ts.URL+userv1.UserService_GetUser_FullMethodName,
					strings.NewReader(`{"id":"`+knownUserID+`"}`))
				req.Header.Set("Content-Type", "application/json")
			}
			req.Header.Set(tt.header, "Bearer "+strings.Repeat("x", tt.size))
			for range tt.count - 1 {
				req.Header.Add(tt.header, strings.Repeat("x", tt.size))
			}
			for _, n := range tt.forwardedFor {
				req.Header.Add("X-Forwarded-For", strings.Repeat("1", n))
			}
			if tt.forwardedHost != "" {
				req.Header.Set("X-Forwarded-Host", tt.forwardedHost)
			}
			if tt.tracestate != "" {
				req.Header.Set("Traceparent", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")
				req.Header.Set("Tracestate", tt.tracestate)
			}
			if tt.host > 0 {
				req.Host = strings.Repeat("a", tt.host)
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

// longTracestate is a W3C tracestate as long as OpenTelemetry takes: 32
// entries, each a 256-byte key and a 256-byte value.
func longTracestate() string {
	entries := make([]string, 32)
	for i := range entries {
		entries[i] = fmt.Sprintf("k%03d%s=%s", i, strings.Repeat("k", 252), strings.Repeat("v", 256))
	}
	return strings.Join(entries, ",")
}
