package notification_test

import (
	"context"
	"database/sql"
	"log/slog"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
	"go.opentelemetry.io/otel/trace"
	"go.uber.org/goleak"
	"google.golang.org/protobuf/proto"

	notificationv1 "github.com/duetkit/duet/gen/duet/notification/v1"
	orderv1 "github.com/duetkit/duet/gen/duet/order/v1"
	paymentv1 "github.com/duetkit/duet/gen/duet/payment/v1"
	typev1 "github.com/duetkit/duet/gen/duet/type/v1"
	userv1 "github.com/duetkit/duet/gen/duet/user/v1"
	"github.com/duetkit/duet/internal/await"
	"github.com/duetkit/duet/kit/events"
	"github.com/duetkit/duet/kit/events/eventstest"
	"github.com/duetkit/duet/kit/requestid"
	"github.com/duetkit/duet/kit/server"
	"github.com/duetkit/duet/kit/server/servertest"
	"github.com/duetkit/duet/kit/sqldb"
	"github.com/duetkit/duet/kit/sqldb/sqldbtest"
	"github.com/duetkit/duet/services/notification"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		goleak.IgnoreTopFunction("database/sql.(*DB).connectionOpener"),
		goleak.IgnoreTopFunction("go.opencensus.io/stats/view.(*worker).start"),
	)
}

var discard = slog.New(slog.DiscardHandler)

func newID() string { return uuid.Must(uuid.NewV7()).String() }

