package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/duetkit/duet/kit/events/eventstest"
	"github.com/duetkit/duet/kit/sqldb"
	"github.com/duetkit/duet/kit/sqldb/sqldbtest"

	"github.com/duetkit/duet/internal/logbuffer"
)

// The chaos test's workload. The approved orders ask for about half as
// much again as the chaosStock units of each product, so every outcome
// occurs: CONFIRMED, CANCELLED (declined, insufficient funds, a peer down
// past the saga's step bound) and REJECTED (out of stock, in the last third
// or so). Each client thinks up to chaosThink between orders, which spreads
// the orders, and so the sagas, over half a minute of chaos.
const (
	chaosOrders  = 300
	chaosClients = 8
	chaosUsers   = 4
	chaosStock   = 100
	chaosThink   = 1200 * time.Millisecond
	// chaosLoadFor bounds the placing of orders, and so the chaos.
	chaosLoadFor = 60 * time.Second
	// chaosSettleFor bounds the wait for every order to end, and then for
	// their notifications.
	chaosSettleFor = 90 * time.Second
	// chaosSeedEnv, when set, fixes the seed of the orders' contents and of
	// the chaos (which service is killed when, for how long). Timing still
	// differs from run to run.
	chaosSeedEnv = "DUET_CHAOS_SEED"
	// chaosLogDirEnv, when set, names a directory where the components'
	// logs are written when the test fails.
	chaosLogDirEnv = "DUET_CHAOS_LOG_DIR"
)

var chaosProducts = []struct {
	sku   string
	price int64
}{{"CHAOS-A", 1999}, {"CHAOS-B", 550}, {"CHAOS-C", 12000}}

var chaosTokens = []string{"tok_approve", "tok_approve", "tok_decline", "tok_insufficient"}

