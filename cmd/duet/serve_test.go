package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	grpcstatus "google.golang.org/grpc/status"

	inventoryv1 "github.com/duetkit/duet/gen/duet/inventory/v1"
	orderv1 "github.com/duetkit/duet/gen/duet/order/v1"
	paymentv1 "github.com/duetkit/duet/gen/duet/payment/v1"
	userv1 "github.com/duetkit/duet/gen/duet/user/v1"
	"github.com/duetkit/duet/kit/access"
	"github.com/duetkit/duet/kit/apierr"
	"github.com/duetkit/duet/kit/authn"
	"github.com/duetkit/duet/kit/authn/devissuer"
	"github.com/duetkit/duet/kit/authz"
	"github.com/duetkit/duet/kit/events"
	"github.com/duetkit/duet/kit/events/eventstest"
	"github.com/duetkit/duet/kit/mtls"
	"github.com/duetkit/duet/kit/mtls/mtlstest"
	"github.com/duetkit/duet/kit/sqldb/sqldbtest"

	"github.com/duetkit/duet/internal/logbuffer"
	"github.com/duetkit/duet/internal/system"
)

// process is one `duet serve` child.
type process struct {
	cmd     *exec.Cmd
	stderr  *logbuffer.Buffer
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
	p := &process{cmd: cmd, stderr: &logbuffer.Buffer{}}
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

// TestServeEachComponentInItsOwnProcess runs the five services and the
// gateway as six processes talking gRPC over loopback, with mutual TLS,
// each process its own certificate, and events over NATS,
// on PostgreSQL when DUET_TEST_POSTGRES_URL is set (SQLite files otherwise)
// and on the machine's NATS when DUET_TEST_NATS_URL is set (a NATS server in
// the test otherwise); places orders through REST, sees the events arrive,
// refuses callers without a certificate, and callers README's access
// policy does not name, runs the commands that call services with one,
// then stops every process with SIGTERM.
func TestServeEachComponentInItsOwnProcess(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	dbFlags := func() []string {
		if url := sqldbtest.URLs(t)["postgres"]; url != "" {
			return []string{"--database-url", url}
		}
		return []string{"--data-dir", t.TempDir()}
	}
	natsFlags := testNATS(t)
	ca := mtlstest.NewCA(t, "duet test")
	// tlsFlags gives a process a certificate of its own, named for what
	// it is (the README's policy knows the callers by these names) and
	// for the address every peer dials.
	tlsFlags := func(name string) []string {
		f := ca.Write(t, t.TempDir(), 0, []string{name, "127.0.0.1"})
		return []string{"--tls-cert", f.CertFile, "--tls-key", f.KeyFile, "--tls-ca", f.CAFile}
	}
	policy := filepath.Join(t.TempDir(), "policy.json")
	if err := os.WriteFile(policy, []byte(readmeAccessPolicy(t)), 0o600); err != nil {
		t.Fatal(err)
	}
	// End users' tokens are checked by every service; the saga and the
	// operator's commands call by certificate name, without one.
	issuer, keys := testIssuer(t, "")
	signFor := func(subject string, scopes ...string) string {
		t.Helper()
		token, err := issuer.Sign(devissuer.Claims{Subject: subject, Audience: []string{"duet"}, Scopes: scopes})
		if err != nil {
			t.Fatal(err)
		}
		return "Bearer " + token
	}
	admin := signFor("0b0d5c4e-5d35-4c6a-9a0e-1f6f3f6b1a0f", system.AdminScope)
	// withTLS gives a service its certificate, the README's policy and
	// the token flags.
	withTLS := func(name string, flags ...string) []string {
		return append(append(tlsFlags(name), "--access-policy", policy,
			"--auth-keys", keys, "--auth-issuer", testIssuerName, "--auth-trusted", "order,operator"), flags...)
	}

	user := startComponent(t, ctx, "user", withTLS("user", append(dbFlags(), natsFlags...)...)...)
	payment := startComponent(t, ctx, "payment", withTLS("payment", append(dbFlags(), natsFlags...)...)...)
	inventory := startComponent(t, ctx, "inventory", withTLS("inventory", dbFlags()...)...)
	notification := startComponent(t, ctx, "notification", withTLS("notification", append(dbFlags(), natsFlags...)...)...)
	order := startComponent(t, ctx, "order", withTLS("order", append(append(dbFlags(), natsFlags...),
		"--user-target", "dns:///"+user.addr, "--payment-target", payment.addr, "--inventory-target", inventory.addr,
		"--metrics-addr", "127.0.0.1:0")...)...)
	gateway := startComponent(t, ctx, "gateway", append(tlsFlags("gateway"), "--auth-keys", keys, "--auth-issuer", testIssuerName,
		"--user-target", user.addr, "--order-target", order.addr, "--payment-target", payment.addr,
		"--inventory-target", inventory.addr, "--notification-target", notification.addr)...)
	base := "http://" + gateway.addr

	sendAs := func(authorization, method, path, body string) (int, map[string]any) {
		t.Helper()
		code, _, raw := send(t, ctx, method, base+path, authorization, body)
		var b map[string]any
		json.Unmarshal(raw, &b) // an answer that is not JSON reads as empty
		return code, b
	}
	if status, b := sendAs(admin, "POST", "/v1/products", `{"sku":"A","name":"A","price":{"currencyCode":"EUR","units":"700"},"stock":5}`); status != 200 {
		t.Fatalf("create product: %d %v", status, b)
	}
	status, b := sendAs("", "POST", "/v1/users", `{"email":"proc@example.com","name":"Proc"}`)
	if status != 200 {
		t.Fatalf("create user: %d %v", status, b)
	}
	userID := b["user"].(map[string]any)["id"].(string)
	// The user's own token: the services check that its subject is the
	// user whose data a call reaches.
	token := signFor(userID)
	sendUser := func(method, path, body string) (int, map[string]any) {
		return sendAs(token, method, path, body)
	}
	// tok_nope, a token the payment service does not know, takes the
	// saga through CancelCharge: every method the policy lets it call.
	var orderID string
	for pay, want := range map[string]string{"tok_approve": "ORDER_STATUS_CONFIRMED", "tok_decline": "ORDER_STATUS_CANCELLED", "tok_nope": "ORDER_STATUS_CANCELLED"} {
		status, b := sendUser("POST", "/v1/orders", fmt.Sprintf(`{"userId":%q,"items":[{"sku":"A","quantity":1}],"paymentToken":%q,"idempotencyKey":%q,"wait":true}`, userID, pay, pay))
		if status != 200 || b["order"].(map[string]any)["status"] != want {
			t.Fatalf("order with %s: %d %v, want %s", pay, status, b, want)
		}
		orderID = b["order"].(map[string]any)["id"].(string)
	}
	if status, b := sendUser("GET", "/v1/orders/"+orderID, ""); status != 200 {
		t.Errorf("GET /v1/orders/%s with its user's token: %d %v", orderID, status, b)
	}
	// Another user's token reaches none of it, through the gateway and
	// each service's rules.
	stranger := signFor("0b0d5c4e-5d35-4c6a-9a0e-1f6f3f6b1a0e")
	for _, call := range []struct{ method, path, body string }{
		{"GET", "/v1/users/" + userID, ""},
		{"GET", "/v1/users/" + userID + "/orders", ""},
		{"GET", "/v1/users/" + userID + "/notifications", ""},
		{"GET", "/v1/orders/" + orderID, ""},
		{"POST", "/v1/orders", fmt.Sprintf(`{"userId":%q,"items":[{"sku":"A","quantity":1}],"paymentToken":"tok_approve","idempotencyKey":"stranger"}`, userID)},
	} {
		if status, b := sendAs(stranger, call.method, call.path, call.body); status != http.StatusForbidden || !strings.Contains(fmt.Sprint(b), authz.ReasonNotPermitted) {
			t.Errorf("%s %s with another user's token: %d %v, want 403 %s", call.method, call.path, status, b, authz.ReasonNotPermitted)
		}
	}
	for _, url := range []string{base + "/readyz", "http://" + order.metrics + "/readyz", "http://" + order.metrics + "/metrics"} {
		resp, err := testClient.Get(url)
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
	// Without a token the gateway refuses a REST caller (the services,
	// which check too, behind it: TestServeEndUserTokens); the saga's
	// calls (by the order service's certificate) went through above.
	if status, b := sendAs("", "GET", "/v1/users/"+userID+"/orders", ""); status != http.StatusUnauthorized || !strings.Contains(fmt.Sprint(b), authn.ReasonTokenMissing) {
		t.Errorf("orders without a token: %d %v, want 401 %s", status, b, authn.ReasonTokenMissing)
	}
	// Events cross processes: user -> NATS -> notification, order -> NATS -> notification.
	want := 4 // welcome, confirmed, cancelled twice
	var got int
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		_, b := sendUser("GET", "/v1/users/"+userID+"/notifications", "")
		notes, _ := b["notifications"].([]any)
		if got = len(notes); got >= want {
			break
		}
	}
	if got != want {
		t.Errorf("notifications = %d, want %d", got, want)
	}

	// The services refuse callers without a certificate the CA signed.
	for _, p := range []*process{user, order, payment, inventory, notification} {
		conn, err := grpc.NewClient(p.addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			t.Fatal(err)
		}
		_, err = healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{})
		conn.Close()
		if grpcstatus.Code(err) != codes.Unavailable {
			t.Errorf("%v answered a plaintext caller: %v", p.cmd.Args[1:3], err)
		}
	}
	// The policy: a certificate it does not name is refused (health
	// answered), and the order service's may make the saga's calls only.
	for _, c := range []struct {
		caller, service string
		call            func(context.Context, *grpc.ClientConn) error
	}{
		{"intruder", "user", func(ctx context.Context, conn *grpc.ClientConn) error {
			_, err := userv1.NewUserServiceClient(conn).GetUser(ctx, &userv1.GetUserRequest{Id: userID})
			return err
		}},
		{"order", "user", func(ctx context.Context, conn *grpc.ClientConn) error {
			_, err := userv1.NewUserServiceClient(conn).ListUsers(ctx, &userv1.ListUsersRequest{})
			return err
		}},
		{"order", "payment", func(ctx context.Context, conn *grpc.ClientConn) error {
			_, err := paymentv1.NewPaymentServiceClient(conn).Refund(ctx, &paymentv1.RefundRequest{Id: userID})
			return err
		}},
	} {
		addr := map[string]string{"user": user.addr, "payment": payment.addr}[c.service]
		conn := dialAs(t, ca, c.caller, addr)
		if err := c.call(ctx, conn); grpcstatus.Code(err) != codes.PermissionDenied || !apierr.Is(err, access.ReasonCallerNotAllowed) {
			t.Errorf("%s calling %s: %v, want PERMISSION_DENIED %s", c.caller, c.service, err, access.ReasonCallerNotAllowed)
		}
		if _, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{}); err != nil {
			t.Errorf("%s checking %s's health: %v", c.caller, c.service, err)
		}
	}
	// Through the gateway, the policy's deny rule: no charge but an order's.
	if status, b := sendUser("POST", "/v1/payments", `{"amount":{"currencyCode":"EUR","units":"5"},"paymentMethodToken":"tok_approve","idempotencyKey":"rest-charge"}`); status != http.StatusForbidden || !strings.Contains(fmt.Sprint(b), access.ReasonCallerNotAllowed) {
		t.Errorf("REST charge: %d %v, want 403 %s", status, b, access.ReasonCallerNotAllowed)
	}
	// The commands that call a service do so with the same flags.
	confirmed := ""
	if _, b := sendUser("GET", "/v1/users/"+userID+"/orders", ""); b != nil {
		for _, o := range b["orders"].([]any) {
			if o := o.(map[string]any); o["status"] == "ORDER_STATUS_CONFIRMED" {
				confirmed = o["id"].(string)
			}
		}
	}
	csv := filepath.Join(t.TempDir(), "stock.csv")
	if err := os.WriteFile(csv, []byte("sku,name,price,currency,stock\nB,B,100,EUR,3\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	commands := []struct {
		args []string
		want string
	}{
		{[]string{"order", "watch", "--order-target", order.addr, confirmed}, "CONFIRMED"},
		{[]string{"stock", "import", "--inventory-target", inventory.addr, csv}, "applied 1"},
	}
	for _, c := range commands {
		var stdout, stderr strings.Builder
		withCert := append(append(c.args[:2:2], tlsFlags("operator")...), c.args[2:]...)
		if err := run(ctx, withCert, &stdout, &stderr); err != nil || !strings.Contains(stdout.String(), c.want) {
			t.Errorf("duet %v: %v; stdout:\n%s", c.args[:2], err, stdout.String())
		}
		short, cancel := context.WithTimeout(ctx, 2*time.Second)
		err := run(short, c.args, &stdout, &stderr)
		cancel()
		if err == nil {
			t.Errorf("duet %v without a certificate succeeded", c.args[:2])
		}
	}

	// Edge first, then inwards; each drains and exits 0.
	for _, p := range []*process{gateway, order, notification, inventory, payment, user} {
		if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
		if err := p.cmd.Wait(); err != nil {
			t.Errorf("%v exited with %v:\n%s", p.cmd.Args[1:3], err, p.stderr.String())
		}
	}
	// Every hop logged the order requests under one request id (the
	// stranger's, refused, aside).
	var ids []string
	for _, line := range strings.Split(gateway.stderr.String(), "\n") {
		var m map[string]any
		if json.Unmarshal([]byte(line), &m) == nil && m["path"] == "/v1/orders" && m["status"] == float64(http.StatusOK) {
			ids = append(ids, m["request_id"].(string))
		}
	}
	if len(ids) != 3 {
		t.Fatalf("gateway logged %d order requests, want 3", len(ids))
	}
	for _, p := range []*process{order, user, payment, inventory} {
		if !strings.Contains(p.stderr.String(), ids[0]) {
			t.Errorf("%v has no log line with request id %s", p.cmd.Args[1:3], ids[0])
		}
	}
}

