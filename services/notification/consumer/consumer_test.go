package consumer_test

import (
	"context"
	"errors"
	"log/slog"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
	"go.uber.org/goleak"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/fieldmaskpb"

	orderv1 "github.com/duetkit/duet/gen/duet/order/v1"
	paymentv1 "github.com/duetkit/duet/gen/duet/payment/v1"
	typev1 "github.com/duetkit/duet/gen/duet/type/v1"
	userv1 "github.com/duetkit/duet/gen/duet/user/v1"
	"github.com/duetkit/duet/internal/await"
	"github.com/duetkit/duet/kit/events"
	"github.com/duetkit/duet/kit/events/eventstest"
	"github.com/duetkit/duet/kit/sqldb/sqldbtest"
	"github.com/duetkit/duet/services/notification/consumer"
	"github.com/duetkit/duet/services/notification/domain"
	"github.com/duetkit/duet/services/notification/store"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		// database/sql's pool opener lives as long as a *sql.DB; test
		// cleanups close them, but not before TestMain looks.
		goleak.IgnoreTopFunction("database/sql.(*DB).connectionOpener"),
		goleak.IgnoreTopFunction("go.opencensus.io/stats/view.(*worker).start"),
	)
}

var discard = slog.New(slog.DiscardHandler)

func newID() string { return uuid.Must(uuid.NewV7()).String() }

func mustMarshal(t *testing.T, m proto.Message) []byte {
	t.Helper()
	b, err := proto.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestDecode(t *testing.T) {
	user, order, pay := newID(), newID(), newID()
	usd := &typev1.Money{CurrencyCode: "USD", Units: 2500}
	tests := []struct {
		name    string
		msg     proto.Message
		typ     string // overrides the message's own type name
		data    []byte // overrides the marshalled message
		want    domain.Occurrence
		wantErr bool
	}{
		{name: "user created", msg: &userv1.UserCreated{User: &userv1.User{Id: user, Name: "Ann"}},
			want: domain.Occurrence{What: domain.UserCreated, UserID: user, SubjectID: user, UserName: "Ann"}},
		{name: "user updated", msg: &userv1.UserUpdated{User: &userv1.User{Id: user}, Changed: &fieldmaskpb.FieldMask{Paths: []string{"email"}}},
			want: domain.Occurrence{What: domain.UserUpdated, UserID: user, SubjectID: user, Changed: []string{"email"}}},
		{name: "order confirmed", msg: &orderv1.OrderConfirmed{Order: &orderv1.Order{Id: order, UserId: user, Total: usd}},
			want: domain.Occurrence{What: domain.OrderConfirmed, UserID: user, SubjectID: order, Amount: domain.Money{Currency: "USD", Units: 2500}}},
		{name: "order cancelled", msg: &orderv1.OrderCancelled{Order: &orderv1.Order{Id: order, UserId: user, FailureReason: "PAYMENT_DECLINED"}},
			want: domain.Occurrence{What: domain.OrderCancelled, UserID: user, SubjectID: order, Reason: "PAYMENT_DECLINED"}},
		{name: "order rejected", msg: &orderv1.OrderRejected{Order: &orderv1.Order{Id: order, UserId: user, FailureReason: "OUT_OF_STOCK"}},
			want: domain.Occurrence{What: domain.OrderRejected, UserID: user, SubjectID: order, Reason: "OUT_OF_STOCK"}},
		{name: "payment refunded", msg: &paymentv1.PaymentRefunded{Payment: &paymentv1.Payment{Id: pay, UserId: user}, Amount: usd},
			want: domain.Occurrence{What: domain.PaymentRefunded, UserID: user, SubjectID: pay, Amount: domain.Money{Currency: "USD", Units: 2500}}},
		{name: "payment refunded without user", msg: &paymentv1.PaymentRefunded{Payment: &paymentv1.Payment{Id: pay}, Amount: usd},
			want: domain.Occurrence{What: domain.PaymentRefunded, SubjectID: pay, Amount: domain.Money{Currency: "USD", Units: 2500}}},
		{name: "payment captured is not notified", msg: &paymentv1.PaymentCaptured{Payment: &paymentv1.Payment{Id: pay, UserId: user}},
			want: domain.Occurrence{What: domain.HappeningOther}},
		{name: "unknown type", typ: "duet.user.v9.UserVanished", data: []byte{0xff, 0xff},
			want: domain.Occurrence{What: domain.HappeningOther}},
		{name: "garbage payload", typ: "duet.order.v1.OrderConfirmed", data: []byte{0xff, 0xff, 0xff},
			want: domain.Occurrence{What: domain.HappeningOther}, wantErr: true},
		// Valid protobuf, but PostgreSQL refuses a NUL in text: the
		// notification failed to store and the event came back for ever.
		{name: "NUL in a name", msg: &userv1.UserCreated{User: &userv1.User{Id: user, Name: "A\x00B"}},
			want: domain.Occurrence{What: domain.HappeningOther}, wantErr: true},
		{name: "NUL in a failure reason", msg: &orderv1.OrderCancelled{Order: &orderv1.Order{Id: order, UserId: user, FailureReason: "X\x00"}},
			want: domain.Occurrence{What: domain.HappeningOther}, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			typ, data := tt.typ, tt.data
			if tt.msg != nil {
				typ, data = string(proto.MessageName(tt.msg)), mustMarshal(t, tt.msg)
			}
			got, err := consumer.Decode(typ, data)
			if (err != nil) != tt.wantErr {
				t.Fatalf("Decode error = %v, want error %v", err, tt.wantErr)
			}
			if got.What != tt.want.What || got.UserID != tt.want.UserID || got.SubjectID != tt.want.SubjectID ||
				got.UserName != tt.want.UserName || got.Amount != tt.want.Amount || got.Reason != tt.want.Reason ||
				!slices.Equal(got.Changed, tt.want.Changed) {
				t.Errorf("Decode = %+v, want %+v", got, tt.want)
			}
		})
	}
}