// TestChaosKillServicesUnderLoad runs the six components as processes on
// fixed loopback ports, places hundreds of orders through the gateway while
// SIGKILLing the order, payment, inventory and user services at random and
// restarting them, then checks the shop's invariants once every order has
// ended: every order terminal, stock conserved, charges equal to confirmed
// orders, one notification per order outcome. What it asserts never
// depends on timing, only on generous deadlines: timing decides which
// orders end how, never whether the books balance.
func TestChaosKillServicesUnderLoad(t *testing.T) {
	if testing.Short() {
		t.Skip("chaos test: runs six processes for about a minute")
	}
	began := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()

	seed := uint64(time.Now().UnixNano())
	if s := os.Getenv(chaosSeedEnv); s != "" {
		var err error
		if seed, err = strconv.ParseUint(s, 10, 64); err != nil {
			t.Fatalf("%s=%q: %v", chaosSeedEnv, s, err)
		}
	}
	t.Logf("chaos seed %d (rerun with %s=%d)", seed, chaosSeedEnv, seed)

	// Databases: one PostgreSQL schema or SQLite file per service, kept
	// across restarts.
	dbURL := map[string]string{}
	for _, c := range []string{"user", "payment", "inventory", "notification", "order"} {
		urls := sqldbtest.URLs(t)
		if u := urls["postgres"]; u != "" {
			dbURL[c] = u
		} else {
			dbURL[c] = urls["sqlite"]
		}
	}
	natsFlags := testNATS(t)
	id := eventstest.Unique(t) // keeps emails and keys apart on a shared database

	// Fixed addresses, so that a restarted service is where its peers
	// expect it.
	ports, err := freePorts(6)
	if err != nil {
		t.Fatal(err)
	}
	addr := map[string]string{}
	for i, c := range []string{"user", "payment", "inventory", "notification", "order", "gateway"} {
		addr[c] = net.JoinHostPort("127.0.0.1", strconv.Itoa(ports[i]))
	}
	common := []string{"--drain-timeout", "5s"}
	service := func(name string, extra ...string) *chaosProc {
		args := append(slices.Clone(common), "--database-url", dbURL[name])
		return &chaosProc{name: name, addr: addr[name], args: append(args, extra...), logs: &logbuffer.Buffer{}}
	}
	procs := map[string]*chaosProc{
		"user":         service("user", natsFlags...),
		"payment":      service("payment", natsFlags...),
		"inventory":    service("inventory"),
		"notification": service("notification", natsFlags...),
		"order": service("order", append(slices.Clone(natsFlags),
			"--user-target", addr["user"], "--payment-target", addr["payment"], "--inventory-target", addr["inventory"],
			"--saga-step-timeout", "3s")...),
		"gateway": {name: "gateway", addr: addr["gateway"], logs: &logbuffer.Buffer{}, args: append(slices.Clone(common),
			"--user-target", addr["user"], "--order-target", addr["order"], "--payment-target", addr["payment"],
			"--inventory-target", addr["inventory"], "--notification-target", addr["notification"])},
	}
	startOrder := []string{"user", "payment", "inventory", "notification", "order", "gateway"}
	t.Cleanup(func() {
		for _, p := range procs {
			p.kill()
		}
		if t.Failed() {
			saveChaosLogs(t, procs)
		}
	})
	for _, name := range startOrder {
		if err := procs[name].start(ctx); err != nil {
			t.Fatal(err)
		}
	}
	api := &chaosAPI{base: "http://" + addr["gateway"], client: &http.Client{
		Transport: &http.Transport{MaxIdleConnsPerHost: 2 * chaosClients, IdleConnTimeout: 30 * time.Second},
	}}
	defer api.client.CloseIdleConnections()

	// The shop: products with known stock, and a few users.
	for _, p := range chaosProducts {
		body := fmt.Sprintf(`{"sku":%q,"name":"Chaos %s","price":{"currencyCode":"USD","units":"%d"},"stock":%d}`, p.sku, p.sku, p.price, chaosStock)
		if err := api.do(ctx, "POST", "/v1/products", body, nil); err != nil {
			t.Fatalf("create product %s: %v", p.sku, err)
		}
	}
	var users []string
	for i := range chaosUsers {
		var out struct {
			User struct {
				ID string `json:"id"`
			} `json:"user"`
		}
		body := fmt.Sprintf(`{"email":"chaos-%s-%d@example.com","name":"Chaos %d"}`, id, i, i)
		if err := api.do(ctx, "POST", "/v1/users", body, &out); err != nil {
			t.Fatalf("create user: %v", err)
		}
		users = append(users, out.User.ID)
	}
	setupDone := time.Now()

	// Chaos: kill one of the saga's services, restart it after a pause
	// (mostly short, sometimes past the saga's step bound), let it run a
	// while, again, until told to stop.
	victims := []string{"order", "payment", "inventory", "user"}
	kills := map[string]int{}
	longOutages := 0
	var chaosErr error
	stopChaos := make(chan struct{})
	chaosDone := make(chan struct{})
	go func() {
		defer close(chaosDone)
		rng := rand.New(rand.NewPCG(seed, 0xc4a05))
		for {
			if !waitFor(ctx, stopChaos, time.Duration(200+rng.IntN(800))*time.Millisecond) {
				return
			}
			victim := victims[rng.IntN(len(victims))]
			pause := time.Duration(100+rng.IntN(700)) * time.Millisecond
			if rng.IntN(6) == 0 {
				// Now and then an outage past the saga's step bound (3s),
				// so that sagas give steps up and compensate: release
				// reservations, cancel charges, refund.
				pause = time.Duration(3500+rng.IntN(1500)) * time.Millisecond
				longOutages++
			}
			procs[victim].kill()
			kills[victim]++
			t.Logf("chaos %.1fs: killed %s, restarting in %v", time.Since(setupDone).Seconds(), victim, pause)
			waitFor(ctx, nil, pause)
			if err := procs[victim].start(ctx); err != nil {
				chaosErr = err
				return
			}
		}
	}()

	// Load: chaosClients clients place chaosOrders orders without waiting
	// for their outcome, each under its own idempotency key, retrying
	// failures that may not have reached the order service.
	loadCtx, stopLoad := context.WithTimeout(ctx, chaosLoadFor)
	acked := make([]string, chaosOrders) // order id by request number, once answered
	var next atomic.Int64
	var attempts, gaveUp atomic.Int64
	var unexpected sync.Map // request number -> error
	var wg sync.WaitGroup
	for c := range chaosClients {
		wg.Go(func() {
			think := rand.New(rand.NewPCG(seed, 0x7c1e+uint64(c)))
			for {
				if !waitFor(loadCtx, nil, time.Duration(think.Int64N(int64(chaosThink)))) {
					return
				}
				n := int(next.Add(1) - 1)
				if n >= chaosOrders || loadCtx.Err() != nil {
					return
				}
				body := chaosOrderBody(seed, n, id, users)
				orderID, tries, err := api.placeOrder(loadCtx, body)
				attempts.Add(int64(tries))
				switch {
				case err == nil:
					acked[n] = orderID
				case loadCtx.Err() != nil || errors.Is(err, errGaveUp):
					gaveUp.Add(1)
				default:
					unexpected.Store(n, err)
				}
			}
		})
	}
	wg.Wait()
	stopLoad()
	close(stopChaos)
	<-chaosDone
	loadDone := time.Now()
	if chaosErr != nil {
		t.Fatalf("restart during chaos: %v", chaosErr)
	}
	unexpected.Range(func(k, v any) bool {
		t.Errorf("order request %d: %v", k, v)
		return true
	})

	// Every process is up: the victims were restarted; nothing else may
	// have died.
	for _, name := range startOrder {
		p := procs[name]
		if msg := p.unexpectedExits(); msg != "" {
			t.Errorf("%s exited by itself:\n%s", name, msg)
		}
		if !p.running() {
			if err := p.start(ctx); err != nil {
				t.Fatal(err)
			}
		}
	}

	// The gateway reaches every one of them again. A service restarted
	// last is reached at the gateway's next reconnect attempt, up to
	// kit/client's 5 s backoff after it came back; until then the
	// gateway answers 503 with Retry-After, which is right, and the
	// checks below would read it as a failure.
	readyBy := time.Now().Add(chaosSettleFor)
	for {
		err := api.do(ctx, "GET", "/readyz", "", nil)
		if err == nil {
			break
		}
		if time.Now().After(readyBy) {
			t.Fatalf("gateway not ready %v after the chaos: %v", chaosSettleFor, err)
		}
		waitFor(ctx, nil, 100*time.Millisecond)
	}

	// Every order ends.
	var orders []chaosOrder
	deadline := time.Now().Add(chaosSettleFor)
	lastReport := time.Now()
	for {
		orders, err = api.allOrders(ctx, users)
		pending := 0
		steps := map[string]int{}
		if err == nil {
			for _, o := range orders {
				if !o.terminal() {
					pending++
					steps[strings.TrimPrefix(o.Step, "ORDER_STEP_")]++
				}
			}
		}
		if err == nil && pending == 0 {
			break
		}
		if time.Since(lastReport) >= 5*time.Second {
			lastReport = time.Now()
			t.Logf("settling %.0fs: %d orders unfinished, at steps %s (list error: %v)",
				time.Since(loadDone).Seconds(), pending, formatCounts(steps), err)
		}
		if time.Now().After(deadline) {
			if err != nil {
				t.Fatalf("list orders: %v", err)
			}
			for _, o := range orders {
				if !o.terminal() {
					t.Errorf("order %s still %s at step %s", o.ID, o.Status, o.Step)
				}
			}
			t.Fatalf("%d of %d orders not terminal after %v", pending, len(orders), chaosSettleFor)
		}
		waitFor(ctx, nil, 250*time.Millisecond)
	}
	settled := time.Now()

	// Each answered order is listed, and each idempotency key made one order.
	byID := map[string]chaosOrder{}
	byKey := map[string]int{}
	for _, o := range orders {
		byID[o.ID] = o
		byKey[o.IdempotencyKey]++
	}
	for key, n := range byKey {
		if n != 1 {
			t.Errorf("idempotency key %s made %d orders", key, n)
		}
	}
	ackedCount := 0
	for n, oid := range acked {
		if oid == "" {
			continue
		}
		ackedCount++
		if _, ok := byID[oid]; !ok {
			t.Errorf("order %s (request %d) was answered but is not listed", oid, n)
		}
	}
	if len(orders) > chaosOrders {
		t.Errorf("%d orders listed, more than the %d placed", len(orders), chaosOrders)
	}

	// Stock is conserved: what was stocked is available, reserved, or sold
	// to a confirmed order; and nothing stays reserved.
	sold := map[string]int64{}
	for _, o := range orders {
		if o.Status == "ORDER_STATUS_CONFIRMED" {
			for _, it := range o.Items {
				sold[it.SKU] += int64(it.Quantity)
			}
		}
	}
	for _, p := range chaosProducts {
		var out struct {
			Product struct {
				Available jsonInt `json:"available"`
				Reserved  jsonInt `json:"reserved"`
			} `json:"product"`
		}
		if err := api.do(ctx, "GET", "/v1/products/"+p.sku, "", &out); err != nil {
			t.Fatalf("get product %s: %v", p.sku, err)
		}
		avail, res := int64(out.Product.Available), int64(out.Product.Reserved)
		if avail+res+sold[p.sku] != chaosStock || res != 0 || avail < 0 {
			t.Errorf("stock of %s: available %d + reserved %d + sold %d != %d stocked (reserved must be 0)",
				p.sku, avail, res, sold[p.sku], chaosStock)
		}
	}

	// A refund the provider has not confirmed (a payment process killed
	// between recording it and the provider's answer) is asked again, by
	// the saga's next CancelCharge or the service's retries: wait for it,
	// as its money is not back yet, before the books are checked.
	for deadline := time.Now().Add(chaosSettleFor); ; {
		pending := readPaymentLedger(t, ctx, dbURL["payment"]).pending
		if pending == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Errorf("%d payments still have refunds the provider has not confirmed", pending)
			break
		}
		time.Sleep(100 * time.Millisecond)
	}

	// Charges equal confirmed orders, seen from the orders: a confirmed
	// order's payment is captured for its total, nothing else keeps money.
	confirmed := 0
	for _, o := range orders {
		if o.Status == "ORDER_STATUS_CONFIRMED" {
			confirmed++
		}
		if o.PaymentID == "" {
			if o.Status == "ORDER_STATUS_CONFIRMED" {
				t.Errorf("confirmed order %s has no payment", o.ID)
			}
			continue
		}
		var out struct {
			Payment chaosPayment `json:"payment"`
		}
		if err := api.do(ctx, "GET", "/v1/payments/"+o.PaymentID, "", &out); err != nil {
			t.Errorf("payment %s of order %s: %v", o.PaymentID, o.ID, err)
			continue
		}
		pay := out.Payment
		switch {
		case pay.Reference != o.ID:
			t.Errorf("order %s names payment %s, which is for %q", o.ID, pay.ID, pay.Reference)
		case o.Status == "ORDER_STATUS_CONFIRMED":
			if pay.Status != "PAYMENT_STATUS_CAPTURED" || pay.Refunded.Units != 0 || pay.Amount != o.Total {
				t.Errorf("confirmed order %s (total %v): payment %s is %s, %v refunded of %v",
					o.ID, o.Total, pay.ID, pay.Status, pay.Refunded, pay.Amount)
			}
		default:
			if pay.netUnits() != 0 {
				t.Errorf("%s order %s (%s): payment %s is %s, keeps %d of %v",
					o.Status, o.ID, o.FailureReason, pay.ID, pay.Status, pay.netUnits(), pay.Amount)
			}
		}
	}
	// And seen from the payment service's books, which also hold charges
	// no order names: every payment that keeps money pays for exactly one
	// confirmed order, its whole total.
	ledger := readPaymentLedger(t, ctx, dbURL["payment"])
	netCaptured := 0
	for _, row := range ledger.payments {
		if row.net() == 0 {
			continue
		}
		netCaptured++
		o, ok := byID[row.reference]
		switch {
		case !ok:
			t.Errorf("payment %s keeps %d %s for %q, not an order of this test", row.id, row.net(), row.currency, row.reference)
		case o.Status != "ORDER_STATUS_CONFIRMED":
			t.Errorf("payment %s keeps %d %s for %s order %s (%s; order names payment %q)",
				row.id, row.net(), row.currency, o.Status, o.ID, o.FailureReason, o.PaymentID)
		case o.PaymentID != row.id:
			t.Errorf("payment %s keeps money for order %s, which names payment %q", row.id, o.ID, o.PaymentID)
		case row.net() != int64(o.Total.Units) || row.currency != o.Total.CurrencyCode:
			t.Errorf("payment %s keeps %d %s for order %s of total %v", row.id, row.net(), row.currency, o.ID, o.Total)
		}
	}
	if netCaptured != confirmed {
		t.Errorf("%d payments keep money, %d orders are confirmed", netCaptured, confirmed)
	}

	// One notification per order outcome, one welcome per user, one per
	// refund; none twice.
	wantKind := map[string]string{
		"ORDER_STATUS_CONFIRMED": "NOTIFICATION_KIND_ORDER_CONFIRMED",
		"ORDER_STATUS_CANCELLED": "NOTIFICATION_KIND_ORDER_CANCELLED",
		"ORDER_STATUS_REJECTED":  "NOTIFICATION_KIND_ORDER_REJECTED",
	}
	want := map[[2]string]int{} // kind, subject -> count
	for _, o := range orders {
		want[[2]string{wantKind[o.Status], o.ID}] = 1
	}
	for _, u := range users {
		want[[2]string{"NOTIFICATION_KIND_WELCOME", u}] = 1
	}
	for pid, n := range ledger.refunds {
		want[[2]string{"NOTIFICATION_KIND_REFUND", pid}] = n
	}
	var got map[[2]string]int
	var notes int
	deadline = time.Now().Add(chaosSettleFor)
	for {
		got, notes, err = api.allNotifications(ctx, users)
		complete := err == nil
		for k, n := range want {
			if got[k] < n {
				complete = false
			}
		}
		if complete || time.Now().After(deadline) {
			break
		}
		waitFor(ctx, nil, 250*time.Millisecond)
	}
	if err != nil {
		t.Fatalf("list notifications: %v", err)
	}
	missing, extra := 0, 0
	for k, n := range want {
		if got[k] != n {
			missing++
			if missing <= 20 {
				t.Errorf("%s notifications about %s: %d, want %d", k[0], k[1], got[k], n)
			}
		}
	}
	for k, n := range got {
		if _, ok := want[k]; !ok {
			extra++
			if extra <= 20 {
				t.Errorf("unexpected %d %s notification(s) about %s", n, k[0], k[1])
			}
		}
	}
	if missing+extra > 0 {
		t.Errorf("notifications: %d expected (kind, subject) pairs wrong, %d unexpected", missing, extra)
	}
	notified := time.Now()

	// The summary.
	statuses := map[string]int{}
	for _, o := range orders {
		k := strings.TrimPrefix(o.Status, "ORDER_STATUS_")
		if o.FailureReason != "" {
			k += "/" + o.FailureReason
		}
		statuses[k]++
	}
	t.Logf("orders: %d listed, %d answered, %d given up by the client, %d requests; by outcome: %s",
		len(orders), ackedCount, gaveUp.Load(), attempts.Load(), formatCounts(statuses))
	t.Logf("kills: %s (%d of them outages past the step bound); restarts: %s",
		formatCounts(kills), longOutages, restartCounts(procs, victims))
	t.Logf("stock sold: %s; payments: %d rows, %d keep money, %d refunded; notifications: %d",
		formatCounts(sold), len(ledger.payments), netCaptured, len(ledger.refunds), notes)
	t.Logf("time: setup %.1fs, load+chaos %.1fs, settle %.1fs, notifications %.1fs",
		setupDone.Sub(began).Seconds(), loadDone.Sub(setupDone).Seconds(), settled.Sub(loadDone).Seconds(), notified.Sub(settled).Seconds())

	// Every process survived the chaos well enough to drain and exit 0.
	for _, name := range []string{"gateway", "order", "notification", "inventory", "payment", "user"} {
		if err := procs[name].terminate(); err != nil {
			t.Errorf("%s after SIGTERM: %v", name, err)
		}
	}
}

