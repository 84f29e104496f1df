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
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/duetkit/duet/internal/system"
	"github.com/duetkit/duet/kit/sqldb/sqldbtest"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		// The OpenCensus worker some dependency starts at init is process-wide.
		goleak.IgnoreTopFunction("go.opencensus.io/stats/view.(*worker).start"),
		// database/sql closes connection openers asynchronously.
		goleak.IgnoreTopFunction("database/sql.(*DB).connectionOpener"),
	)
}

// backends returns the database URLs to run the system on: SQLite always,
// PostgreSQL too when DUET_TEST_POSTGRES_URL is set.
func backends(t *testing.T) map[string]func(t *testing.T, dir string) system.Config {
	out := map[string]func(t *testing.T, dir string) system.Config{
		"sqlite": func(t *testing.T, dir string) system.Config { return system.Config{DataDir: dir} },
	}
	if os.Getenv("DUET_TEST_POSTGRES_URL") != "" {
		out["postgres"] = func(t *testing.T, dir string) system.Config {
			return system.Config{
				DataDir: dir,
				UserDB:  sqldbtest.URLs(t)["postgres"], OrderDB: sqldbtest.URLs(t)["postgres"], PaymentDB: sqldbtest.URLs(t)["postgres"],
			}
		}
	}
	return out
}

