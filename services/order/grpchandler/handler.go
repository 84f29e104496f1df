// Package grpchandler exposes the order domain as duet.order.v1.OrderService:
// it turns requests into domain calls, page tokens into positions, orders
// into messages (ToProto) and domain errors into status errors with stable
// reasons. Requests have passed protovalidate (kit/server) by the time they
// get here; the domain still checks what it relies on.
package grpchandler

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/types/known/timestamppb"

	orderv1 "github.com/duetkit/duet/gen/duet/order/v1"
	typev1 "github.com/duetkit/duet/gen/duet/type/v1"
	"github.com/duetkit/duet/kit/apierr"
	"github.com/duetkit/duet/kit/pagetoken"
	"github.com/duetkit/duet/kit/requestid"
	"github.com/duetkit/duet/kit/slots"
	"github.com/duetkit/duet/kit/sqldb"
	"github.com/duetkit/duet/kit/tracing"
	"github.com/duetkit/duet/services/order/domain"
	"github.com/duetkit/duet/services/order/saga"
)

// Reasons this adapter adds to the domain's.
const (
	ReasonNotFound          = "ORDER_NOT_FOUND"
	ReasonIdempotencyReused = "IDEMPOTENCY_KEY_REUSED"
	// ReasonOverloaded (UNAVAILABLE, with RetryInfo): the service holds as
	// many orders in progress as it takes (SagaConfig.MaxBacklog); nothing
	// was stored, and the same request may be sent again later.
	ReasonOverloaded = "ORDERS_OVERLOADED"
)

// OverloadedRetryAfter is the RetryInfo delay of ReasonOverloaded.
const OverloadedRetryAfter = time.Second

// PollInterval is how often WatchOrder and a waiting CreateOrder read the
// order again, to see changes made by another replica of the service
// (changes made in this process arrive at once through the feed).
const PollInterval = 2 * time.Second

// Bounds on the WatchOrder streams one server holds open. Each costs a
// goroutine, a subscription to the feed and a read of its order every
// PollInterval until the order is terminal, which a saga held up by a peer
// can put off for long: without a bound, a client opening watches in a
// loop grows that cost, and the database's load, without end.
const (
	// MaxWatchesPerOrder bounds the watches of one order.
	MaxWatchesPerOrder = 16
	// MaxWatches bounds them all.
	MaxWatches = 5000
)

// ReasonTooManyWatches is the reason of the RESOURCE_EXHAUSTED a WatchOrder
// past MaxWatchesPerOrder or MaxWatches ends with.
const ReasonTooManyWatches = "TOO_MANY_WATCHES"

// Handler implements orderv1.OrderServiceServer.
type Handler struct {
	orderv1.UnimplementedOrderServiceServer
	svc  *domain.Service
	feed *saga.Feed
	log  *slog.Logger
	// watches counts the open WatchOrder streams, by order.
	watches *slots.Counter
	// draining is done once Drain is called; endWaits does that.
	draining context.Context
	endWaits context.CancelFunc
}

// New returns a Handler over svc, whose stored changes feed publishes; log
// receives errors that are not the caller's fault (nil means slog.Default()).
func New(svc *domain.Service, feed *saga.Feed, log *slog.Logger) *Handler {
	if log == nil {
		log = slog.Default()
	}
	draining, endWaits := context.WithCancel(context.Background())
	return &Handler{svc: svc, feed: feed, log: log, draining: draining, endWaits: endWaits,
		watches: slots.New(slots.Limits{PerKey: MaxWatchesPerOrder, Total: MaxWatches})}
}

// Drain ends every CreateOrder that waits for its order (wait set), and
// any that starts waiting later, with the order as it is then, PENDING as
// likely as not, which the API allows at any time: a saga held up by a
// peer would otherwise hold a graceful stop for its whole bound and then
// see every call cut off. Call it when shutdown starts; Drain is
// idempotent.
func (h *Handler) Drain() { h.endWaits() }