// chaosOrderBody is the CreateOrder request number n: its contents come
// from the seed and n alone, whichever client sends it.
func chaosOrderBody(seed uint64, n int, runID string, users []string) string {
	rng := rand.New(rand.NewPCG(seed, uint64(n)))
	var items []string
	for _, i := range rng.Perm(len(chaosProducts))[:1+rng.IntN(2)] {
		items = append(items, fmt.Sprintf(`{"sku":%q,"quantity":%d}`, chaosProducts[i].sku, 1+rng.IntN(3)))
	}
	return fmt.Sprintf(`{"userId":%q,"items":[%s],"paymentToken":%q,"idempotencyKey":"chaos-%s-%d"}`,
		users[rng.IntN(len(users))], strings.Join(items, ","), chaosTokens[rng.IntN(len(chaosTokens))], runID, n)
}

// waitFor waits d, or until ctx ends or stop is closed; it reports whether
// the whole d passed.
func waitFor(ctx context.Context, stop <-chan struct{}, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-stop:
		return false
	case <-ctx.Done():
		return false
	}
}

// freePorts returns n free loopback TCP ports below the kernel's ephemeral
// range. A port from that range, once its service is killed, could be
// handed to an outgoing connection (to NATS, say) and stay taken for as
// long as the connection lives; a port below it can only be taken by a
// process that asks for it by number.
func freePorts(n int) ([]int, error) {
	low := 32768
	if b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range"); err == nil {
		if f := strings.Fields(string(b)); len(f) == 2 {
			if v, err := strconv.Atoi(f[0]); err == nil {
				low = v
			}
		}
	}
	const floor = 10000
	if low <= floor+1000 {
		// An unusual range: fall back to ports the kernel picks.
		var ports []int
		for range n {
			lis, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				return nil, err
			}
			ports = append(ports, lis.Addr().(*net.TCPAddr).Port)
			defer lis.Close()
		}
		return ports, nil
	}
	var ports []int
	for tries := 0; len(ports) < n && tries < 1000; tries++ {
		p := floor + rand.IntN(low-floor)
		if slices.Contains(ports, p) {
			continue
		}
		lis, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(p)))
		if err != nil {
			continue
		}
		lis.Close()
		ports = append(ports, p)
	}
	if len(ports) < n {
		return nil, fmt.Errorf("found only %d free ports below %d", len(ports), low)
	}
	return ports, nil
}