// TestServeNotServingDelay: a component run with --not-serving-delay and
// told to stop reports not ready at once and goes on serving through the
// delay, for balancers that poll readiness to take it out of rotation
// first: the gateway's /readyz says "shutting down" while its routes are
// answered, the inventory service's /readyz answers 503 while a caller
// that does not watch its health (as a proxy polling /readyz does not)
// is answered. Then each drains and exits 0. (kit/client callers, which
// watch health, leave the service as soon as it stops.)
func TestServeNotServingDelay(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	const delay = 5 * time.Second
	inventory := startComponent(t, ctx, "inventory", "--data-dir", t.TempDir(), "--metrics-addr", "127.0.0.1:0",
		"--not-serving-delay", delay.String())
	// The gateway needs user, order and payment targets; it dials them
	// only when called, and is called here for inventory alone.
	gateway := startComponent(t, ctx, "gateway", "--not-serving-delay", delay.String(),
		"--user-target", inventory.addr, "--order-target", inventory.addr, "--payment-target", inventory.addr,
		"--inventory-target", inventory.addr)
	conn, err := grpc.NewClient(inventory.addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	direct := inventoryv1.NewInventoryServiceClient(conn)

	get := func(url string) (int, string) { t.Helper(); return httpGet(t, ctx, url) }
	waitFor := func(what, url string, want func(code int, body string) bool) {
		t.Helper()
		for deadline := time.Now().Add(delay / 2); ; time.Sleep(10 * time.Millisecond) {
			code, body := get(url)
			if want(code, body) {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: %d %s", what, code, body)
			}
		}
	}
	stop := func(p *process) {
		t.Helper()
		if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
	}
	products := "http://" + gateway.addr + "/v1/products"
	invReady := "http://" + inventory.metrics + "/readyz"
	if code, body := get(invReady); code != 200 {
		t.Fatalf("inventory /readyz before the stop: %d %s", code, body)
	}

	stop(gateway)
	waitFor("gateway's /readyz never said it was shutting down", "http://"+gateway.addr+"/readyz", func(code int, body string) bool {
		return code == 503 && strings.Contains(body, `"shutting down"`)
	})
	if code, body := get(products); code != 200 {
		t.Errorf("GET /v1/products through the gateway's delay: %d %s", code, body)
	}

	stop(inventory)
	waitFor("inventory's /readyz never answered 503 after the stop", invReady, func(code int, _ string) bool { return code == 503 })
	if _, err := direct.ListProducts(ctx, &inventoryv1.ListProductsRequest{}); err != nil {
		t.Errorf("ListProducts through the inventory's delay: %v", err)
	}

	for _, p := range []*process{gateway, inventory} {
		if err := p.cmd.Wait(); err != nil {
			t.Errorf("%v exited with %v:\n%s", p.cmd.Args[1:3], err, p.stderr.String())
		}
	}
}

// TestServeGatewayMetricsAddr: with --metrics-addr the gateway serves
// /metrics there, with /healthz and /readyz, and no longer on the public
// API's port, where the path is then the API's 404.
func TestServeGatewayMetricsAddr(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	inventory := startComponent(t, ctx, "inventory", "--data-dir", t.TempDir())
	gateway := startComponent(t, ctx, "gateway", "--metrics-addr", "127.0.0.1:0",
		"--user-target", inventory.addr, "--order-target", inventory.addr, "--payment-target", inventory.addr,
		"--inventory-target", inventory.addr)
	if gateway.metrics == "" {
		t.Fatalf("the gateway named no metrics address:\n%s", gateway.stderr.String())
	}
	get := func(url string) (int, string) { t.Helper(); return httpGet(t, ctx, url) }
	if code, body := get("http://" + gateway.addr + "/v1/products"); code != 200 {
		t.Fatalf("GET /v1/products: %d %s", code, body)
	}
	for _, tt := range []struct {
		url      string
		wantCode int
		want     string
	}{
		{"http://" + gateway.metrics + "/metrics", 200, `grpc_client_handled_total{grpc_code="OK",grpc_method="ListProducts"`},
		{"http://" + gateway.metrics + "/healthz", 200, `"ok"`},
		{"http://" + gateway.metrics + "/readyz", 200, `"ready"`},
		{"http://" + gateway.addr + "/metrics", 404, "ROUTE_NOT_FOUND"},
	} {
		if code, body := get(tt.url); code != tt.wantCode || !strings.Contains(body, tt.want) {
			t.Errorf("GET %s: %d, want %d with %s; body:\n%.300s", tt.url, code, tt.wantCode, tt.want, body)
		}
	}

	// Stopping, with no --not-serving-delay: while a request whose body
	// has not all come holds the drain, /readyz on the metrics address,
	// which outlives the API's listener, says the gateway is shutting
	// down.
	held, err := net.Dial("tcp", gateway.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	// Expect: 100-continue tells when the handler has begun reading the
	// body: a request not yet begun would not hold the drain.
	if _, err := fmt.Fprint(held, "POST /v1/products HTTP/1.1\r\nHost: duet\r\nContent-Type: application/json\r\nContent-Length: 100\r\nExpect: 100-continue\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	held.SetReadDeadline(time.Now().Add(10 * time.Second))
	if line, err := bufio.NewReader(held).ReadString('\n'); err != nil || !strings.Contains(line, "100 Continue") {
		t.Fatalf("waiting for 100 Continue: %q, %v", line, err)
	}
	if _, err := fmt.Fprint(held, "{"); err != nil {
		t.Fatal(err)
	}
	if err := gateway.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		code, body := get("http://" + gateway.metrics + "/readyz")
		if code == 503 && strings.Contains(body, `"shutting down"`) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("/readyz on the metrics address while the gateway drains: %d %s", code, body)
		}
	}
	held.Close()
	for _, p := range []*process{gateway, inventory} {
		if p == inventory {
			if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
				t.Fatal(err)
			}
		}
		if err := p.cmd.Wait(); err != nil {
			t.Errorf("%v exited with %v:\n%s", p.cmd.Args[1:3], err, p.stderr.String())
		}
	}
}

