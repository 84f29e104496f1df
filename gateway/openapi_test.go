package gateway

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
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
	for _, want := range []string{"UserService", "OrderService", "PaymentService", "/v1/payments/{id}:refund", "PATCH", "openapi.json", "402", "/duet.user.v1.UserService/GetUser"} {
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

// TestRoutesOfDifferentServicesDoNotOverlap checks what lets New register
// the services in any order: no request to one service's route (or to the
// gateway's own paths) matches a route of another. grpc-gateway picks the
// most recently registered of the routes that match, so an overlap would
// make the registration order decide which backend answers. Routes of one
// service may overlap (GET /v1/orders/{id} matches /v1/orders/x:watch too):
// the generated code registers them in a fixed order, which New keeps.
func TestRoutesOfDifferentServicesDoNotOverlap(t *testing.T) {
	var doc struct {
		Paths map[string]map[string]struct {
			OperationID string `json:"operationId"`
		} `json:"paths"`
	}
	if err := json.Unmarshal(openAPIDocument, &doc); err != nil {
		t.Fatal(err)
	}
	type route struct{ method, template, owner string }
	var routes []route
	for _, own := range (&Gateway{}).ownPaths() {
		routes = append(routes, route{"GET", own.path, "gateway"})
	}
	for path, item := range doc.Paths {
		for method, op := range item {
			if !slices.Contains(httpMethods, method) {
				continue
			}
			service, _, ok := strings.Cut(op.OperationID, "_")
			if !ok {
				t.Fatalf("%s %s: operationId %q names no service", method, path, op.OperationID)
			}
			routes = append(routes, route{strings.ToUpper(method), path, service})
		}
	}
	// matches reports whether a mux holding only r routes a request for url.
	matches := func(t *testing.T, r route, method, url string) bool {
		t.Helper()
		mux := runtime.NewServeMux()
		var hit bool
		if err := mux.HandlePath(r.method, r.template, func(http.ResponseWriter, *http.Request, map[string]string) { hit = true }); err != nil {
			t.Fatalf("%s %s: %v", r.method, r.template, err)
		}
		mux.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest(method, url, nil))
		return hit
	}
	param := regexp.MustCompile(`\{[^}]+\}`)
	for _, a := range routes {
		url := param.ReplaceAllString(a.template, "x1")
		if !matches(t, a, a.method, url) {
			t.Fatalf("%s %s does not match its own route %s", a.method, url, a.template)
		}
		for _, b := range routes {
			if b.owner != a.owner && b.method == a.method && matches(t, b, a.method, url) {
				t.Errorf("%s %s (%s, route %s) also matches %s's route %s", a.method, url, a.owner, a.template, b.owner, b.template)
			}
		}
	}
	if len(routes) < 14 {
		t.Errorf("only %d routes", len(routes))
	}
}

// TestOpenAPIOfTheServicesConfigured: a gateway without the inventory
// and notification services neither documents their routes (document,
// docs page) nor lists their methods in a 405's Allow: they answer 404,
// as any path no route has. With every service, the document is the
// generated one, with the validation rules written in (withRules).
func TestOpenAPIOfTheServicesConfigured(t *testing.T) {
	full := newEnv(t)
	var services []string
	for _, b := range full.gw.backends {
		services = append(services, b.service)
	}
	want, err := withRules(openAPIDocument, serviceDescriptors(services))
	if err != nil {
		t.Fatal(err)
	}
	if resp := full.do(t, "GET", "/openapi.json", nil); string(resp.body) != string(want) {
		t.Error("with every service configured, the document served is not the generated one with its rules")
	}
	if got := string(full.gw.openAPI); got != string(openAPIDocument) {
		t.Error("with every service configured, the document the rules go into is not the generated one, byte for byte")
	}

	e := newEnv(t, func(c *Config) { c.Inventory, c.Notifications = nil, nil })
	resp := e.do(t, "GET", "/openapi.json", nil)
	var doc struct {
		Tags []struct {
			Name string `json:"name"`
		} `json:"tags"`
		Paths map[string]json.RawMessage `json:"paths"`
	}
	if err := json.Unmarshal(resp.body, &doc); err != nil {
		t.Fatalf("%v: %.200s", err, resp.body)
	}
	for path := range doc.Paths {
		if strings.HasPrefix(path, "/v1/products") || strings.HasPrefix(path, "/v1/audit") || strings.HasSuffix(path, "/notifications") {
			t.Errorf("the document lists %s, of a service not configured", path)
		}
	}
	var tags []string
	for _, tag := range doc.Tags {
		tags = append(tags, tag.Name)
	}
	if want := []string{"OrderService", "PaymentService", "UserService"}; !slices.Equal(tags, want) {
		t.Errorf("tags %v, want %v", tags, want)
	}
	for _, p := range []string{"/v1/users", "/v1/users/{id}", "/v1/orders", "/v1/payments/{id}:refund"} {
		if _, ok := doc.Paths[p]; !ok {
			t.Errorf("path %s missing from the document", p)
		}
	}
	if page := string(e.do(t, "GET", "/docs", nil).body); strings.Contains(page, "InventoryService") || !strings.Contains(page, "UserService") {
		t.Error("the docs page lists the inventory service, or not the user service")
	}
	if r := e.do(t, "DELETE", "/v1/products", nil); r.status != http.StatusNotFound || r.header.Get("Allow") != "" {
		t.Errorf("DELETE /v1/products without inventory: %d, Allow %q; want 404 without Allow", r.status, r.header.Get("Allow"))
	}
	if allow := e.gw.routes.allow("/v1/products"); allow != "" {
		t.Errorf("the route table gives /v1/products Allow %q without inventory", allow)
	}
	// The messages of the services left out are left out too; those kept
	// keep their fields in the contract's order.
	var defs struct {
		Definitions map[string]json.RawMessage `json:"definitions"`
	}
	if err := json.Unmarshal(resp.body, &defs); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"v1Product", "v1Notification", "v1AuditEvent"} {
		if _, ok := defs.Definitions[name]; ok {
			t.Errorf("definition %s kept without its service", name)
		}
	}
	for _, name := range []string{"v1User", "v1Order", "rpcStatus"} {
		if _, ok := defs.Definitions[name]; !ok {
			t.Errorf("definition %s missing", name)
		}
	}
	if got, want := propertyOrder(t, defs.Definitions["v1Order"]), propertyOrder(t, definition(t, openAPIDocument, "v1Order")); !slices.Equal(got, want) {
		t.Errorf("v1Order's properties in the order %v, want the contract's %v", got, want)
	}
}

