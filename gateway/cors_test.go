package gateway

import (
	"net/http"
	"strings"
	"testing"
)

// TestCORS: with CORSOrigins a browser page of an allowed origin gets its
// preflight answered and may read the answers (the request id and
// Retry-After with them); any other origin, or a gateway without
// CORSOrigins, gets no CORS headers, so the browser keeps the answer from
// the page.
func TestCORS(t *testing.T) {
	allowed := newEnv(t, func(c *Config) { c.CORSOrigins = []string{"https://shop.example", "https://*.staging.example"} })
	anyOrigin := newEnv(t, func(c *Config) { c.CORSOrigins = []string{"*"} })
	none := newEnv(t)
	preflight := func(origin, method, headers string) []string {
		h := []string{"Origin", origin, "Access-Control-Request-Method", method}
		if headers != "" {
			h = append(h, "Access-Control-Request-Headers", headers)
		}
		return h
	}
	tests := []struct {
		name        string
		env         *env
		method      string
		path        string
		body        any
		header      []string
		wantStatus  int
		wantOrigin  string // Access-Control-Allow-Origin
		wantMethods string // Access-Control-Allow-Methods
		wantExpose  bool   // X-Request-Id and Retry-After readable
	}{
		{name: "preflight of an allowed origin", env: allowed, method: http.MethodOptions, path: "/v1/users",
			header: preflight("https://shop.example", "POST", "content-type,x-request-id"), wantStatus: http.StatusNoContent,
			wantOrigin: "https://shop.example", wantMethods: "POST"},
		{name: "preflight of a wildcard origin", env: allowed, method: http.MethodOptions, path: "/v1/users/u1",
			header: preflight("https://a.staging.example", "PATCH", "content-type"), wantStatus: http.StatusNoContent,
			wantOrigin: "https://a.staging.example", wantMethods: "PATCH"},
		{name: "preflight of another origin", env: allowed, method: http.MethodOptions, path: "/v1/users",
			header: preflight("https://evil.example", "POST", "content-type"), wantStatus: http.StatusNoContent},
		{name: "preflight of a header not allowed", env: allowed, method: http.MethodOptions, path: "/v1/users",
			header: preflight("https://shop.example", "POST", "x-secret"), wantStatus: http.StatusNoContent},
		{name: "preflight of a method no route has", env: allowed, method: http.MethodOptions, path: "/v1/users",
			header: preflight("https://shop.example", "DELETE", ""), wantStatus: http.StatusNoContent},
		{name: "preflight with trace headers", env: allowed, method: http.MethodOptions, path: "/v1/users",
			header: preflight("https://shop.example", "POST", "authorization,content-type,traceparent,tracestate"), wantStatus: http.StatusNoContent,
			wantOrigin: "https://shop.example", wantMethods: "POST"},
		{name: "preflight of any origin", env: anyOrigin, method: http.MethodOptions, path: "/v1/users",
			header: preflight("https://anyone.example", "POST", "content-type"), wantStatus: http.StatusNoContent,
			wantOrigin: "*", wantMethods: "POST"},
		{name: "preflight without CORSOrigins", env: none, method: http.MethodOptions, path: "/v1/users",
			header: preflight("https://shop.example", "POST", "content-type"), wantStatus: http.StatusMethodNotAllowed},
		{name: "a call of an allowed origin", env: allowed, method: http.MethodGet, path: "/v1/users/" + knownUserID,
			header: []string{"Origin", "https://shop.example"}, wantStatus: http.StatusOK,
			wantOrigin: "https://shop.example", wantExpose: true},
		{name: "an error of an allowed origin", env: allowed, method: http.MethodGet, path: "/v1/users/missing",
			header: []string{"Origin", "https://shop.example"}, wantStatus: http.StatusNotFound,
			wantOrigin: "https://shop.example", wantExpose: true},
		{name: "HEAD of an allowed origin", env: allowed, method: http.MethodHead, path: "/v1/users/" + knownUserID,
			header: []string{"Origin", "https://shop.example"}, wantStatus: http.StatusOK,
			wantOrigin: "https://shop.example", wantExpose: true},
		{name: "the gateway's own refusal of an allowed origin", env: allowed, method: http.MethodPost, path: "/v1/users",
			body:   `{"email": "` + strings.Repeat("x", testMaxBody) + `"}`,
			header: []string{"Origin", "https://shop.example"}, wantStatus: http.StatusRequestEntityTooLarge,
			wantOrigin: "https://shop.example", wantExpose: true},
		{name: "a path no route has, of an allowed origin", env: allowed, method: http.MethodGet, path: "/v1/nothing",
			header: []string{"Origin", "https://shop.example"}, wantStatus: http.StatusNotFound,
			wantOrigin: "https://shop.example", wantExpose: true},
		{name: "a call of any origin", env: anyOrigin, method: http.MethodGet, path: "/v1/users/" + knownUserID,
			header: []string{"Origin", "https://anyone.example"}, wantStatus: http.StatusOK,
			wantOrigin: "*", wantExpose: true},
		{name: "a call of another origin", env: allowed, method: http.MethodGet, path: "/v1/users/" + knownUserID,
			header: []string{"Origin", "https://evil.example"}, wantStatus: http.StatusOK},
		{name: "a call without CORSOrigins", env: none, method: http.MethodGet, path: "/v1/users/" + knownUserID,
			header: []string{"Origin", "https://shop.example"}, wantStatus: http.StatusOK},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp := tt.env.do(t, tt.method, tt.path, tt.body, tt.header...)
			if resp.status != tt.wantStatus {
				t.Fatalf("status %d, want %d: %s", resp.status, tt.wantStatus, resp.body)
			}
			h := resp.header
			if got := h.Get("Access-Control-Allow-Origin"); got != tt.wantOrigin {
				t.Errorf("Access-Control-Allow-Origin %q, want %q", got, tt.wantOrigin)
			}
			if got := h.Get("Access-Control-Allow-Methods"); got != tt.wantMethods {
				t.Errorf("Access-Control-Allow-Methods %q, want %q", got, tt.wantMethods)
			}
			if tt.wantMethods != "" && h.Get("Access-Control-Max-Age") != "600" {
				t.Errorf("Access-Control-Max-Age %q, want 600", h.Get("Access-Control-Max-Age"))
			}
			expose := h.Get("Access-Control-Expose-Headers")
			if got := strings.Contains(expose, "X-Request-Id") && strings.Contains(expose, "Retry-After"); got != tt.wantExpose {
				t.Errorf("Access-Control-Expose-Headers %q, want X-Request-Id and Retry-After: %v", expose, tt.wantExpose)
			}
			if h.Get("Access-Control-Allow-Credentials") != "" {
				t.Error("credentials allowed")
			}
			// A cache must keep answers to different origins apart.
			if tt.env != none && !strings.Contains(strings.Join(h.Values("Vary"), ","), "Origin") {
				t.Errorf("Vary %q, want Origin in it", h.Values("Vary"))
			}
		})
	}
}

