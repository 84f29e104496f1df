package system_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/duetkit/duet/internal/system"
	"github.com/duetkit/duet/kit/events"
	"github.com/duetkit/duet/kit/events/eventstest"
	"github.com/duetkit/duet/kit/sqldb/sqldbtest"
	"github.com/duetkit/duet/services/order"
)

// testClient is the tests' HTTP client: a request that hangs fails the
// test after a minute instead of holding it for go test's whole timeout.
var testClient = &http.Client{Timeout: time.Minute}

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		// The OpenCensus worker some dependency starts at init is process-wide.
		goleak.IgnoreTopFunction("go.opencensus.io/stats/view.(*worker).start"),
		// database/sql closes connection openers asynchronously.
		goleak.IgnoreTopFunction("database/sql.(*DB).connectionOpener"),
	)
}

// backends returns the configurations to run the system on: SQLite with
// embedded NATS always; PostgreSQL too when DUET_TEST_POSTGRES_URL is set,
// with the machine's NATS when DUET_TEST_NATS_URL is set (on a stream and
// subject prefix of the test's own).
func backends(t *testing.T) map[string]func(t *testing.T, dir string) system.Config {
	out := map[string]func(t *testing.T, dir string) system.Config{
		"sqlite": func(t *testing.T, dir string) system.Config { return system.Config{DataDir: dir} },
	}
	if os.Getenv("DUET_TEST_POSTGRES_URL") != "" {
		out["postgres"] = func(t *testing.T, dir string) system.Config {
			pg := func() string { return sqldbtest.URLs(t)["postgres"] }
			cfg := system.Config{
				DataDir: dir,
				UserDB:  pg(), OrderDB: pg(), PaymentDB: pg(), InventoryDB: pg(), NotificationDB: pg(),
			}
			if url := os.Getenv(eventstest.NATSEnv); url != "" {
				cfg.NATSURL = url
				cfg.Bus = ownStream(t, url)
			}
			return cfg
		}
	}
	return out
}

// ownStream names a stream and subject prefix for this test alone on a
// shared NATS server, and deletes the stream when the test ends.
func ownStream(t *testing.T, url string) events.BusConfig {
	id := eventstest.Unique(t)
	cfg := events.BusConfig{Stream: "TEST_" + id, Prefix: "t" + id}
	t.Cleanup(func() {
		nc, err := events.Connect(url, "cleanup")
		if err != nil {
			return
		}
		defer nc.Close()
		if js, err := jetstream.New(nc); err == nil {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			_ = js.DeleteStream(ctx, cfg.Stream)
		}
	})
	return cfg
}

// start runs a whole system on free loopback ports.
func start(t *testing.T, cfg system.Config) *system.System {
	t.Helper()
	freePorts(&cfg)
	if cfg.DataDir == "" {
		cfg.DataDir = t.TempDir()
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.NewJSONHandler(io.Discard, nil))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	sys, err := system.Start(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := sys.Shutdown(ctx); err != nil {
			t.Errorf("shutdown: %v", err)
		}
	})
	return sys
}

// freePorts makes every listener of cfg pick a free loopback port.
func freePorts(cfg *system.Config) {
	for _, a := range []*string{&cfg.HTTPAddr, &cfg.UserAddr, &cfg.OrderAddr, &cfg.PaymentAddr, &cfg.InventoryAddr, &cfg.NotificationAddr} {
		*a = "127.0.0.1:0"
	}
}

// fastSaga gives up on a peer quickly, so the tests of that path are short.
var fastSaga = order.SagaConfig{StepTimeout: time.Second, InitialBackoff: 20 * time.Millisecond, MaxBackoff: 200 * time.Millisecond}

type response struct {
	status int
	header http.Header
	body   map[string]any
	raw    string
}

func do(t *testing.T, method, url, body string, header ...string) response {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := testClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	r := response{status: resp.StatusCode, header: resp.Header, raw: string(raw)}
	if len(raw) > 0 {
		if err := json.Unmarshal(raw, &r.body); err != nil {
			t.Fatalf("%s %s: body is not JSON: %v\n%s", method, url, err, raw)
		}
	}
	return r
}

// path walks a decoded JSON body: path(b, "order", "status").
func path(v any, keys ...string) any {
	for _, k := range keys {
		m, ok := v.(map[string]any)
		if !ok {
			return nil
		}
		v = m[k]
	}
	return v
}