// TestServeNotServingDelayKeepsWaits: through the order service's delay,
// a CreateOrder that waits for its order waits as ever, here until just
// before its deadline (its saga is held up by peers that are down),
// instead of being answered PENDING as soon as the stop begins.
func TestServeNotServingDelayKeepsWaits(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	const delay = 5 * time.Second
	down := "127.0.0.1:1" // nothing listens there: every saga step waits
	order := startComponent(t, ctx, "order", "--data-dir", t.TempDir(), "--not-serving-delay", delay.String(),
		"--user-target", down, "--payment-target", down, "--inventory-target", down, "--saga-step-timeout", "1m")
	conn, err := grpc.NewClient(order.addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()

	if err := order.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	health := healthpb.NewHealthClient(conn)
	for deadline := time.Now().Add(delay / 2); ; time.Sleep(10 * time.Millisecond) {
		resp, err := health.Check(ctx, &healthpb.HealthCheckRequest{})
		if err == nil && resp.GetStatus() == healthpb.HealthCheckResponse_NOT_SERVING {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the order service never reported NOT_SERVING after the stop: %v, %v", resp, err)
		}
	}
	const budget = 2 * time.Second
	callCtx, cancelCall := context.WithTimeout(ctx, budget)
	defer cancelCall()
	start := time.Now()
	resp, err := orderv1.NewOrderServiceClient(conn).CreateOrder(callCtx, &orderv1.CreateOrderRequest{
		UserId: "0190b7a0-4c7e-7a39-9a39-3f0e7ad7f201", Items: []*orderv1.LineItem{{Sku: "A", Quantity: 1}},
		PaymentToken: "tok_approve", IdempotencyKey: "wait-through-the-delay", Wait: true,
	})
	// The wait ends a tenth of the time left before the deadline, and
	// answers the order as it is then.
	if elapsed := time.Since(start); err != nil || elapsed < budget/2 {
		t.Errorf("CreateOrder with wait during the delay answered after %v: %v, %v; want the order after waiting most of %v", elapsed, resp.GetOrder().GetStatus(), err, budget)
	}
	if err := order.cmd.Wait(); err != nil {
		t.Errorf("order exited with %v:\n%s", err, order.stderr.String())
	}
}

// httpGet GETs url and returns the status and the body; a request that
// fails fails the test.
func httpGet(t *testing.T, ctx context.Context, url string) (int, string) {
	t.Helper()
	req, _ := http.NewRequestWithContext(ctx, "GET", url, nil)
	resp, err := testClient.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body)
}

