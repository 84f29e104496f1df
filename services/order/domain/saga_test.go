package domain

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"testing"
	"time"
)

var t0 = time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)

// testPolicy keeps the arithmetic of the tests simple.
var testPolicy = SagaPolicy{StepTimeout: 10 * time.Second, CallTimeout: time.Minute, InitialBackoff: 100 * time.Millisecond, MaxBackoff: time.Second}

// fixture is a Service over in-memory fakes, with a clock the test moves.
type fixture struct {
	svc   *Service
	repo  *memRepo
	peers *fakePeers
	sched *scheduled
	pub   *published
	now   time.Time
}

func newFixture() *fixture {
	f := &fixture{repo: newMemRepo(), peers: newFakePeers(), sched: &scheduled{}, pub: &published{}, now: t0}
	f.svc = NewService(Deps{Repo: f.repo, Users: f.peers, Inventory: f.peers, Payments: f.peers, Logger: slog.New(slog.DiscardHandler)}, testPolicy)
	f.svc.Now = func() time.Time { return f.now }
	f.svc.Jitter = func(d time.Duration) time.Duration { return d } // the top of the range
	f.svc.Scheduler, f.svc.Notifier = f.sched, f.pub
	n := 0
	f.svc.NewID = func() string { n++; return fmt.Sprint("order-", n) }
	return f
}

// create places an order for items A×2 and B×1, under a new key, and
// returns it.
func (f *fixture) create(t *testing.T) *Order {
	t.Helper()
	req := request(item("A", 2), item("B", 1))
	req.IdempotencyKey = fmt.Sprint("key-", f.repo.count())
	o, err := f.svc.Create(t.Context(), req)
	if err != nil {
		t.Fatal(err)
	}
	return o
}

// at stores o moved to step (compensating failed, when set), as a saga
// that got there would have.
func (f *fixture) at(t *testing.T, o *Order, step, failed Step) *Order {
	t.Helper()
	return f.atFor(t, o, step, failed, "")
}

// atFor is at, with the reason compensation began for.
func (f *fixture) atFor(t *testing.T, o *Order, step, failed Step, reason string) *Order {
	t.Helper()
	got, err := f.repo.ByID(t.Context(), o.ID)
	if err != nil {
		t.Fatal(err)
	}
	next := got.Clone()
	if step != StepCheckUser && step != StepPrice {
		next.price(f.peers.prices)
	}
	next.FailedStep, next.FailureReason = failed, reason
	next.enter(step, f.now)
	next.Version++
	if err := f.repo.Save(t.Context(), next, got.Version, true); err != nil {
		t.Fatal(err)
	}
	return next
}

// run steps the saga, moving the clock to each next attempt, until it is
// terminal, and returns the steps it went through.
func (f *fixture) run(t *testing.T, id string) (*Order, []Step) {
	t.Helper()
	var steps []Step
	if o, err := f.repo.ByID(t.Context(), id); err == nil {
		steps = append(steps, o.Step)
	}
	for range 1000 {
		o, moved, err := f.svc.Step(t.Context(), id)
		if err != nil {
			t.Fatal(err)
		}
		if moved {
			steps = append(steps, o.Step)
		}
		if o.Status.Terminal() {
			return o, steps
		}
		if o.NextAttempt.After(f.now) {
			f.now = o.NextAttempt
		}
	}
	t.Fatal("saga did not end in 1000 steps")
	return nil, nil
}

var (
	errDown  = &RetryableError{Err: ErrPaymentUnavailable, RetryAfter: 2 * time.Second}
	errOdd   = errors.New("something unexpected")
	errStock = fmt.Errorf("%w: A", ErrOutOfStock)
)