// reason and field read the ErrorInfo reason and first BadRequest field of an error body.
func reason(b map[string]any) (reason, field string) {
	details, _ := b["details"].([]any)
	for _, d := range details {
		m, _ := d.(map[string]any)
		switch m["@type"] {
		case "type.googleapis.com/google.rpc.ErrorInfo":
			reason, _ = m["reason"].(string)
		case "type.googleapis.com/google.rpc.BadRequest":
			if fv, _ := m["fieldViolations"].([]any); len(fv) > 0 && field == "" {
				field, _ = fv[0].(map[string]any)["field"].(string)
			}
		}
	}
	return reason, field
}

func TestRESTEndToEnd(t *testing.T) {
	for name, config := range backends(t) {
		t.Run(name, func(t *testing.T) {
			cfg := config(t, t.TempDir())
			cfg.Saga = fastSaga
			sys := start(t, cfg)
			base := "http://" + sys.HTTPAddr

			for _, p := range []string{
				`{"sku":"BOOK-1","name":"A book","price":{"currencyCode":"USD","units":"1999"},"stock":100}`,
				`{"sku":"PEN-2","name":"A pen","price":{"currencyCode":"USD","units":"250"},"stock":100}`,
				`{"sku":"LAST-1","name":"The last one","price":{"currencyCode":"USD","units":"500"},"stock":1}`,
				`{"sku":"EURO-1","name":"Priced in euros","price":{"currencyCode":"EUR","units":"100"},"stock":10}`,
			} {
				if r := do(t, "POST", base+"/v1/products", p); r.status != 200 {
					t.Fatalf("create product: %d %s", r.status, r.raw)
				}
			}

			created := do(t, "POST", base+"/v1/users", `{"email":"Grace@Example.com","name":"Grace Hopper"}`, "X-Request-ID", "e2e-req-1")
			if created.status != 200 {
				t.Fatalf("create user: %d %s", created.status, created.raw)
			}
			if got := created.header.Get("X-Request-ID"); got != "e2e-req-1" {
				t.Errorf("X-Request-ID = %q, want the one sent", got)
			}
			userID, _ := path(created.body, "user", "id").(string)
			// Prices come from inventory; a client may state the one it expects.
			order := func(token, key string) string {
				return fmt.Sprintf(`{"userId":%q,"items":[{"sku":"BOOK-1","quantity":2,"unitPrice":{"currencyCode":"USD","units":"1999"}},{"sku":"PEN-2","quantity":1}],"paymentToken":%q,"idempotencyKey":%q,"wait":true}`, userID, token, key)
			}
			orderOf := func(sku, key string) string {
				return fmt.Sprintf(`{"userId":%q,"items":[{"sku":%q,"quantity":1}],"paymentToken":"tok_approve","idempotencyKey":%q,"wait":true}`, userID, sku, key)
			}
			outcome := func(status, reason string) func(t *testing.T, r response) {
				return func(t *testing.T, r response) {
					if path(r.body, "order", "status") != status || (reason != "" && path(r.body, "order", "failureReason") != reason) {
						t.Errorf("order = %s, want %s %s", r.raw, status, reason)
					}
				}
			}

			tests := []struct {
				name       string
				method     string
				path       string
				body       string
				wantStatus int
				wantReason string
				wantField  string
				check      func(t *testing.T, r response)
			}{
				{name: "get user", method: "GET", path: "/v1/users/" + userID, wantStatus: 200, check: func(t *testing.T, r response) {
					if path(r.body, "user", "email") != "Grace@Example.com" {
						t.Errorf("email = %v", path(r.body, "user", "email"))
					}
				}},
				{name: "list users", method: "GET", path: "/v1/users?pageSize=5", wantStatus: 200},
				{name: "patch infers the mask from the body", method: "PATCH", path: "/v1/users/" + userID, body: `{"name":"Rear Admiral Hopper"}`, wantStatus: 200, check: func(t *testing.T, r response) {
					if path(r.body, "user", "name") != "Rear Admiral Hopper" || path(r.body, "user", "email") != "Grace@Example.com" {
						t.Errorf("patched user = %v", r.raw)
					}
				}},
				{name: "patch by an upper-case id", method: "PATCH", path: "/v1/users/" + strings.ToUpper(userID), body: `{"name":"Rear Admiral Hopper"}`, wantStatus: 200, check: func(t *testing.T, r response) {
					if path(r.body, "user", "id") != userID {
						t.Errorf("patched user = %v", r.raw)
					}
				}},
				{name: "get product", method: "GET", path: "/v1/products/BOOK-1", wantStatus: 200, check: func(t *testing.T, r response) {
					if path(r.body, "product", "available") != "100" {
						t.Errorf("product = %s", r.raw)
					}
				}},
				{name: "list products", method: "GET", path: "/v1/products?pageSize=2", wantStatus: 200, check: func(t *testing.T, r response) {
					if ps, _ := path(r.body, "products").([]any); len(ps) != 2 || path(r.body, "nextPageToken") == nil {
						t.Errorf("page = %s", r.raw)
					}
				}},
				{name: "order confirmed", method: "POST", path: "/v1/orders", body: order("tok_approve", "k-approve"), wantStatus: 200, check: func(t *testing.T, r response) {
					outcome("ORDER_STATUS_CONFIRMED", "")(t, r)
					if path(r.body, "order", "total", "units") != "4248" {
						t.Errorf("total = %v, want 4248 (2×1999 + 250)", path(r.body, "order", "total"))
					}
				}},
				{name: "order retried with its key is the same order", method: "POST", path: "/v1/orders", body: order("tok_approve", "k-approve"), wantStatus: 200, check: outcome("ORDER_STATUS_CONFIRMED", "")},
				{name: "stock was taken", method: "GET", path: "/v1/products/BOOK-1", wantStatus: 200, check: func(t *testing.T, r response) {
					if path(r.body, "product", "available") != "98" {
						t.Errorf("available = %v, want 98 (one order of 2, despite the retry)", path(r.body, "product", "available"))
					}
				}},
				{name: "declined payment cancels", method: "POST", path: "/v1/orders", body: order("tok_decline", "k-decline"), wantStatus: 200, check: outcome("ORDER_STATUS_CANCELLED", "PAYMENT_DECLINED")},
				{name: "declined order released its stock", method: "GET", path: "/v1/products/BOOK-1", wantStatus: 200, check: func(t *testing.T, r response) {
					if path(r.body, "product", "available") != "98" {
						t.Errorf("available = %v, want 98", path(r.body, "product", "available"))
					}
				}},
				{name: "last unit", method: "POST", path: "/v1/orders", body: orderOf("LAST-1", "k-last-1"), wantStatus: 200, check: outcome("ORDER_STATUS_CONFIRMED", "")},
				{name: "out of stock is rejected", method: "POST", path: "/v1/orders", body: orderOf("LAST-1", "k-last-2"), wantStatus: 200, check: outcome("ORDER_STATUS_REJECTED", "OUT_OF_STOCK")},
				{name: "unknown product is rejected", method: "POST", path: "/v1/orders", body: orderOf("NOPE-1", "k-nope"), wantStatus: 200, check: outcome("ORDER_STATUS_REJECTED", "PRODUCT_NOT_FOUND")},
				{name: "changed price is rejected", method: "POST", path: "/v1/orders", body: fmt.Sprintf(`{"userId":%q,"items":[{"sku":"PEN-2","quantity":1,"unitPrice":{"currencyCode":"USD","units":"1"}}],"paymentToken":"tok_approve","idempotencyKey":"k-price","wait":true}`, userID), wantStatus: 200, check: outcome("ORDER_STATUS_REJECTED", "PRICE_CHANGED")},
				{name: "mixed currencies are rejected", method: "POST", path: "/v1/orders", body: fmt.Sprintf(`{"userId":%q,"items":[{"sku":"PEN-2","quantity":1},{"sku":"EURO-1","quantity":1}],"paymentToken":"tok_approve","idempotencyKey":"k-mixed","wait":true}`, userID), wantStatus: 200, check: outcome("ORDER_STATUS_REJECTED", "CURRENCY_MISMATCH")},
				{name: "unknown user is rejected", method: "POST", path: "/v1/orders", body: `{"userId":"00000000-0000-4000-8000-000000000000","items":[{"sku":"PEN-2","quantity":1}],"paymentToken":"tok_approve","idempotencyKey":"k4","wait":true}`, wantStatus: 200, check: outcome("ORDER_STATUS_REJECTED", "USER_NOT_FOUND")},
				{name: "payment provider down past the bound cancels", method: "POST", path: "/v1/orders", body: order("tok_unavailable", "k-unavailable"), wantStatus: 200, check: outcome("ORDER_STATUS_CANCELLED", "PAYMENT_UNAVAILABLE")},
				{name: "without wait the order is pending", method: "POST", path: "/v1/orders", body: strings.Replace(orderOf("PEN-2", "k-nowait"), `,"wait":true`, "", 1), wantStatus: 200, check: outcome("ORDER_STATUS_PENDING", "")},
				// UUIDs are case-insensitive on input (RFC 9562): an
				// upper-case id names the same user, stored in lower case.
				{name: "get user by an upper-case id", method: "GET", path: "/v1/users/" + strings.ToUpper(userID), wantStatus: 200, check: func(t *testing.T, r response) {
					if path(r.body, "user", "id") != userID {
						t.Errorf("user = %s, want id %s", r.raw, userID)
					}
				}},
				{name: "order by an upper-case user id", method: "POST", path: "/v1/orders", body: strings.Replace(orderOf("PEN-2", "k-upper"), userID, strings.ToUpper(userID), 1), wantStatus: 200, check: func(t *testing.T, r response) {
					outcome("ORDER_STATUS_CONFIRMED", "")(t, r)
					if path(r.body, "order", "userId") != userID {
						t.Errorf("order's userId = %v, want %s", path(r.body, "order", "userId"), userID)
					}
				}},
				{name: "list orders", method: "GET", path: "/v1/users/" + userID + "/orders?pageSize=100", wantStatus: 200, check: func(t *testing.T, r response) {
					if orders, _ := path(r.body, "orders").([]any); len(orders) != 10 {
						t.Errorf("got %d orders, want 10 (one per key of this user)", len(orders))
					}
				}},
				{name: "list orders of an upper-case user id", method: "GET", path: "/v1/users/" + strings.ToUpper(userID) + "/orders?pageSize=100", wantStatus: 200, check: func(t *testing.T, r response) {
					if orders, _ := path(r.body, "orders").([]any); len(orders) != 10 {
						t.Errorf("got %d orders, want 10", len(orders))
					}
				}},
				// Bad input of every kind.
				{name: "duplicate email, other case", method: "POST", path: "/v1/users", body: `{"email":"grace@example.COM","name":"G"}`, wantStatus: 409, wantReason: "EMAIL_TAKEN", wantField: "email"},
				{name: "invalid email", method: "POST", path: "/v1/users", body: `{"email":"nope","name":"G"}`, wantStatus: 400, wantReason: "INVALID_ARGUMENT", wantField: "email"},
				{name: "empty name", method: "POST", path: "/v1/users", body: `{"email":"x@example.com","name":""}`, wantStatus: 400, wantField: "name"},
				{name: "malformed JSON", method: "POST", path: "/v1/users", body: `{"email":`, wantStatus: 400},
				{name: "wrong JSON type", method: "POST", path: "/v1/users", body: `{"email":42,"name":"G"}`, wantStatus: 400},
				{name: "unknown field", method: "POST", path: "/v1/users", body: `{"email":"y@example.com","name":"G","admin":true}`, wantStatus: 400},
				{name: "over-large body", method: "POST", path: "/v1/users", body: `{"email":"z@example.com","name":"` + strings.Repeat("a", 2<<20) + `"}`, wantStatus: 413},
				{name: "user id not a uuid", method: "GET", path: "/v1/users/42", wantStatus: 400, wantField: "id"},
				{name: "unknown user", method: "GET", path: "/v1/users/00000000-0000-4000-8000-000000000000", wantStatus: 404, wantReason: "USER_NOT_FOUND"},
				{name: "unknown order", method: "GET", path: "/v1/orders/00000000-0000-4000-8000-000000000000", wantStatus: 404, wantReason: "ORDER_NOT_FOUND"},
				{name: "garbage page token", method: "GET", path: "/v1/users?pageToken=garbage", wantStatus: 400, wantField: "pageToken"},
				{name: "page size too big", method: "GET", path: "/v1/users?pageSize=1000", wantStatus: 400, wantField: "pageSize"},
				{name: "order without items", method: "POST", path: "/v1/orders", body: fmt.Sprintf(`{"userId":%q,"items":[],"paymentToken":"tok_approve","idempotencyKey":"k1"}`, userID), wantStatus: 400, wantField: "items"},
				{name: "order with zero quantity", method: "POST", path: "/v1/orders", body: fmt.Sprintf(`{"userId":%q,"items":[{"sku":"A","quantity":0,"unitPrice":{"currencyCode":"USD","units":"1"}}],"paymentToken":"tok_approve","idempotencyKey":"k2"}`, userID), wantStatus: 400, wantField: "items[0].quantity"},
				{name: "order with a sku twice", method: "POST", path: "/v1/orders", body: fmt.Sprintf(`{"userId":%q,"items":[{"sku":"A","quantity":1},{"sku":"A","quantity":2}],"paymentToken":"tok_approve","idempotencyKey":"k3"}`, userID), wantStatus: 400, wantField: "items[1].sku"},
				{name: "product with a bad sku", method: "POST", path: "/v1/products", body: `{"sku":"no spaces","name":"x","price":{"currencyCode":"USD","units":"1"}}`, wantStatus: 400, wantField: "sku"},
				{name: "duplicate product", method: "POST", path: "/v1/products", body: `{"sku":"PEN-2","name":"x","price":{"currencyCode":"USD","units":"1"}}`, wantStatus: 409, wantReason: "SKU_TAKEN"},
				{name: "unknown product", method: "GET", path: "/v1/products/NOPE-9", wantStatus: 404, wantReason: "PRODUCT_NOT_FOUND"},
				{name: "idempotency key reused for another order", method: "POST", path: "/v1/orders", body: strings.Replace(order("tok_approve", "k-approve"), `"quantity":2`, `"quantity":3`, 1), wantStatus: 400, wantReason: "IDEMPOTENCY_KEY_REUSED"},
				{name: "unknown route", method: "GET", path: "/v1/nothing", wantStatus: 404},
				{name: "wrong method", method: "DELETE", path: "/v1/users", wantStatus: 405},
				// Paths are routed as sent: no redirect to a cleaned path
				// (a client following it would create a user here).
				{name: "double slash", method: "POST", path: "/v1//users", body: `{"email":"slash@example.com","name":"S"}`, wantStatus: 404, wantReason: "ROUTE_NOT_FOUND"},
				{name: "dot segment", method: "GET", path: "/v1/users/./" + userID, wantStatus: 404, wantReason: "ROUTE_NOT_FOUND"},
			}
			for _, tt := range tests {
				t.Run(tt.name, func(t *testing.T) {
					r := do(t, tt.method, base+tt.path, tt.body)
					if r.status != tt.wantStatus {
						t.Fatalf("status = %d, want %d\n%.500s", r.status, tt.wantStatus, r.raw)
					}
					if r.header.Get("X-Request-ID") == "" {
						t.Error("no X-Request-ID on the response")
					}
					if r.status >= 400 {
						if _, ok := r.body["code"]; !ok || r.body["message"] == nil {
							t.Errorf("error body lacks code or message: %.300s", r.raw)
						}
						gotReason, gotField := reason(r.body)
						if tt.wantReason != "" && gotReason != tt.wantReason {
							t.Errorf("reason = %q, want %q (%.300s)", gotReason, tt.wantReason, r.raw)
						}
						if tt.wantField != "" && gotField != tt.wantField {
							t.Errorf("field = %q, want %q (%.300s)", gotField, tt.wantField, r.raw)
						}
					}
					if tt.check != nil {
						tt.check(t, r)
					}
				})
			}

			// Prometheus metrics are served beside the API.
			if resp, err := testClient.Get(base + "/metrics"); err != nil {
				t.Error(err)
			} else {
				text, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if resp.StatusCode != 200 || !strings.Contains(string(text), `grpc_server_handled_total{grpc_code="OK",grpc_method="CreateOrder"`) {
					t.Errorf("GET /metrics: %d\n%.300s", resp.StatusCode, text)
				}
			}

			// A PATCH may send back the user a GET returned, changed: its
			// id and output-only times, in the mask the gateway infers from
			// the body, are ignored.
			fetched := do(t, "GET", base+"/v1/users/"+userID, "")
			if u, ok := fetched.body["user"].(map[string]any); !ok {
				t.Errorf("GET user: %s", fetched.raw)
			} else {
				u["name"] = "Grace B. Hopper"
				body, _ := json.Marshal(u)
				if r := do(t, "PATCH", base+"/v1/users/"+userID, string(body)); r.status != 200 || path(r.body, "user", "name") != "Grace B. Hopper" {
					t.Errorf("PATCH of the user a GET returned: %d %.300s", r.status, r.raw)
				}
			}

			// The same key gives the same order; its watch is one line, the
			// terminal state, and then the stream ends. The watch names the
			// order in upper case: a streamed request's UUIDs are lowered too.
			approved := do(t, "POST", base+"/v1/orders", order("tok_approve", "k-approve"))
			orderID, _ := path(approved.body, "order", "id").(string)
			if r := do(t, "GET", base+"/v1/orders/"+strings.ToUpper(orderID), ""); r.status != 200 || path(r.body, "order", "id") != orderID {
				t.Errorf("get order by an upper-case id: %d %.300s", r.status, r.raw)
			}
			watch, err := testClient.Get(base + "/v1/orders/" + strings.ToUpper(orderID) + ":watch")
			if err != nil {
				t.Fatal(err)
			}
			lines, _ := io.ReadAll(watch.Body)
			watch.Body.Close()
			if n := strings.Count(strings.TrimSpace(string(lines)), "\n") + 1; watch.StatusCode != 200 || n != 1 || !strings.Contains(string(lines), "ORDER_STATUS_CONFIRMED") {
				t.Errorf("watch of a confirmed order: %d, %d lines:\n%s", watch.StatusCode, n, lines)
			}

			// Events reach the notification service through the outbox and
			// NATS: exactly one notification per event that calls for one.
			want := map[string]int{
				// Two name changes: the PATCH in the table, then the one
				// sending back the fetched user.
				"NOTIFICATION_KIND_WELCOME": 1, "NOTIFICATION_KIND_ACCOUNT_CHANGED": 2,
				"NOTIFICATION_KIND_ORDER_CONFIRMED": 4, "NOTIFICATION_KIND_ORDER_CANCELLED": 2, "NOTIFICATION_KIND_ORDER_REJECTED": 4,
			}
			var got map[string]int
			deadline := time.Now().Add(30 * time.Second)
			for {
				got = map[string]int{}
				r := do(t, "GET", base+"/v1/users/"+userID+"/notifications?pageSize=100", "")
				notes, _ := path(r.body, "notifications").([]any)
				for _, n := range notes {
					kind, _ := path(n, "kind").(string)
					got[kind]++
				}
				if fmt.Sprint(got) == fmt.Sprint(want) || time.Now().After(deadline) {
					break
				}
				time.Sleep(50 * time.Millisecond)
			}
			if fmt.Sprint(got) != fmt.Sprint(want) {
				t.Errorf("notifications = %v, want %v", got, want)
			}
			audit := do(t, "GET", base+"/v1/audit/"+orderID, "")
			if events, _ := path(audit.body, "events").([]any); len(events) != 1 || path(events[0], "type") != "duet.order.v1.OrderConfirmed" ||
				path(events[0], "payload", "order", "id") != orderID {
				t.Errorf("audit of the confirmed order = %.600s", audit.raw)
			}
		})
	}
}

