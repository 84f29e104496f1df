package gateway

import (
	"net/http"
	"strings"
	"testing"

	"github.com/google/uuid"
)

func TestRequestID(t *testing.T) {
	e := newEnv(t)
	path := "/v1/users/" + "3f9a4c1e-8b2d-4e6f-9a0b-1c2d3e4f5a6b"
	tests := []struct {
		name   string
		header []string
		want   string // "" means a fresh UUID
	}{
		{name: "generated when absent"},
		{name: "caller's id kept", header: []string{"X-Request-ID", "req-42.a:b_c"}, want: "req-42.a:b_c"},
		{name: "lower-case header", header: []string{"x-request-id", "abc"}, want: "abc"},
		{name: "invalid characters replaced", header: []string{"X-Request-ID", "bad id<script>"}},
		{name: "too long replaced", header: []string{"X-Request-ID", strings.Repeat("a", 129)}},
		{name: "longest accepted", header: []string{"X-Request-ID", strings.Repeat("a", 128)}, want: strings.Repeat("a", 128)},
		{name: "metadata spoofing ignored", header: []string{"Grpc-Metadata-X-Request-Id", "spoofed"}},
		{name: "both: the header wins, the spoof is dropped",
			header: []string{"X-Request-ID", "real", "Grpc-Metadata-X-Request-Id", "spoofed"}, want: "real"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp := e.do(t, "GET", path, nil, tt.header...)
			if resp.status != http.StatusOK {
				t.Fatalf("status %d: %s", resp.status, resp.body)
			}
			got := resp.header.Get("X-Request-ID")
			if tt.want != "" && got != tt.want {
				t.Errorf("X-Request-ID %q, want %q", got, tt.want)
			}
			if tt.want == "" {
				if _, err := uuid.Parse(got); err != nil {
					t.Errorf("X-Request-ID %q is not a generated UUID", got)
				}
			}
			md := e.userCalls.lastMD(t)
			if ids := md.Get("x-request-id"); len(ids) != 1 || ids[0] != got {
				t.Errorf("backend saw x-request-id %v, want [%s]", ids, got)
			}
		})
	}
}

func TestRequestIDOnEveryResponse(t *testing.T) {
	e := newEnv(t)
	for _, path := range []string{"/healthz", "/readyz", "/openapi.json", "/docs", "/nowhere", "/v1/users/" + unknownID} {
		resp := e.do(t, "GET", path, nil, "X-Request-ID", "trace-me")
		if got := resp.header.Get("X-Request-ID"); got != "trace-me" {
			t.Errorf("%s: X-Request-ID %q", path, got)
		}
	}
	resp := e.do(t, "POST", "/v1/users", strings.Repeat("x", testMaxBody+1), "X-Request-ID", "trace-me")
	if resp.status != http.StatusRequestEntityTooLarge || resp.header.Get("X-Request-ID") != "trace-me" {
		t.Errorf("413: status %d, X-Request-ID %q", resp.status, resp.header.Get("X-Request-ID"))
	}
}

// TestAccessLog checks one log line per request, with the fields an
// operator needs and the request id.
func TestAccessLog(t *testing.T) {
	e := newEnv(t)
	e.do(t, "GET", "/v1/users/"+unknownID, nil, "X-Request-ID", "log-1")
	e.do(t, "POST", "/v1/users", `{"email":"internal@example.com","name":"A"}`, "X-Request-ID", "log-2")

	byID := map[string][]map[string]any{}
	for _, rec := range e.logs.Lines(t) {
		id, _ := rec["request_id"].(string)
		if id == "" {
			t.Errorf("log line without request_id: %v", rec)
		}
		byID[id] = append(byID[id], rec)
	}
	access := func(id string) map[string]any {
		t.Helper()
		for _, rec := range byID[id] {
			if rec["msg"] == "http request" {
				return rec
			}
		}
		t.Fatalf("no access log line for %s in %v", id, byID[id])
		return nil
	}
	a := access("log-1")
	if a["method"] != "GET" || a["path"] != "/v1/users/"+unknownID || a["status"] != float64(404) || a["duration"] == nil {
		t.Errorf("access line %v", a)
	}
	b := access("log-2")
	if b["status"] != float64(500) || b["level"] != "ERROR" {
		t.Errorf("access line %v", b)
	}
	// The cause of a 500 is logged (not sent), under the same request id.
	var cause bool
	for _, rec := range byID["log-2"] {
		if msg, _ := rec["error"].(string); strings.Contains(msg, "insert failed") {
			cause = true
		}
	}
	if !cause {
		t.Errorf("the 500's cause was not logged: %v", byID["log-2"])
	}
}