// CreateOrder implements orderv1.OrderServiceServer. The order is stored
// PENDING and its saga started; with wait set, the call returns when the
// order is terminal or shortly before its deadline, whichever comes first,
// with the order as it is then.
func (h *Handler) CreateOrder(ctx context.Context, req *orderv1.CreateOrderRequest) (*orderv1.CreateOrderResponse, error) {
	items := make([]domain.LineItem, len(req.GetItems()))
	for i, it := range req.GetItems() {
		items[i] = domain.LineItem{SKU: it.GetSku(), Quantity: it.GetQuantity()}
		if p := it.GetUnitPrice(); p != nil {
			items[i].Expected = &domain.Money{Currency: p.GetCurrencyCode(), Units: p.GetUnits()}
		}
	}
	var sub *saga.Subscription
	if req.GetWait() {
		// Subscribed before the order exists, the wait misses none of its
		// changes and need not read it back.
		sub = h.feed.SubscribeKey(req.GetUserId(), req.GetIdempotencyKey())
		defer sub.Close()
	}
	o, err := h.svc.Create(ctx, domain.CreateRequest{
		UserID:         req.GetUserId(),
		Items:          items,
		PaymentToken:   req.GetPaymentToken(),
		IdempotencyKey: req.GetIdempotencyKey(),
		RequestID:      requestid.FromContext(ctx),
		TraceParent:    traceParent(ctx),
	})
	if err != nil {
		return nil, h.status(ctx, err, request{userID: req.GetUserId(), key: req.GetIdempotencyKey()})
	}
	if req.GetWait() && !o.Status.Terminal() {
		waitCtx, cancel := waitContext(ctx)
		defer cancel()
		stop := context.AfterFunc(h.draining, cancel)
		defer stop()
		if last, _ := h.feed.WaitFrom(waitCtx, sub, o, h.svc.Order, PollInterval); last != nil && last.Version >= o.Version {
			o = last
		}
		if err := ctx.Err(); err != nil {
			return nil, h.status(ctx, err, request{})
		}
	}
	return &orderv1.CreateOrderResponse{Order: ToProto(o)}, nil
}

// waitContext bounds a wait so that the answer still reaches the caller
// before its deadline: it ends a tenth of the time left early, at most a
// second.
func waitContext(ctx context.Context) (context.Context, context.CancelFunc) {
	deadline, ok := ctx.Deadline()
	if !ok {
		return context.WithCancel(ctx)
	}
	margin := min(time.Until(deadline)/10, time.Second)
	return context.WithDeadline(ctx, deadline.Add(-margin))
}

// GetOrder implements orderv1.OrderServiceServer.
func (h *Handler) GetOrder(ctx context.Context, req *orderv1.GetOrderRequest) (*orderv1.GetOrderResponse, error) {
	o, err := h.svc.Order(ctx, req.GetId())
	if err != nil {
		return nil, h.status(ctx, err, request{orderID: req.GetId()})
	}
	return &orderv1.GetOrderResponse{Order: ToProto(o)}, nil
}

// WatchOrder implements orderv1.OrderServiceServer: the order as it is,
// then after every change of status or step, until it is terminal. The
// stream's context ending (the client cancelled, or the server is
// stopping) ends the watch at once. An order with MaxWatchesPerOrder
// watches open on this server, or a server with MaxWatches, gets
// RESOURCE_EXHAUSTED, reason ReasonTooManyWatches (with a retry delay for
// the latter). Watches count by order id, whoever opens them: without
// tokens (duet serve --auth-keys) whoever knows an order's id (a UUID its
// owner was given) counts against its bound, as whoever knows a user's id
// does against Subscribe's; with them, another user's watch takes its
// place only until its first message, which the rules refuse.
func (h *Handler) WatchOrder(req *orderv1.WatchOrderRequest, stream grpc.ServerStreamingServer[orderv1.WatchOrderResponse]) error {
	ctx := stream.Context()
	if err := h.watches.Take(req.GetId()); err != nil {
		return h.watches.Status(err, ReasonTooManyWatches, "watches", "order")
	}
	defer h.watches.Release(req.GetId())
	var sendErr error
	err := h.feed.Watch(ctx, req.GetId(), h.svc.Order, PollInterval, func(o *domain.Order) error {
		sendErr = stream.Send(&orderv1.WatchOrderResponse{Order: ToProto(o)})
		return sendErr
	})
	switch {
	case err == nil:
		return nil
	case sendErr != nil && errors.Is(err, sendErr):
		// The client went away, or the transport closed, while a change
		// was being sent: Send's error is already a status saying so (and
		// not the context's, which would read as INTERNAL).
		return sendErr
	case ctx.Err() != nil:
		err = ctx.Err()
	}
	return h.status(ctx, err, request{orderID: req.GetId()})
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
		resp.Orders[i] = ToProto(o)
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
	var field *domain.FieldError
	switch {
	case errors.As(err, &field):
		reason := field.Reason
		if reason == "" {
			reason = apierr.ReasonInvalidArgument
		}
		return apierr.New(codes.InvalidArgument, reason, field.Error(), apierr.Field(field.Field, field.Description))
	case errors.Is(err, domain.ErrNotFound):
		return apierr.NotFound(ReasonNotFound, "order", req.orderID)
	case errors.Is(err, domain.ErrOverloaded):
		return apierr.Unavailable(ReasonOverloaded,
			"the order service has as many orders in progress as it takes; nothing was stored, send the order again later", OverloadedRetryAfter)
	case errors.Is(err, domain.ErrIdempotencyKeyReused):
		return apierr.New(codes.FailedPrecondition, ReasonIdempotencyReused,
			"the idempotency key was already used with a different request",
			apierr.Precondition("IDEMPOTENCY_KEY", req.key, "already used with a different request; use a new key"))
	case errors.Is(err, context.DeadlineExceeded):
		return apierr.New(codes.DeadlineExceeded, apierr.ReasonDeadline, "deadline exceeded")
	case errors.Is(err, context.Canceled):
		return apierr.New(codes.Canceled, apierr.ReasonCanceled, "request canceled")
	case sqldb.IsConflict(err):
		return apierr.Conflict()
	case sqldb.IsUnavailable(err):
		h.log.WarnContext(ctx, "order service: database unavailable", "error", err)
		return apierr.StoreUnavailable()
	default:
		h.log.ErrorContext(ctx, "order request failed", "error", err)
		return apierr.Internal()
	}
}