// TestREADMEExamples runs the README's example block verbatim, against a
// fresh system, with only the addresses rewritten to the test's ports.
func TestREADMEExamples(t *testing.T) {
	if testing.Short() {
		t.Skip("builds grpcurl")
	}
	for _, tool := range []string{"bash", "curl", "go"} {
		if _, err := exec.LookPath(tool); err != nil {
			if os.Getenv("CI") != "" {
				// CI must run the README, not pass it by.
				t.Fatalf("%s not installed", tool)
			}
			t.Skipf("%s not installed", tool)
		}
	}
	readme, err := os.ReadFile(filepath.Join("..", "..", "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	_, block, ok := strings.Cut(string(readme), "<!-- examples:begin -->")
	block, _, ok2 := strings.Cut(block, "<!-- examples:end -->")
	if !ok || !ok2 {
		t.Fatal("README has no examples block")
	}
	block = strings.TrimSpace(block)
	block = strings.TrimPrefix(block, "```sh")
	block = strings.TrimSuffix(block, "```")

	sys := start(t, system.Config{})
	script := strings.NewReplacer(
		"localhost:8080", sys.HTTPAddr,
		"localhost:9091", sys.UserAddr,
		"localhost:9092", sys.OrderAddr,
		"localhost:9093", sys.PaymentAddr,
		"localhost:9094", sys.InventoryAddr,
		"localhost:9095", sys.NotificationAddr,
	).Replace(block)
	for _, addr := range []string{"localhost:8080", "localhost:9091", "localhost:9092", "localhost:9093", "localhost:9094", "localhost:9095"} {
		if !strings.Contains(block, addr) {
			t.Errorf("README examples never use %s", addr)
		}
	}

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "bash", "-euo", "pipefail", "-c", script)
	cmd.Dir = filepath.Join("..", "..")
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		t.Fatalf("README examples failed: %v\n%s", err, out.String())
	}
	// Each "curl -i" line ends in a comment naming the HTTP status it
	// shows; the answers must come in that order.
	var wantStatus, gotStatus []string
	for _, m := range regexp.MustCompile(`(?m)^curl -sS -i .*# (\d{3})\b`).FindAllStringSubmatch(block, -1) {
		wantStatus = append(wantStatus, m[1])
	}
	for _, m := range regexp.MustCompile(`HTTP/1\.1 (\d{3}) `).FindAllStringSubmatch(out.String(), -1) {
		gotStatus = append(gotStatus, m[1])
	}
	if len(wantStatus) < 4 || !slices.Equal(gotStatus, wantStatus) {
		t.Errorf("curl -i answers have HTTP statuses %v, the README's comments say %v", gotStatus, wantStatus)
	}
	for _, want := range []string{
		"ORDER_STATUS_PENDING", `"field":"email"`,
		"ORDER_STATUS_CONFIRMED", "ORDER_STATUS_CANCELLED", "ORDER_STATUS_REJECTED", "OUT_OF_STOCK", "PAYMENT_DECLINED",
		"PAYMENT_STATUS_PARTIALLY_REFUNDED", "received 3, applied 3, rejected 0", "step=DONE", `"step": "ORDER_STEP_DONE"`, `"notification": {`,
		"NOTIFICATION_KIND_WELCOME", "duet.order.v1.OrderConfirmed", `"rejected": "1"`, "INVALID_SKU",
		"HTTP/1.1 400", "HTTP/1.1 409", "HTTP/1.1 404", "EMAIL_TAKEN", "USER_NOT_FOUND",
		"duet.user.v1.UserService", `"status": "SERVING"`, `"status":"ready"`, `"code":"not_found"`,
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("README examples' output lacks %q", want)
		}
	}
	if t.Failed() {
		t.Logf("output:\n%s", out.String())
	}
}