// testNATS returns the duet flags that put a test's events on a stream of
// its own: on the machine's NATS when DUET_TEST_NATS_URL is set (the stream
// is deleted when the test ends), else on a NATS server the test starts.
func testNATS(t *testing.T) []string {
	t.Helper()
	natsURL := os.Getenv(eventstest.NATSEnv)
	if natsURL == "" {
		srv, err := events.StartServer(events.ServerConfig{Dir: t.TempDir(), Listen: "127.0.0.1:0"})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(srv.Shutdown)
		natsURL = srv.ClientURL()
	}
	id := eventstest.Unique(t)
	stream := "TEST_" + id
	t.Cleanup(func() { deleteStream(natsURL, stream) })
	return []string{"--nats-url", natsURL, "--event-stream", stream, "--event-prefix", "t" + id}
}

// deleteStream removes a test's stream from a shared NATS server.
func deleteStream(url, stream string) {
	nc, err := events.Connect(url, "cleanup")
	if err != nil {
		return
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = js.DeleteStream(ctx, stream)
}

// readmeAccessPolicy returns the access policy README.md gives for the
// shop.
func readmeAccessPolicy(t *testing.T) string {
	t.Helper()
	const start = "{\n  \"name\": \"duet-shop\""
	return start + readmeBlock(t, "```json\n"+start)
}

// dialAs connects to addr with a certificate ca issues to name.
func dialAs(t *testing.T, ca *mtlstest.CA, name, addr string) *grpc.ClientConn {
	t.Helper()
	cfg := ca.Write(t, t.TempDir(), 0, []string{name})
	creds, err := mtls.Load(t.Context(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(creds.Close)
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(creds.Client()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}