// chaosProc is one component run as `duet serve` on a fixed address,
// killed and restarted at will. Its logs accumulate across runs.
type chaosProc struct {
	name, addr string
	args       []string
	logs       *logbuffer.Buffer

	mu         sync.Mutex
	cmd        *exec.Cmd
	exited     chan struct{} // closed once the current run has exited
	killing    bool          // the current run is being stopped on purpose
	runs       int
	unexpected []string // how runs that exited by themselves ended
}

// start runs the component and waits until it serves. When its port is
// taken (by a process that asked for that port), it tries again a few
// times.
func (p *chaosProc) start(ctx context.Context) error {
	var err error
	for attempt := 1; attempt <= 10; attempt++ {
		if err = p.runOnce(ctx); err == nil || !strings.Contains(err.Error(), "address already in use") {
			return err
		}
		if !waitFor(ctx, nil, time.Duration(attempt)*200*time.Millisecond) {
			break
		}
	}
	return err
}

func (p *chaosProc) runOnce(ctx context.Context) error {
	exe, err := os.Executable()
	if err != nil {
		return err
	}
	cmd := exec.Command(exe, append([]string{"serve", p.name, "--listen", p.addr}, p.args...)...)
	cmd.Env = append(os.Environ(), "DUET_TEST_AS_DUET=1")
	pipe, err := cmd.StderrPipe()
	if err != nil {
		return err
	}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start %s: %w", p.name, err)
	}
	p.mu.Lock()
	p.runs++
	run := p.runs
	p.mu.Unlock()
	fmt.Fprintf(p.logs, "=== run %d of %s (pid %d)\n", run, p.name, cmd.Process.Pid)

	var this logbuffer.Buffer // this run's stderr
	ready, exited := make(chan struct{}), make(chan struct{})
	go func() {
		sc := bufio.NewScanner(pipe)
		sc.Buffer(make([]byte, 64<<10), 4<<20)
		serving := false
		for sc.Scan() {
			line := string(sc.Bytes()) + "\n"
			io.WriteString(&this, line)
			io.WriteString(p.logs, line)
			var m struct {
				Msg string `json:"msg"`
			}
			if !serving && json.Unmarshal(sc.Bytes(), &m) == nil && m.Msg == "serving" {
				serving = true
				close(ready)
			}
		}
		io.Copy(io.Discard, pipe)
		err := cmd.Wait()
		p.mu.Lock()
		if !p.killing || p.cmd != cmd {
			p.unexpected = append(p.unexpected, fmt.Sprintf("run %d: %v; last lines:\n%s", run, err, tail(this.String(), 15)))
		}
		p.mu.Unlock()
		close(exited)
	}()
	timer := time.NewTimer(60 * time.Second)
	defer timer.Stop()
	select {
	case <-ready:
		p.mu.Lock()
		p.cmd, p.exited, p.killing = cmd, exited, false
		p.mu.Unlock()
		return nil
	case <-exited:
		p.mu.Lock()
		p.unexpected = p.unexpected[:len(p.unexpected)-1] // reported here instead
		p.mu.Unlock()
		return fmt.Errorf("%s exited before serving on %s (%v):\n%s", p.name, p.addr, cmd.ProcessState, tail(this.String(), 15))
	case <-timer.C:
	case <-ctx.Done():
	}
	cmd.Process.Kill()
	<-exited
	return fmt.Errorf("%s did not serve on %s in time:\n%s", p.name, p.addr, tail(this.String(), 15))
}

