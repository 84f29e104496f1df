package order_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"

	inventoryv1 "github.com/duetkit/duet/gen/duet/inventory/v1"
	orderv1 "github.com/duetkit/duet/gen/duet/order/v1"
	paymentv1 "github.com/duetkit/duet/gen/duet/payment/v1"
	typev1 "github.com/duetkit/duet/gen/duet/type/v1"
	"github.com/duetkit/duet/kit/apierr"
	"github.com/duetkit/duet/kit/apierr/apierrtest"
	"github.com/duetkit/duet/kit/events"
	"github.com/duetkit/duet/kit/events/eventstest"
	"github.com/duetkit/duet/kit/requestid"
	"github.com/duetkit/duet/kit/sqldb"
	"github.com/duetkit/duet/services/order"
)

const (
	pending   = orderv1.OrderStatus_ORDER_STATUS_PENDING
	confirmed = orderv1.OrderStatus_ORDER_STATUS_CONFIRMED
	cancelled = orderv1.OrderStatus_ORDER_STATUS_CANCELLED
	rejected  = orderv1.OrderStatus_ORDER_STATUS_REJECTED

	checkUser = orderv1.OrderStep_ORDER_STEP_CHECK_USER
	price     = orderv1.OrderStep_ORDER_STEP_PRICE
	reserve   = orderv1.OrderStep_ORDER_STEP_RESERVE
	charge_   = orderv1.OrderStep_ORDER_STEP_CHARGE
	commit    = orderv1.OrderStep_ORDER_STEP_COMMIT
	refund    = orderv1.OrderStep_ORDER_STEP_REFUND
	release   = orderv1.OrderStep_ORDER_STEP_RELEASE
	done      = orderv1.OrderStep_ORDER_STEP_DONE
)

// unitPrice is the price of every product the saga tests create.
const unitPrice = 1250

// orderDB opens the order service's database beside the service, to look
// at its outbox.
func (st *stack) orderDB(t *testing.T) *sqldb.DB {
	t.Helper()
	db, err := sqldb.Open(t.Context(), st.orderCfg.DatabaseURL, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = db.Close() })
	return db
}

// checkConsistent checks what the saga promises of a terminal order:
// CONFIRMED holds exactly one capture of its total and its stock is sold;
// anything else holds no money and has returned its stock. available is
// what the product had before the order.
func (st *stack) checkConsistent(t *testing.T, o *orderv1.Order, sku string, available int64) {
	t.Helper()
	qty := int64(o.GetItems()[0].GetQuantity())
	gotAvail, gotHeld := st.stock(t, sku)
	held := st.captured(t, o.GetId())
	charges := st.charges(t, o.GetId())
	if o.GetStatus() == confirmed {
		if gotAvail != available-qty || gotHeld != 0 || held != o.GetTotal().GetUnits() || len(charges) != 1 ||
			charges[0].id != o.GetPaymentId() || charges[0].reference != o.GetId() || charges[0].userID != o.GetUserId() {
			t.Fatalf("confirmed order %v: stock %d available, %d reserved (want %d, 0); charges %+v (want one capture of %d)",
				o, gotAvail, gotHeld, available-qty, charges, o.GetTotal().GetUnits())
		}
		return
	}
	if gotAvail != available || gotHeld != 0 || held != 0 {
		t.Fatalf("%v order %v: stock %d available, %d reserved (want %d, 0); %d still charged (charges %+v)",
			o.GetStatus(), o, gotAvail, gotHeld, available, held, charges)
	}
}

