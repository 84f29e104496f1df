package gateway

import (
	"encoding/json"
	"net/http"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// TestEveryDocumentedRouteIsServed sends each operation of the OpenAPI
// document to the gateway and checks that it is routed (to a backend or a
// backend's error), so the document and the routes cannot drift apart.
func TestEveryDocumentedRouteIsServed(t *testing.T) {
	e := newEnv(t)
	var doc struct {
		Paths map[string]map[string]json.RawMessage `json:"paths"`
	}
	if err := json.Unmarshal(openAPIDocument, &doc); err != nil {
		t.Fatal(err)
	}
	param := regexp.MustCompile(`\{[^}]+\}`)
	n := 0
	for path, item := range doc.Paths {
		for method := range item {
			if !slices.Contains(httpMethods, method) {
				continue
			}
			n++
			url := param.ReplaceAllString(path, knownUserID)
			var body any
			if method != "get" {
				body = "{}"
			}
			resp := e.do(t, strings.ToUpper(method), url, body)
			if reason := get(resp.json(t), "details.0.reason"); reason == ReasonRouteNotFound || reason == ReasonMethodNotAllowed {
				t.Errorf("%s %s (documented as %s) is not routed: %s", strings.ToUpper(method), url, path, resp.body)
			}
		}
	}
	if n < 10 {
		t.Errorf("only %d operations in the document", n)
	}
}

func TestOpenAPI(t *testing.T) {
	e := newEnv(t)
	resp := e.do(t, "GET", "/openapi.json", nil)
	if resp.status != http.StatusOK || resp.header.Get("Content-Type") != "application/json" {
		t.Fatalf("status %d, Content-Type %q", resp.status, resp.header.Get("Content-Type"))
	}
	var doc struct {
		Swagger string                     `json:"swagger"`
		Paths   map[string]json.RawMessage `json:"paths"`
	}
	if err := json.Unmarshal(resp.body, &doc); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{"/v1/users", "/v1/users/{id}", "/v1/users/{user.id}", "/v1/orders", "/v1/orders/{id}", "/v1/users/{userId}/orders", "/v1/payments/{id}:refund"} {
		if _, ok := doc.Paths[p]; !ok {
			t.Errorf("path %s missing from the document", p)
		}
	}
}

func TestDocs(t *testing.T) {
	e := newEnv(t)
	resp := e.do(t, "GET", "/docs", nil)
	if resp.status != http.StatusOK || !strings.HasPrefix(resp.header.Get("Content-Type"), "text/html") {
		t.Fatalf("status %d, Content-Type %q", resp.status, resp.header.Get("Content-Type"))
	}
	page := string(resp.body)
	for _, want := range []string{"UserService", "OrderService", "PaymentService", "/v1/payments/{id}:refund", "PATCH", "openapi.json", "402"} {
		if !strings.Contains(page, want) {
			t.Errorf("docs page lacks %q", want)
		}
	}
	// Self-contained: the machine may be offline.
	for _, external := range []string{"http://", "https://", "<script", "src="} {
		if strings.Contains(page, external) {
			t.Errorf("docs page refers to %q", external)
		}
	}
	if resp.header.Get("Content-Security-Policy") == "" {
		t.Error("no Content-Security-Policy")
	}
}