// start opens the notification service on url (consuming bus when not nil),
// serves it on a loopback port and returns a client and a stop function
// that the test may call early (it is also a cleanup).
func start(t *testing.T, url string, bus *events.Bus) (notificationv1.NotificationServiceClient, func()) {
	t.Helper()
	svc, err := notification.Open(t.Context(), notification.Config{DatabaseURL: url, Logger: discard, Bus: bus})
	if err != nil {
		t.Fatalf("notification.Open: %v", err)
	}
	closeSvc := sync.OnceFunc(func() {
		if err := svc.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	t.Cleanup(closeSvc) // after the server has drained, even if it never started
	srv := servertest.NewServer(t, server.Config{Name: "notification", Logger: discard}, svc.Register)
	stop := func() {
		// The graceful shutdown ends open subscriptions (kit/server).
		srv.Close()
		closeSvc()
	}
	t.Cleanup(stop)
	return notificationv1.NewNotificationServiceClient(srv.Conn), stop
}

// producer is another service's outbox: a scratch database whose events a
// Relay publishes, as the user, order and payment services do.
type producer struct {
	db    *sqldb.DB
	relay *events.Relay
}

func newProducer(t *testing.T, bus *events.Bus) *producer {
	t.Helper()
	db, err := sqldb.Open(t.Context(), "sqlite:"+filepath.Join(t.TempDir(), "producer.db"), nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := events.Migrate(t.Context(), db); err != nil {
		t.Fatal(err)
	}
	relay := events.NewRelay(db, bus, events.RelayConfig{Logger: discard, PollInterval: 50 * time.Millisecond})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := relay.Run(ctx); err != nil {
			t.Errorf("Relay.Run: %v", err)
		}
	}()
	t.Cleanup(func() {
		cancel()
		<-done
		_ = db.Close()
	})
	return &producer{db: db, relay: relay}
}

// publish appends one event in a transaction of its own, wakes the relay
// and returns the event id.
func (p *producer) publish(t *testing.T, ctx context.Context, subject, aggregate string, msg proto.Message) string {
	t.Helper()
	var id string
	err := p.db.InTx(ctx, func(tx *sql.Tx) error {
		var err error
		id, err = events.Append(ctx, tx, p.db.Dialect, events.Event{Subject: subject, AggregateID: aggregate, Message: msg})
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	p.relay.Notify()
	return id
}

// waitFor is await.Until with this package's deadline, 30 s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	await.Until(t, what, 30*time.Second, cond)
}

func audit(t *testing.T, c notificationv1.NotificationServiceClient, aggregate string) []*notificationv1.AuditEvent {
	t.Helper()
	resp, err := c.ListAuditEvents(t.Context(), &notificationv1.ListAuditEventsRequest{AggregateId: aggregate, PageSize: 100})
	if err != nil {
		t.Fatal(err)
	}
	return resp.GetEvents()
}

func notes(t *testing.T, c notificationv1.NotificationServiceClient, user string) []*notificationv1.Notification {
	t.Helper()
	resp, err := c.ListNotifications(t.Context(), &notificationv1.ListNotificationsRequest{UserId: user, PageSize: 100})
	if err != nil {
		t.Fatal(err)
	}
	return resp.GetNotifications()
}

// TestEventsToNotifications runs the service with its consumer against
// every database and NATS available: events published through an outbox
// become audit entries and notifications, a subscriber sees them live, and
// a restarted service resumes where it stopped without repeating anything.
func TestEventsToNotifications(t *testing.T) {
	sqldbtest.Run(t, func(t *testing.T, url string) {
		eventstest.Run(t, func(t *testing.T, bus *events.Bus) {
			c, stop := start(t, url, bus)
			p := newProducer(t, bus)
			user, order, pay := newID(), newID(), newID()

			sub, err := c.Subscribe(t.Context())
			if err != nil {
				t.Fatal(err)
			}
			if err := sub.Send(&notificationv1.SubscribeRequest{Action: &notificationv1.SubscribeRequest_Subscribe{
				Subscribe: &notificationv1.Subscription{UserId: user}}}); err != nil {
				t.Fatal(err)
			}

			// The request that created the user, as the user service
			// would have seen it.
			traceID := trace.TraceID{0x4b, 0xf9, 0x2f, 0x35, 0x77, 0xb3, 0x4d, 0xa6, 0xa3, 0xce, 0x92, 0x9d, 0x0e, 0x0e, 0x47, 0x36}
			reqCtx := trace.ContextWithSpanContext(requestid.NewContext(t.Context(), "req-signup"),
				trace.NewSpanContext(trace.SpanContextConfig{TraceID: traceID, SpanID: trace.SpanID{1, 2, 3, 4, 5, 6, 7, 8}, TraceFlags: trace.FlagsSampled}))
			created := &userv1.UserCreated{User: &userv1.User{Id: user, Name: "Ann", Email: "ann@example.com"}}
			welcomeEvent := p.publish(t, reqCtx, "user.created", user, created)

			// Live: the subscriber hears of the welcome as soon as the
			// consumer has stored it.
			resp, err := sub.Recv()
			if err != nil {
				t.Fatal(err)
			}
			if n := resp.GetNotification(); n.GetKind() != notificationv1.NotificationKind_NOTIFICATION_KIND_WELCOME ||
				n.GetEventId() != welcomeEvent || n.GetUserId() != user || n.GetSubjectId() != user {
				t.Fatalf("live notification = %v", n)
			}

			ctx := t.Context()
			total := &typev1.Money{CurrencyCode: "EUR", Units: 4200}
			p.publish(t, ctx, "order.confirmed", order, &orderv1.OrderConfirmed{Order: &orderv1.Order{Id: order, UserId: user, Total: total}})
			p.publish(t, ctx, "payment.captured", pay, &paymentv1.PaymentCaptured{Payment: &paymentv1.Payment{Id: pay, UserId: user}})
			p.publish(t, ctx, "payment.refunded", pay, &paymentv1.PaymentRefunded{Payment: &paymentv1.Payment{Id: pay, UserId: user}, Amount: total})
			p.publish(t, ctx, "payment.refunded", pay, &paymentv1.PaymentRefunded{Payment: &paymentv1.Payment{Id: pay}, Amount: total})

			waitFor(t, "the audit log", func() bool {
				return len(audit(t, c, user)) == 1 && len(audit(t, c, order)) == 1 && len(audit(t, c, pay)) == 3
			})
			var kinds []notificationv1.NotificationKind
			for _, n := range notes(t, c, user) {
				kinds = append(kinds, n.GetKind())
			}
			wantKinds := []notificationv1.NotificationKind{
				notificationv1.NotificationKind_NOTIFICATION_KIND_WELCOME,
				notificationv1.NotificationKind_NOTIFICATION_KIND_ORDER_CONFIRMED,
				notificationv1.NotificationKind_NOTIFICATION_KIND_REFUND,
			}
			if !slices.Equal(kinds, wantKinds) {
				t.Errorf("notifications = %v, want %v", kinds, wantKinds)
			}

			a := audit(t, c, user)[0]
			var payload userv1.UserCreated
			if err := a.GetPayload().UnmarshalTo(&payload); err != nil || !proto.Equal(&payload, created) {
				t.Errorf("audited payload = %v (%v), want %v", &payload, err, created)
			}
			if a.GetEventId() != welcomeEvent || a.GetType() != "duet.user.v1.UserCreated" || a.GetSubject() != bus.Subject("user.created") ||
				a.GetRequestId() != "req-signup" || a.GetTraceId() != traceID.String() || a.GetOccurTime() == nil || a.GetRecordTime() == nil {
				t.Errorf("audit entry = %v", a)
			}

			// An event published while the service is down is consumed
			// when it is back: the durable consumer resumes after what it
			// acked.
			stop()
			p.publish(t, ctx, "order.cancelled", order, &orderv1.OrderCancelled{Order: &orderv1.Order{Id: order, UserId: user, FailureReason: "PAYMENT_DECLINED"}})
			c, _ = start(t, url, bus)
			waitFor(t, "the event after the restart", func() bool { return len(audit(t, c, order)) == 2 })
			if got := len(notes(t, c, user)); got != 4 {
				t.Errorf("%d notifications after the restart, want 4", got)
			}
			if got := len(audit(t, c, pay)); got != 3 {
				t.Errorf("%d payment audit entries after the restart, want 3", got)
			}
		})
	})
}

// TestForeignEvents: events from a publisher that is not a Relay, with
// headers and payloads no Duet service writes, are audited and listed like
// any other. Before: a payload that did not decode as its type was listed
// as is and the gateway, decoding it to write JSON, answered the page with
// HTTP 500; a 400-byte Nats-Msg-Id ending a page made its page token panic
// (INTERNAL); a request id that was not UTF-8 was refused by PostgreSQL and
// its event redelivered forever (kit/events now drops a request id that
// kit/requestid would not take from a caller).
func TestForeignEvents(t *testing.T) {
	sqldbtest.Run(t, func(t *testing.T, url string) {
		eventstest.Run(t, func(t *testing.T, bus *events.Bus) {
			c, _ := start(t, url, bus)
			ctx := t.Context()
			aggregate := newID()
			// publish puts an event on the bus as any publisher could;
			// headers left empty are not sent.
			publish := func(subject, typ, aggregate, id, requestID string, data []byte) {
				t.Helper()
				msg := &nats.Msg{Subject: bus.Subject(subject), Data: data, Header: nats.Header{}}
				for key, value := range map[string]string{events.HeaderEventType: typ, events.HeaderAggregateID: aggregate,
					events.HeaderMsgID: id, events.HeaderRequestID: requestID} {
					if value != "" {
						msg.Header.Set(key, value)
					}
				}
				if _, err := bus.JS.PublishMsg(ctx, msg); err != nil {
					t.Fatal(err)
				}
			}
			const orderConfirmed = "duet.order.v1.OrderConfirmed"
			confirmed := &orderv1.OrderConfirmed{Order: &orderv1.Order{Id: aggregate}}
			data, err := proto.Marshal(confirmed)
			if err != nil {
				t.Fatal(err)
			}
			publish("order.foreign", orderConfirmed, aggregate, strings.Repeat("m", 400), "req-1", []byte{0xff, 0xff, 0xff})
			publish("order.foreign", orderConfirmed, aggregate, newID(), "req-\xff\x00", data)
			waitFor(t, "both events in the audit log", func() bool { return len(audit(t, c, aggregate)) == 2 })

			first, err := c.ListAuditEvents(ctx, &notificationv1.ListAuditEventsRequest{AggregateId: aggregate, PageSize: 1})
			if err != nil {
				t.Fatalf("first page: %v", err)
			}
			if len(first.GetEvents()) != 1 || first.GetNextPageToken() == "" {
				t.Fatalf("first page = %v", first)
			}
			if e := first.GetEvents()[0]; e.GetPayload() != nil || e.GetEventId() == "" || len(e.GetEventId()) > events.MaxIDLen {
				t.Errorf("event with a garbage payload and a 400-byte id listed as %v", e)
			}
			second, err := c.ListAuditEvents(ctx, &notificationv1.ListAuditEventsRequest{AggregateId: aggregate, PageSize: 1, PageToken: first.GetNextPageToken()})
			if err != nil || len(second.GetEvents()) != 1 {
				t.Fatalf("second page = %v, %v", second, err)
			}
			e := second.GetEvents()[0]
			var payload orderv1.OrderConfirmed
			if err := e.GetPayload().UnmarshalTo(&payload); err != nil || !proto.Equal(&payload, confirmed) {
				t.Errorf("payload = %v (%v), want %v", &payload, err, confirmed)
			}
			if e.GetRequestId() != "" {
				t.Errorf("request id = %q, want none: kit/requestid would not take it", e.GetRequestId())
			}
			if e := first.GetEvents()[0]; e.GetRequestId() != "req-1" {
				t.Errorf("request id = %q, want req-1", e.GetRequestId())
			}

			// Valid protobuf with a NUL in a name: audited, and no
			// notification made of it (PostgreSQL refused to store one, so
			// the event came back for ever).
			user := newID()
			named, err := proto.Marshal(&userv1.UserCreated{User: &userv1.User{Id: user, Name: "A\x00B"}})
			if err != nil {
				t.Fatal(err)
			}
			publish("user.created", "duet.user.v1.UserCreated", user, "", "", named)
			waitFor(t, "the event with a NUL in the audit log", func() bool { return len(audit(t, c, user)) == 1 })
			if n := notes(t, c, user); len(n) != 0 {
				t.Errorf("notifications = %v, want none", n)
			}

			// A subject that is not text: stored as text all the same
			// (SQLite stored it and the listing then failed to marshal;
			// PostgreSQL refused it for ever).
			other := newID()
			publish("order.a\xff\x00b", orderConfirmed, other, "", "", data)
			waitFor(t, "the event with an odd subject in the audit log", func() bool { return len(audit(t, c, other)) == 1 })
			if subj := audit(t, c, other)[0].GetSubject(); !utf8.ValidString(subj) || strings.ContainsRune(subj, 0) {
				t.Errorf("subject = %q", subj)
			}
		})
	})
}

// TestWithoutBus checks that the service serves its database without a
// consumer.
func TestWithoutBus(t *testing.T) {
	c, _ := start(t, sqldbtest.URLs(t)["sqlite"], nil)
	if got := notes(t, c, newID()); len(got) != 0 {
		t.Errorf("notifications = %v", got)
	}
}

func TestOpenNeedsDatabase(t *testing.T) {
	if _, err := notification.Open(t.Context(), notification.Config{}); err == nil {
		t.Error("Open without a database URL succeeded")
	}
}
