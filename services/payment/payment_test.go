package payment_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	paymentv1 "github.com/duetkit/duet/gen/duet/payment/v1"
	typev1 "github.com/duetkit/duet/gen/duet/type/v1"
	"github.com/duetkit/duet/kit/apierr"
	"github.com/duetkit/duet/kit/apierr/apierrtest"
	"github.com/duetkit/duet/kit/metrics"
	"github.com/duetkit/duet/kit/server"
	"github.com/duetkit/duet/kit/server/servertest"
	"github.com/duetkit/duet/kit/sqldb/sqldbtest"
	"github.com/duetkit/duet/services/payment"
	"github.com/duetkit/duet/services/payment/domain"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// start runs the payment service on a loopback port behind the kit's server
// stack and returns a client connected over real gRPC.
func start(t *testing.T, cfg payment.Config, configure ...func(*server.Config)) paymentv1.PaymentServiceClient {
	t.Helper()
	svc, err := payment.Open(t.Context(), cfg)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { // after the server has drained: cleanups run last-in first-out
		if err := svc.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	scfg := server.Config{Name: "payment", DisableAccessLog: true, DrainTimeout: 5 * time.Second}
	for _, c := range configure {
		c(&scfg)
	}
	return paymentv1.NewPaymentServiceClient(servertest.Start(t, scfg, svc.Register))
}

func money(currency string, units int64) *typev1.Money {
	return &typev1.Money{CurrencyCode: currency, Units: units}
}

func TestCharge(t *testing.T) {
	sqldbtest.Run(t, func(t *testing.T, url string) {
		client := start(t, payment.Config{DatabaseURL: url})
		tests := []struct {
			name       string
			req        *paymentv1.ChargeRequest
			wantCode   codes.Code
			wantReason string
			wantField  string
			wantRetry  bool
			// wantRecorded: the error names a payment that GetPayment returns DECLINED.
			wantRecorded bool
		}{
			{name: "approve", req: &paymentv1.ChargeRequest{Amount: money("USD", 1999), PaymentMethodToken: "tok_approve", IdempotencyKey: "a1", Reference: "order-1"}},
			{name: "decline", req: &paymentv1.ChargeRequest{Amount: money("USD", 1999), PaymentMethodToken: "tok_decline", IdempotencyKey: "d1"},
				wantCode: codes.FailedPrecondition, wantReason: "PAYMENT_DECLINED", wantRecorded: true},
			{name: "insufficient funds", req: &paymentv1.ChargeRequest{Amount: money("USD", 1999), PaymentMethodToken: "tok_insufficient", IdempotencyKey: "i1"},
				wantCode: codes.FailedPrecondition, wantReason: "INSUFFICIENT_FUNDS", wantRecorded: true},
			{name: "provider unavailable", req: &paymentv1.ChargeRequest{Amount: money("USD", 1999), PaymentMethodToken: "tok_unavailable", IdempotencyKey: "u1"},
				wantCode: codes.Unavailable, wantReason: "PROVIDER_UNAVAILABLE", wantRetry: true},
			{name: "unknown token", req: &paymentv1.ChargeRequest{Amount: money("USD", 1999), PaymentMethodToken: "tok_who", IdempotencyKey: "x1"},
				wantCode: codes.InvalidArgument, wantReason: "INVALID_ARGUMENT", wantField: "payment_method_token"},
			{name: "zero amount", req: &paymentv1.ChargeRequest{Amount: money("USD", 0), PaymentMethodToken: "tok_approve", IdempotencyKey: "z1"},
				wantCode: codes.InvalidArgument, wantReason: "INVALID_ARGUMENT", wantField: "amount.units"},
			{name: "no amount", req: &paymentv1.ChargeRequest{PaymentMethodToken: "tok_approve", IdempotencyKey: "n1"},
				wantCode: codes.InvalidArgument, wantReason: "INVALID_ARGUMENT", wantField: "amount"},
			{name: "bad currency", req: &paymentv1.ChargeRequest{Amount: money("usd", 5), PaymentMethodToken: "tok_approve", IdempotencyKey: "c1"},
				wantCode: codes.InvalidArgument, wantReason: "INVALID_ARGUMENT", wantField: "amount.currency_code"},
			{name: "unknown currency", req: &paymentv1.ChargeRequest{Amount: money("XYZ", 5), PaymentMethodToken: "tok_approve", IdempotencyKey: "c2"},
				wantCode: codes.InvalidArgument, wantReason: "INVALID_ARGUMENT", wantField: "amount.currency_code"},
			{name: "no idempotency key", req: &paymentv1.ChargeRequest{Amount: money("USD", 5), PaymentMethodToken: "tok_approve"},
				wantCode: codes.InvalidArgument, wantReason: "INVALID_ARGUMENT", wantField: "idempotency_key"},
			// PostgreSQL cannot store a NUL in TEXT: refused up front on
			// every database alike.
			{name: "NUL in the idempotency key", req: &paymentv1.ChargeRequest{Amount: money("USD", 5), PaymentMethodToken: "tok_approve", IdempotencyKey: "k\x00z"},
				wantCode: codes.InvalidArgument, wantReason: "INVALID_ARGUMENT", wantField: "idempotency_key"},
			{name: "NUL in the reference", req: &paymentv1.ChargeRequest{Amount: money("USD", 5), PaymentMethodToken: "tok_approve", IdempotencyKey: "nul-ref", Reference: "\x00"},
				wantCode: codes.InvalidArgument, wantReason: "INVALID_ARGUMENT", wantField: "reference"},
			{name: "NUL in the user id", req: &paymentv1.ChargeRequest{Amount: money("USD", 5), PaymentMethodToken: "tok_approve", IdempotencyKey: "nul-user", UserId: "u\x00"},
				wantCode: codes.InvalidArgument, wantReason: "INVALID_ARGUMENT", wantField: "user_id"},
			// A notification filed under it could never be listed: the
			// notification service takes only UUIDs.
			{name: "user id not a UUID", req: &paymentv1.ChargeRequest{Amount: money("USD", 5), PaymentMethodToken: "tok_approve", IdempotencyKey: "bob-user", UserId: "bob"},
				wantCode: codes.InvalidArgument, wantReason: "INVALID_ARGUMENT", wantField: "user_id"},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				resp, err := client.Charge(t.Context(), tt.req)
				if tt.wantCode == codes.OK {
					if err != nil {
						t.Fatalf("Charge: %v", err)
					}
					p := resp.GetPayment()
					if p.GetStatus() != paymentv1.PaymentStatus_PAYMENT_STATUS_CAPTURED || p.GetAmount().GetUnits() != 1999 ||
						p.GetRefunded().GetUnits() != 0 || p.GetReference() != "order-1" || p.GetIdempotencyKey() != "a1" ||
						p.GetCreateTime() == nil {
						t.Fatalf("Charge = %v", p)
					}
					return
				}
				apierrtest.Check(t, err, tt.wantCode, tt.wantReason, tt.wantField)
				if d, ok := apierr.RetryDelay(err); ok != tt.wantRetry || (ok && d != time.Second) {
					t.Fatalf("RetryInfo %v %v, want present=%v (1s)", d, ok, tt.wantRetry)
				}
				id := apierr.Info(err).GetMetadata()["payment_id"]
				if tt.wantRecorded {
					got, err := client.GetPayment(t.Context(), &paymentv1.GetPaymentRequest{Id: id})
					if err != nil || got.GetPayment().GetStatus() != paymentv1.PaymentStatus_PAYMENT_STATUS_DECLINED ||
						got.GetPayment().GetDeclineReason() != tt.wantReason {
						t.Fatalf("GetPayment(%q) = %v, %v; want DECLINED %s", id, got, err, tt.wantReason)
					}
				} else if id != "" {
					t.Fatalf("error names payment %q; nothing should be recorded", id)
				}
			})
		}
	})
}

