// Package grpchandler exposes the order domain as duet.order.v1.OrderService:
// it turns requests into domain calls, page tokens into positions, and domain
// errors into status errors with stable reasons. Requests have passed
// protovalidate (kit/server) by the time they get here; the domain still
// checks what it relies on.
package grpchandler

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/types/known/timestamppb"

	orderv1 "github.com/duetkit/duet/gen/duet/order/v1"
	typev1 "github.com/duetkit/duet/gen/duet/type/v1"
	"github.com/duetkit/duet/kit/apierr"
	"github.com/duetkit/duet/kit/pagetoken"
	"github.com/duetkit/duet/services/order/domain"
)

// Reasons this adapter adds to the domain's.
const (
	ReasonNotFound           = "ORDER_NOT_FOUND"
	ReasonUserNotFound       = "USER_NOT_FOUND"
	ReasonIdempotencyReused  = "IDEMPOTENCY_KEY_REUSED"
	ReasonPaymentUnavailable = "PAYMENT_UNAVAILABLE"
)

// DefaultRetryAfter is the RetryInfo delay sent when a peer failed
// temporarily without suggesting one.
const DefaultRetryAfter = time.Second

// Handler implements orderv1.OrderServiceServer.
type Handler struct {
	orderv1.UnimplementedOrderServiceServer
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

// CreateOrder implements orderv1.OrderServiceServer.
func (h *Handler) CreateOrder(ctx context.Context, req *orderv1.CreateOrderRequest) (*orderv1.CreateOrderResponse, error) {
	items := make([]domain.LineItem, len(req.GetItems()))
	for i, it := range req.GetItems() {
		items[i] = domain.LineItem{
			SKU:       it.GetSku(),
			Quantity:  it.GetQuantity(),
			UnitPrice: domain.Money{Currency: it.GetUnitPrice().GetCurrencyCode(), Units: it.GetUnitPrice().GetUnits()},
		}
	}
	o, err := h.svc.Create(ctx, domain.CreateRequest{
		UserID:         req.GetUserId(),
		Items:          items,
		PaymentToken:   req.GetPaymentToken(),
		IdempotencyKey: req.GetIdempotencyKey(),
	})
	if err != nil {
		return nil, h.status(ctx, err, request{userID: req.GetUserId(), key: req.GetIdempotencyKey()})
	}
	return &orderv1.CreateOrderResponse{Order: toProto(o)}, nil
}

// GetOrder implements orderv1.OrderServiceServer.
func (h *Handler) GetOrder(ctx context.Context, req *orderv1.GetOrderRequest) (*orderv1.GetOrderResponse, error) {
	o, err := h.svc.Order(ctx, req.GetId())
	if err != nil {
		return nil, h.status(ctx, err, request{orderID: req.GetId()})
	}
	return &orderv1.GetOrderResponse{Order: toProto(o)}, nil
}

// ListOrders implements orderv1.OrderServiceServer. Page tokens are
// kit/pagetoken cursors scoped to the user, so one user's token cannot page
// through another's orders.
func (h *Handler) ListOrders(ctx context.Context, req *orderv1.ListOrdersRequest) (*orderv1.ListOrdersResponse, error) {
	scope := "orders:" + req.GetUserId()
	var after *domain.Position
	if tok := req.GetPageToken(); tok != "" {
		c, err := pagetoken.Decode(tok, scope)
		if err != nil {
			return nil, apierr.InvalidField("page_token", "not a page token from a previous ListOrders call for this user")
		}
		after = &domain.Position{CreateTime: c.Time, ID: c.ID}
	}
	orders, next, err := h.svc.List(ctx, req.GetUserId(), after, int(req.GetPageSize()))
	if err != nil {
		return nil, h.status(ctx, err, request{userID: req.GetUserId()})
	}
	resp := &orderv1.ListOrdersResponse{Orders: make([]*orderv1.Order, len(orders))}
	for i, o := range orders {
		resp.Orders[i] = toProto(o)
	}
	if next != nil {
		resp.NextPageToken = pagetoken.Encode(pagetoken.Cursor{Scope: scope, Time: next.CreateTime, ID: next.ID})
	}
	return resp, nil
}

// request is what the error mapping may name in details.
type request struct {
	orderID, userID, key string
}

// status maps a domain error to a status error.
func (h *Handler) status(ctx context.Context, err error, req request) error {
	var (
		field     *domain.FieldError
		retryable *domain.RetryableError
	)
	retryAfter := DefaultRetryAfter
	if errors.As(err, &retryable) && retryable.RetryAfter > 0 {
		retryAfter = retryable.RetryAfter
	}
	switch {
	case errors.As(err, &field):
		reason := field.Reason
		if reason == "" {
			reason = apierr.ReasonInvalidArgument
		}
		return apierr.New(codes.InvalidArgument, reason, field.Error(), apierr.Field(field.Field, field.Description))
	case errors.Is(err, domain.ErrNotFound):
		return apierr.NotFound(ReasonNotFound, "order", req.orderID)
	case errors.Is(err, domain.ErrUserNotFound):
		return apierr.New(codes.FailedPrecondition, ReasonUserNotFound, "the user placing the order does not exist",
			apierr.Metadata("user_id", req.userID),
			apierr.Precondition("USER", "users/"+req.userID, "the user must exist to place an order"),
			apierr.Field("user_id", "no user has this id"))
	case errors.Is(err, domain.ErrIdempotencyKeyReused):
		return apierr.New(codes.FailedPrecondition, ReasonIdempotencyReused,
			"the idempotency key was already used with a different request",
			apierr.Precondition("IDEMPOTENCY_KEY", req.key, "already used with a different request; use a new key"))
	case errors.Is(err, domain.ErrPaymentUnavailable):
		return apierr.Unavailable(ReasonPaymentUnavailable,
			"the payment could not be completed now; retry with the same idempotency key", retryAfter)
	case errors.Is(err, domain.ErrUsersUnavailable):
		return apierr.Unavailable(apierr.ReasonUnavailable, "the user service is temporarily unavailable; retry later", retryAfter)
	case errors.Is(err, context.DeadlineExceeded):
		return apierr.New(codes.DeadlineExceeded, apierr.ReasonDeadline, "deadline exceeded")
	case errors.Is(err, context.Canceled):
		return apierr.New(codes.Canceled, apierr.ReasonCanceled, "request canceled")
	default:
		h.log.ErrorContext(ctx, "order request failed", "error", err)
		return apierr.Internal()
	}
}

func toProto(o *domain.Order) *orderv1.Order {
	items := make([]*orderv1.LineItem, len(o.Items))
	for i, it := range o.Items {
		items[i] = &orderv1.LineItem{
			Sku:       it.SKU,
			Quantity:  it.Quantity,
			UnitPrice: &typev1.Money{CurrencyCode: it.UnitPrice.Currency, Units: it.UnitPrice.Units},
		}
	}
	return &orderv1.Order{
		Id:             o.ID,
		UserId:         o.UserID,
		Items:          items,
		Total:          &typev1.Money{CurrencyCode: o.Total.Currency, Units: o.Total.Units},
		Status:         statusToProto(o.Status),
		PaymentId:      o.PaymentID,
		FailureReason:  o.FailureReason,
		IdempotencyKey: o.IdempotencyKey,
		CreateTime:     timestamppb.New(o.CreateTime),
		UpdateTime:     timestamppb.New(o.UpdateTime),
	}
}

func statusToProto(s domain.Status) orderv1.OrderStatus {
	switch s {
	case domain.StatusPending:
		return orderv1.OrderStatus_ORDER_STATUS_PENDING
	case domain.StatusPaid:
		return orderv1.OrderStatus_ORDER_STATUS_PAID
	case domain.StatusPaymentFailed:
		return orderv1.OrderStatus_ORDER_STATUS_PAYMENT_FAILED
	}
	return orderv1.OrderStatus_ORDER_STATUS_UNSPECIFIED
}