func TestCORSOriginsChecked(t *testing.T) {
	tests := []struct {
		origin string
		ok     bool
	}{
		{"*", true},
		{"https://shop.example", true},
		{"HTTPS://Shop.Example", true},
		{"http://localhost:5173", true},
		{"http://[::1]:8080", true},
		{"https://*.shop.example", true},
		{"https://xn--bcher-kva.example", true},
		{"shop.example", false},
		{"null", false},
		{"https://shop.example/", false},
		{"https://shop.example/app", false},
		{"https://shop.example?", false},
		{"https://shop.example#", false},
		{"https://shop.example:", false},
		{"https://shop.example:443", false},
		{"http://shop.example:80", false},
		{"https://bücher.example", false},
		{"ftp://shop.example", false},
		{"https://*.*.example", false},
		{"https://shop.example*", false},
		{"https://*", false},
		{"https://user@shop.example", false},
	}
	for _, tt := range tests {
		t.Run(tt.origin, func(t *testing.T) {
			_, err := newCORS([]string{tt.origin}, false)
			if (err == nil) != tt.ok {
				t.Fatalf("newCORS(%q) = %v, want ok %v", tt.origin, err, tt.ok)
			}
		})
	}
	if _, err := newCORS([]string{"https://shop.example", "*"}, false); err == nil {
		t.Error(`newCORS took "*" among other origins`)
	}
}