func TestSagaOutcomes(t *testing.T) {
	eachStack(t, fastSaga, func(t *testing.T, st *stack) {
		userID := st.newUser(t)
		db := st.orderDB(t)
		tests := []struct {
			name       string
			token      string
			stock      int64
			qty        int32
			ghost      bool          // an unknown user orders
			unknownSKU bool          // the order names no product
			expect     *typev1.Money // the unit price the client sends
			wantStatus orderv1.OrderStatus
			wantReason string
			wantCharge string // the payment's status, "" for none
			wantEvent  string
		}{
			{name: "confirmed", token: "tok_approve", stock: 10, qty: 3, wantStatus: confirmed, wantCharge: "CAPTURED", wantEvent: "order.confirmed"},
			{name: "confirmed at the price expected", token: "tok_approve", stock: 10, qty: 1, expect: usd(unitPrice),
				wantStatus: confirmed, wantCharge: "CAPTURED", wantEvent: "order.confirmed"},
			{name: "declined releases the stock", token: "tok_decline", stock: 10, qty: 3,
				wantStatus: cancelled, wantReason: "PAYMENT_DECLINED", wantCharge: "DECLINED", wantEvent: "order.cancelled"},
			{name: "insufficient funds", token: "tok_insufficient", stock: 10, qty: 3,
				wantStatus: cancelled, wantReason: "INSUFFICIENT_FUNDS", wantCharge: "DECLINED", wantEvent: "order.cancelled"},
			{name: "unknown payment token", token: "tok_bogus", stock: 10, qty: 3,
				wantStatus: cancelled, wantReason: "INVALID_PAYMENT_METHOD", wantEvent: "order.cancelled"},
			{name: "out of stock charges nothing", token: "tok_approve", stock: 2, qty: 3,
				wantStatus: rejected, wantReason: "OUT_OF_STOCK", wantEvent: "order.rejected"},
			{name: "changed price", token: "tok_approve", stock: 10, qty: 1, expect: usd(unitPrice - 1),
				wantStatus: rejected, wantReason: "PRICE_CHANGED", wantEvent: "order.rejected"},
			{name: "unknown product", token: "tok_approve", stock: 10, qty: 1, unknownSKU: true,
				wantStatus: rejected, wantReason: "PRODUCT_NOT_FOUND", wantEvent: "order.rejected"},
			{name: "unknown user", token: "tok_approve", stock: 10, qty: 1, ghost: true,
				wantStatus: rejected, wantReason: "USER_NOT_FOUND", wantEvent: "order.rejected"},
		}
		for i, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				sku := st.newProduct(t, unitPrice, tt.stock)
				item := line(sku, tt.qty)
				if tt.unknownSKU {
					item.Sku = "NO-SUCH-SKU"
				}
				item.UnitPrice = tt.expect
				customer := userID
				if tt.ghost {
					customer = "00000000-0000-4000-8000-000000000000"
				}
				resp, err := st.orders.CreateOrder(t.Context(), createReq(customer, tt.token, fmt.Sprint("outcome-", i), item))
				if err != nil {
					t.Fatalf("CreateOrder: %v", err)
				}
				o := resp.GetOrder()
				if o.GetStatus() != tt.wantStatus || o.GetFailureReason() != tt.wantReason || o.GetStep() != done {
					t.Fatalf("order = %v; want %v, reason %q, step DONE", o, tt.wantStatus, tt.wantReason)
				}
				priced := !tt.unknownSKU && !tt.ghost
				if priced && (o.GetTotal().GetUnits() != unitPrice*int64(tt.qty) || o.GetTotal().GetCurrencyCode() != "USD" ||
					o.GetItems()[0].GetUnitPrice().GetUnits() != unitPrice) {
					t.Fatalf("order = %v; want priced at %d a unit from inventory", o, unitPrice)
				}
				got, err := st.orders.GetOrder(t.Context(), &orderv1.GetOrderRequest{Id: o.GetId()})
				if err != nil || got.GetOrder().GetStatus() != tt.wantStatus || got.GetOrder().GetPaymentId() != o.GetPaymentId() {
					t.Fatalf("GetOrder = %v, %v", got, err)
				}

				charges := st.charges(t, o.GetId())
				switch {
				case tt.wantCharge == "" && (len(charges) != 0 || o.GetPaymentId() != ""):
					t.Fatalf("charges %+v, payment %q; want none", charges, o.GetPaymentId())
				case tt.wantCharge != "" && (len(charges) != 1 || charges[0].status != tt.wantCharge || charges[0].id != o.GetPaymentId() ||
					charges[0].amount != o.GetTotal().GetUnits() || charges[0].userID != customer):
					t.Fatalf("charges %+v for order %v; want one %s", charges, o, tt.wantCharge)
				}
				if !tt.unknownSKU {
					st.checkConsistent(t, o, sku, tt.stock)
				}
				if got := outboxSubjects(t, db.DB, db.Rebind, o.GetId()); len(got) != 1 || got[0] != tt.wantEvent {
					t.Fatalf("outbox holds %v for the order, want [%s]", got, tt.wantEvent)
				}
			})
		}

		t.Run("several lines", func(t *testing.T) {
			a, b := st.newProduct(t, unitPrice, 5), st.newProduct(t, 99, 5)
			resp, err := st.orders.CreateOrder(t.Context(), createReq(userID, "tok_approve", "two-lines", line(a, 2), line(b, 3)))
			if err != nil {
				t.Fatal(err)
			}
			o := resp.GetOrder()
			if o.GetStatus() != confirmed || o.GetTotal().GetUnits() != 2*unitPrice+3*99 || o.GetItems()[1].GetUnitPrice().GetUnits() != 99 {
				t.Fatalf("order = %v", o)
			}
			for sku, want := range map[string]int64{a: 3, b: 2} {
				if avail, held := st.stock(t, sku); avail != want || held != 0 {
					t.Fatalf("%s: %d available, %d reserved; want %d, 0", sku, avail, held, want)
				}
			}
		})
	})
}