// kill SIGKILLs the current run, if any, and waits until it has exited.
func (p *chaosProc) kill() {
	p.signal(syscall.SIGKILL)
}

func (p *chaosProc) signal(sig syscall.Signal) *exec.Cmd {
	p.mu.Lock()
	cmd, exited := p.cmd, p.exited
	if cmd == nil {
		p.mu.Unlock()
		return nil
	}
	p.killing = true
	p.mu.Unlock()
	select {
	case <-exited:
	default:
		cmd.Process.Signal(sig)
		<-exited
	}
	p.mu.Lock()
	p.cmd = nil
	p.mu.Unlock()
	return cmd
}

// terminate stops the current run with SIGTERM and reports how it exited.
func (p *chaosProc) terminate() error {
	p.mu.Lock()
	cmd := p.cmd
	p.mu.Unlock()
	if cmd == nil {
		return errors.New("not running")
	}
	done := make(chan struct{})
	go func() {
		p.signal(syscall.SIGTERM)
		close(done)
	}()
	timer := time.NewTimer(30 * time.Second)
	defer timer.Stop()
	select {
	case <-done:
		if !cmd.ProcessState.Success() {
			return fmt.Errorf("exited with %v:\n%s", cmd.ProcessState, tail(p.logs.String(), 15))
		}
		return nil
	case <-timer.C:
		cmd.Process.Kill()
		<-done
		return errors.New("did not exit within 30s of SIGTERM")
	}
}