// newService opens a store on url and returns the domain service and a
// Consumer over it for bus.
func newService(t *testing.T, url string, bus *events.Bus) (*domain.Service, *consumer.Consumer) {
	t.Helper()
	db, err := store.Open(t.Context(), url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = db.Close() })
	svc := domain.NewService(store.New(db))
	return svc, consumer.New(svc, bus, discard)
}

func TestHandleTwice(t *testing.T) {
	bus := &events.Bus{Prefix: "duet"} // Handle only needs the prefix
	sqldbtest.Run(t, func(t *testing.T, url string) {
		svc, c := newService(t, url, bus)
		ctx := t.Context()
		user := newID()
		m := events.Message{
			ID:          newID(),
			Type:        "duet.user.v1.UserCreated",
			Subject:     "user.created",
			AggregateID: user,
			RequestID:   "req-42",
			OccurTime:   time.Date(2026, 2, 3, 4, 5, 6, 7000, time.UTC),
			Data:        mustMarshal(t, &userv1.UserCreated{User: &userv1.User{Id: user, Name: "Ann"}}),
			Header:      nats.Header{events.HeaderTraceParent: []string{"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"}},
		}
		for range 2 {
			if err := c.Handle(ctx, m); err != nil {
				t.Fatal(err)
			}
		}
		notes, err := svc.Notifications(ctx, user, 0, nil)
		if err != nil {
			t.Fatal(err)
		}
		if len(notes.Notifications) != 1 || notes.Notifications[0].Kind != domain.KindWelcome || notes.Notifications[0].EventID != m.ID {
			t.Errorf("notifications = %+v, want one welcome", notes.Notifications)
		}
		evs, err := svc.Events(ctx, user, 0, nil)
		if err != nil {
			t.Fatal(err)
		}
		want := domain.Event{ID: m.ID, Type: m.Type, AggregateID: user, Subject: "duet.user.created", RequestID: "req-42",
			TraceID: "4bf92f3577b34da6a3ce929d0e0e4736", OccurTime: m.OccurTime}
		if len(evs.Events) != 1 {
			t.Fatalf("audit = %+v, want one entry", evs.Events)
		}
		got := evs.Events[0]
		if got.ID != want.ID || got.Type != want.Type || got.AggregateID != want.AggregateID || got.Subject != want.Subject ||
			got.RequestID != want.RequestID || got.TraceID != want.TraceID || !got.OccurTime.Equal(want.OccurTime) ||
			string(got.Payload) != string(m.Data) || got.RecordTime.IsZero() {
			t.Errorf("audit entry = %+v, want %+v", got, want)
		}
	})
}