func TestSagaRetriesTemporaryPaymentFailures(t *testing.T) {
	eachStack(t, fastSaga, func(t *testing.T, st *stack) {
		userID := st.newUser(t)
		sku := st.newProduct(t, unitPrice, 10)
		st.provider.failNext(3)
		before := st.provider.callCount()
		resp, err := st.orders.CreateOrder(t.Context(), createReq(userID, "tok_approve", "flaky", line(sku, 2)))
		if err != nil {
			t.Fatal(err)
		}
		o := resp.GetOrder()
		if o.GetStatus() != confirmed {
			t.Fatalf("order = %v; want CONFIRMED after the provider recovered", o)
		}
		if calls := st.provider.callCount() - before; calls != 4 {
			t.Fatalf("provider called %d times, want 4 (3 failures, 1 success)", calls)
		}
		st.checkConsistent(t, o, sku, 10)
	})
}

func TestSagaCompensatesPeerDownPastBound(t *testing.T) {
	cfg := fastSaga
	cfg.StepTimeout = 300 * time.Millisecond
	eachStack(t, cfg, func(t *testing.T, st *stack) {
		userID := st.newUser(t)
		sku := st.newProduct(t, unitPrice, 10)
		st.stopPayments()
		resp := st.place(t, createReq(userID, "tok_approve", "payment-down", line(sku, 2)))
		id := resp.GetOrder().GetId()

		// Past the bound the saga compensates: it must cancel the charge,
		// whose outcome it cannot know, and keeps trying while payment is
		// down. The stock stays reserved until the charge is cancelled.
		o := st.awaitFunc(t, id, func(o *orderv1.Order) bool { return o.GetStep() == refund })
		if o.GetStatus() != pending || o.GetFailureReason() != "PAYMENT_UNAVAILABLE" {
			t.Fatalf("compensating order = %v", o)
		}
		if _, held := st.stock(t, sku); held != 2 {
			t.Fatalf("%d reserved while compensating, want 2", held)
		}

		st.startPayments(t)
		o = st.await(t, id)
		if o.GetStatus() != cancelled || o.GetFailureReason() != "PAYMENT_UNAVAILABLE" {
			t.Fatalf("order = %v; want CANCELLED, PAYMENT_UNAVAILABLE", o)
		}
		st.checkConsistent(t, o, sku, 10)
		if charges := st.charges(t, id); len(charges) != 0 {
			t.Fatalf("charges %+v, want none", charges)
		}
		// A late charge under the order's key is refused for good.
		_, err := st.payments.Charge(t.Context(), &paymentv1.ChargeRequest{Amount: usd(2 * unitPrice), PaymentMethodToken: "tok_approve",
			IdempotencyKey: st.paymentKey(t, id), Reference: id, UserId: userID})
		apierrtest.Check(t, err, codes.FailedPrecondition, "CHARGE_CANCELLED", "")
	})
}