func (p *chaosProc) running() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd == nil {
		return false
	}
	select {
	case <-p.exited:
		return false
	default:
		return true
	}
}

func (p *chaosProc) unexpectedExits() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return strings.Join(p.unexpected, "\n")
}

func restartCounts(procs map[string]*chaosProc, names []string) string {
	m := map[string]int{}
	for _, n := range names {
		p := procs[n]
		p.mu.Lock()
		m[n] = p.runs - 1
		p.mu.Unlock()
	}
	return formatCounts(m)
}

// saveChaosLogs writes every component's logs to $DUET_CHAOS_LOG_DIR, or
// logs their last lines when it is not set.
func saveChaosLogs(t *testing.T, procs map[string]*chaosProc) {
	dir := os.Getenv(chaosLogDirEnv)
	for name, p := range procs {
		if dir == "" {
			t.Logf("last lines of %s (set %s to keep whole logs):\n%s", name, chaosLogDirEnv, tail(p.logs.String(), 10))
			continue
		}
		path := filepath.Join(dir, name+".log")
		if err := os.WriteFile(path, []byte(p.logs.String()), 0o644); err != nil {
			t.Log(err)
		}
	}
	if dir != "" {
		t.Logf("component logs in %s", dir)
	}
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

func formatCounts[V int | int64](m map[string]V) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var parts []string
	for _, k := range keys {
		parts = append(parts, fmt.Sprintf("%s=%d", k, m[k]))
	}
	return strings.Join(parts, " ")
}