func TestChargeIdempotency(t *testing.T) {
	sqldbtest.Run(t, func(t *testing.T, url string) {
		client := start(t, payment.Config{DatabaseURL: url})
		ctx := t.Context()
		req := &paymentv1.ChargeRequest{Amount: money("EUR", 500), PaymentMethodToken: "tok_approve", IdempotencyKey: "key-1", Reference: "r"}
		first, err := client.Charge(ctx, req)
		if err != nil {
			t.Fatal(err)
		}
		again, err := client.Charge(ctx, req)
		if err != nil || again.GetPayment().GetId() != first.GetPayment().GetId() {
			t.Fatalf("repeat = %v, %v; want payment %s", again, err, first.GetPayment().GetId())
		}
		other := &paymentv1.ChargeRequest{Amount: money("EUR", 501), PaymentMethodToken: "tok_approve", IdempotencyKey: "key-1", Reference: "r"}
		_, err = client.Charge(ctx, other)
		apierrtest.Check(t, err, codes.FailedPrecondition, "IDEMPOTENCY_KEY_REUSED", "")

		decline := &paymentv1.ChargeRequest{Amount: money("EUR", 500), PaymentMethodToken: "tok_decline", IdempotencyKey: "key-2"}
		_, err1 := client.Charge(ctx, decline)
		_, err2 := client.Charge(ctx, decline)
		apierrtest.Check(t, err2, codes.FailedPrecondition, "PAYMENT_DECLINED", "")
		id1, id2 := apierr.Info(err1).GetMetadata()["payment_id"], apierr.Info(err2).GetMetadata()["payment_id"]
		if id1 == "" || id1 != id2 {
			t.Fatalf("declined twice with payment ids %q and %q; want the same", id1, id2)
		}
	})
}

