// Package consumer feeds the notification service from the event bus: a
// durable JetStream consumer of every event (users, orders, payments…) that
// decodes each one into a domain.Occurrence and has the domain record it
// (audit log, notification, inbox) in one transaction.
//
// Delivery is at least once; the inbox written in that transaction makes a
// redelivered event a no-op that is acked again. An event that cannot be
// decoded, or whose type is unknown, is still audited and acked: retrying
// it would never succeed, and the audit log keeps its bytes for later.
package consumer

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"go.opentelemetry.io/otel/trace"
	"google.golang.org/protobuf/proto"

	orderv1 "github.com/duetkit/duet/gen/duet/order/v1"
	paymentv1 "github.com/duetkit/duet/gen/duet/payment/v1"
	typev1 "github.com/duetkit/duet/gen/duet/type/v1"
	userv1 "github.com/duetkit/duet/gen/duet/user/v1"
	"github.com/duetkit/duet/kit/events"
	"github.com/duetkit/duet/services/notification/domain"
)

// Linger is the consumer's ConsumerConfig.Linger: under load, events wait
// up to this long to be recorded together, in one transaction. Nobody
// waits on a notification the way a caller waits on an order, and on
// SQLite each commit writes every page it touched again (the audit log's
// and the notifications' indexes): at 1,000 orders/s, 10 ms instead of
// kit/events' 2 ms default cut the bytes the shop writes per order by a
// tenth (bench/README.md). An event that comes alone is still recorded at
// once.
const Linger = 10 * time.Millisecond

// Durable is the name of the JetStream consumer: its position in the
// stream survives restarts, and notification processes share its work.
const Durable = "notification"

// Subjects returns the relative subjects consumed: everything on the bus.
// That is every user, order and payment event and whatever else services
// publish, which the audit log wants anyway (events of types Decode does not
// know are audited without a notification). It is one filter on purpose:
// NATS servers before 2.10 refuse consumers with several filter subjects
// ("user.*", "order.*", "payment.*"), and the external NATS deployments
// run may be one.
func Subjects() []string { return []string{">"} }

// Consumer turns events into audit entries and notifications.
type Consumer struct {
	svc *domain.Service
	bus *events.Bus
	log *slog.Logger
}

// New returns a Consumer recording into svc the events of bus. Events that
// cannot be decoded are logged to logger (nil means slog.Default()).
func New(svc *domain.Service, bus *events.Bus, logger *slog.Logger) *Consumer {
	if logger == nil {
		logger = slog.Default()
	}
	return &Consumer{svc: svc, bus: bus, log: logger}
}

// Run consumes events as Durable until ctx ends, then returns nil. Events
// waiting together are recorded together (HandleAll), one transaction for
// all of them.
func (c *Consumer) Run(ctx context.Context) error {
	return events.ConsumeBatch(ctx, c.bus, events.ConsumerConfig{
		Durable:  Durable,
		Subjects: Subjects(),
		Logger:   c.log,
		Linger:   Linger,
	}, c.HandleAll, c.Handle)
}

// Handle records one event. It returns an error only when the record could
// not be stored, so Consume redelivers the event later.
func (c *Consumer) Handle(ctx context.Context, m events.Message) error {
	out, err := c.svc.RecordAll(ctx, []domain.Incoming{c.incoming(ctx, m)})
	if err != nil {
		return fmt.Errorf("notification: record event %s: %w", m.ID, err)
	}
	c.recorded(ctx, m, out[0])
	return nil
}

// HandleAll records several events, in order and in one transaction. It
// returns an error only when they could not be stored; ConsumeBatch then
// has Handle record them one by one.
func (c *Consumer) HandleAll(ctx context.Context, ms []events.Message) error {
	in := make([]domain.Incoming, len(ms))
	for i, m := range ms {
		in[i] = c.incoming(m.Context(ctx), m)
	}
	out, err := c.svc.RecordAll(ctx, in)
	if err != nil {
		return fmt.Errorf("notification: record %d events from %s: %w", len(ms), ms[0].ID, err)
	}
	for i, m := range ms {
		c.recorded(m.Context(ctx), m, out[i])
	}
	return nil
}

// incoming decodes m for the domain; ctx carries m's context, for the log.
func (c *Consumer) incoming(ctx context.Context, m events.Message) domain.Incoming {
	occ, err := Decode(m.Type, m.Data)
	if err != nil {
		c.log.WarnContext(ctx, "notification: undecodable event; auditing it without a notification",
			"event_id", m.ID, "type", m.Type, "err", err)
	}
	ev := domain.Event{
		ID:          m.ID,
		Type:        m.Type,
		AggregateID: m.AggregateID,
		Subject:     c.bus.Subject(m.Subject),
		RequestID:   m.RequestID,
		OccurTime:   m.OccurTime,
		Payload:     m.Data,
	}
	if ev.AggregateID == "" {
		ev.AggregateID = occ.SubjectID
	}
	if sc := trace.SpanContextFromContext(m.Context(ctx)); sc.HasTraceID() {
		ev.TraceID = sc.TraceID().String()
	}
	return domain.Incoming{Event: ev, Occurrence: occ}
}