// start runs a whole system on free loopback ports.
func start(t *testing.T, cfg system.Config) *system.System {
	t.Helper()
	cfg.HTTPAddr, cfg.UserAddr, cfg.OrderAddr, cfg.PaymentAddr = "127.0.0.1:0", "127.0.0.1:0", "127.0.0.1:0", "127.0.0.1:0"
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
	resp, err := http.DefaultClient.Do(req)
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
			sys := start(t, config(t, t.TempDir()))
			base := "http://" + sys.HTTPAddr

			created := do(t, "POST", base+"/v1/users", `{"email":"Grace@Example.com","name":"Grace Hopper"}`, "X-Request-ID", "e2e-req-1")
			if created.status != 200 {
				t.Fatalf("create user: %d %s", created.status, created.raw)
			}
			if got := created.header.Get("X-Request-ID"); got != "e2e-req-1" {
				t.Errorf("X-Request-ID = %q, want the one sent", got)
			}
			userID, _ := path(created.body, "user", "id").(string)
			order := func(token, key string) string {
				return fmt.Sprintf(`{"userId":%q,"items":[{"sku":"BOOK-1","quantity":2,"unitPrice":{"currencyCode":"USD","units":"1999"}},{"sku":"PEN-2","quantity":1,"unitPrice":{"currencyCode":"USD","units":250}}],"paymentToken":%q,"idempotencyKey":%q}`, userID, token, key)
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
				{name: "order approved", method: "POST", path: "/v1/orders", body: order("tok_approve", "k-approve"), wantStatus: 200, check: func(t *testing.T, r response) {
					if path(r.body, "order", "status") != "ORDER_STATUS_PAID" || path(r.body, "order", "total", "units") != "4248" {
						t.Errorf("order = %s", r.raw)
					}
				}},
				{name: "order retried with its key is the same order", method: "POST", path: "/v1/orders", body: order("tok_approve", "k-approve"), wantStatus: 200},
				{name: "order declined is a business outcome", method: "POST", path: "/v1/orders", body: order("tok_decline", "k-decline"), wantStatus: 200, check: func(t *testing.T, r response) {
					if path(r.body, "order", "status") != "ORDER_STATUS_PAYMENT_FAILED" || path(r.body, "order", "failureReason") != "PAYMENT_DECLINED" {
						t.Errorf("order = %s", r.raw)
					}
				}},
				{name: "list orders", method: "GET", path: "/v1/users/" + userID + "/orders", wantStatus: 200, check: func(t *testing.T, r response) {
					if orders, _ := path(r.body, "orders").([]any); len(orders) != 2 {
						t.Errorf("got %d orders, want 2 (approved once despite the retry, declined once)", len(orders))
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
				{name: "garbage page token", method: "GET", path: "/v1/users?pageToken=garbage", wantStatus: 400, wantField: "page_token"},
				{name: "page size too big", method: "GET", path: "/v1/users?pageSize=1000", wantStatus: 400, wantField: "page_size"},
				{name: "order without items", method: "POST", path: "/v1/orders", body: fmt.Sprintf(`{"userId":%q,"items":[],"paymentToken":"tok_approve","idempotencyKey":"k1"}`, userID), wantStatus: 400, wantField: "items"},
				{name: "order with zero quantity", method: "POST", path: "/v1/orders", body: fmt.Sprintf(`{"userId":%q,"items":[{"sku":"A","quantity":0,"unitPrice":{"currencyCode":"USD","units":"1"}}],"paymentToken":"tok_approve","idempotencyKey":"k2"}`, userID), wantStatus: 400, wantField: "items[0].quantity"},
				{name: "order with mixed currencies", method: "POST", path: "/v1/orders", body: fmt.Sprintf(`{"userId":%q,"items":[{"sku":"A","quantity":1,"unitPrice":{"currencyCode":"USD","units":"1"}},{"sku":"B","quantity":1,"unitPrice":{"currencyCode":"EUR","units":"1"}}],"paymentToken":"tok_approve","idempotencyKey":"k3"}`, userID), wantStatus: 400, wantReason: "CURRENCY_MISMATCH"},
				{name: "order for unknown user", method: "POST", path: "/v1/orders", body: `{"userId":"00000000-0000-4000-8000-000000000000","items":[{"sku":"A","quantity":1,"unitPrice":{"currencyCode":"USD","units":"1"}}],"paymentToken":"tok_approve","idempotencyKey":"k4"}`, wantStatus: 400, wantReason: "USER_NOT_FOUND"},
				{name: "idempotency key reused for another order", method: "POST", path: "/v1/orders", body: strings.Replace(order("tok_approve", "k-approve"), `"quantity":2`, `"quantity":3`, 1), wantStatus: 400, wantReason: "IDEMPOTENCY_KEY_REUSED"},
				{name: "payment provider down", method: "POST", path: "/v1/orders", body: order("tok_unavailable", "k-unavailable"), wantStatus: 503},
				{name: "unknown route", method: "GET", path: "/v1/nothing", wantStatus: 404},
				{name: "wrong method", method: "DELETE", path: "/v1/users", wantStatus: 405},
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
	).Replace(block)
	for _, addr := range []string{"localhost:8080", "localhost:9091", "localhost:9092", "localhost:9093"} {
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
	for _, want := range []string{
		"ORDER_STATUS_PAID", "ORDER_STATUS_PAYMENT_FAILED", "PAYMENT_STATUS_PARTIALLY_REFUNDED",
		"HTTP/1.1 400", "HTTP/1.1 409", "HTTP/1.1 404", "EMAIL_TAKEN", "USER_NOT_FOUND",
		"duet.user.v1.UserService", `"status": "SERVING"`, `"status":"ready"`,
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
	cfg.HTTPAddr, cfg.UserAddr, cfg.OrderAddr, cfg.PaymentAddr = "127.0.0.1:0", "127.0.0.1:0", "127.0.0.1:0", "127.0.0.1:0"
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	sys, err := system.Start(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	base := "http://" + sys.HTTPAddr
	u := do(t, "POST", base+"/v1/users", `{"email":"load@example.com","name":"Load"}`)
	userID, _ := path(u.body, "user", "id").(string)
	body := func(key string) string {
		return fmt.Sprintf(`{"userId":%q,"items":[{"sku":"A","quantity":1,"unitPrice":{"currencyCode":"USD","units":"100"}}],"paymentToken":"tok_approve","idempotencyKey":%q}`, userID, key)
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
				if resp.StatusCode == 200 && path(b, "order", "status") == "ORDER_STATUS_PAID" {
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
		if r.status != 200 || path(r.body, "order", "status") != "ORDER_STATUS_PAID" {
			t.Errorf("answered order %s (%s) after restart: %d %s", id, key, r.status, r.raw)
		}
	}
	for _, key := range cutOff {
		r := do(t, "POST", base+"/v1/orders", body(key))
		if r.status != 200 || path(r.body, "order", "status") != "ORDER_STATUS_PAID" {
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