// ToProto returns o as a message: the order the API shows, without the
// saga's internals (attempts, deadlines, payment token).
func ToProto(o *domain.Order) *orderv1.Order {
	items := make([]*orderv1.LineItem, len(o.Items))
	for i, it := range o.Items {
		items[i] = &orderv1.LineItem{Sku: it.SKU, Quantity: it.Quantity}
		if o.Priced() {
			items[i].UnitPrice = &typev1.Money{CurrencyCode: it.UnitPrice.Currency, Units: it.UnitPrice.Units}
		}
	}
	p := &orderv1.Order{
		Id:             o.ID,
		UserId:         o.UserID,
		Items:          items,
		Status:         StatusToProto(o.Status),
		Step:           StepToProto(o.Step),
		PaymentId:      o.PaymentID,
		FailureReason:  o.FailureReason,
		IdempotencyKey: o.IdempotencyKey,
		CreateTime:     timestamppb.New(o.CreateTime),
		UpdateTime:     timestamppb.New(o.UpdateTime),
	}
	if o.Priced() {
		p.Total = &typev1.Money{CurrencyCode: o.Total.Currency, Units: o.Total.Units}
	}
	return p
}

// StatusToProto maps a status to the contract's enum.
func StatusToProto(s domain.Status) orderv1.OrderStatus {
	switch s {
	case domain.StatusPending:
		return orderv1.OrderStatus_ORDER_STATUS_PENDING
	case domain.StatusConfirmed:
		return orderv1.OrderStatus_ORDER_STATUS_CONFIRMED
	case domain.StatusCancelled:
		return orderv1.OrderStatus_ORDER_STATUS_CANCELLED
	case domain.StatusRejected:
		return orderv1.OrderStatus_ORDER_STATUS_REJECTED
	}
	return orderv1.OrderStatus_ORDER_STATUS_UNSPECIFIED
}

// steps maps the saga's steps to the contract's enum, both ways.
var steps = map[domain.Step]orderv1.OrderStep{
	domain.StepCheckUser: orderv1.OrderStep_ORDER_STEP_CHECK_USER,
	domain.StepPrice:     orderv1.OrderStep_ORDER_STEP_PRICE,
	domain.StepReserve:   orderv1.OrderStep_ORDER_STEP_RESERVE,
	domain.StepCharge:    orderv1.OrderStep_ORDER_STEP_CHARGE,
	domain.StepCommit:    orderv1.OrderStep_ORDER_STEP_COMMIT,
	domain.StepRefund:    orderv1.OrderStep_ORDER_STEP_REFUND,
	domain.StepRelease:   orderv1.OrderStep_ORDER_STEP_RELEASE,
	domain.StepDone:      orderv1.OrderStep_ORDER_STEP_DONE,
}

// StepToProto maps a saga step to the contract's enum.
func StepToProto(s domain.Step) orderv1.OrderStep { return steps[s] }

// traceParent is the W3C traceparent of ctx's trace, or "".
func traceParent(ctx context.Context) string {
	tp, _ := tracing.Header(ctx)
	return tp
}