// published is what publish sent: an event id and who should hear of it.
type published struct {
	id, aggregate, user string
	kind                domain.Kind // "" when no notification is due
}

// publish puts events straight on bus with the headers a Relay sets, one
// of each kind the service handles plus some it only audits.
func publish(t *testing.T, bus *events.Bus) []published {
	t.Helper()
	user, order, pay := newID(), newID(), newID()
	items := []struct {
		subject string
		msg     proto.Message
		typ     string
		p       published
	}{
		{"user.created", &userv1.UserCreated{User: &userv1.User{Id: user, Name: "Ann"}}, "", published{aggregate: user, user: user, kind: domain.KindWelcome}},
		{"user.updated", &userv1.UserUpdated{User: &userv1.User{Id: user}}, "", published{aggregate: user, user: user, kind: domain.KindAccountChanged}},
		{"order.confirmed", &orderv1.OrderConfirmed{Order: &orderv1.Order{Id: order, UserId: user}}, "", published{aggregate: order, user: user, kind: domain.KindOrderConfirmed}},
		{"order.cancelled", &orderv1.OrderCancelled{Order: &orderv1.Order{Id: order, UserId: user}}, "", published{aggregate: order, user: user, kind: domain.KindOrderCancelled}},
		{"order.rejected", &orderv1.OrderRejected{Order: &orderv1.Order{Id: order, UserId: user}}, "", published{aggregate: order, user: user, kind: domain.KindOrderRejected}},
		{"payment.refunded", &paymentv1.PaymentRefunded{Payment: &paymentv1.Payment{Id: pay, UserId: user}}, "", published{aggregate: pay, user: user, kind: domain.KindRefund}},
		{"payment.refunded", &paymentv1.PaymentRefunded{Payment: &paymentv1.Payment{Id: pay}}, "", published{aggregate: pay}},
		{"payment.captured", &paymentv1.PaymentCaptured{Payment: &paymentv1.Payment{Id: pay, UserId: user}}, "", published{aggregate: pay}},
		{"order.shipped", nil, "duet.order.v2.OrderShipped", published{aggregate: order}},
	}
	out := make([]published, 0, len(items))
	for _, it := range items {
		p := it.p
		p.id = newID()
		typ, data := it.typ, []byte{0x0a, 0x01, 'x'}
		if it.msg != nil {
			typ, data = string(proto.MessageName(it.msg)), mustMarshal(t, it.msg)
		}
		msg := &nats.Msg{Subject: bus.Subject(it.subject), Data: data, Header: nats.Header{}}
		msg.Header.Set(events.HeaderMsgID, p.id)
		msg.Header.Set(events.HeaderEventType, typ)
		msg.Header.Set(events.HeaderAggregateID, p.aggregate)
		msg.Header.Set(events.HeaderOccurTime, time.Now().UTC().Format(time.RFC3339Nano))
		if _, err := bus.JS.PublishMsg(t.Context(), msg); err != nil {
			t.Fatalf("publish %s: %v", it.subject, err)
		}
		out = append(out, p)
	}
	return out
}