func TestRefund(t *testing.T) {
	sqldbtest.Run(t, func(t *testing.T, url string) {
		client := start(t, payment.Config{DatabaseURL: url})
		ctx := t.Context()
		charged, err := client.Charge(ctx, &paymentv1.ChargeRequest{Amount: money("USD", 1000), PaymentMethodToken: "tok_approve", IdempotencyKey: "c"})
		if err != nil {
			t.Fatal(err)
		}
		id := charged.GetPayment().GetId()
		_, declineErr := client.Charge(ctx, &paymentv1.ChargeRequest{Amount: money("USD", 1000), PaymentMethodToken: "tok_decline", IdempotencyKey: "d"})
		declinedID := apierr.Info(declineErr).GetMetadata()["payment_id"]

		steps := []struct {
			name         string
			req          *paymentv1.RefundRequest
			wantCode     codes.Code
			wantReason   string
			wantField    string
			wantRefunded int64
			wantStatus   paymentv1.PaymentStatus
		}{
			{name: "part", req: &paymentv1.RefundRequest{Id: id, Amount: money("USD", 250), IdempotencyKey: "r1"},
				wantRefunded: 250, wantStatus: paymentv1.PaymentStatus_PAYMENT_STATUS_PARTIALLY_REFUNDED},
			{name: "keyed repeat", req: &paymentv1.RefundRequest{Id: id, Amount: money("USD", 250), IdempotencyKey: "r1"},
				wantRefunded: 250, wantStatus: paymentv1.PaymentStatus_PAYMENT_STATUS_PARTIALLY_REFUNDED},
			{name: "other currency", req: &paymentv1.RefundRequest{Id: id, Amount: money("EUR", 10)},
				wantCode: codes.InvalidArgument, wantReason: "CURRENCY_MISMATCH", wantField: "amount.currency_code"},
			{name: "zero", req: &paymentv1.RefundRequest{Id: id, Amount: money("USD", 0)},
				wantCode: codes.InvalidArgument, wantReason: "INVALID_ARGUMENT", wantField: "amount.units"},
			{name: "too much", req: &paymentv1.RefundRequest{Id: id, Amount: money("USD", 751)},
				wantCode: codes.FailedPrecondition, wantReason: "REFUND_EXCEEDS_CHARGE"},
			{name: "the rest", req: &paymentv1.RefundRequest{Id: id},
				wantRefunded: 1000, wantStatus: paymentv1.PaymentStatus_PAYMENT_STATUS_REFUNDED},
			{name: "fully refunded, again", req: &paymentv1.RefundRequest{Id: id},
				wantCode: codes.FailedPrecondition, wantReason: "REFUND_EXCEEDS_CHARGE"},
			{name: "declined payment", req: &paymentv1.RefundRequest{Id: declinedID},
				wantCode: codes.FailedPrecondition, wantReason: "PAYMENT_NOT_REFUNDABLE"},
			{name: "unknown payment", req: &paymentv1.RefundRequest{Id: "00000000-0000-4000-8000-000000000000"},
				wantCode: codes.NotFound, wantReason: "PAYMENT_NOT_FOUND"},
			{name: "malformed id", req: &paymentv1.RefundRequest{Id: "nope"},
				wantCode: codes.InvalidArgument, wantReason: "INVALID_ARGUMENT", wantField: "id"},
			{name: "NUL in the idempotency key", req: &paymentv1.RefundRequest{Id: id, IdempotencyKey: "r\x00"},
				wantCode: codes.InvalidArgument, wantReason: "INVALID_ARGUMENT", wantField: "idempotency_key"},
		}
		for _, st := range steps {
			resp, err := client.Refund(ctx, st.req)
			if st.wantCode != codes.OK {
				t.Run(st.name, func(t *testing.T) { apierrtest.Check(t, err, st.wantCode, st.wantReason, st.wantField) })
				continue
			}
			p := resp.GetPayment()
			if err != nil || p.GetRefunded().GetUnits() != st.wantRefunded || p.GetRefunded().GetCurrencyCode() != "USD" || p.GetStatus() != st.wantStatus {
				t.Fatalf("%s: Refund = %v, %v; want refunded %d, %s", st.name, p, err, st.wantRefunded, st.wantStatus)
			}
		}
		got, err := client.GetPayment(ctx, &paymentv1.GetPaymentRequest{Id: id})
		if err != nil || got.GetPayment().GetRefunded().GetUnits() != 1000 {
			t.Fatalf("GetPayment = %v, %v", got, err)
		}
	})
}

