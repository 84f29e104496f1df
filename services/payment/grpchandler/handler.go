// Package grpchandler exposes the payment domain as duet.payment.v1.PaymentService:
// it turns requests into domain calls and domain errors into status errors
// with stable reasons. Requests have passed protovalidate (kit/server) by the
// time they get here; the domain still checks what it relies on.
package grpchandler

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"google.golang.org/grpc/codes"

	paymentv1 "github.com/duetkit/duet/gen/duet/payment/v1"
	typev1 "github.com/duetkit/duet/gen/duet/type/v1"
	"github.com/duetkit/duet/kit/apierr"
	"github.com/duetkit/duet/kit/sqldb"
	"github.com/duetkit/duet/services/payment/domain"
	"github.com/duetkit/duet/services/payment/wire"
)

// Reasons this adapter adds to the domain's.
const (
	ReasonNotFound            = "PAYMENT_NOT_FOUND"
	ReasonIdempotencyReused   = "IDEMPOTENCY_KEY_REUSED"
	ReasonProviderUnavailable = "PROVIDER_UNAVAILABLE"
	ReasonNotRefundable       = "PAYMENT_NOT_REFUNDABLE"
	ReasonRefundExceeds       = "REFUND_EXCEEDS_CHARGE"
	ReasonChargeCancelled     = "CHARGE_CANCELLED"
	// ReasonChargeNotRecorded (UNAVAILABLE): the provider answered, but
	// the payment could not be recorded; the same charge again records it.
	ReasonChargeNotRecorded = "CHARGE_NOT_RECORDED"
	// ReasonChargeNotVoided (UNAVAILABLE): the provider captured the
	// charge after its key was cancelled, and voiding it failed; the
	// service voids it later on its own, and the same charge again voids
	// it at once.
	ReasonChargeNotVoided = "CHARGE_NOT_VOIDED"
)

// ProviderRetryAfter is the RetryInfo delay sent when the provider is down.
const ProviderRetryAfter = time.Second

// Handler implements paymentv1.PaymentServiceServer.
type Handler struct {
	paymentv1.UnimplementedPaymentServiceServer
	svc *domain.Service
	log *slog.Logger
}

// New returns a Handler over svc; log receives errors that are not the
// caller's fault (nil means slog.Default()).
func New(svc *domain.Service, log *slog.Logger) *Handler {
	if log == nil {
		log = slog.Default()
	}
	return &Handler{svc: svc, log: log}
}

// Charge implements paymentv1.PaymentServiceServer.
func (h *Handler) Charge(ctx context.Context, req *paymentv1.ChargeRequest) (*paymentv1.ChargeResponse, error) {
	p, err := h.svc.Charge(ctx, domain.ChargeRequest{
		Amount:         money(req.GetAmount()),
		Token:          req.GetPaymentMethodToken(),
		IdempotencyKey: req.GetIdempotencyKey(),
		Reference:      req.GetReference(),
		UserID:         req.GetUserId(),
	})
	if err != nil {
		return nil, h.status(ctx, err, "", req.GetIdempotencyKey())
	}
	return &paymentv1.ChargeResponse{Payment: wire.Payment(p)}, nil
}

// CancelCharge implements paymentv1.PaymentServiceServer.
func (h *Handler) CancelCharge(ctx context.Context, req *paymentv1.CancelChargeRequest) (*paymentv1.CancelChargeResponse, error) {
	p, err := h.svc.CancelCharge(ctx, req.GetIdempotencyKey())
	if err != nil {
		return nil, h.status(ctx, err, "", req.GetIdempotencyKey())
	}
	resp := &paymentv1.CancelChargeResponse{}
	if p != nil {
		resp.Payment = wire.Payment(p)
	}
	return resp, nil
}

// GetPayment implements paymentv1.PaymentServiceServer.
func (h *Handler) GetPayment(ctx context.Context, req *paymentv1.GetPaymentRequest) (*paymentv1.GetPaymentResponse, error) {
	p, err := h.svc.Payment(ctx, req.GetId())
	if err != nil {
		return nil, h.status(ctx, err, req.GetId(), "")
	}
	return &paymentv1.GetPaymentResponse{Payment: wire.Payment(p)}, nil
}

// Refund implements paymentv1.PaymentServiceServer.
func (h *Handler) Refund(ctx context.Context, req *paymentv1.RefundRequest) (*paymentv1.RefundResponse, error) {
	r := domain.RefundRequest{PaymentID: req.GetId(), IdempotencyKey: req.GetIdempotencyKey()}
	if req.GetAmount() != nil {
		m := money(req.GetAmount())
		r.Amount = &m
	}
	p, err := h.svc.Refund(ctx, r)
	if err != nil {
		return nil, h.status(ctx, err, req.GetId(), req.GetIdempotencyKey())
	}
	return &paymentv1.RefundResponse{Payment: wire.Payment(p)}, nil
}