func TestStep(t *testing.T) {
	tests := []struct {
		name        string
		step        Step
		failed      Step
		reason      string // why compensation began
		method      string
		err         error
		charge      *PaymentResult
		cancelled   string
		wantStatus  Status
		wantStep    Step
		wantFailed  Step
		wantReason  string
		wantPayment string
		wantRetry   bool
	}{
		{name: "user exists", step: StepCheckUser, wantStatus: StatusPending, wantStep: StepPrice},
		{name: "user unknown", step: StepCheckUser, method: "CheckUser", err: ErrUserNotFound, wantStatus: StatusRejected, wantStep: StepDone, wantReason: FailureUserNotFound},
		{name: "user service down", step: StepCheckUser, method: "CheckUser", err: errDown, wantRetry: true},
		{name: "priced", step: StepPrice, wantStatus: StatusPending, wantStep: StepReserve},
		{name: "product unknown", step: StepPrice, method: "Prices", err: ErrProductNotFound, wantStatus: StatusRejected, wantStep: StepDone, wantReason: FailureProductNotFound},
		{name: "inventory down while pricing", step: StepPrice, method: "Prices", err: errOdd, wantRetry: true},
		{name: "reserved", step: StepReserve, wantStatus: StatusPending, wantStep: StepCharge},
		{name: "out of stock", step: StepReserve, method: "Reserve", err: errStock,
			wantStatus: StatusPending, wantStep: StepRelease, wantFailed: StepReserve, wantReason: FailureOutOfStock},
		{name: "product gone", step: StepReserve, method: "Reserve", err: ErrProductNotFound,
			wantStatus: StatusPending, wantStep: StepRelease, wantFailed: StepReserve, wantReason: FailureProductNotFound},
		{name: "released before reserving", step: StepReserve, method: "Reserve", err: ErrReservationReleased, wantStatus: StatusCancelled, wantStep: StepDone, wantReason: FailureReservationReleased},
		{name: "inventory down while reserving", step: StepReserve, method: "Reserve", err: errDown, wantRetry: true},
		{name: "charged", step: StepCharge, wantStatus: StatusPending, wantStep: StepCommit, wantPayment: "pay-1"},
		{name: "declined", step: StepCharge, charge: &PaymentResult{PaymentID: "pay-2", Declined: true, DeclineReason: "INSUFFICIENT_FUNDS"},
			wantStatus: StatusPending, wantStep: StepRelease, wantFailed: StepCharge, wantReason: "INSUFFICIENT_FUNDS", wantPayment: "pay-2"},
		{name: "declined without a reason", step: StepCharge, charge: &PaymentResult{PaymentID: "pay-3", Declined: true},
			wantStatus: StatusPending, wantStep: StepRelease, wantFailed: StepCharge, wantReason: FailurePaymentDeclined, wantPayment: "pay-3"},
		// What a peer sends is stored as text PostgreSQL takes.
		{name: "declined with NUL", step: StepCharge, charge: &PaymentResult{PaymentID: "pay\x004", Declined: true, DeclineReason: "NO\x00FUNDS"},
			wantStatus: StatusPending, wantStep: StepRelease, wantFailed: StepCharge, wantReason: "NO?FUNDS", wantPayment: "pay?4"},
		{name: "unknown payment token", step: StepCharge, method: "Charge", err: ErrInvalidPaymentMethod,
			wantStatus: StatusPending, wantStep: StepRefund, wantFailed: StepCharge, wantReason: FailureInvalidPaymentMethod},
		{name: "charge refused", step: StepCharge, method: "Charge", err: ErrChargeRefused,
			wantStatus: StatusPending, wantStep: StepRefund, wantFailed: StepCharge, wantReason: FailurePaymentRefused},
		{name: "payment down", step: StepCharge, method: "Charge", err: errDown, wantRetry: true},
		{name: "committed", step: StepCommit, wantStatus: StatusConfirmed, wantStep: StepDone},
		{name: "commit finds the stock released", step: StepCommit, method: "Commit", err: ErrReservationReleased,
			wantStatus: StatusPending, wantStep: StepRelease, wantFailed: StepCommit, wantReason: FailureReservationReleased},
		{name: "inventory down while committing", step: StepCommit, method: "Commit", err: errDown, wantRetry: true},
		{name: "refunded after a failed charge", step: StepRefund, failed: StepCharge, cancelled: "pay-9",
			wantStatus: StatusPending, wantStep: StepRelease, wantFailed: StepCharge, wantPayment: "pay-9"},
		{name: "refunded after a failed commit", step: StepRefund, failed: StepCommit, cancelled: "pay-9",
			wantStatus: StatusCancelled, wantStep: StepDone, wantFailed: StepCommit, wantPayment: "pay-9"},
		{name: "nothing to refund", step: StepRefund, failed: StepCharge, wantStatus: StatusPending, wantStep: StepRelease, wantFailed: StepCharge},
		{name: "refund fails", step: StepRefund, failed: StepCharge, method: "CancelCharge", err: errOdd, wantRetry: true},
		{name: "released after a failed charge", step: StepRelease, failed: StepCharge, wantStatus: StatusCancelled, wantStep: StepDone, wantFailed: StepCharge},
		{name: "released after a failed reservation", step: StepRelease, failed: StepReserve, reason: FailureInventoryUnavailable,
			wantStatus: StatusCancelled, wantStep: StepDone, wantFailed: StepReserve, wantReason: FailureInventoryUnavailable},
		{name: "released after stock ran out", step: StepRelease, failed: StepReserve, reason: FailureOutOfStock,
			wantStatus: StatusRejected, wantStep: StepDone, wantFailed: StepReserve, wantReason: FailureOutOfStock},
		{name: "released after a product went", step: StepRelease, failed: StepReserve, reason: FailureProductNotFound,
			wantStatus: StatusRejected, wantStep: StepDone, wantFailed: StepReserve, wantReason: FailureProductNotFound},
		{name: "released after a failed commit", step: StepRelease, failed: StepCommit, wantStatus: StatusPending, wantStep: StepRefund, wantFailed: StepCommit},
		{name: "the lost commit had gone through", step: StepRelease, failed: StepCommit, method: "Release", err: ErrReservationCommitted,
			wantStatus: StatusConfirmed, wantStep: StepDone},
		{name: "committed though it never was", step: StepRelease, failed: StepCharge, method: "Release", err: ErrReservationCommitted, wantRetry: true},
		{name: "release fails", step: StepRelease, failed: StepCharge, method: "Release", err: errDown, wantRetry: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture()
			o := f.atFor(t, f.create(t), tt.step, tt.failed, tt.reason)
			if tt.method != "" {
				f.peers.set(tt.method, tt.err)
			}
			if tt.charge != nil {
				f.peers.charge = *tt.charge
			}
			f.peers.cancelled = tt.cancelled
			f.now = f.now.Add(time.Second)
			got, moved, err := f.svc.Step(t.Context(), o.ID)
			if err != nil {
				t.Fatal(err)
			}
			stored, _ := f.repo.ByID(t.Context(), o.ID)
			if stored.Version != o.Version+1 || stored.Step != got.Step || stored.Status != got.Status {
				t.Fatalf("stored %+v, returned %+v", stored, got)
			}
			if n := len(f.pub.orders); n != 1 || f.pub.orders[0].Version != got.Version {
				t.Fatalf("published %d changes, want the stored one", n)
			}
			if tt.wantRetry {
				wantNext := f.now.Add(testPolicy.Backoff(1, hintOf(tt.err), func(d time.Duration) time.Duration { return d }))
				if moved || got.Status != StatusPending || got.Step != tt.step || got.Attempts != 1 || !got.NextAttempt.Equal(wantNext) || got.LastError == "" {
					t.Fatalf("after a failed attempt: %+v (moved %v); want a retry of %s at %v", got, moved, tt.step, wantNext)
				}
				return
			}
			if !moved || got.Status != tt.wantStatus || got.Step != tt.wantStep || got.FailedStep != tt.wantFailed ||
				got.FailureReason != tt.wantReason || got.PaymentID != tt.wantPayment || got.Attempts != 0 {
				t.Fatalf("got %s %s failed %q reason %q payment %q (moved %v); want %s %s failed %q reason %q payment %q",
					got.Status, got.Step, got.FailedStep, got.FailureReason, got.PaymentID, moved,
					tt.wantStatus, tt.wantStep, tt.wantFailed, tt.wantReason, tt.wantPayment)
			}
			switch {
			case got.Status.Terminal() && (!got.NextAttempt.IsZero() || !got.StepDeadline.IsZero()):
				t.Fatalf("terminal order keeps timers: %+v", got)
			case !got.Status.Terminal() && !got.StepDeadline.IsZero():
				t.Fatalf("a step just entered has a deadline before any failure: %+v", got)
			}
		})
	}
}

