package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/duetkit/duet/kit/sqldb/sqldbtest"
)

// process is one `duet serve` child.
type process struct {
	cmd     *exec.Cmd
	stderr  *syncBuffer
	addr    string
	metrics string
}

// startComponent runs `duet serve component args...` as its own process and
// waits for its "serving" log line, which names the bound address.
func startComponent(t *testing.T, ctx context.Context, component string, args ...string) *process {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.CommandContext(ctx, exe, append([]string{"serve", component, "--listen", "127.0.0.1:0"}, args...)...)
	cmd.Env = append(os.Environ(), "DUET_TEST_AS_DUET=1")
	pipe, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	p := &process{cmd: cmd, stderr: &syncBuffer{}}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			cmd.Process.Kill()
			cmd.Wait()
		}
	})
	sc := bufio.NewScanner(io.TeeReader(pipe, p.stderr))
	for sc.Scan() {
		var line map[string]any
		if json.Unmarshal(sc.Bytes(), &line) != nil || line["msg"] != "serving" {
			continue
		}
		for _, k := range []string{"grpc", "http"} {
			if a, ok := line[k].(string); ok {
				p.addr = a
			}
		}
		p.metrics, _ = line["metrics"].(string)
		break
	}
	if p.addr == "" {
		t.Fatalf("%s never said it was serving:\n%s", component, p.stderr.String())
	}
	go io.Copy(io.Discard, io.TeeReader(pipe, p.stderr))
	return p
}

// TestServeEachComponentInItsOwnProcess runs user, payment, order and the
// gateway as four processes talking gRPC over loopback, on PostgreSQL when
// DUET_TEST_POSTGRES_URL is set (SQLite files otherwise), places orders
// through REST, then stops every process with SIGTERM.
func TestServeEachComponentInItsOwnProcess(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	dbFlags := func(service string) []string {
		if url := sqldbtest.URLs(t)["postgres"]; url != "" {
			return []string{"--database-url", url}
		}
		return []string{"--data-dir", t.TempDir()}
	}
	user := startComponent(t, ctx, "user", dbFlags("user")...)
	payment := startComponent(t, ctx, "payment", dbFlags("payment")...)
	order := startComponent(t, ctx, "order", append(dbFlags("order"),
		"--user-target", "dns:///"+user.addr, "--payment-target", payment.addr, "--metrics-addr", "127.0.0.1:0")...)
	gateway := startComponent(t, ctx, "gateway",
		"--user-target", user.addr, "--order-target", order.addr, "--payment-target", payment.addr)
	base := "http://" + gateway.addr

	post := func(path, body string) (int, map[string]any) {
		resp, err := http.Post(base+path, "application/json", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var b map[string]any
		json.NewDecoder(resp.Body).Decode(&b)
		return resp.StatusCode, b
	}
	status, b := post("/v1/users", `{"email":"proc@example.com","name":"Proc"}`)
	if status != 200 {
		t.Fatalf("create user: %d %v", status, b)
	}
	userID := b["user"].(map[string]any)["id"].(string)
	for token, want := range map[string]string{"tok_approve": "ORDER_STATUS_PAID", "tok_decline": "ORDER_STATUS_PAYMENT_FAILED"} {
		status, b := post("/v1/orders", fmt.Sprintf(`{"userId":%q,"items":[{"sku":"A","quantity":1,"unitPrice":{"currencyCode":"EUR","units":"700"}}],"paymentToken":%q,"idempotencyKey":%q}`, userID, token, token))
		if status != 200 || b["order"].(map[string]any)["status"] != want {
			t.Errorf("order with %s: %d %v, want %s", token, status, b, want)
		}
	}
	for _, url := range []string{base + "/readyz", "http://" + order.metrics + "/readyz", "http://" + order.metrics + "/metrics"} {
		resp, err := http.Get(url)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Errorf("%s = %d", url, resp.StatusCode)
		}
		if strings.HasSuffix(url, "/metrics") && !strings.Contains(string(body), `grpc_server_handled_total{grpc_code="OK",grpc_method="CreateOrder"`) {
			t.Errorf("order's /metrics has no CreateOrder count")
		}
	}

	// Edge first, then inwards; each drains and exits 0.
	for _, p := range []*process{gateway, order, payment, user} {
		if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
		if err := p.cmd.Wait(); err != nil {
			t.Errorf("%v exited with %v:\n%s", p.cmd.Args[1:3], err, p.stderr.String())
		}
	}
	// Every hop logged the order requests under one request id.
	var ids []string
	for _, line := range strings.Split(gateway.stderr.String(), "\n") {
		var m map[string]any
		if json.Unmarshal([]byte(line), &m) == nil && m["path"] == "/v1/orders" {
			ids = append(ids, m["request_id"].(string))
		}
	}
	if len(ids) != 2 {
		t.Fatalf("gateway logged %d order requests, want 2", len(ids))
	}
	for _, p := range []*process{order, user, payment} {
		if !strings.Contains(p.stderr.String(), ids[0]) {
			t.Errorf("%v has no log line with request id %s", p.cmd.Args[1:3], ids[0])
		}
	}
}