// TestDrainLosesNothing places orders from many clients while the system
// shuts down, then restarts it on the same data: every order the gateway
// answered is there, and every order that was cut off before an answer
// completes exactly once when retried with its idempotency key.
func TestDrainLosesNothing(t *testing.T) {
	dir := t.TempDir()
	quiet := slog.New(slog.NewJSONHandler(io.Discard, nil))
	cfg := system.Config{DataDir: dir, Logger: quiet}
	freePorts(&cfg)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	sys, err := system.Start(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	base := "http://" + sys.HTTPAddr
	if r := do(t, "POST", base+"/v1/products", `{"sku":"A","name":"A","price":{"currencyCode":"USD","units":"100"},"stock":100000}`); r.status != 200 {
		t.Fatalf("create product: %d %s", r.status, r.raw)
	}
	u := do(t, "POST", base+"/v1/users", `{"email":"load@example.com","name":"Load"}`)
	userID, _ := path(u.body, "user", "id").(string)
	body := func(key string) string {
		return fmt.Sprintf(`{"userId":%q,"items":[{"sku":"A","quantity":1}],"paymentToken":"tok_approve","idempotencyKey":%q,"wait":true}`, userID, key)
	}

	const clients, perClient = 8, 40
	var (
		mu       sync.Mutex
		answered = map[string]string{} // idempotency key -> order id
		cutOff   []string              // keys whose request got no answer
		bad      []string
	)
	halfway := make(chan struct{})
	var once sync.Once
	var wg sync.WaitGroup
	client := &http.Client{Timeout: 30 * time.Second}
	for c := 0; c < clients; c++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < perClient; i++ {
				key := fmt.Sprintf("drain-%d-%d", c, i)
				resp, err := client.Post(base+"/v1/orders", "application/json", strings.NewReader(body(key)))
				if err != nil {
					mu.Lock()
					cutOff = append(cutOff, key)
					mu.Unlock()
					continue
				}
				raw, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				var b map[string]any
				_ = json.Unmarshal(raw, &b)
				mu.Lock()
				if resp.StatusCode == 200 && path(b, "order", "status") == "ORDER_STATUS_CONFIRMED" {
					answered[key], _ = path(b, "order", "id").(string)
				} else {
					bad = append(bad, fmt.Sprintf("%s: %d %s", key, resp.StatusCode, raw))
				}
				n := len(answered)
				mu.Unlock()
				if n >= clients*perClient/3 {
					once.Do(func() { close(halfway) })
				}
			}
		}()
	}
	select {
	case <-halfway:
	case <-ctx.Done():
		t.Fatal("load never got a third of the way")
	}
	if err := sys.Shutdown(ctx); err != nil {
		t.Fatalf("shutdown: %v", err)
	}
	wg.Wait()
	if len(bad) > 0 {
		t.Fatalf("%d requests got an error answer during drain, e.g. %s", len(bad), bad[0])
	}

	// Restart on the same data.
	sys2, err := system.Start(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer sys2.Shutdown(context.WithoutCancel(ctx))
	base = "http://" + sys2.HTTPAddr
	for key, id := range answered {
		r := do(t, "GET", base+"/v1/orders/"+id, "")
		if r.status != 200 || path(r.body, "order", "status") != "ORDER_STATUS_CONFIRMED" {
			t.Errorf("answered order %s (%s) after restart: %d %s", id, key, r.status, r.raw)
		}
	}
	for _, key := range cutOff {
		r := do(t, "POST", base+"/v1/orders", body(key))
		if r.status != 200 || path(r.body, "order", "status") != "ORDER_STATUS_CONFIRMED" {
			t.Errorf("retry of cut-off order %s: %d %s", key, r.status, r.raw)
		}
	}
	// Exactly one order per key, answered or retried.
	var total int
	token := ""
	for {
		r := do(t, "GET", base+"/v1/users/"+userID+"/orders?pageSize=100&pageToken="+token, "")
		orders, _ := path(r.body, "orders").([]any)
		total += len(orders)
		token, _ = path(r.body, "nextPageToken").(string)
		if token == "" {
			break
		}
	}
	if want := len(answered) + len(cutOff); total != want {
		t.Errorf("orders after restart = %d, want %d (answered %d + cut off %d)", total, want, len(answered), len(cutOff))
	}
	t.Logf("answered %d orders, %d cut off before an answer and completed on retry", len(answered), len(cutOff))
}

