package grpchandler_test

import (
	"context"
	"database/sql/driver"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/proto"

	notificationv1 "github.com/duetkit/duet/gen/duet/notification/v1"
	orderv1 "github.com/duetkit/duet/gen/duet/order/v1"
	"github.com/duetkit/duet/internal/await"
	"github.com/duetkit/duet/kit/apierr"
	"github.com/duetkit/duet/kit/client"
	"github.com/duetkit/duet/kit/server"
	"github.com/duetkit/duet/kit/server/servertest"
	"github.com/duetkit/duet/kit/sqldb"
	"github.com/duetkit/duet/kit/sqldb/sqldbtest"
	"github.com/duetkit/duet/services/notification/domain"
	"github.com/duetkit/duet/services/notification/grpchandler"
	"github.com/duetkit/duet/services/notification/store"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		goleak.IgnoreTopFunction("database/sql.(*DB).connectionOpener"),
		goleak.IgnoreTopFunction("go.opencensus.io/stats/view.(*worker).start"),
	)
}

var discard = slog.New(slog.DiscardHandler)

func newID() string { return uuid.Must(uuid.NewV7()).String() }

// env is a notification handler served over loopback gRPC.
type env struct {
	db      *sqldb.DB
	svc     *domain.Service
	handler *grpchandler.Handler
	client  notificationv1.NotificationServiceClient
	addr    string
	srv     *servertest.Server
	// sent counts notifications the server has handed to Subscribe
	// streams, read at the transport.
	sent *atomic.Int64
}

func start(t *testing.T, url string) env {
	t.Helper()
	db, err := store.Open(t.Context(), url)
	if err != nil {
		t.Fatalf("store.Open: %v", err)
	}
	t.Cleanup(func() { _ = db.Close() }) // after the server has drained
	svc := domain.NewService(store.New(db))
	sent := new(atomic.Int64)
	h := grpchandler.New(svc, discard)
	srv := servertest.NewServer(t, server.Config{
		Name:   "notification",
		Logger: discard,
		StreamInterceptors: []grpc.StreamServerInterceptor{
			func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
				if info.FullMethod != notificationv1.NotificationService_Subscribe_FullMethodName {
					return handler(srv, ss) // the client's health Watch, say
				}
				return handler(srv, countingStream{ServerStream: ss, sent: sent})
			},
		},
	}, func(r grpc.ServiceRegistrar) { notificationv1.RegisterNotificationServiceServer(r, h) })
	return env{db: db, svc: svc, handler: h, client: notificationv1.NewNotificationServiceClient(srv.Conn), addr: srv.Addr, srv: srv, sent: sent}
}

type countingStream struct {
	grpc.ServerStream
	sent *atomic.Int64
}

func (s countingStream) SendMsg(m any) error {
	s.sent.Add(1)
	return s.ServerStream.SendMsg(m)
}

// record makes one order-confirmed notification for user, as the consumer
// would, and returns it.
func record(t *testing.T, svc *domain.Service, user string) domain.Notification {
	t.Helper()
	order := newID()
	n, first, err := svc.Record(t.Context(),
		domain.Event{ID: newID(), Type: "duet.order.v1.OrderConfirmed", AggregateID: order},
		domain.Occurrence{What: domain.OrderConfirmed, UserID: user, SubjectID: order})
	if err != nil || !first || n == nil {
		t.Fatalf("Record = %v, %v, %v", n, first, err)
	}
	return *n
}

// subscriber is a client of one Subscribe stream. Its receiver goroutine
// keeps reading so tests can wait for a message with a deadline, or check
// that none comes.
type subscriber struct {
	stream grpc.BidiStreamingClient[notificationv1.SubscribeRequest, notificationv1.SubscribeResponse]
	got    chan *notificationv1.Notification
	err    chan error // the stream's final error (io.EOF for OK)
}