func TestGetPaymentNotFound(t *testing.T) {
	client := start(t, payment.Config{DatabaseURL: sqldbtest.URLs(t)["sqlite"]})
	_, err := client.GetPayment(t.Context(), &paymentv1.GetPaymentRequest{Id: "00000000-0000-4000-8000-000000000000"})
	apierrtest.Check(t, err, codes.NotFound, "PAYMENT_NOT_FOUND", "")
}

func TestOpenRequiresDatabase(t *testing.T) {
	if _, err := payment.Open(t.Context(), payment.Config{}); err == nil {
		t.Fatal("Open without a database succeeded")
	}
}

// lateProvider captures a charge only once its caller has gone, as a real
// provider answering slowly might; called tells when it was asked.
type lateProvider struct{ called chan struct{} }

func (p lateProvider) Charge(ctx context.Context, _ domain.ProviderCharge) (domain.ProviderResult, error) {
	p.called <- struct{}{}
	<-ctx.Done()
	return domain.ProviderResult{Approved: true}, nil
}

func (lateProvider) Void(context.Context, string) error { return nil }

func (lateProvider) Refund(context.Context, domain.ProviderRefund) error { return nil }

// TestChargeCapturedAfterDeadline: money the provider captured after the
// caller had gone (its deadline passed, or it cancelled) is recorded, so the order saga's compensation,
// CancelCharge of the key, refunds it. The payment was written with the
// caller's context, which had ended: nothing was recorded, and CancelCharge
// marked the key cancelled with the money still captured.
func TestChargeCapturedAfterDeadline(t *testing.T) {
	sqldbtest.Run(t, func(t *testing.T, url string) {
		handled := make(chan struct{}, 1)
		provider := lateProvider{called: make(chan struct{}, 1)}
		client := start(t, payment.Config{DatabaseURL: url, Provider: provider}, func(c *server.Config) {
			c.UnaryInterceptors = append(c.UnaryInterceptors, func(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
				resp, err := h(ctx, req)
				if info.FullMethod == paymentv1.PaymentService_Charge_FullMethodName {
					handled <- struct{}{}
				}
				return resp, err
			})
		})
		// The caller gives up once the provider has the charge.
		ctx, cancel := context.WithCancel(t.Context())
		defer cancel()
		go func() {
			select {
			case <-provider.called:
			case <-ctx.Done():
			}
			cancel()
		}()
		_, err := client.Charge(ctx, &paymentv1.ChargeRequest{Amount: money("USD", 1999), PaymentMethodToken: "tok_approve", IdempotencyKey: "late-1"})
		if status.Code(err) != codes.Canceled {
			t.Fatalf("Charge = %v, want CANCELED", err)
		}
		select {
		case <-handled:
		case <-time.After(10 * time.Second):
			t.Fatal("the Charge handler did not return")
		}
		resp, err := client.CancelCharge(t.Context(), &paymentv1.CancelChargeRequest{IdempotencyKey: "late-1"})
		if err != nil {
			t.Fatal(err)
		}
		if p := resp.GetPayment(); p.GetStatus() != paymentv1.PaymentStatus_PAYMENT_STATUS_REFUNDED {
			t.Errorf("CancelCharge found %v, want the captured payment, refunded", p)
		}
	})
}

