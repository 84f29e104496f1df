package payment_test

import (
	"context"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/proto"

	paymentv1 "github.com/duetkit/duet/gen/duet/payment/v1"
	"github.com/duetkit/duet/kit/apierr"
	"github.com/duetkit/duet/kit/apierr/apierrtest"
	"github.com/duetkit/duet/kit/events"
	"github.com/duetkit/duet/kit/events/eventstest"
	"github.com/duetkit/duet/kit/requestid"
	"github.com/duetkit/duet/kit/sqldb/sqldbtest"
	"github.com/duetkit/duet/services/payment"
)

// withRequestID makes calls with ctx carry request id id.
func withRequestID(ctx context.Context, id string) context.Context {
	return metadata.AppendToOutgoingContext(ctx, requestid.Header, id)
}

// TestEvents: every change to a payment reaches the bus as its event, with
// the request id of the call that made it; calls that change nothing
// publish nothing.
// chargedUser is the user the events tests charge.
const chargedUser = "7c9e6679-7425-40de-944b-e07fc1f90ae7"

func TestEvents(t *testing.T) {
	eventstest.Matrix(t, func(t *testing.T, url string, bus *events.Bus) {
		client := start(t, payment.Config{DatabaseURL: url, Bus: bus})
		got := eventstest.Collect(t, bus, "payment.>")
		ctx := t.Context()

		type want struct {
			subject   string
			requestID string
			status    paymentv1.PaymentStatus
			refund    int64 // PaymentRefunded.amount
		}
		var wants []want
		call := func(id string, code codes.Code, fn func(ctx context.Context) error, expect ...want) {
			t.Helper()
			if err := fn(withRequestID(ctx, id)); apierr.Code(err) != code {
				t.Fatalf("%s: %v, want %v", id, err, code)
			}
			for _, w := range expect {
				w.requestID = id
				wants = append(wants, w)
			}
		}
		var paymentID string
		call("req-charge", codes.OK, func(ctx context.Context) error {
			resp, err := client.Charge(ctx, &paymentv1.ChargeRequest{Amount: money("USD", 1000), PaymentMethodToken: "tok_approve", IdempotencyKey: "order-1", UserId: chargedUser})
			paymentID = resp.GetPayment().GetId()
			if err == nil && resp.GetPayment().GetUserId() != chargedUser {
				t.Errorf("payment user = %q, want %s", resp.GetPayment().GetUserId(), chargedUser)
			}
			return err
		}, want{subject: "payment.captured", status: paymentv1.PaymentStatus_PAYMENT_STATUS_CAPTURED})
		call("req-charge-again", codes.OK, func(ctx context.Context) error {
			_, err := client.Charge(ctx, &paymentv1.ChargeRequest{Amount: money("USD", 1000), PaymentMethodToken: "tok_approve", IdempotencyKey: "order-1", UserId: chargedUser})
			return err
		})
		call("req-decline", codes.FailedPrecondition, func(ctx context.Context) error {
			_, err := client.Charge(ctx, &paymentv1.ChargeRequest{Amount: money("USD", 5), PaymentMethodToken: "tok_decline", IdempotencyKey: "order-2", UserId: chargedUser})
			return err
		}, want{subject: "payment.declined", status: paymentv1.PaymentStatus_PAYMENT_STATUS_DECLINED})
		call("req-unavailable", codes.Unavailable, func(ctx context.Context) error {
			_, err := client.Charge(ctx, &paymentv1.ChargeRequest{Amount: money("USD", 5), PaymentMethodToken: "tok_unavailable", IdempotencyKey: "order-3"})
			return err
		})
		call("req-refund", codes.OK, func(ctx context.Context) error {
			_, err := client.Refund(ctx, &paymentv1.RefundRequest{Id: paymentID, Amount: money("USD", 250)})
			return err
		}, want{subject: "payment.refunded", status: paymentv1.PaymentStatus_PAYMENT_STATUS_PARTIALLY_REFUNDED, refund: 250})
		call("req-cancel", codes.OK, func(ctx context.Context) error {
			_, err := client.CancelCharge(ctx, &paymentv1.CancelChargeRequest{IdempotencyKey: "order-1"})
			return err
		}, want{subject: "payment.refunded", status: paymentv1.PaymentStatus_PAYMENT_STATUS_REFUNDED, refund: 750})
		for _, key := range []string{"order-1", "order-2", "never-charged"} {
			call("req-cancel-again", codes.OK, func(ctx context.Context) error {
				_, err := client.CancelCharge(ctx, &paymentv1.CancelChargeRequest{IdempotencyKey: key})
				return err
			})
		}
		// Events arrive in order, so once the last one is in, nothing
		// unwanted can still be on its way before it.
		call("req-last", codes.OK, func(ctx context.Context) error {
			_, err := client.Charge(ctx, &paymentv1.ChargeRequest{Amount: money("EUR", 7), PaymentMethodToken: "tok_approve", IdempotencyKey: "order-4"})
			return err
		}, want{subject: "payment.captured", status: paymentv1.PaymentStatus_PAYMENT_STATUS_CAPTURED})

		msgs := got.Wait(t, len(wants))
		if len(msgs) != len(wants) {
			t.Fatalf("got %d events, want %d", len(msgs), len(wants))
		}
		for i, w := range wants {
			m := msgs[i]
			var p *paymentv1.Payment
			var refund int64
			switch m.Subject {
			case "payment.captured":
				var ev paymentv1.PaymentCaptured
				unmarshal(t, m, &ev)
				p = ev.GetPayment()
			case "payment.declined":
				var ev paymentv1.PaymentDeclined
				unmarshal(t, m, &ev)
				p = ev.GetPayment()
			case "payment.refunded":
				var ev paymentv1.PaymentRefunded
				unmarshal(t, m, &ev)
				p, refund = ev.GetPayment(), ev.GetAmount().GetUnits()
			}
			if m.Subject != w.subject || m.RequestID != w.requestID || m.Header.Get(requestid.Header) != w.requestID ||
				p.GetStatus() != w.status || refund != w.refund || m.AggregateID != p.GetId() {
				t.Errorf("event %d = %s %s %v refund %d (aggregate %s); want %s %s %v refund %d",
					i, m.Subject, m.RequestID, p.GetStatus(), refund, m.AggregateID, w.subject, w.requestID, w.status, w.refund)
			}
		}
	})
}