// consume runs events.Consume with handle under a fresh durable name until
// done reports true, or fails the test after a deadline.
func consume(t *testing.T, bus *events.Bus, handle func(context.Context, events.Message) error, done func() bool) {
	t.Helper()
	ctx, cancel := context.WithCancel(t.Context())
	stopped := make(chan error, 1)
	go func() {
		stopped <- events.Consume(ctx, bus, events.ConsumerConfig{
			Durable:  consumer.Durable + "-" + eventstest.Unique(t),
			Subjects: consumer.Subjects(),
			Logger:   discard,
		}, handle)
	}()
	defer func() {
		cancel()
		if err := <-stopped; err != nil {
			t.Errorf("Consume: %v", err)
		}
	}()
	await.Until(t, "the events to be consumed", 30*time.Second, done)
}

// counter counts deliveries per event id.
type counter struct {
	mu sync.Mutex
	n  map[string]int
}

func (c *counter) add(id string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.n == nil {
		c.n = make(map[string]int)
	}
	c.n[id]++
	return c.n[id]
}

// atLeast reports whether every event in ps was delivered at least n times.
func (c *counter) atLeast(ps []published, n int) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, p := range ps {
		if c.n[p.id] < n {
			return false
		}
	}
	return true
}

// TestRedelivery makes every event arrive twice, the way a crash between
// the database commit and the ack would, then replays the whole stream to a
// new durable consumer: each event still has one audit entry and at most one
// notification.
func TestRedelivery(t *testing.T) {
	sqldbtest.Run(t, func(t *testing.T, url string) {
		eventstest.Run(t, func(t *testing.T, bus *events.Bus) {
			svc, c := newService(t, url, bus)
			ps := publish(t, bus)

			var first counter
			consume(t, bus, func(ctx context.Context, m events.Message) error {
				if err := c.Handle(ctx, m); err != nil {
					return err
				}
				if first.add(m.ID) == 1 {
					return errors.New("crashed after commit, before ack")
				}
				return nil
			}, func() bool { return first.atLeast(ps, 2) })
			check(t, svc, ps)

			var replay counter
			consume(t, bus, func(ctx context.Context, m events.Message) error {
				err := c.Handle(ctx, m)
				replay.add(m.ID)
				return err
			}, func() bool { return replay.atLeast(ps, 1) })
			check(t, svc, ps)
		})
	})
}

// check asserts one audit entry per published event and exactly the
// notifications due.
func check(t *testing.T, svc *domain.Service, ps []published) {
	t.Helper()
	ctx := t.Context()
	audited := map[string]int{}
	aggregates := map[string]bool{}
	wantNotes := map[string][]string{} // user -> event ids
	for _, p := range ps {
		aggregates[p.aggregate] = true
		if p.kind != "" {
			wantNotes[p.user] = append(wantNotes[p.user], p.id)
		}
	}
	for agg := range aggregates {
		page, err := svc.Events(ctx, agg, domain.MaxPageSize, nil)
		if err != nil {
			t.Fatal(err)
		}
		for _, ev := range page.Events {
			audited[ev.ID]++
		}
	}
	for _, p := range ps {
		if audited[p.id] != 1 {
			t.Errorf("event %s audited %d times, want once", p.id, audited[p.id])
		}
	}
	for user, ids := range wantNotes {
		page, err := svc.Notifications(ctx, user, domain.MaxPageSize, nil)
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		kinds := map[string]domain.Kind{}
		for _, n := range page.Notifications {
			got = append(got, n.EventID)
			kinds[n.EventID] = n.Kind
		}
		slices.Sort(got)
		slices.Sort(ids)
		if !slices.Equal(got, ids) {
			t.Errorf("user %s has notifications for events %v, want %v", user, got, ids)
		}
		for _, p := range ps {
			if p.kind != "" && p.user == user && kinds[p.id] != p.kind {
				t.Errorf("event %s made a %q notification, want %q", p.id, kinds[p.id], p.kind)
			}
		}
	}
}