// status maps a domain error to a status error. id is the payment the
// request named, key its idempotency key, for the error details.
func (h *Handler) status(ctx context.Context, err error, id, key string) error {
	var (
		field    *domain.FieldError
		declined *domain.DeclinedError
	)
	switch {
	case errors.As(err, &field):
		reason := field.Reason
		if reason == "" {
			reason = apierr.ReasonInvalidArgument
		}
		return apierr.New(codes.InvalidArgument, reason, field.Error(), apierr.Field(field.Field, field.Description))
	case errors.As(err, &declined):
		return apierr.New(codes.FailedPrecondition, declined.Reason, "the payment was declined",
			apierr.Metadata("payment_id", declined.PaymentID),
			apierr.Precondition("PAYMENT", "payments/"+declined.PaymentID, "declined by the provider: "+declined.Reason))
	case errors.Is(err, domain.ErrNotFound):
		return apierr.NotFound(ReasonNotFound, "payment", id)
	case errors.Is(err, domain.ErrIdempotencyKeyReused):
		return apierr.New(codes.FailedPrecondition, ReasonIdempotencyReused,
			"the idempotency key was already used with a different request",
			apierr.Precondition("IDEMPOTENCY_KEY", key, "already used with a different request; use a new key"))
	case errors.Is(err, domain.ErrNotVoided):
		// Money captured with no payment: the void is recorded due and
		// made again later, but the operators should know (and void it
		// at the provider themselves if the error says the record failed too).
		h.log.ErrorContext(ctx, "payment captured under a cancelled key and not voided yet; the service voids it again later", "idempotency_key", key, "error", err)
		return apierr.Unavailable(ReasonChargeNotVoided,
			"the provider captured the charge after its key was cancelled, and voiding it failed; the service voids it later, or at once if you send it again with the same idempotency key", ProviderRetryAfter)
	case errors.Is(err, domain.ErrChargeCancelled):
		return apierr.New(codes.FailedPrecondition, ReasonChargeCancelled,
			"the charge with this idempotency key was cancelled; nothing will be charged with it",
			apierr.Precondition("IDEMPOTENCY_KEY", key, "cancelled by CancelCharge; use a new key for a new charge"))
	case errors.Is(err, domain.ErrProviderUnavailable):
		return apierr.Unavailable(ReasonProviderUnavailable, "the payment provider is temporarily unavailable; retry later", ProviderRetryAfter)
	case errors.Is(err, domain.ErrNotRefundable):
		return apierr.New(codes.FailedPrecondition, ReasonNotRefundable, "the payment was declined and has nothing to refund",
			apierr.Metadata("payment_id", id),
			apierr.Precondition("PAYMENT", "payments/"+id, "declined payments are not refundable"))
	case errors.Is(err, domain.ErrRefundExceedsCharge):
		return apierr.New(codes.FailedPrecondition, ReasonRefundExceeds, "the refund exceeds what is left of the charge",
			apierr.Metadata("payment_id", id),
			apierr.Precondition("PAYMENT", "payments/"+id, "refunds may not exceed the amount charged"))
	case errors.Is(err, domain.ErrNotRecorded):
		// Not a CONFLICT: money may have moved. The same key again is
		// answered by the provider as before, and recorded. Before the
		// context cases: recording runs under a deadline of its own, and
		// its running out must not read as the caller's deadline, which
		// says nothing of money captured (and skips the operators' log).
		h.log.WarnContext(ctx, "payment charge not recorded", "error", err)
		return apierr.Unavailable(ReasonChargeNotRecorded,
			"the charge was answered by the provider but could not be recorded; send it again with the same idempotency key", ProviderRetryAfter)
	case errors.Is(err, context.DeadlineExceeded):
		return apierr.New(codes.DeadlineExceeded, apierr.ReasonDeadline, "deadline exceeded")
	case errors.Is(err, context.Canceled):
		return apierr.New(codes.Canceled, apierr.ReasonCanceled, "request canceled")
	case errors.Is(err, domain.ErrConflict), errors.Is(err, domain.ErrDuplicate), sqldb.IsConflict(err):
		// Lost races past the domain's own retries; nothing changed.
		return apierr.Conflict()
	case sqldb.IsUnavailable(err):
		h.log.WarnContext(ctx, "payment service: database unavailable", "error", err)
		return apierr.StoreUnavailable()
	default:
		h.log.ErrorContext(ctx, "payment request failed", "error", err)
		return apierr.Internal()
	}
}

// money converts wire Money to domain Money; a nil amount is the zero Money,
// which the domain rejects.
func money(m *typev1.Money) domain.Money {
	return domain.Money{Currency: m.GetCurrencyCode(), Units: m.GetUnits()}
}