// jsonInt reads a protojson integer, written as a string for 64 bits and
// as a number for 32.
type jsonInt int64

func (i *jsonInt) UnmarshalJSON(b []byte) error {
	v, err := strconv.ParseInt(strings.Trim(string(b), `"`), 10, 64)
	*i = jsonInt(v)
	return err
}

type chaosMoney struct {
	CurrencyCode string  `json:"currencyCode"`
	Units        jsonInt `json:"units"`
}

type chaosOrder struct {
	ID    string `json:"id"`
	Items []struct {
		SKU      string  `json:"sku"`
		Quantity jsonInt `json:"quantity"`
	} `json:"items"`
	Total          chaosMoney `json:"total"`
	Status         string     `json:"status"`
	Step           string     `json:"step"`
	PaymentID      string     `json:"paymentId"`
	FailureReason  string     `json:"failureReason"`
	IdempotencyKey string     `json:"idempotencyKey"`
}

func (o chaosOrder) terminal() bool {
	switch o.Status {
	case "ORDER_STATUS_CONFIRMED", "ORDER_STATUS_CANCELLED", "ORDER_STATUS_REJECTED":
		return true
	}
	return false
}

type chaosPayment struct {
	ID        string     `json:"id"`
	Amount    chaosMoney `json:"amount"`
	Refunded  chaosMoney `json:"refunded"`
	Status    string     `json:"status"`
	Reference string     `json:"reference"`
}

// netUnits is what the payment keeps.
func (p chaosPayment) netUnits() int64 {
	if p.Status == "PAYMENT_STATUS_DECLINED" {
		return 0
	}
	return int64(p.Amount.Units - p.Refunded.Units)
}

// chaosAPI is a REST client of the gateway.
type chaosAPI struct {
	base   string
	client *http.Client
}

// httpError is an answer other than 200.
type httpError struct {
	status int
	body   string
}

func (e *httpError) Error() string { return fmt.Sprintf("HTTP %d: %s", e.status, e.body) }

// do sends one request and decodes a 200 answer into out.
func (a *chaosAPI) do(ctx context.Context, method, path, body string, out any) error {
	ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, a.base+path, strings.NewReader(body))
	if err != nil {
		return err
	}
	resp, err := a.client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		return &httpError{resp.StatusCode, string(bytes.TrimSpace(b))}
	}
	if out == nil {
		return nil
	}
	return json.Unmarshal(b, out)
}

var errGaveUp = errors.New("gave up retrying")

