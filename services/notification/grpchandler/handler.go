// Package grpchandler serves duet.notification.v1.NotificationService over
// gRPC: the two listings and the Subscribe stream, which pushes a user's
// unacknowledged notifications with a bounded window of unacked ones.
package grpchandler

import (
	"context"
	"errors"
	"log/slog"

	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/timestamppb"

	notificationv1 "github.com/duetkit/duet/gen/duet/notification/v1"
	"github.com/duetkit/duet/kit/apierr"
	"github.com/duetkit/duet/kit/pagetoken"
	"github.com/duetkit/duet/kit/slots"
	"github.com/duetkit/duet/kit/sqldb"
	"github.com/duetkit/duet/services/notification/domain"
)

// Page-token scopes; the user or aggregate id is appended so a token of one
// listing cannot page through another.
const (
	notificationsScope = "notifications:"
	auditScope         = "audit:"
)

// Handler implements notificationv1.NotificationServiceServer over a
// domain.Service.
type Handler struct {
	notificationv1.UnimplementedNotificationServiceServer
	svc *domain.Service
	log *slog.Logger
	// subs counts the open Subscribe sessions, by user.
	subs *slots.Counter
}

var _ notificationv1.NotificationServiceServer = (*Handler)(nil)

// New returns a Handler for svc. Unexpected errors are logged to logger
// (nil means slog.Default()) and answered with a bare INTERNAL.
func New(svc *domain.Service, logger *slog.Logger) *Handler {
	if logger == nil {
		logger = slog.Default()
	}
	return &Handler{svc: svc, log: logger, subs: slots.New(slots.Limits{PerKey: MaxSubscriptionsPerUser, Total: MaxSubscriptions})}
}

// ListNotifications returns one page of a user's notifications, oldest first.
func (h *Handler) ListNotifications(ctx context.Context, req *notificationv1.ListNotificationsRequest) (*notificationv1.ListNotificationsResponse, error) {
	scope := notificationsScope + req.GetUserId()
	after, err := decodeToken(req.GetPageToken(), scope, "ListNotifications")
	if err != nil {
		return nil, err
	}
	page, err := h.svc.Notifications(ctx, req.GetUserId(), int(req.GetPageSize()), after)
	if err != nil {
		return nil, h.error(ctx, err)
	}
	resp := &notificationv1.ListNotificationsResponse{Notifications: make([]*notificationv1.Notification, 0, len(page.Notifications))}
	for _, n := range page.Notifications {
		resp.Notifications = append(resp.Notifications, toProto(n))
	}
	resp.NextPageToken = encodeToken(scope, page.Next)
	return resp, nil
}

// ListAuditEvents returns one page of an aggregate's audit log, oldest
// first. Each entry's payload is the event message as an Any. An event of a
// type this process does not know (published by a newer producer, say), or
// whose bytes do not decode as its type, is listed without payload: a JSON
// client, such as the REST gateway, could not render it, and one such entry
// must not make the whole page fail.
func (h *Handler) ListAuditEvents(ctx context.Context, req *notificationv1.ListAuditEventsRequest) (*notificationv1.ListAuditEventsResponse, error) {
	scope := auditScope + req.GetAggregateId()
	after, err := decodeToken(req.GetPageToken(), scope, "ListAuditEvents")
	if err != nil {
		return nil, err
	}
	page, err := h.svc.Events(ctx, req.GetAggregateId(), int(req.GetPageSize()), after)
	if err != nil {
		return nil, h.error(ctx, err)
	}
	resp := &notificationv1.ListAuditEventsResponse{Events: make([]*notificationv1.AuditEvent, 0, len(page.Events))}
	for _, ev := range page.Events {
		resp.Events = append(resp.Events, auditToProto(ev))
	}
	resp.NextPageToken = encodeToken(scope, page.Next)
	return resp, nil
}

func decodeToken(tok, scope, rpc string) (*domain.Position, error) {
	if tok == "" {
		return nil, nil
	}
	c, err := pagetoken.Decode(tok, scope)
	if err != nil {
		return nil, apierr.InvalidField("page_token", "not a page token from a previous "+rpc+" response for this listing")
	}
	return &domain.Position{Time: c.Time, ID: c.ID}, nil
}