var errStop = errors.New("stopped by the test")

func TestSagaCrashRecovery(t *testing.T) {
	tests := []struct {
		name  string
		token string
		// stops are the steps at which the service is stopped, one run
		// each; a last run without stops finishes the saga.
		stops []orderv1.OrderStep
		// between runs after the first stop, as something else might happen
		// while the service is down.
		between    func(t *testing.T, st *stack, o *orderv1.Order)
		wantStatus orderv1.OrderStatus
		wantReason string
	}{
		{name: "before pricing", token: "tok_approve", stops: []orderv1.OrderStep{price}, wantStatus: confirmed},
		{name: "before reserving", token: "tok_approve", stops: []orderv1.OrderStep{reserve}, wantStatus: confirmed},
		{name: "before charging", token: "tok_approve", stops: []orderv1.OrderStep{charge_}, wantStatus: confirmed},
		{name: "charged but not recorded", token: "tok_approve", stops: []orderv1.OrderStep{charge_},
			between: func(t *testing.T, st *stack, o *orderv1.Order) {
				// The stopped process had made the charge, not stored it.
				if _, err := st.payments.Charge(t.Context(), &paymentv1.ChargeRequest{Amount: o.GetTotal(), PaymentMethodToken: "tok_approve",
					IdempotencyKey: st.paymentKey(t, o.GetId()), Reference: o.GetId(), UserId: o.GetUserId()}); err != nil {
					t.Fatal(err)
				}
			},
			wantStatus: confirmed},
		{name: "before committing", token: "tok_approve", stops: []orderv1.OrderStep{commit}, wantStatus: confirmed},
		{name: "at every step", token: "tok_approve", stops: []orderv1.OrderStep{price, reserve, charge_, commit}, wantStatus: confirmed},
		{name: "while releasing a declined order", token: "tok_decline", stops: []orderv1.OrderStep{release},
			wantStatus: cancelled, wantReason: "PAYMENT_DECLINED"},
		{name: "while refunding and releasing", token: "tok_approve", stops: []orderv1.OrderStep{charge_, refund, release},
			between: func(t *testing.T, st *stack, o *orderv1.Order) {
				// The charge is cancelled behind the saga's back: its next
				// attempt is refused, and it compensates.
				if _, err := st.payments.CancelCharge(t.Context(), &paymentv1.CancelChargeRequest{IdempotencyKey: st.paymentKey(t, o.GetId())}); err != nil {
					t.Fatal(err)
				}
			},
			wantStatus: cancelled, wantReason: "PAYMENT_REFUSED"},
	}
	eachStack(t, fastSaga, func(t *testing.T, st *stack) {
		userID := st.newUser(t)
		for i, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				sku := st.newProduct(t, unitPrice, 10)
				var id string
				for n, step := range tt.stops {
					stopped := make(chan string, 1)
					st.crash(t)
					cfg := st.orderCfg
					cfg.Saga.AfterStep = func(_ context.Context, orderID string, s orderv1.OrderStep) error {
						if s != step {
							return nil
						}
						select {
						case stopped <- orderID:
						default:
						}
						return errStop
					}
					st.openOrders(t, cfg)
					if n == 0 {
						resp := st.place(t, createReq(userID, tt.token, fmt.Sprint("crash-", i), line(sku, 2)))
						id = resp.GetOrder().GetId()
					}
					select {
					case got := <-stopped:
						if got != id {
							t.Fatalf("stopped order %s, want %s", got, id)
						}
					case <-time.After(30 * time.Second):
						t.Fatalf("order never reached %v", step)
					}
					resp, err := st.orders.GetOrder(t.Context(), &orderv1.GetOrderRequest{Id: id})
					if err != nil || resp.GetOrder().GetStatus() != pending || resp.GetOrder().GetStep() != step {
						t.Fatalf("stopped order = %v, %v; want PENDING at %v", resp.GetOrder(), err, step)
					}
					if n == 0 && tt.between != nil {
						tt.between(t, st, resp.GetOrder())
					}
				}
				st.crash(t)
				st.openOrders(t, st.orderCfg)
				o := st.await(t, id)
				if o.GetStatus() != tt.wantStatus || o.GetFailureReason() != tt.wantReason {
					t.Fatalf("order after restart = %v; want %v, reason %q", o, tt.wantStatus, tt.wantReason)
				}
				st.checkConsistent(t, o, sku, 10)
			})
		}
	})
}