// flakyProvider approves every charge and refuses refunds and voids while
// down, recording the refunds and voids it made.
type flakyProvider struct {
	mu       sync.Mutex
	down     bool
	refunded []domain.ProviderRefund
	voided   []string
}

func (*flakyProvider) Charge(context.Context, domain.ProviderCharge) (domain.ProviderResult, error) {
	return domain.ProviderResult{Approved: true}, nil
}

func (p *flakyProvider) Void(_ context.Context, key string) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.down {
		return domain.ErrProviderUnavailable
	}
	p.voided = append(p.voided, key)
	return nil
}

func (p *flakyProvider) voids() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]string(nil), p.voided...)
}

func (p *flakyProvider) Refund(_ context.Context, r domain.ProviderRefund) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.down {
		return domain.ErrProviderUnavailable
	}
	p.refunded = append(p.refunded, r)
	return nil
}

func (p *flakyProvider) setDown(down bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.down = down
}

func (p *flakyProvider) refunds() []domain.ProviderRefund {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]domain.ProviderRefund(nil), p.refunded...)
}

// TestRefundsRetried: a refund the provider refuses is answered with the
// payment, its amount in refund_pending, and the service asks the provider
// again on its own until it confirms: in the process that made the
// refund, and in a later one when that one stopped first.
func TestRefundsRetried(t *testing.T) {
	sqldbtest.Run(t, func(t *testing.T, url string) {
		for _, restart := range []bool{false, true} {
			provider := &flakyProvider{down: true}
			cfg := payment.Config{DatabaseURL: url, Provider: provider, RefundRetryInterval: 10 * time.Millisecond}
			// open starts a payment service; the func it returns stops it, once.
			open := func() (paymentv1.PaymentServiceClient, func()) {
				svc, err := payment.Open(t.Context(), cfg)
				if err != nil {
					t.Fatal(err)
				}
				var once sync.Once
				stop := func() {
					once.Do(func() {
						if err := svc.Close(); err != nil {
							t.Error(err)
						}
					})
				}
				t.Cleanup(stop)
				return paymentv1.NewPaymentServiceClient(servertest.Start(t, server.Config{Name: "payment", DisableAccessLog: true}, svc.Register)), stop
			}
			client, closeService := open()
			key := fmt.Sprint("retried-", restart)
			charged, err := client.Charge(t.Context(), &paymentv1.ChargeRequest{Amount: money("EUR", 700), PaymentMethodToken: "tok_approve", IdempotencyKey: key})
			if err != nil {
				t.Fatal(err)
			}
			id := charged.GetPayment().GetId()
			resp, err := client.Refund(t.Context(), &paymentv1.RefundRequest{Id: id, Amount: money("EUR", 300)})
			if err != nil {
				t.Fatalf("Refund with the provider down = %v, want the payment", err)
			}
			if p := resp.GetPayment(); p.GetRefunded().GetUnits() != 300 || p.GetRefundPending().GetUnits() != 300 || p.GetRefundPending().GetCurrencyCode() != "EUR" {
				t.Fatalf("Refund with the provider down answered %v, want 300 refunded, all of it pending", p)
			}
			if restart {
				// Stopped while the provider is down: only the next
				// process can complete the refund.
				closeService()
				client, closeService = open()
			}
			provider.setDown(false)
			deadline := time.Now().Add(10 * time.Second)
			for {
				got, err := client.GetPayment(t.Context(), &paymentv1.GetPaymentRequest{Id: id})
				if err != nil {
					t.Fatal(err)
				}
				if got.GetPayment().GetRefundPending().GetUnits() == 0 {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("restart %v: refund still pending after 10 s: %v", restart, got.GetPayment())
				}
				time.Sleep(5 * time.Millisecond)
			}
			if r := provider.refunds(); len(r) != 1 || r[0].ChargeKey != key || r[0].Amount != (domain.Money{Currency: "EUR", Units: 300}) || r[0].IdempotencyKey == "" {
				t.Fatalf("restart %v: provider refunded %+v, want the one refund of 300 under the charge's key", restart, r)
			}
			// Else its retries, with this provider, would take the next
			// case's refund: the two share the database.
			closeService()
		}
	})
}