// placeOrder sends a CreateOrder request until it is answered, retrying
// transport errors and 5xx answers under the same idempotency key. It
// returns the order id and how many requests it took.
func (a *chaosAPI) placeOrder(ctx context.Context, body string) (string, int, error) {
	backoff := 50 * time.Millisecond
	for try := 1; ; try++ {
		var out struct {
			Order chaosOrder `json:"order"`
		}
		err := a.do(ctx, "POST", "/v1/orders", body, &out)
		if err == nil {
			return out.Order.ID, try, nil
		}
		var he *httpError
		if errors.As(err, &he) && he.status < 500 {
			return "", try, err
		}
		if try == 40 {
			return "", try, fmt.Errorf("%w: %v", errGaveUp, err)
		}
		if !waitFor(ctx, nil, backoff) {
			return "", try, ctx.Err()
		}
		backoff = min(2*backoff, time.Second)
	}
}

// allOrders lists every order of the users, every page.
func (a *chaosAPI) allOrders(ctx context.Context, users []string) ([]chaosOrder, error) {
	var all []chaosOrder
	for _, u := range users {
		token := ""
		for {
			var out struct {
				Orders        []chaosOrder `json:"orders"`
				NextPageToken string       `json:"nextPageToken"`
			}
			path := "/v1/users/" + u + "/orders?pageSize=100&pageToken=" + url.QueryEscape(token)
			if err := a.do(ctx, "GET", path, "", &out); err != nil {
				return nil, err
			}
			all = append(all, out.Orders...)
			if token = out.NextPageToken; token == "" {
				break
			}
		}
	}
	return all, nil
}

// allNotifications counts the users' notifications by kind and subject,
// every page, and returns how many there are.
func (a *chaosAPI) allNotifications(ctx context.Context, users []string) (map[[2]string]int, int, error) {
	got := map[[2]string]int{}
	total := 0
	for _, u := range users {
		token := ""
		for {
			var out struct {
				Notifications []struct {
					Kind      string `json:"kind"`
					SubjectID string `json:"subjectId"`
				} `json:"notifications"`
				NextPageToken string `json:"nextPageToken"`
			}
			path := "/v1/users/" + u + "/notifications?pageSize=100&pageToken=" + url.QueryEscape(token)
			if err := a.do(ctx, "GET", path, "", &out); err != nil {
				return nil, 0, err
			}
			for _, n := range out.Notifications {
				got[[2]string{n.Kind, n.SubjectID}]++
				total++
			}
			if token = out.NextPageToken; token == "" {
				break
			}
		}
	}
	return got, total, nil
}

// paymentLedger is the payment service's books, read from its database:
// there is no RPC that lists payments, and a charge that no order names
// must be found too.
type paymentLedger struct {
	payments []paymentRow
	refunds  map[string]int // refunds per payment id
	pending  int            // payments with a refund the provider has not confirmed
}

type paymentRow struct {
	id, reference, currency, status string
	amount, refunded                int64
}

// net is what the payment keeps.
func (r paymentRow) net() int64 {
	if r.status == "DECLINED" {
		return 0
	}
	return r.amount - r.refunded
}

func readPaymentLedger(t *testing.T, ctx context.Context, dbURL string) paymentLedger {
	t.Helper()
	db, err := sqldb.Open(ctx, dbURL, nil)
	if err != nil {
		t.Fatalf("open the payment database: %v", err)
	}
	defer db.Close()
	rows, err := db.QueryContext(ctx, "SELECT id, reference, currency, status, amount_units, refunded_units, refund_pending_units FROM payments")
	if err != nil {
		t.Fatalf("read payments: %v", err)
	}
	defer rows.Close()
	l := paymentLedger{refunds: map[string]int{}}
	for rows.Next() {
		var (
			r       paymentRow
			pending int64
		)
		if err := rows.Scan(&r.id, &r.reference, &r.currency, &r.status, &r.amount, &r.refunded, &pending); err != nil {
			t.Fatalf("read payments: %v", err)
		}
		if pending > 0 {
			l.pending++
		}
		l.payments = append(l.payments, r)
	}
	if err := rows.Err(); err != nil {
		t.Fatalf("read payments: %v", err)
	}
	refunds, err := db.QueryContext(ctx, "SELECT payment_id, COUNT(*) FROM refunds GROUP BY payment_id")
	if err != nil {
		t.Fatalf("read refunds: %v", err)
	}
	defer refunds.Close()
	for refunds.Next() {
		var id string
		var n int
		if err := refunds.Scan(&id, &n); err != nil {
			t.Fatalf("read refunds: %v", err)
		}
		l.refunds[id] = n
	}
	if err := refunds.Err(); err != nil {
		t.Fatalf("read refunds: %v", err)
	}
	return l
}