// definition returns the definition name of the OpenAPI document doc.
func definition(t *testing.T, doc []byte, name string) json.RawMessage {
	t.Helper()
	var d struct {
		Definitions map[string]json.RawMessage `json:"definitions"`
	}
	if err := json.Unmarshal(doc, &d); err != nil {
		t.Fatal(err)
	}
	return d.Definitions[name]
}

// propertyOrder returns the names of a definition's properties, in the
// order it writes them.
func propertyOrder(t *testing.T, def json.RawMessage) []string {
	t.Helper()
	var d struct {
		Properties json.RawMessage `json:"properties"`
	}
	if err := json.Unmarshal(def, &d); err != nil {
		t.Fatal(err)
	}
	props, err := decodeOrdered(d.Properties)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, p := range props {
		names = append(names, p.key)
	}
	return names
}

// TestOpenAPIWithTokens: a gateway told that calls need tokens documents
// the Authorization header every operation needs but the public ones, and
// their 401 and 403 answers; without Tokens the document says nothing of
// them (TestOpenAPIOfTheServicesConfigured: the generated bytes).
func TestOpenAPIWithTokens(t *testing.T) {
	e := newEnv(t, func(c *Config) {
		c.Tokens = &Tokens{Public: []string{"/duet.user.v1.UserService/CreateUser", "/duet.inventory.v1.InventoryService/ListProducts"}}
	})
	var doc struct {
		SecurityDefinitions map[string]struct {
			Type string `json:"type"`
			Name string `json:"name"`
			In   string `json:"in"`
		} `json:"securityDefinitions"`
		Security []map[string][]string `json:"security"`
		Paths    map[string]map[string]struct {
			OperationID string                     `json:"operationId"`
			Security    *[]map[string][]string     `json:"security"`
			Responses   map[string]json.RawMessage `json:"responses"`
			Summary     string                     `json:"summary"`
		} `json:"paths"`
	}
	body := e.do(t, "GET", "/openapi.json", nil).body
	if err := json.Unmarshal(body, &doc); err != nil {
		t.Fatalf("%v: %.200s", err, body)
	}
	scheme, ok := doc.SecurityDefinitions["bearer"]
	if !ok || scheme.Type != "apiKey" || scheme.Name != "Authorization" || scheme.In != "header" {
		t.Fatalf("securityDefinitions %+v, want bearer: an apiKey in the Authorization header", doc.SecurityDefinitions)
	}
	if len(doc.Security) != 1 || doc.Security[0]["bearer"] == nil {
		t.Errorf("security %v, want [{bearer: []}]", doc.Security)
	}
	public := map[string]bool{}
	n := 0
	for path, item := range doc.Paths {
		for method, op := range item {
			if !slices.Contains(httpMethods, method) {
				continue
			}
			n++
			switch op.OperationID {
			case "UserService_CreateUser", "InventoryService_ListProducts":
				public[op.OperationID] = true
				if op.Security == nil || len(*op.Security) != 0 {
					t.Errorf("%s %s (%s): security %v, want [] (no token)", method, path, op.OperationID, op.Security)
				}
				// A token sent is checked all the same.
				if op.Responses["401"] == nil || op.Responses["403"] != nil {
					t.Errorf("%s %s (%s): a public operation's answers %v, want a 401 and no 403", method, path, op.OperationID, op.Responses)
				}
			default:
				if op.Security != nil {
					t.Errorf("%s %s (%s): security %v of its own", method, path, op.OperationID, *op.Security)
				}
				for _, status := range []string{"401", "403"} {
					if !bytes.Contains(op.Responses[status], []byte(`"#/definitions/rpcStatus"`)) {
						t.Errorf("%s %s (%s): no %s answer: %s", method, path, op.OperationID, status, op.Responses[status])
					}
				}
			}
			if op.Responses["200"] == nil || op.Summary == "" {
				t.Errorf("%s %s (%s) lost its 200 answer or summary", method, path, op.OperationID)
			}
		}
	}
	if len(public) != 2 || n < 15 {
		t.Errorf("%d operations, the public ones found: %v", n, public)
	}
	// The route table and the Allow header read the same document.
	if allow := e.gw.routes.allow("/v1/users"); allow != "GET, HEAD, POST" {
		t.Errorf("Allow of /v1/users is %q with tokens", allow)
	}
	page := string(e.do(t, "GET", "/docs", nil).body)
	if !strings.Contains(page, "Authorization: Bearer") || strings.Count(page, "No token.") != 2 {
		t.Errorf("the docs page does not say which calls need a token:\n%s", page)
	}
	if page := string(newEnv(t).do(t, "GET", "/docs", nil).body); strings.Contains(page, "Bearer") || strings.Contains(page, "No token.") {
		t.Error("without Tokens the docs page speaks of tokens")
	}
}