// TestVoidsRetried: a cancel whose void the provider refused answers
// UNAVAILABLE, and the service voids the key on its own once the provider
// is back, without the cancel sent again: in the next process too, when
// the one that cancelled stopped first.
func TestVoidsRetried(t *testing.T) {
	sqldbtest.Run(t, func(t *testing.T, url string) {
		provider := &flakyProvider{down: true}
		cfg := payment.Config{DatabaseURL: url, Provider: provider, RefundRetryInterval: 10 * time.Millisecond}
		svc, err := payment.Open(t.Context(), cfg)
		if err != nil {
			t.Fatal(err)
		}
		client := paymentv1.NewPaymentServiceClient(servertest.Start(t, server.Config{Name: "payment", DisableAccessLog: true}, svc.Register))
		_, err = client.CancelCharge(t.Context(), &paymentv1.CancelChargeRequest{IdempotencyKey: "never-charged"})
		apierrtest.Check(t, err, codes.Unavailable, "PROVIDER_UNAVAILABLE", "")
		if err := svc.Close(); err != nil {
			t.Fatal(err)
		}
		provider.setDown(false)
		svc, err = payment.Open(t.Context(), cfg)
		if err != nil {
			t.Fatal(err)
		}
		defer func() {
			if err := svc.Close(); err != nil {
				t.Error(err)
			}
		}()
		for deadline := time.Now().Add(10 * time.Second); len(provider.voids()) == 0; {
			if time.Now().After(deadline) {
				t.Fatal("the cancelled key was not voided within 10 s")
			}
			time.Sleep(5 * time.Millisecond)
		}
		if v := provider.voids(); len(v) != 1 || v[0] != "never-charged" {
			t.Fatalf("voided %v, want the cancelled key once", v)
		}
	})
}

// pendingAge reads PendingOldestMetric of kind from m.
func pendingAge(t *testing.T, m *metrics.Metrics, kind string) (float64, bool) {
	t.Helper()
	families, err := m.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		if f.GetName() != payment.PendingOldestMetric {
			continue
		}
		for _, metric := range f.GetMetric() {
			for _, l := range metric.GetLabel() {
				if l.GetName() == "kind" && l.GetValue() == kind {
					return metric.GetGauge().GetValue(), true
				}
			}
		}
	}
	return 0, false
}

// TestPendingMetric: PendingOldestMetric shows a refund the provider has
// not confirmed, and a void it has not made, while they wait, and 0 once
// they are done.
func TestPendingMetric(t *testing.T) {
	sqldbtest.Run(t, func(t *testing.T, url string) {
		provider := &flakyProvider{down: true}
		m := metrics.New()
		start := time.Now()
		svc, err := payment.Open(t.Context(), payment.Config{
			DatabaseURL: url, Provider: provider, RefundRetryInterval: 10 * time.Millisecond, Metrics: m,
		})
		if err != nil {
			t.Fatal(err)
		}
		defer func() {
			if err := svc.Close(); err != nil {
				t.Error(err)
			}
		}()
		client := paymentv1.NewPaymentServiceClient(servertest.Start(t, server.Config{Name: "payment", DisableAccessLog: true}, svc.Register))
		charged, err := client.Charge(t.Context(), &paymentv1.ChargeRequest{Amount: money("EUR", 700), PaymentMethodToken: "tok_approve", IdempotencyKey: "metric-1"})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := client.Refund(t.Context(), &paymentv1.RefundRequest{Id: charged.GetPayment().GetId()}); err != nil {
			t.Fatal(err)
		}
		_, err = client.CancelCharge(t.Context(), &paymentv1.CancelChargeRequest{IdempotencyKey: "metric-never-charged"})
		apierrtest.Check(t, err, codes.Unavailable, "PROVIDER_UNAVAILABLE", "")
		waitFor := func(what string, cond func() bool) {
			t.Helper()
			for deadline := time.Now().Add(10 * time.Second); !cond(); {
				if time.Now().After(deadline) {
					t.Fatalf("%s: not within 10 s", what)
				}
				time.Sleep(5 * time.Millisecond)
			}
		}
		for _, kind := range []string{"refund", "void"} {
			waitFor("the metric shows the pending "+kind, func() bool {
				age, ok := pendingAge(t, m, kind)
				return ok && age > 0 && age < time.Since(start).Seconds()+1
			})
		}
		provider.setDown(false)
		for _, kind := range []string{"refund", "void"} {
			waitFor("the metric shows no "+kind+" pending", func() bool {
				age, ok := pendingAge(t, m, kind)
				return ok && age == 0
			})
		}
	})
}