// TestQueuedTimeDoesNotCountAgainstTheBound: an order that waited in the
// runner's queue longer than the step bound still gets its retries when its
// first attempt fails; only time since that failure counts.
func TestQueuedTimeDoesNotCountAgainstTheBound(t *testing.T) {
	f := newFixture()
	o := f.create(t)
	f.peers.set("CheckUser", errDown)
	f.now = f.now.Add(3 * testPolicy.StepTimeout) // queued behind a backlog
	got, _, err := f.svc.Step(t.Context(), o.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got.Status != StatusPending || got.Step != StepCheckUser || got.Attempts != 1 {
		t.Fatalf("after one failed attempt: %s %s attempts %d; want a retry of CHECK_USER", got.Status, got.Step, got.Attempts)
	}
	if want := f.now.Add(testPolicy.StepTimeout); !got.StepDeadline.Equal(want) {
		t.Fatalf("deadline %v, want %v (bound from the first failure)", got.StepDeadline, want)
	}
}

func hintOf(err error) time.Duration {
	var re *RetryableError
	if errors.As(err, &re) {
		return re.RetryAfter
	}
	return 0
}

// givingUpCase is a forward step given up, and where that leaves the order.
type givingUpCase struct {
	step       Step
	method     string // the peer call the step makes
	wantStatus Status
	wantStep   Step
	wantReason string
}

// givingUp lists every forward step given up, a charge for chargeReason.
func givingUp(chargeReason string) []givingUpCase {
	return []givingUpCase{
		{StepCheckUser, "CheckUser", StatusCancelled, StepDone, FailureUsersUnavailable},
		{StepPrice, "Prices", StatusCancelled, StepDone, FailureInventoryUnavailable},
		{StepReserve, "Reserve", StatusPending, StepRelease, FailureInventoryUnavailable},
		{StepCharge, "Charge", StatusPending, StepRefund, chargeReason},
		{StepCommit, "Commit", StatusPending, StepRelease, FailureInventoryUnavailable},
	}
}

func TestStepGivesUpAtTheBound(t *testing.T) {
	for _, tt := range givingUp(FailurePaymentUnavailable) {
		t.Run(string(tt.step), func(t *testing.T) {
			f := newFixture()
			o := f.at(t, f.create(t), tt.step, "")
			f.peers.set(tt.method, errDown)
			// The bound runs from the first failure.
			deadline := f.now.Add(testPolicy.StepTimeout)
			var attempts []time.Time
			for {
				attempts = append(attempts, f.now)
				got, _, err := f.svc.Step(t.Context(), o.ID)
				if err != nil {
					t.Fatal(err)
				}
				if got.Step != tt.step {
					if got.Status != tt.wantStatus || got.Step != tt.wantStep || got.FailureReason != tt.wantReason || got.LastError == "" {
						t.Fatalf("given up to %+v; want %s %s %s", got, tt.wantStatus, tt.wantStep, tt.wantReason)
					}
					if tt.wantStep != StepDone && got.FailedStep != tt.step {
						t.Fatalf("compensating %q, want %s", got.FailedStep, tt.step)
					}
					break
				}
				if got.NextAttempt.After(deadline) {
					t.Fatalf("next attempt %v after the deadline %v", got.NextAttempt, deadline)
				}
				f.now = got.NextAttempt
			}
			// Backoff grows to its cap, and the last attempt is at the bound.
			if last := attempts[len(attempts)-1]; !last.Equal(deadline) {
				t.Fatalf("last attempt at %v, want the deadline %v", last, deadline)
			}
			for i := 2; i < len(attempts); i++ {
				gap := attempts[i].Sub(attempts[i-1])
				if gap > testPolicy.MaxBackoff || gap < attempts[i-1].Sub(attempts[i-2]) && i != len(attempts)-1 {
					t.Fatalf("attempts at %v: gap %d is %v", attempts, i, gap)
				}
			}
		})
	}

	t.Run("compensation never gives up", func(t *testing.T) {
		f := newFixture()
		o := f.at(t, f.create(t), StepRefund, StepCharge)
		f.peers.set("CancelCharge", errDown)
		start := f.now
		for range 50 {
			got, _, err := f.svc.Step(t.Context(), o.ID)
			if err != nil || got.Step != StepRefund || got.Status != StatusPending {
				t.Fatalf("compensation: %+v, %v", got, err)
			}
			f.now = got.NextAttempt
		}
		// Capped at MaxBackoff (1s), jittered at the top of the range.
		if d := f.now.Sub(start); d < 40*time.Second || d > 50*time.Second {
			t.Fatalf("50 retries took %v; want backoff growing to its 1s cap", d)
		}
		f.peers.set("CancelCharge", nil)
		if got, _ := f.run(t, o.ID); got.Status != StatusCancelled {
			t.Fatalf("after recovery: %+v", got)
		}
	})
}

// TestStepGivesUpWhenRefused: a forward step whose peer refuses the call
// for good (a *RefusedError) is given up at the first answer, as it would
// be at its bound, without waiting; a charge so refused is cancelled
// (PAYMENT_REFUSED) in case money moved under its key. Compensation never
// gives up, refused or not.
func TestStepGivesUpWhenRefused(t *testing.T) {
	refused := &RefusedError{Cause: errors.New("invalid amount.currency_code: not ISO 4217")}
	for _, tt := range givingUp(FailurePaymentRefused) {
		t.Run(string(tt.step), func(t *testing.T) {
			f := newFixture()
			o := f.at(t, f.create(t), tt.step, "")
			f.peers.set(tt.method, refused)
			got, moved, err := f.svc.Step(t.Context(), o.ID)
			if err != nil {
				t.Fatal(err)
			}
			if !moved || got.Status != tt.wantStatus || got.Step != tt.wantStep || got.FailureReason != tt.wantReason {
				t.Fatalf("after one refusal: %+v (moved %v); want %s %s %s", got, moved, tt.wantStatus, tt.wantStep, tt.wantReason)
			}
			if !strings.Contains(got.LastError, "not ISO 4217") {
				t.Errorf("last error %q does not say why", got.LastError)
			}
			if tt.wantStep != StepDone && got.FailedStep != tt.step {
				t.Errorf("compensating %q, want %s", got.FailedStep, tt.step)
			}
			f.peers.set(tt.method, nil)
			if end, _ := f.run(t, o.ID); end.Status != StatusCancelled {
				t.Errorf("ended %+v, want CANCELLED", end)
			}
		})
	}

	t.Run("compensation", func(t *testing.T) {
		f := newFixture()
		o := f.at(t, f.create(t), StepRelease, StepReserve)
		f.peers.set("Release", refused)
		for range 5 {
			got, _, err := f.svc.Step(t.Context(), o.ID)
			if err != nil || got.Step != StepRelease || got.Status != StatusPending {
				t.Fatalf("refused compensation: %+v, %v; want it retried", got, err)
			}
			f.now = got.NextAttempt
		}
	})
}

func TestStepWaitsForNextAttempt(t *testing.T) {
	f := newFixture()
	o := f.create(t)
	f.peers.set("CheckUser", errDown)
	got, _, err := f.svc.Step(t.Context(), o.ID)
	if err != nil || got.Attempts != 1 {
		t.Fatalf("first attempt: %+v, %v", got, err)
	}
	calls := len(f.peers.calls)
	f.now = got.NextAttempt.Add(-time.Microsecond)
	again, moved, err := f.svc.Step(t.Context(), o.ID)
	if err != nil || moved || again.Version != got.Version || len(f.peers.calls) != calls {
		t.Fatalf("Step before the next attempt: %+v, moved %v, %v, %d calls; want nothing done", again, moved, err, len(f.peers.calls)-calls)
	}
}

func TestStepConflict(t *testing.T) {
	f := newFixture()
	o := f.create(t)
	other := newFixture()
	other.repo = f.repo
	// Another runner moves the order on while this one calls the user service.
	f.repo.beforeSave = func() {
		f.repo.beforeSave = nil
		stored, _ := f.repo.ByID(t.Context(), o.ID)
		next := stored.Clone()
		next.enter(StepPrice, f.now)
		next.Version++
		if err := f.repo.Save(t.Context(), next, stored.Version, false); err != nil {
			t.Error(err)
		}
	}
	got, moved, err := f.svc.Step(t.Context(), o.ID)
	if err != nil || moved || got.Step != StepPrice || got.Version != o.Version+1 {
		t.Fatalf("Step after losing the race = %+v, moved %v, %v; want the winner's order", got, moved, err)
	}
	if len(f.pub.orders) != 0 {
		t.Fatalf("published %d changes that were not stored", len(f.pub.orders))
	}
}

func TestStepStopsWithItsContext(t *testing.T) {
	f := newFixture()
	o := f.create(t)
	f.peers.block = true
	ctx, cancel := context.WithCancel(t.Context())
	go func() {
		for {
			f.peers.mu.Lock()
			n := len(f.peers.calls)
			f.peers.mu.Unlock()
			if n > 0 {
				cancel()
				return
			}
			time.Sleep(time.Millisecond)
		}
	}()
	if _, _, err := f.svc.Step(ctx, o.ID); !errors.Is(err, context.Canceled) {
		t.Fatalf("Step = %v, want context.Canceled", err)
	}
	if stored, _ := f.repo.ByID(t.Context(), o.ID); stored.Version != o.Version || stored.Attempts != 0 {
		t.Fatalf("stored %+v; an abandoned attempt must store nothing", stored)
	}
}

func TestStepPassesContext(t *testing.T) {
	f := newFixture()
	f.svc.StepContext = func(ctx context.Context, o *Order) context.Context {
		return context.WithValue(ctx, ctxKey{}, "order "+o.ID)
	}
	o := f.create(t)
	if _, _, err := f.svc.Step(t.Context(), o.ID); err != nil {
		t.Fatal(err)
	}
	if f.peers.sawValue != "order "+o.ID || !f.peers.sawDeadline {
		t.Fatalf("peer saw %v (deadline %v); want the step's context, bounded by CallTimeout", f.peers.sawValue, f.peers.sawDeadline)
	}
}

func TestSagaRuns(t *testing.T) {
	tests := []struct {
		name       string
		setup      func(f *fixture)
		wantSteps  []Step
		wantStatus Status
		wantReason string
		wantCalls  []string
	}{
		{
			name:       "happy path",
			wantSteps:  []Step{StepCheckUser, StepPrice, StepReserve, StepCharge, StepCommit, StepDone},
			wantStatus: StatusConfirmed,
			wantCalls:  []string{"CheckUser", "Prices", "Reserve", "Charge", "Commit"},
		},
		{
			name: "declined",
			setup: func(f *fixture) {
				f.peers.charge = PaymentResult{PaymentID: "p", Declined: true, DeclineReason: "PAYMENT_DECLINED"}
			},
			wantSteps:  []Step{StepCheckUser, StepPrice, StepReserve, StepCharge, StepRelease, StepDone},
			wantStatus: StatusCancelled, wantReason: "PAYMENT_DECLINED",
			wantCalls: []string{"CheckUser", "Prices", "Reserve", "Charge", "Release"},
		},
		{
			name:       "out of stock",
			setup:      func(f *fixture) { f.peers.set("Reserve", errStock) },
			wantSteps:  []Step{StepCheckUser, StepPrice, StepReserve, StepRelease, StepDone},
			wantStatus: StatusRejected, wantReason: FailureOutOfStock,
			wantCalls: []string{"CheckUser", "Prices", "Reserve", "Release"},
		},
		{
			name:       "payment down past the bound",
			setup:      func(f *fixture) { f.peers.set("Charge", errDown) },
			wantSteps:  []Step{StepCheckUser, StepPrice, StepReserve, StepCharge, StepRefund, StepRelease, StepDone},
			wantStatus: StatusCancelled, wantReason: FailurePaymentUnavailable,
		},
		{
			name:       "inventory down at commit",
			setup:      func(f *fixture) { f.peers.set("Commit", errDown) },
			wantSteps:  []Step{StepCheckUser, StepPrice, StepReserve, StepCharge, StepCommit, StepRelease, StepRefund, StepDone},
			wantStatus: StatusCancelled, wantReason: FailureInventoryUnavailable,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture()
			if tt.setup != nil {
				tt.setup(f)
			}
			o := f.create(t)
			got, steps := f.run(t, o.ID)
			if !slices.Equal(steps, tt.wantSteps) || got.Status != tt.wantStatus || got.FailureReason != tt.wantReason {
				t.Fatalf("saga went %v to %s %q; want %v to %s %q", steps, got.Status, got.FailureReason, tt.wantSteps, tt.wantStatus, tt.wantReason)
			}
			if tt.wantCalls != nil && !slices.Equal(f.peers.calls, tt.wantCalls) {
				t.Fatalf("calls %v, want %v", f.peers.calls, tt.wantCalls)
			}
			for _, c := range f.peers.charges {
				if c.IdempotencyKey != PaymentKey(o) || c.Reference != o.ID || c.UserID != alice || c.Amount != (Money{"USD", 1000}) || c.Token != "tok_approve" {
					t.Fatalf("charge %+v", c)
				}
			}
		})
	}
}