func subscribe(t *testing.T, ctx context.Context, c notificationv1.NotificationServiceClient, user string, maxInFlight int32) *subscriber {
	t.Helper()
	stream, err := c.Subscribe(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.Send(&notificationv1.SubscribeRequest{Action: &notificationv1.SubscribeRequest_Subscribe{
		Subscribe: &notificationv1.Subscription{UserId: user, MaxInFlight: maxInFlight},
	}}); err != nil {
		t.Fatal(err)
	}
	s := &subscriber{stream: stream, got: make(chan *notificationv1.Notification, 100), err: make(chan error, 1)}
	go func() {
		for {
			resp, err := stream.Recv()
			if err != nil {
				s.err <- err
				return
			}
			s.got <- resp.GetNotification()
		}
	}()
	return s
}

// next returns the next notification, failing the test after a deadline.
func (s *subscriber) next(t *testing.T) *notificationv1.Notification {
	t.Helper()
	select {
	case n := <-s.got:
		return n
	case err := <-s.err:
		t.Fatalf("stream ended: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("no notification within 10s")
	}
	return nil
}

// quiet is how long none waits for a notification that must not come.
const quiet = 300 * time.Millisecond

// none checks that no notification arrives for a short while: proving a
// negative takes some waiting, and quiet is ample on loopback for one that
// was already sent.
func (s *subscriber) none(t *testing.T) {
	t.Helper()
	select {
	case n := <-s.got:
		t.Fatalf("unexpected notification %s", n.GetId())
	case err := <-s.err:
		t.Fatalf("stream ended: %v", err)
	case <-time.After(quiet):
	}
}

func (s *subscriber) ack(t *testing.T, id string) {
	t.Helper()
	if err := s.stream.Send(&notificationv1.SubscribeRequest{Action: &notificationv1.SubscribeRequest_Ack{
		Ack: &notificationv1.Ack{NotificationId: id},
	}}); err != nil {
		t.Fatal(err)
	}
}

// waitFor is await.Until with this package's deadline, 10 s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	await.Until(t, what, 10*time.Second, cond)
}

// acked reports whether notification id of user has an ack time.
func acked(t *testing.T, svc *domain.Service, user, id string) bool {
	t.Helper()
	page, err := svc.Notifications(t.Context(), user, domain.MaxPageSize, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range page.Notifications {
		if n.ID == id {
			return n.Acked()
		}
	}
	t.Fatalf("notification %s not found", id)
	return false
}

func TestSubscribeBacklogThenLive(t *testing.T) {
	sqldbtest.Run(t, func(t *testing.T, url string) {
		e := start(t, url)
		user := newID()
		var backlog []string
		for range 3 {
			backlog = append(backlog, record(t, e.svc, user).ID)
		}
		record(t, e.svc, newID()) // someone else's

		s := subscribe(t, t.Context(), e.client, user, 0)
		for i, want := range backlog {
			n := s.next(t)
			if n.GetId() != want || n.GetUserId() != user ||
				n.GetKind() != notificationv1.NotificationKind_NOTIFICATION_KIND_ORDER_CONFIRMED || n.GetAckTime() != nil {
				t.Fatalf("backlog[%d] = %v, want %s", i, n, want)
			}
		}
		live := record(t, e.svc, user)
		if n := s.next(t); n.GetId() != live.ID {
			t.Fatalf("live = %s, want %s", n.GetId(), live.ID)
		}
		s.none(t)
	})
}

// TestSubscribeSeesOtherReplicas: a notification another replica's
// consumer stores (another service over the same database, which wakes
// only its own subscriptions) reaches a subscription within
// PollInterval; it waited for a reconnect before.
func TestSubscribeSeesOtherReplicas(t *testing.T) {
	sqldbtest.Run(t, func(t *testing.T, url string) {
		e := start(t, url)
		db, err := store.Open(t.Context(), url)
		if err != nil {
			t.Fatal(err)
		}
		defer db.Close()
		other := domain.NewService(store.New(db))
		user := newID()
		s := subscribe(t, t.Context(), e.client, user, 0)
		first := record(t, e.svc, user) // this replica's: the stream is live
		if n := s.next(t); n.GetId() != first.ID {
			t.Fatalf("got %s, want %s", n.GetId(), first.ID)
		}
		theirs := record(t, other, user)
		if n := s.next(t); n.GetId() != theirs.ID {
			t.Fatalf("got %s, want the other replica's %s", n.GetId(), theirs.ID)
		}
	})
}

// TestSubscribePollOutlivesOutage: a poll's read failing (the database
// down) leaves the subscription open for the next poll; it ended every
// subscription within PollInterval of an outage, and their clients all
// subscribed again at once.
func TestSubscribePollOutlivesOutage(t *testing.T) {
	sqldbtest.Run(t, func(t *testing.T, url string) {
		e := start(t, url)
		user := newID()
		s := subscribe(t, t.Context(), e.client, user, 0)
		first := record(t, e.svc, user)
		if n := s.next(t); n.GetId() != first.ID {
			t.Fatalf("got %s, want %s", n.GetId(), first.ID)
		}
		e.db.Close() // every read fails from now on
		// Proving a negative takes waiting: two polls' worth.
		select {
		case err := <-s.err:
			t.Fatalf("the subscription ended when a poll failed: %v", err)
		case n := <-s.got:
			t.Fatalf("unexpected notification %s", n.GetId())
		case <-time.After(2*grpchandler.PollInterval + 500*time.Millisecond):
		}
	})
}

func TestSubscribeReconnectRedeliversUnacked(t *testing.T) {
	sqldbtest.Run(t, func(t *testing.T, url string) {
		e := start(t, url)
		user := newID()
		var ids []string
		for range 3 {
			ids = append(ids, record(t, e.svc, user).ID)
		}

		ctx, cancel := context.WithCancel(t.Context())
		s := subscribe(t, ctx, e.client, user, 0)
		for range ids {
			s.next(t)
		}
		s.ack(t, ids[1])
		waitFor(t, "the ack to be stored", func() bool { return acked(t, e.svc, user, ids[1]) })
		cancel()
		if err := <-s.err; apierr.Code(err) != codes.Canceled {
			t.Fatalf("cancelled stream ended with %v", err)
		}

		s = subscribe(t, t.Context(), e.client, user, 0)
		for _, want := range []string{ids[0], ids[2]} {
			if n := s.next(t); n.GetId() != want {
				t.Fatalf("redelivered %s, want %s", n.GetId(), want)
			}
		}
		s.none(t)
		// Acks of another session's (or a repeated) notification are fine.
		s.ack(t, ids[1])
		s.ack(t, ids[0])
		live := record(t, e.svc, user)
		if n := s.next(t); n.GetId() != live.ID {
			t.Fatalf("live = %s, want %s", n.GetId(), live.ID)
		}
		waitFor(t, "the ack to be stored", func() bool { return acked(t, e.svc, user, ids[0]) })
		if acked(t, e.svc, user, ids[2]) {
			t.Error("an unacked notification is marked acked")
		}
	})
}

func TestSubscribeBackpressure(t *testing.T) {
	sqldbtest.Run(t, func(t *testing.T, url string) {
		e := start(t, url)
		user := newID()
		var ids []string
		for range 5 {
			ids = append(ids, record(t, e.svc, user).ID)
		}
		s := subscribe(t, t.Context(), e.client, user, 2)
		if a, b := s.next(t), s.next(t); a.GetId() != ids[0] || b.GetId() != ids[1] {
			t.Fatalf("first two = %s, %s; want %s, %s", a.GetId(), b.GetId(), ids[0], ids[1])
		}
		// The window is full: neither the backlog nor a new notification
		// may come until an ack.
		ids = append(ids, record(t, e.svc, user).ID)
		s.none(t)
		if got := e.sent.Load(); got != 2 {
			t.Fatalf("server sent %d notifications with a window of 2", got)
		}
		// An ack of something not in flight frees nothing.
		s.ack(t, newID())
		s.none(t)
		for i := 2; i < len(ids); i++ {
			s.ack(t, ids[i-2])
			if n := s.next(t); n.GetId() != ids[i] {
				t.Fatalf("after ack %d got %s, want %s", i-2, n.GetId(), ids[i])
			}
			if got := e.sent.Load(); got != int64(i+1) {
				t.Fatalf("server sent %d notifications, want %d", got, i+1)
			}
		}
		s.ack(t, ids[4])
		s.ack(t, ids[5])
		waitFor(t, "every ack to be stored", func() bool {
			un, err := e.svc.Unacked(t.Context(), user, 10)
			return err == nil && len(un) == 0
		})
		s.none(t)
	})
}

func TestSubscribeEndFreesGoroutines(t *testing.T) {
	urls := sqldbtest.URLs(t)
	e := start(t, urls["sqlite"])
	tests := []struct {
		name    string
		backlog int   // notifications waiting before the subscription
		window  int32 // max_in_flight
		receive int   // how many the client reads before it goes
		end     string
	}{
		{name: "cancel idle", receive: 0, end: "cancel"},
		{name: "cancel with a full window", backlog: 5, window: 2, receive: 2, end: "cancel"},
		{name: "cancel mid-backlog", backlog: 50, window: 100, receive: 1, end: "cancel"},
		{name: "disconnect with a full window", backlog: 3, window: 1, receive: 1, end: "disconnect"},
		{name: "half-close then cancel", backlog: 2, window: 1, receive: 1, end: "half-close"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// A connection of its own, opened (by a first call) before
			// the snapshot, so only the stream's goroutines are judged.
			conn, err := client.New(e.addr, client.Config{})
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			c := notificationv1.NewNotificationServiceClient(conn)
			user := newID()
			if _, err := c.ListNotifications(t.Context(), &notificationv1.ListNotificationsRequest{UserId: user}); err != nil {
				t.Fatal(err)
			}
			for range tt.backlog {
				record(t, e.svc, user)
			}
			before := goleak.IgnoreCurrent()
			ctx, cancel := context.WithCancel(t.Context())
			defer cancel()
			s := subscribe(t, ctx, c, user, tt.window)
			for range tt.receive {
				s.next(t)
			}
			waitFor(t, "the stream to watch", func() bool { return e.svc.Watchers() == 1 })
			switch tt.end {
			case "cancel":
				cancel()
			case "disconnect":
				_ = conn.Close()
			case "half-close":
				if err := s.stream.CloseSend(); err != nil {
					t.Fatal(err)
				}
				s.none(t) // still subscribed, window still full
				if e.svc.Watchers() != 1 {
					t.Fatal("half-close ended the subscription")
				}
				cancel()
			}
			if err := <-s.err; apierr.Code(err) != codes.Canceled {
				t.Errorf("stream ended with %v, want CANCELED", err)
			}
			waitFor(t, "the handler to return", func() bool { return e.svc.Watchers() == 0 })
			goleak.VerifyNone(t, before)
		})
	}
}

// TestSubscribeEndsAtShutdown: subscriptions never end by themselves;
// the server's graceful stop ends them (kit/server) with UNAVAILABLE
// SHUTTING_DOWN and a retry delay, so clients subscribe again elsewhere,
// instead of waiting out its drain timeout for them.
func TestSubscribeEndsAtShutdown(t *testing.T) {
	e := start(t, sqldbtest.URLs(t)["sqlite"])
	user := newID()
	id := record(t, e.svc, user).ID
	s := subscribe(t, t.Context(), e.client, user, 0)
	if n := s.next(t); n.GetId() != id {
		t.Fatalf("got %s, want %s", n.GetId(), id)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	stopped := make(chan struct{})
	go func() {
		e.srv.Shutdown(ctx) // a drain timeout of 15 s: ctx ends first if it waits
		close(stopped)
	}()
	err := <-s.err
	if apierr.Code(err) != codes.Unavailable || apierr.Reason(err) != apierr.ReasonShuttingDown {
		t.Fatalf("stream ended with %v at shutdown, want UNAVAILABLE %s", err, apierr.ReasonShuttingDown)
	}
	if d, ok := apierr.RetryDelay(err); !ok || d != server.ShutdownRetryAfter {
		t.Errorf("retry delay %v, %v; want %v", d, ok, server.ShutdownRetryAfter)
	}
	<-stopped
	if ctx.Err() != nil {
		t.Error("Shutdown waited for the subscription")
	}
	waitFor(t, "every handler to return", func() bool { return e.svc.Watchers() == 0 })
}

func TestSubscribeInvalid(t *testing.T) {
	e := start(t, sqldbtest.URLs(t)["sqlite"])
	user := newID()
	sub := func(u string, max int32) *notificationv1.SubscribeRequest {
		return &notificationv1.SubscribeRequest{Action: &notificationv1.SubscribeRequest_Subscribe{
			Subscribe: &notificationv1.Subscription{UserId: u, MaxInFlight: max}}}
	}
	ack := func(id string) *notificationv1.SubscribeRequest {
		return &notificationv1.SubscribeRequest{Action: &notificationv1.SubscribeRequest_Ack{Ack: &notificationv1.Ack{NotificationId: id}}}
	}
	tests := []struct {
		name  string
		send  []*notificationv1.SubscribeRequest
		close bool // half-close after sending
		field string
	}{
		{name: "nothing", close: true, field: "subscribe"},
		{name: "ack first", send: []*notificationv1.SubscribeRequest{ack(newID())}, field: "subscribe"},
		{name: "empty message", send: []*notificationv1.SubscribeRequest{{}}},
		{name: "bad user id", send: []*notificationv1.SubscribeRequest{sub("me", 0)}, field: "subscribe.user_id"},
		{name: "window too large", send: []*notificationv1.SubscribeRequest{sub(user, 101)}, field: "subscribe.max_in_flight"},
		{name: "negative window", send: []*notificationv1.SubscribeRequest{sub(user, -1)}, field: "subscribe.max_in_flight"},
		{name: "subscribe twice", send: []*notificationv1.SubscribeRequest{sub(user, 0), sub(user, 0)}, field: "subscribe"},
		{name: "bad ack id", send: []*notificationv1.SubscribeRequest{sub(user, 0), ack("x")}, field: "ack.notification_id"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
			defer cancel()
			stream, err := e.client.Subscribe(ctx)
			if err != nil {
				t.Fatal(err)
			}
			for _, m := range tt.send {
				if err := stream.Send(m); err != nil && !errors.Is(err, io.EOF) {
					t.Fatal(err)
				}
			}
			if tt.close {
				if err := stream.CloseSend(); err != nil {
					t.Fatal(err)
				}
			}
			_, err = stream.Recv()
			if apierr.Code(err) != codes.InvalidArgument {
				t.Fatalf("Recv = %v, want INVALID_ARGUMENT", err)
			}
			var fields []string
			for _, v := range apierr.FieldViolations(err) {
				fields = append(fields, v.Field)
			}
			if tt.field != "" && !slices.Contains(fields, tt.field) {
				t.Errorf("field violations = %v, want %s (err: %v)", fields, tt.field, err)
			}
		})
	}
	waitFor(t, "every handler to return", func() bool { return e.svc.Watchers() == 0 })
}

func TestListNotifications(t *testing.T) {
	sqldbtest.Run(t, func(t *testing.T, url string) {
		e := start(t, url)
		ctx := t.Context()
		user, other := newID(), newID()
		var want []string
		for range 5 {
			want = append(want, record(t, e.svc, user).ID)
		}
		record(t, e.svc, other)
		if err := e.svc.Ack(ctx, user, want[0]); err != nil {
			t.Fatal(err)
		}

		var got []string
		tok := ""
		for pages := 1; ; pages++ {
			resp, err := e.client.ListNotifications(ctx, &notificationv1.ListNotificationsRequest{UserId: user, PageSize: 2, PageToken: tok})
			if err != nil {
				t.Fatal(err)
			}
			for _, n := range resp.GetNotifications() {
				got = append(got, n.GetId())
				if (n.GetId() == want[0]) != (n.GetAckTime() != nil) {
					t.Errorf("notification %s ack time = %v", n.GetId(), n.GetAckTime())
				}
			}
			tok = resp.GetNextPageToken()
			if tok == "" {
				if pages != 3 {
					t.Errorf("%d pages, want 3", pages)
				}
				break
			}
		}
		if !slices.Equal(got, want) {
			t.Errorf("listed %v, want %v", got, want)
		}

		first, err := e.client.ListNotifications(ctx, &notificationv1.ListNotificationsRequest{UserId: user, PageSize: 1})
		if err != nil {
			t.Fatal(err)
		}
		tests := []struct {
			name  string
			req   *notificationv1.ListNotificationsRequest
			field string
		}{
			{"garbage token", &notificationv1.ListNotificationsRequest{UserId: user, PageToken: "garbage"}, "page_token"},
			{"another user's token", &notificationv1.ListNotificationsRequest{UserId: other, PageToken: first.GetNextPageToken()}, "page_token"},
			{"bad user id", &notificationv1.ListNotificationsRequest{UserId: "nope"}, "user_id"},
			{"page too large", &notificationv1.ListNotificationsRequest{UserId: user, PageSize: 101}, "page_size"},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				_, err := e.client.ListNotifications(ctx, tt.req)
				if apierr.Code(err) != codes.InvalidArgument || apierr.Reason(err) != apierr.ReasonInvalidArgument {
					t.Fatalf("err = %v, want INVALID_ARGUMENT", err)
				}
				if fv := apierr.FieldViolations(err); len(fv) == 0 || fv[0].Field != tt.field {
					t.Errorf("field violations = %v, want %s", fv, tt.field)
				}
			})
		}
	})
}