func TestSagaLastUnits(t *testing.T) {
	const (
		orders = 12
		units  = 4
	)
	eachStack(t, fastSaga, func(t *testing.T, st *stack) {
		sku := st.newProduct(t, unitPrice, units)
		users := make([]string, 3)
		for i := range users {
			users[i] = st.newUser(t)
		}
		results := make([]*orderv1.Order, orders)
		errs := make([]error, orders)
		var wg sync.WaitGroup
		for i := range orders {
			wg.Go(func() {
				resp, err := st.orders.CreateOrder(t.Context(), createReq(users[i%len(users)], "tok_approve", fmt.Sprint("last-", i), line(sku, 1)))
				results[i], errs[i] = resp.GetOrder(), err
			})
		}
		wg.Wait()
		count := map[orderv1.OrderStatus]int{}
		for i, o := range results {
			if errs[i] != nil {
				t.Fatalf("order %d: %v", i, errs[i])
			}
			count[o.GetStatus()]++
			if o.GetStatus() == rejected && o.GetFailureReason() != "OUT_OF_STOCK" {
				t.Fatalf("rejected order %v, want OUT_OF_STOCK", o)
			}
			if want := int64(0); o.GetStatus() == confirmed {
				want = unitPrice
				if got := st.captured(t, o.GetId()); got != want {
					t.Fatalf("order %v holds %d, want %d", o, got, want)
				}
			} else if got := st.captured(t, o.GetId()); got != 0 {
				t.Fatalf("order %v holds %d, want nothing", o, got)
			}
		}
		if count[confirmed] != units || count[rejected] != orders-units {
			t.Fatalf("outcomes %v; want %d CONFIRMED and %d REJECTED", count, units, orders-units)
		}
		if avail, held := st.stock(t, sku); avail != 0 || held != 0 {
			t.Fatalf("stock %d available, %d reserved; want 0, 0", avail, held)
		}
		if n := st.paymentCount(t); n != units {
			t.Fatalf("%d payments, want %d", n, units)
		}
	})
}