func encodeToken(scope string, next *domain.Position) string {
	if next == nil {
		return ""
	}
	return pagetoken.Encode(pagetoken.Cursor{Scope: scope, Time: next.Time, ID: next.ID})
}

// error maps a domain or store error to a status error.
func (h *Handler) error(ctx context.Context, err error) error {
	var invalid *domain.ValidationError
	switch {
	case errors.As(err, &invalid):
		return apierr.InvalidField(invalid.Field, invalid.Description)
	case errors.Is(err, context.DeadlineExceeded) || errors.Is(ctx.Err(), context.DeadlineExceeded):
		// Drivers do not always wrap the context's error, so the context
		// itself is asked too: a call that ran out of time is not a bug.
		return apierr.New(codes.DeadlineExceeded, apierr.ReasonDeadline, "deadline exceeded")
	case errors.Is(err, context.Canceled) || errors.Is(ctx.Err(), context.Canceled):
		return apierr.New(codes.Canceled, apierr.ReasonCanceled, "request canceled")
	}
	if sqldb.IsConflict(err) {
		return apierr.Conflict()
	}
	if sqldb.IsUnavailable(err) {
		h.log.WarnContext(ctx, "notification service: database unavailable", "error", err)
		return apierr.StoreUnavailable()
	}
	h.log.ErrorContext(ctx, "notification service: unexpected error", "error", err)
	return apierr.Internal()
}

var kinds = map[domain.Kind]notificationv1.NotificationKind{
	domain.KindWelcome:        notificationv1.NotificationKind_NOTIFICATION_KIND_WELCOME,
	domain.KindAccountChanged: notificationv1.NotificationKind_NOTIFICATION_KIND_ACCOUNT_CHANGED,
	domain.KindOrderConfirmed: notificationv1.NotificationKind_NOTIFICATION_KIND_ORDER_CONFIRMED,
	domain.KindOrderCancelled: notificationv1.NotificationKind_NOTIFICATION_KIND_ORDER_CANCELLED,
	domain.KindOrderRejected:  notificationv1.NotificationKind_NOTIFICATION_KIND_ORDER_REJECTED,
	domain.KindRefund:         notificationv1.NotificationKind_NOTIFICATION_KIND_REFUND,
}

func toProto(n domain.Notification) *notificationv1.Notification {
	p := &notificationv1.Notification{
		Id:         n.ID,
		UserId:     n.UserID,
		Kind:       kinds[n.Kind],
		Title:      n.Title,
		Body:       n.Body,
		SubjectId:  n.SubjectID,
		EventId:    n.EventID,
		CreateTime: timestamppb.New(n.CreateTime),
	}
	if n.Acked() {
		p.AckTime = timestamppb.New(n.AckTime)
	}
	return p
}

func auditToProto(ev domain.Event) *notificationv1.AuditEvent {
	p := &notificationv1.AuditEvent{
		EventId:     ev.ID,
		Type:        ev.Type,
		AggregateId: ev.AggregateID,
		Subject:     ev.Subject,
		RequestId:   ev.RequestID,
		TraceId:     ev.TraceID,
		RecordTime:  timestamppb.New(ev.RecordTime),
	}
	if !ev.OccurTime.IsZero() {
		p.OccurTime = timestamppb.New(ev.OccurTime)
	}
	if renders(ev.Type, ev.Payload) {
		p.Payload = &anypb.Any{TypeUrl: "type.googleapis.com/" + ev.Type, Value: ev.Payload}
	}
	return p
}

// renders reports whether payload decodes as the message typ names and
// that message renders as JSON. Any publisher can put bytes on the bus
// under a known type name, and the gateway decodes an Any to write it: one
// that does not decode failed the whole page there with HTTP 500.
func renders(typ string, payload []byte) bool {
	name := protoreflect.FullName(typ)
	if !name.IsValid() {
		return false
	}
	mt, err := protoregistry.GlobalTypes.FindMessageByName(name)
	if err != nil {
		return false
	}
	m := mt.New().Interface()
	if err := proto.Unmarshal(payload, m); err != nil {
		return false
	}
	_, err = protojson.Marshal(m)
	return err == nil
}