func TestListAuditEvents(t *testing.T) {
	sqldbtest.Run(t, func(t *testing.T, url string) {
		e := start(t, url)
		ctx := t.Context()
		order, user := newID(), newID()
		confirmed := &orderv1.OrderConfirmed{Order: &orderv1.Order{Id: order, UserId: user}}
		payload, err := proto.Marshal(confirmed)
		if err != nil {
			t.Fatal(err)
		}
		occur := time.Date(2026, 3, 4, 5, 6, 7, 8000, time.UTC)
		evs := []domain.Event{
			{ID: newID(), Type: "duet.order.v1.OrderConfirmed", AggregateID: order, Subject: "duet.order.confirmed",
				RequestID: "req-1", TraceID: "4bf92f3577b34da6a3ce929d0e0e4736", OccurTime: occur, Payload: payload},
			{ID: newID(), Type: "duet.order.v9.OrderTeleported", AggregateID: order, Subject: "duet.order.teleported", Payload: []byte{1}},
			{ID: newID(), Type: "duet.order.v1.OrderConfirmed", AggregateID: order, Subject: "duet.order.confirmed", Payload: payload},
		}
		for _, ev := range evs {
			if _, _, err := e.svc.Record(ctx, ev, domain.Occurrence{}); err != nil {
				t.Fatal(err)
			}
		}
		var got []*notificationv1.AuditEvent
		tok := ""
		for {
			resp, err := e.client.ListAuditEvents(ctx, &notificationv1.ListAuditEventsRequest{AggregateId: order, PageSize: 2, PageToken: tok})
			if err != nil {
				t.Fatal(err)
			}
			got = append(got, resp.GetEvents()...)
			if tok = resp.GetNextPageToken(); tok == "" {
				break
			}
		}
		if len(got) != len(evs) {
			t.Fatalf("listed %d events, want %d", len(got), len(evs))
		}
		for i, ev := range evs {
			if got[i].GetEventId() != ev.ID || got[i].GetType() != ev.Type || got[i].GetSubject() != ev.Subject ||
				got[i].GetAggregateId() != order || got[i].GetRecordTime() == nil {
				t.Errorf("event %d = %v, want %+v", i, got[i], ev)
			}
		}
		a := got[0]
		if a.GetRequestId() != "req-1" || a.GetTraceId() != evs[0].TraceID || !a.GetOccurTime().AsTime().Equal(occur) {
			t.Errorf("event metadata = %v", a)
		}
		var decoded orderv1.OrderConfirmed
		if err := a.GetPayload().UnmarshalTo(&decoded); err != nil || !proto.Equal(&decoded, confirmed) {
			t.Errorf("payload = %v (%v), want %v", &decoded, err, confirmed)
		}
		if got[1].GetPayload() != nil || got[1].GetOccurTime() != nil {
			t.Errorf("unknown type's payload = %v, occur time %v; want none", got[1].GetPayload(), got[1].GetOccurTime())
		}

		first, err := e.client.ListAuditEvents(ctx, &notificationv1.ListAuditEventsRequest{AggregateId: order, PageSize: 1})
		if err != nil {
			t.Fatal(err)
		}
		tests := []struct {
			name  string
			req   *notificationv1.ListAuditEventsRequest
			field string
		}{
			{"another aggregate's token", &notificationv1.ListAuditEventsRequest{AggregateId: user, PageToken: first.GetNextPageToken()}, "page_token"},
			{"garbage token", &notificationv1.ListAuditEventsRequest{AggregateId: order, PageToken: "AAAA"}, "page_token"},
			{"bad aggregate id", &notificationv1.ListAuditEventsRequest{AggregateId: "order-1"}, "aggregate_id"},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				_, err := e.client.ListAuditEvents(ctx, tt.req)
				if apierr.Code(err) != codes.InvalidArgument {
					t.Fatalf("err = %v, want INVALID_ARGUMENT", err)
				}
				if fv := apierr.FieldViolations(err); len(fv) == 0 || fv[0].Field != tt.field {
					t.Errorf("field violations = %v, want %s", fv, tt.field)
				}
			})
		}
	})
}