func TestBackoff(t *testing.T) {
	p := SagaPolicy{InitialBackoff: 100 * time.Millisecond, MaxBackoff: time.Second}
	top := func(d time.Duration) time.Duration { return d }
	bottom := func(time.Duration) time.Duration { return 0 }
	tests := []struct {
		attempts int
		hint     time.Duration
		jitter   func(time.Duration) time.Duration
		want     time.Duration
	}{
		{1, 0, top, 100 * time.Millisecond},
		{2, 0, top, 200 * time.Millisecond},
		{4, 0, top, 800 * time.Millisecond},
		{5, 0, top, time.Second},
		{1000, 0, top, time.Second},
		{1, 0, bottom, 50 * time.Millisecond},
		{5, 0, bottom, 500 * time.Millisecond},
		{1, 300 * time.Millisecond, top, 300 * time.Millisecond},
		{1, time.Minute, top, time.Second},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprint(tt.attempts, " ", tt.hint), func(t *testing.T) {
			if got := p.Backoff(tt.attempts, tt.hint, tt.jitter); got != tt.want {
				t.Fatalf("Backoff = %v, want %v", got, tt.want)
			}
		})
	}
	for range 100 {
		if d := p.Backoff(3, 0, randomJitter); d < 200*time.Millisecond || d > 400*time.Millisecond {
			t.Fatalf("jittered backoff %v outside [200ms, 400ms]", d)
		}
	}
	if got := (SagaPolicy{}).WithDefaults(); got.StepTimeout != DefaultStepTimeout || got.CallTimeout != DefaultCallTimeout ||
		got.InitialBackoff != DefaultInitialBackoff || got.MaxBackoff != DefaultMaxBackoff {
		t.Fatalf("defaults %+v", got)
	}
}

// TestTruncate: a step's error is stored as text PostgreSQL takes (valid
// UTF-8 without NUL, at most maxErrorLen bytes); a peer's message with a
// NUL in it used to make the order's every save fail there.
func TestTruncate(t *testing.T) {
	long := strings.Repeat("é", maxErrorLen) // two bytes each
	tests := []struct{ name, in, want string }{
		{name: "plain", in: "payment down", want: "payment down"},
		{name: "NUL", in: "bad\x00peer", want: "bad?peer"},
		{name: "invalid UTF-8", in: "bad\xffpeer", want: "bad?peer"},
		{name: "long, cut between runes", in: "x" + long, want: "x" + long[:maxErrorLen-2]},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := truncate(tt.in); got != tt.want {
				t.Errorf("truncate(%q) = %q, want %q", tt.in, got, tt.want)
			}
		})
	}
}