func TestIncomingHeader(t *testing.T) {
	tests := []struct {
		header string
		want   string // "" means not forwarded
	}{
		{"Grpc-Metadata-Tenant", "Tenant"},
		{"grpc-metadata-tenant", "tenant"},
		{"Grpc-Metadata-X-Request-Id", ""},
		{"Grpc-Metadata-", ""},
		{"User-Agent", ""},
		{"Cookie", ""},
		{"Authorization", ""},
		{"X-Forwarded-For", ""},
	}
	for _, tt := range tests {
		got, ok := incomingHeader(tt.header)
		if ok != (tt.want != "") || got != tt.want {
			t.Errorf("incomingHeader(%q) = %q, %v; want %q, %v", tt.header, got, ok, tt.want, tt.want != "")
		}
	}
}

// TestHeadersReachingBackends sends a request with ordinary headers and one
// addressed to the backends, and checks what metadata the service gets.
// Authorization goes through as "authorization": grpc-gateway passes it
// whatever the header matcher says, and it is the one a service would
// authenticate with.
func TestHeadersReachingBackends(t *testing.T) {
	e := newEnv(t)
	resp := e.do(t, "GET", "/v1/users/"+knownUserID, nil,
		"Authorization", "Bearer t0ken",
		"Cookie", "session=secret",
		"User-Agent", "curl/8.0",
		"Grpc-Metadata-Tenant", "acme",
		// The backend reset the stream over these: a 500.
		"Grpc-Metadata-Connection", "x",
		"Grpc-Metadata-Host", "a", "Grpc-Metadata-Host", "b",
		// The gateway sends its own.
		"Grpc-Metadata-Traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
		"Grpc-Metadata-Baggage", "tenant=evil",
		// Tokens come in Authorization only.
		"Grpc-Metadata-Authorization", "Bearer smuggled",
		"Grpc-Metadata-Grpc-Timeout", "1n")
	if resp.status != 200 {
		t.Fatalf("status %d: %s", resp.status, resp.body)
	}
	md := e.userCalls.lastMD(t)
	for key, want := range map[string]string{"tenant": "acme", "authorization": "Bearer t0ken"} {
		if got := md.Get(key); len(got) != 1 || got[0] != want {
			t.Errorf("metadata %s = %q, want [%q]", key, got, want)
		}
	}
	for key := range md {
		if strings.HasPrefix(key, "grpcgateway-") || key == "cookie" || key == "grpc-metadata-tenant" || key == "connection" || key == "host" {
			t.Errorf("metadata %s = %q reached the backend", key, md.Get(key))
		}
	}
	if tp := md.Get("traceparent"); len(tp) > 0 && strings.Contains(tp[0], "4bf92f3577b34da6a3ce929d0e0e4736") {
		t.Errorf("traceparent %q: the caller's Grpc-Metadata-Traceparent reached the backend", tp)
	}
	if b := md.Get("baggage"); len(b) > 0 {
		t.Errorf("baggage %q: the caller's Grpc-Metadata-Baggage reached the backend", b)
	}
	if ua := md.Get("user-agent"); len(ua) > 0 && strings.Contains(ua[0], "curl") {
		t.Errorf("user-agent %q: the caller's User-Agent reached the backend", ua)
	}
}