func TestWatchOrder(t *testing.T) {
	tests := []struct {
		token      string
		wantSteps  []orderv1.OrderStep
		wantStatus orderv1.OrderStatus
	}{
		{"tok_approve", []orderv1.OrderStep{checkUser, price, reserve, charge_, commit, done}, confirmed},
		{"tok_decline", []orderv1.OrderStep{checkUser, price, reserve, charge_, release, done}, cancelled},
	}
	eachStack(t, fastSaga, func(t *testing.T, st *stack) {
		userID := st.newUser(t)
		sku := st.newProduct(t, unitPrice, 10)
		for _, tt := range tests {
			t.Run(tt.token, func(t *testing.T) {
				// Catch the saga at its first step, so the watch sees it all.
				st.gate.shut()
				resp := st.place(t, createReq(userID, tt.token, "watch-"+tt.token, line(sku, 1)))
				id := resp.GetOrder().GetId()
				within(t, st.gate.entered, "the saga at the gate")
				stream, err := st.orders.WatchOrder(t.Context(), &orderv1.WatchOrderRequest{Id: id})
				if err != nil {
					t.Fatal(err)
				}
				first, err := stream.Recv()
				if err != nil {
					t.Fatal(err)
				}
				st.gate.release()
				rest, err := recvAll(stream)
				if err != nil {
					t.Fatalf("watch ended with %v", err)
				}
				seen := append([]*orderv1.Order{first.GetOrder()}, rest...)
				var steps []orderv1.OrderStep
				for i, o := range seen {
					steps = append(steps, o.GetStep())
					last := i == len(seen)-1
					if o.GetId() != id || (o.GetStatus() == pending) == last {
						t.Fatalf("message %d: %v", i, o)
					}
					if i > 0 && o.GetUpdateTime().AsTime().Before(seen[i-1].GetUpdateTime().AsTime()) {
						t.Fatalf("message %d went back in time: %v after %v", i, o, seen[i-1])
					}
				}
				if fmt.Sprint(steps) != fmt.Sprint(tt.wantSteps) || seen[len(seen)-1].GetStatus() != tt.wantStatus {
					t.Fatalf("watch saw steps %v ending %v; want %v ending %v", steps, seen[len(seen)-1].GetStatus(), tt.wantSteps, tt.wantStatus)
				}

				// A terminal order is sent once, and the stream ends.
				stream, err = st.orders.WatchOrder(t.Context(), &orderv1.WatchOrderRequest{Id: id})
				if err != nil {
					t.Fatal(err)
				}
				again, err := recvAll(stream)
				if err != nil || len(again) != 1 || again[0].GetStatus() != tt.wantStatus {
					t.Fatalf("watching a terminal order: %v, %v", again, err)
				}
			})
		}
		t.Run("unknown order", func(t *testing.T) {
			stream, err := st.orders.WatchOrder(t.Context(), &orderv1.WatchOrderRequest{Id: "00000000-0000-4000-8000-000000000000"})
			if err == nil {
				_, err = stream.Recv()
			}
			apierrtest.Check(t, err, codes.NotFound, "ORDER_NOT_FOUND", "")
		})
	})
}

func TestWatchOrderCancelFreesGoroutines(t *testing.T) {
	cfg := fastSaga
	// The saga's first call stays blocked for the whole test, so that no
	// goroutine of the saga comes or goes while the watch is checked.
	cfg.CallTimeout = time.Minute
	eachStack(t, cfg, func(t *testing.T, st *stack) {
		userID := st.newUser(t)
		sku := st.newProduct(t, unitPrice, 10)
		st.gate.shut()
		resp := st.place(t, createReq(userID, "tok_approve", "watch-cancel", line(sku, 1)))
		within(t, st.gate.entered, "the saga at the gate")
		before := goleak.IgnoreCurrent()

		ctx, cancel := context.WithCancel(t.Context())
		stream, err := st.orders.WatchOrder(ctx, &orderv1.WatchOrderRequest{Id: resp.GetOrder().GetId()})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := stream.Recv(); err != nil {
			t.Fatal(err)
		}
		cancel()
		if _, err := stream.Recv(); apierr.Code(err) != codes.Canceled {
			t.Fatalf("Recv after cancel: %v, want CANCELED", err)
		}
		// Both ends of the stream are gone: the server's handler and its
		// subscription included.
		goleak.VerifyNone(t, before)

		st.gate.release()
		if o := st.await(t, resp.GetOrder().GetId()); o.GetStatus() != confirmed {
			t.Fatalf("order = %v", o)
		}
	})
}