// recorded logs what became of m.
func (c *Consumer) recorded(ctx context.Context, m events.Message, r domain.Recorded) {
	switch {
	case !r.First:
		c.log.DebugContext(ctx, "notification: event already recorded", "event_id", m.ID)
	case r.Notification != nil:
		c.log.DebugContext(ctx, "notification: recorded", "event_id", m.ID, "notification_id", r.Notification.ID, "kind", r.Notification.Kind)
	}
}

// Decode reads the payload of an event of type typ (a protobuf full name)
// into the facts the notification rules need. Unknown types are
// domain.HappeningOther and no error; a payload that does not decode as its
// type, or whose text holds a NUL, is HappeningOther and an error.
//
// A NUL is valid UTF-8 and any publisher can send one, but PostgreSQL
// refuses it in text: the notification made from it would fail to store,
// and the event be redelivered for ever. It is audited without one.
func Decode(typ string, data []byte) (domain.Occurrence, error) {
	occ, err := decodeOccurrence(typ, data)
	if err == nil && holdsNUL(occ) {
		return domain.Occurrence{What: domain.HappeningOther}, fmt.Errorf("decode %s: its text holds a NUL", typ)
	}
	return occ, err
}

// holdsNUL reports whether any text of o holds a NUL.
func holdsNUL(o domain.Occurrence) bool {
	for _, s := range append([]string{o.UserID, o.SubjectID, o.UserName, o.Reason, o.Amount.Currency}, o.Changed...) {
		if strings.IndexByte(s, 0) >= 0 {
			return true
		}
	}
	return false
}

func decodeOccurrence(typ string, data []byte) (domain.Occurrence, error) {
	other := domain.Occurrence{What: domain.HappeningOther}
	decode := func(m proto.Message) error {
		if err := proto.Unmarshal(data, m); err != nil {
			return fmt.Errorf("decode %s: %w", typ, err)
		}
		return nil
	}
	switch typ {
	case nameOf[*userv1.UserCreated]():
		var m userv1.UserCreated
		if err := decode(&m); err != nil {
			return other, err
		}
		u := m.GetUser()
		return domain.Occurrence{What: domain.UserCreated, UserID: u.GetId(), SubjectID: u.GetId(), UserName: u.GetName()}, nil
	case nameOf[*userv1.UserUpdated]():
		var m userv1.UserUpdated
		if err := decode(&m); err != nil {
			return other, err
		}
		u := m.GetUser()
		return domain.Occurrence{What: domain.UserUpdated, UserID: u.GetId(), SubjectID: u.GetId(), Changed: m.GetChanged().GetPaths()}, nil
	case nameOf[*orderv1.OrderConfirmed]():
		var m orderv1.OrderConfirmed
		if err := decode(&m); err != nil {
			return other, err
		}
		return orderOccurrence(domain.OrderConfirmed, m.GetOrder()), nil
	case nameOf[*orderv1.OrderCancelled]():
		var m orderv1.OrderCancelled
		if err := decode(&m); err != nil {
			return other, err
		}
		return orderOccurrence(domain.OrderCancelled, m.GetOrder()), nil
	case nameOf[*orderv1.OrderRejected]():
		var m orderv1.OrderRejected
		if err := decode(&m); err != nil {
			return other, err
		}
		return orderOccurrence(domain.OrderRejected, m.GetOrder()), nil
	case nameOf[*paymentv1.PaymentRefunded]():
		var m paymentv1.PaymentRefunded
		if err := decode(&m); err != nil {
			return other, err
		}
		p := m.GetPayment()
		return domain.Occurrence{What: domain.PaymentRefunded, UserID: p.GetUserId(), SubjectID: p.GetId(), Amount: money(m.GetAmount())}, nil
	}
	return other, nil
}

// nameOf returns the protobuf full name of message type M.
func nameOf[M proto.Message]() string {
	var m M
	return string(m.ProtoReflect().Descriptor().FullName())
}

func orderOccurrence(what domain.Happening, o *orderv1.Order) domain.Occurrence {
	return domain.Occurrence{What: what, UserID: o.GetUserId(), SubjectID: o.GetId(), Amount: money(o.GetTotal()), Reason: o.GetFailureReason()}
}

func money(m *typev1.Money) domain.Money {
	return domain.Money{Currency: m.GetCurrencyCode(), Units: m.GetUnits()}
}