func unmarshal(t *testing.T, m events.Message, dst proto.Message) {
	t.Helper()
	if err := m.Unmarshal(dst); err != nil {
		t.Fatal(err)
	}
}

// TestEventsWaitForABus: without a Bus events stay in the outbox; the first
// Open with one publishes them.
func TestEventsWaitForABus(t *testing.T) {
	eventstest.Matrix(t, func(t *testing.T, url string, bus *events.Bus) {
		t.Run("without a bus", func(t *testing.T) {
			client := start(t, payment.Config{DatabaseURL: url})
			if _, err := client.Charge(t.Context(), &paymentv1.ChargeRequest{Amount: money("USD", 10), PaymentMethodToken: "tok_approve", IdempotencyKey: "k"}); err != nil {
				t.Fatal(err)
			}
		})
		got := eventstest.Collect(t, bus, "payment.>")
		start(t, payment.Config{DatabaseURL: url, Bus: bus})
		if m := got.Wait(t, 1)[0]; m.Subject != "payment.captured" {
			t.Errorf("event %s, want payment.captured", m.Subject)
		}
	})
}

func TestCancelCharge(t *testing.T) {
	sqldbtest.Run(t, func(t *testing.T, url string) {
		client := start(t, payment.Config{DatabaseURL: url})
		ctx := t.Context()
		charge := func(key, token string) error {
			_, err := client.Charge(ctx, &paymentv1.ChargeRequest{Amount: money("USD", 1000), PaymentMethodToken: token, IdempotencyKey: key})
			return err
		}
		if err := charge("captured", "tok_approve"); err != nil {
			t.Fatal(err)
		}
		_ = charge("declined", "tok_decline")
		steps := []struct {
			name       string
			key        string
			wantCode   codes.Code
			wantReason string
			// wantStatus is the payment returned; UNSPECIFIED for none.
			wantStatus paymentv1.PaymentStatus
		}{
			{name: "captured", key: "captured", wantStatus: paymentv1.PaymentStatus_PAYMENT_STATUS_REFUNDED},
			{name: "captured, repeat", key: "captured", wantStatus: paymentv1.PaymentStatus_PAYMENT_STATUS_REFUNDED},
			{name: "declined", key: "declined", wantStatus: paymentv1.PaymentStatus_PAYMENT_STATUS_DECLINED},
			{name: "never charged", key: "never"},
			{name: "never charged, repeat", key: "never"},
			{name: "empty key", key: "", wantCode: codes.InvalidArgument, wantReason: "INVALID_ARGUMENT"},
		}
		for _, st := range steps {
			resp, err := client.CancelCharge(ctx, &paymentv1.CancelChargeRequest{IdempotencyKey: st.key})
			if st.wantCode != codes.OK {
				apierrtest.Check(t, err, st.wantCode, st.wantReason, "idempotency_key")
				continue
			}
			if err != nil || resp.GetPayment().GetStatus() != st.wantStatus {
				t.Fatalf("%s: CancelCharge = %v, %v; want payment status %v", st.name, resp, err, st.wantStatus)
			}
			if p := resp.GetPayment(); p != nil && p.GetIdempotencyKey() != st.key {
				t.Fatalf("%s: payment of key %q", st.name, p.GetIdempotencyKey())
			}
		}
		// The cancelled key is refused; the refunded one replays its payment.
		apierrtest.Check(t, charge("never", "tok_approve"), codes.FailedPrecondition, "CHARGE_CANCELLED", "")
		resp, err := client.Charge(ctx, &paymentv1.ChargeRequest{Amount: money("USD", 1000), PaymentMethodToken: "tok_approve", IdempotencyKey: "captured"})
		if err != nil || resp.GetPayment().GetStatus() != paymentv1.PaymentStatus_PAYMENT_STATUS_REFUNDED || resp.GetPayment().GetRefunded().GetUnits() != 1000 {
			t.Fatalf("charge of a cancelled, refunded key = %v, %v; want the refunded payment", resp, err)
		}
	})
}