// TestSubscriptionsPerUserBounded: subscriptions had no bound, and each
// holds two goroutines and reads the database every PollInterval.
func TestSubscriptionsPerUserBounded(t *testing.T) {
	e := start(t, sqldbtest.URLs(t)["sqlite"])
	user, other := newID(), newID()
	// Every subscription is sent n at once: the server has counted it.
	n := record(t, e.svc, user)
	var (
		open    []*subscriber
		closers []context.CancelFunc
	)
	for range grpchandler.MaxSubscriptionsPerUser {
		ctx, cancel := context.WithCancel(t.Context())
		defer cancel()
		s := subscribe(t, ctx, e.client, user, 0)
		if got := s.next(t); got.GetId() != n.ID {
			t.Fatalf("subscription got %s, want %s", got.GetId(), n.ID)
		}
		open, closers = append(open, s), append(closers, cancel)
	}
	refused := func(s *subscriber) error {
		select {
		case err := <-s.err:
			return err
		case got := <-s.got:
			t.Fatalf("a subscription past the bound was served %s", got.GetId())
		case <-time.After(10 * time.Second):
			t.Fatal("a subscription past the bound neither served nor refused within 10 s")
		}
		return nil
	}
	err := refused(subscribe(t, t.Context(), e.client, user, 0))
	if apierr.Code(err) != codes.ResourceExhausted || apierr.Reason(err) != grpchandler.ReasonTooManySubscriptions {
		t.Fatalf("subscription past the bound ended with %v, want RESOURCE_EXHAUSTED %s", err, grpchandler.ReasonTooManySubscriptions)
	}

	// Another user's is served.
	s := subscribe(t, t.Context(), e.client, other, 0)
	if got := record(t, e.svc, other); s.next(t).GetId() != got.ID {
		t.Fatal("another user's subscription was not served")
	}

	// One closed makes room, once its session has ended.
	closers[0]()
	if err := <-open[0].err; apierr.Code(err) != codes.Canceled {
		t.Fatalf("closed subscription ended with %v", err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		s := subscribe(t, t.Context(), e.client, user, 0)
		select {
		case got := <-s.got:
			if got.GetId() != n.ID {
				t.Fatalf("subscription got %s, want %s", got.GetId(), n.ID)
			}
			return
		case err := <-s.err:
			if apierr.Reason(err) != grpchandler.ReasonTooManySubscriptions || time.Now().After(deadline) {
				t.Fatalf("subscription after one closed ended with %v", err)
			}
			time.Sleep(5 * time.Millisecond) // the closed one's session is still ending
		case <-time.After(10 * time.Second):
			t.Fatal("subscription after one closed neither served nor refused within 10 s")
		}
	}
}

// failingReads is a repository whose Unacked fails while fail is set;
// everything else works, so notifications are stored and wake
// subscriptions.
type failingReads struct {
	domain.Repository
	fail     atomic.Bool
	failures atomic.Int32
	// err is what a failing read returns; nil: the database unreachable.
	err error
}

// Unacked fails when fail is set as the read ends: a read that began
// before the test set it could otherwise return what the test stored
// after, as if the database had answered once it was away.
func (f *failingReads) Unacked(ctx context.Context, userID string, limit int) ([]domain.Notification, error) {
	ns, err := f.Repository.Unacked(ctx, userID, limit)
	if f.fail.Load() {
		f.failures.Add(1)
		if f.err != nil {
			return nil, f.err
		}
		return nil, fmt.Errorf("database unreachable: %w", driver.ErrBadConn)
	}
	return ns, err
}

// warnings counts the WARN records a handler logs.
type warnings struct{ n atomic.Int32 }

func (w *warnings) Enabled(context.Context, slog.Level) bool { return true }
func (w *warnings) Handle(_ context.Context, r slog.Record) error {
	if r.Level == slog.LevelWarn {
		w.n.Add(1)
	}
	return nil
}
func (w *warnings) WithAttrs([]slog.Attr) slog.Handler { return w }
func (w *warnings) WithGroup(string) slog.Handler      { return w }

// TestSubscribeReadFailureAfterWake: a read that a stored notification
// woke, failing (the database down a moment), ended the subscription with
// INTERNAL; only reads that a poll woke were let fail. The next poll now
// reads again, and a run of failures is logged once.
func TestSubscribeReadFailureAfterWake(t *testing.T) {
	db, err := store.Open(t.Context(), sqldbtest.URLs(t)["sqlite"])
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = db.Close() }) // after the server has drained
	repo := &failingReads{Repository: store.New(db)}
	svc := domain.NewService(repo)
	warned := &warnings{}
	conn := servertest.Start(t, server.Config{Name: "notification", Logger: discard}, func(r grpc.ServiceRegistrar) {
		notificationv1.RegisterNotificationServiceServer(r, grpchandler.New(svc, slog.New(warned)))
	})
	client := notificationv1.NewNotificationServiceClient(conn)
	user := newID()
	s := subscribe(t, t.Context(), client, user, 0)
	first := record(t, svc, user)
	if n := s.next(t); n.GetId() != first.ID {
		t.Fatalf("got %s, want %s", n.GetId(), first.ID)
	}
	repo.fail.Store(true)
	second := record(t, svc, user) // stored; wakes the subscription, whose read fails
	waitFor(t, "a poll's read to fail too", func() bool { return repo.failures.Load() >= 2 })
	s.none(t)
	if n := warned.n.Load(); n != 1 {
		t.Errorf("%d warnings for one run of failed reads, want 1", n)
	}
	repo.fail.Store(false)
	if n := s.next(t); n.GetId() != second.ID { // within a poll
		t.Fatalf("got %s, want %s", n.GetId(), second.ID)
	}
}