// TestNATSURLShownRedacted: `duet up` prints System.NATSURL in its banner;
// it showed the password of an external NATS URL in clear.
func TestNATSURLShownRedacted(t *testing.T) {
	url := os.Getenv(eventstest.NATSEnv)
	if url == "" {
		t.Skip(eventstest.NATSEnv + " not set")
	}
	// This NATS has no authorization, so it takes any credentials.
	withSecret := strings.Replace(url, "://", "://alice:s3cret@", 1)
	sys := start(t, system.Config{NATSURL: withSecret, Bus: ownStream(t, url)})
	if strings.Contains(sys.NATSURL, "s3cret") || !strings.Contains(sys.NATSURL, "alice:xxxxx@") {
		t.Errorf("NATSURL = %q", sys.NATSURL)
	}
}

// TestShutdownAnswersWaitingOrders: a POST /v1/orders waiting for its order
// is answered, with the order PENDING, as soon as shutdown starts. The
// gateway's graceful stop waits for it, and the order service used to end
// such waits only when its own turn came, after the gateway's: the call
// held the whole shutdown for its request timeout, past the deadline.
func TestShutdownAnswersWaitingOrders(t *testing.T) {
	quiet := slog.New(slog.NewJSONHandler(io.Discard, nil))
	cfg := system.Config{DataDir: t.TempDir(), Logger: quiet}
	freePorts(&cfg)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	sys, err := system.Start(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	base := "http://" + sys.HTTPAddr
	if r := do(t, "POST", base+"/v1/products", `{"sku":"W","name":"W","price":{"currencyCode":"USD","units":"5"},"stock":10}`); r.status != 200 {
		t.Fatalf("create product: %d %s", r.status, r.raw)
	}
	u := do(t, "POST", base+"/v1/users", `{"email":"wait@example.com","name":"Wait"}`)
	userID, _ := path(u.body, "user", "id").(string)
	// The payment provider is down: the saga retries, the order stays
	// PENDING, and the call waits for it.
	type answered struct {
		status int
		body   map[string]any
		err    error
	}
	answer := make(chan answered, 1)
	go func() {
		resp, err := testClient.Post(base+"/v1/orders", "application/json", strings.NewReader(fmt.Sprintf(
			`{"userId":%q,"items":[{"sku":"W","quantity":1}],"paymentToken":"tok_unavailable","idempotencyKey":"wait-1","wait":true}`, userID)))
		if err != nil {
			answer <- answered{err: err}
			return
		}
		defer resp.Body.Close()
		a := answered{status: resp.StatusCode}
		a.err = json.NewDecoder(resp.Body).Decode(&a.body)
		answer <- a
	}()
	deadline := time.Now().Add(20 * time.Second)
	for {
		r := do(t, "GET", base+"/v1/users/"+userID+"/orders", "")
		if orders, _ := path(r.body, "orders").([]any); len(orders) == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the order was never stored")
		}
		time.Sleep(10 * time.Millisecond)
	}
	// Well under the gateway's 15 s request timeout, which the call
	// would otherwise wait out.
	sctx, scancel := context.WithTimeout(ctx, 8*time.Second)
	defer scancel()
	if err := sys.Shutdown(sctx); err != nil {
		t.Errorf("shutdown: %v", err)
	}
	a := <-answer
	if a.err != nil || a.status != 200 || path(a.body, "order", "status") != "ORDER_STATUS_PENDING" {
		t.Errorf("waiting order: %d %v, %v", a.status, a.body, a.err)
	}
}

// TestDataDirectoryInUse: a second embedded system on a data directory in
// use fails at once, before it opens a store or runs a relay, instead of
// running a second NATS server on the first one's files.
func TestDataDirectoryInUse(t *testing.T) {
	dir := t.TempDir()
	start(t, system.Config{DataDir: dir})
	cfg := system.Config{DataDir: dir, Logger: slog.New(slog.NewJSONHandler(io.Discard, nil))}
	freePorts(&cfg)
	b, err := system.Start(t.Context(), cfg)
	if err == nil {
		b.Shutdown(context.WithoutCancel(t.Context()))
		t.Fatal("a second system started on a data directory in use")
	}
	if !strings.Contains(err.Error(), "in use by another process") {
		t.Errorf("second system: %v, want the directory named in use", err)
	}
}