func TestOrderEventsPublished(t *testing.T) {
	eachStack(t, fastSaga, func(t *testing.T, st *stack) {
		eventstest.Run(t, func(t *testing.T, bus *events.Bus) {
			st.crash(t)
			cfg := st.orderCfg
			cfg.Bus = bus
			st.openOrders(t, cfg)

			type seenEvent struct {
				subject, typ, requestID string
				order                   *orderv1.Order
			}
			got := make(chan seenEvent, 16)
			ctx, cancel := context.WithCancel(t.Context())
			durable := "order-test-" + eventstest.Unique(t) // here: Unique may fail the test, which a goroutine must not
			var wg sync.WaitGroup
			wg.Go(func() {
				err := events.Consume(ctx, bus, events.ConsumerConfig{Durable: durable, Subjects: []string{"order.*"}},
					func(_ context.Context, m events.Message) error {
						var o *orderv1.Order
						switch m.Subject {
						case "order.confirmed":
							var ev orderv1.OrderConfirmed
							if err := m.Unmarshal(&ev); err != nil {
								return err
							}
							o = ev.GetOrder()
						case "order.cancelled":
							var ev orderv1.OrderCancelled
							if err := m.Unmarshal(&ev); err != nil {
								return err
							}
							o = ev.GetOrder()
						case "order.rejected":
							var ev orderv1.OrderRejected
							if err := m.Unmarshal(&ev); err != nil {
								return err
							}
							o = ev.GetOrder()
						}
						if m.AggregateID != o.GetId() {
							return fmt.Errorf("aggregate id %s for order %s", m.AggregateID, o.GetId())
						}
						got <- seenEvent{subject: m.Subject, typ: m.Type, requestID: m.RequestID, order: o}
						return nil
					})
				if err != nil {
					t.Errorf("Consume: %v", err)
				}
			})
			defer func() {
				cancel()
				wg.Wait()
			}()

			userID := st.newUser(t)
			sku := st.newProduct(t, unitPrice, 2)
			want := map[string]seenEvent{}
			for i, c := range []struct {
				token, subject, typ string
				qty                 int32
				status              orderv1.OrderStatus
			}{
				{"tok_approve", "order.confirmed", "duet.order.v1.OrderConfirmed", 1, confirmed},
				{"tok_decline", "order.cancelled", "duet.order.v1.OrderCancelled", 1, cancelled},
				{"tok_approve", "order.rejected", "duet.order.v1.OrderRejected", 5, rejected},
			} {
				reqID := fmt.Sprintf("req-events-%d", i)
				ctx := metadata.AppendToOutgoingContext(t.Context(), requestid.Header, reqID)
				resp, err := st.orders.CreateOrder(ctx, createReq(userID, c.token, fmt.Sprintf("events-%s-%d", bus.Stream, i), line(sku, c.qty)))
				if err != nil || resp.GetOrder().GetStatus() != c.status {
					t.Fatalf("CreateOrder = %v, %v", resp, err)
				}
				want[resp.GetOrder().GetId()] = seenEvent{subject: c.subject, typ: c.typ, requestID: reqID, order: resp.GetOrder()}
			}
			seen := map[string]bool{}
			for len(want) > 0 {
				select {
				case ev := <-got:
					w, ok := want[ev.order.GetId()]
					if !ok {
						// The subtests share the order database: an event an
						// earlier subtest left unpublished in the outbox is
						// rightly published now, on this bus. A repeat of one
						// of ours is a bug.
						if seen[ev.order.GetId()] {
							t.Fatalf("repeated event %+v", ev)
						}
						continue
					}
					seen[ev.order.GetId()] = true
					if ev.subject != w.subject || ev.typ != w.typ || ev.requestID != w.requestID ||
						ev.order.GetStatus() != w.order.GetStatus() || ev.order.GetStep() != done || ev.order.GetUserId() != userID {
						t.Fatalf("event %+v, want %+v", ev, w)
					}
					delete(want, ev.order.GetId())
				case <-time.After(30 * time.Second):
					t.Fatalf("events never came for %v", want)
				}
			}
		})
	})
}