// TestSubscribeEndsAfterReadOutage: a session whose reads kept failing
// stayed open and silent for as long as the database was away; past
// ReadOutageLimit it ends with UNAVAILABLE and a retry delay, so that its
// client reconnects and can say so.
func TestSubscribeEndsAfterReadOutage(t *testing.T) {
	t.Cleanup(grpchandler.SetReadOutageLimit(100 * time.Millisecond)) // after the server's cleanup
	tests := []struct {
		name  string
		err   error // of the failing reads; nil: the database unreachable
		code  codes.Code
		retry bool
	}{
		{name: "database away", code: codes.Unavailable, retry: true},
		// A bug (a bad migration, say) is no outage to retry for ever.
		{name: "a bug", err: errors.New("sql: Scan error on column index 3: unreachable"), code: codes.Internal},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			db, err := store.Open(t.Context(), sqldbtest.URLs(t)["sqlite"])
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = db.Close() })
			repo := &failingReads{Repository: store.New(db), err: tt.err}
			svc := domain.NewService(repo)
			conn := servertest.Start(t, server.Config{Name: "notification", Logger: discard}, func(r grpc.ServiceRegistrar) {
				notificationv1.RegisterNotificationServiceServer(r, grpchandler.New(svc, discard))
			})
			user := newID()
			s := subscribe(t, t.Context(), notificationv1.NewNotificationServiceClient(conn), user, 0)
			first := record(t, svc, user) // the session's reads work at first
			if n := s.next(t); n.GetId() != first.ID {
				t.Fatalf("got %s, want %s", n.GetId(), first.ID)
			}
			repo.fail.Store(true)
			record(t, svc, user) // wakes the session, whose read fails; the next poll's fails past the limit
			select {
			case err := <-s.err:
				_, retry := apierr.RetryDelay(err)
				if apierr.Code(err) != tt.code || retry != tt.retry {
					t.Fatalf("session ended with %v (retry delay %v), want %v (%v)", err, retry, tt.code, tt.retry)
				}
				if strings.Contains(err.Error(), "unreachable") {
					t.Errorf("session ended with %v: the read's error text reached the client", err)
				}
			case n := <-s.got:
				t.Fatalf("got %s while every read fails", n.GetId())
			case <-time.After(3 * grpchandler.PollInterval):
				t.Fatal("the session outlived its reads' outage")
			}
		})
	}
}

// TestSubscribeFirstMessageTimeout: a Subscribe stream opened and left
// silent held its handler for as long as the connection lived, counted by
// no bound on subscriptions.
func TestSubscribeFirstMessageTimeout(t *testing.T) {
	t.Cleanup(grpchandler.SetFirstMessageTimeout(100 * time.Millisecond)) // after the server's cleanup
	e := start(t, sqldbtest.URLs(t)["sqlite"])
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	stream, err := e.client.Subscribe(ctx)
	if err != nil {
		t.Fatal(err)
	}
	_, err = stream.Recv()
	if apierr.Code(err) != codes.DeadlineExceeded || apierr.Reason(err) != grpchandler.ReasonSubscribeTimeout {
		t.Fatalf("a silent stream ended with %v, want DEADLINE_EXCEEDED %s", err, grpchandler.ReasonSubscribeTimeout)
	}
}