// TestLateReservationAfterRefusal races two runners of one order, as two
// replicas do when one resumes the other's sagas: the first is refused
// for want of stock and ends the order REJECTED while the second, holding
// the order as it was, is still reserving. Stock comes back before the
// second's call lands. It must not hold stock for an order that has ended.
func TestLateReservationAfterRefusal(t *testing.T) {
	// The first runner's call is held while the second replica opens (its
	// migrations, its first sweep): a call timeout that passed meanwhile
	// would make the first runner's retry the second call held.
	patient := fastSaga
	patient.CallTimeout = time.Minute
	eachStack(t, patient, func(t *testing.T, st *stack) {
		ctx := t.Context()
		userID := st.newUser(t)
		sku := st.newProduct(t, unitPrice, 2)

		// The first two ReserveStock calls (first runner's, second's) wait
		// for their release.
		var (
			calls    int
			entered  = []chan struct{}{make(chan struct{}), make(chan struct{})}
			proceed  = []chan struct{}{make(chan struct{}), make(chan struct{})}
			answered = make(chan error, 1)
		)
		st.inventoryMu.Lock()
		st.inventoryHook = func(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
			if info.FullMethod != inventoryv1.InventoryService_ReserveStock_FullMethodName {
				return h(ctx, req)
			}
			st.inventoryMu.Lock()
			i := calls
			calls++
			st.inventoryMu.Unlock()
			if i > 1 {
				return h(ctx, req)
			}
			close(entered[i])
			select {
			case <-proceed[i]:
			case <-ctx.Done():
				return nil, ctx.Err()
			}
			resp, err := h(ctx, req)
			if i == 1 {
				answered <- err
			}
			return resp, err
		}
		st.inventoryMu.Unlock()

		req := createReq(userID, "tok_approve", "late-reservation", line(sku, 3))
		req.Wait = false
		resp, err := st.orders.CreateOrder(ctx, req)
		if err != nil {
			t.Fatal(err)
		}
		id := resp.GetOrder().GetId()
		within(t, entered[0], "the first runner's ReserveStock")
		// A second replica on the same database: its first sweep resumes
		// the order, at RESERVE.
		second, err := order.Open(ctx, st.orderCfg)
		if err != nil {
			t.Fatal(err)
		}
		defer second.Close()
		within(t, entered[1], "the second runner's ReserveStock")

		close(proceed[0])
		watch, err := st.orders.WatchOrder(ctx, &orderv1.WatchOrderRequest{Id: id})
		if err != nil {
			t.Fatal(err)
		}
		states, err := recvAll(watch)
		if err != nil {
			t.Fatal(err)
		}
		if last := states[len(states)-1]; last.GetStatus() != rejected || last.GetFailureReason() != "OUT_OF_STOCK" {
			t.Fatalf("order ended %v %q; want REJECTED OUT_OF_STOCK", last.GetStatus(), last.GetFailureReason())
		}

		imp, err := st.inventory.ImportStock(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if err := imp.Send(&inventoryv1.ImportStockRequest{Line: 1, Sku: sku, StockDelta: 5}); err != nil {
			t.Fatal(err)
		}
		if _, err := imp.CloseAndRecv(); err != nil {
			t.Fatal(err)
		}
		close(proceed[1])
		if err := <-answered; err == nil {
			t.Error("the late ReserveStock succeeded for an order that had ended")
		}
		if err := second.Close(); err != nil {
			t.Fatal(err)
		}
		if available, reserved := st.stock(t, sku); available != 7 || reserved != 0 {
			t.Errorf("stock available %d, reserved %d; want 7, 0", available, reserved)
		}
	})
}

// within waits for ch to be closed or to deliver, failing the test after
// 30 s rather than hanging it for go test's whole timeout.
func within(t *testing.T, ch <-chan struct{}, what string) {
	t.Helper()
	select {
	case <-ch:
	case <-time.After(30 * time.Second):
		t.Fatalf("%s never came", what)
	}
}
