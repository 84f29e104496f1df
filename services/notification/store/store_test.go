package store_test

import (
	"bytes"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/duetkit/duet/kit/sqldb"
	"github.com/duetkit/duet/kit/sqldb/sqldbtest"
	"github.com/duetkit/duet/services/notification/domain"
	"github.com/duetkit/duet/services/notification/store"
)

func openStore(t *testing.T, url string) (*store.Store, *sqldb.DB) {
	t.Helper()
	db, err := store.Open(t.Context(), url)
	if err != nil {
		t.Fatalf("store.Open: %v", err)
	}
	t.Cleanup(func() { _ = db.Close() })
	return store.New(db), db
}

var base = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

func newID() string { return uuid.Must(uuid.NewV7()).String() }

func event(aggregate string, at time.Time) domain.Event {
	return domain.Event{
		ID:          newID(),
		Type:        "duet.order.v1.OrderConfirmed",
		AggregateID: aggregate,
		Subject:     "duet.order.confirmed",
		RequestID:   "req-1",
		TraceID:     "4bf92f3577b34da6a3ce929d0e0e4736",
		OccurTime:   at.Add(-time.Second),
		RecordTime:  at,
		Payload:     []byte{0x0a, 0x00, 0xff, 0x00},
	}
}

func note(user string, ev domain.Event) *domain.Notification {
	return &domain.Notification{
		ID: newID(), UserID: user, Kind: domain.KindOrderConfirmed, Title: "Order confirmed", Body: "body",
		SubjectID: ev.AggregateID, EventID: ev.ID, CreateTime: ev.RecordTime,
	}
}

func TestRecordOnce(t *testing.T) {
	sqldbtest.Run(t, func(t *testing.T, url string) {
		s, _ := openStore(t, url)
		ctx := t.Context()
		user, order := newID(), newID()
		ev := event(order, base)
		n := note(user, ev)

		tests := []struct {
			name      string
			n         *domain.Notification
			wantFirst bool
		}{
			{"first", n, true},
			{"redelivered", n, false},
			{"redelivered, fresh notification id", note(user, ev), false},
		}
		for _, tt := range tests {
			first, err := s.Record(ctx, ev, tt.n)
			if err != nil {
				t.Fatalf("%s: %v", tt.name, err)
			}
			if first != tt.wantFirst {
				t.Errorf("%s: first = %v, want %v", tt.name, first, tt.wantFirst)
			}
		}
		notes, err := s.Notifications(ctx, user, nil, 10)
		if err != nil {
			t.Fatal(err)
		}
		if len(notes) != 1 || notes[0] != *n {
			t.Errorf("notifications = %+v, want [%+v]", notes, *n)
		}
		evs, err := s.Events(ctx, order, nil, 10)
		if err != nil {
			t.Fatal(err)
		}
		if len(evs) != 1 || !sameEvent(evs[0], ev) {
			t.Errorf("audit = %+v, want [%+v]", evs, ev)
		}

		// An event without a notification, and one without payload or
		// occur time, are still audited.
		bare := domain.Event{ID: newID(), Type: "duet.unknown.v1.Thing", AggregateID: order, Subject: "duet.unknown.thing", RecordTime: base.Add(time.Second)}
		if first, err := s.Record(ctx, bare, nil); err != nil || !first {
			t.Fatalf("Record(bare) = %v, %v", first, err)
		}
		evs, err = s.Events(ctx, order, nil, 10)
		if err != nil {
			t.Fatal(err)
		}
		if len(evs) != 2 || evs[1].ID != bare.ID || len(evs[1].Payload) != 0 || !evs[1].OccurTime.IsZero() {
			t.Errorf("audit = %+v", evs)
		}
	})
}

func sameEvent(a, b domain.Event) bool {
	return a.ID == b.ID && a.Type == b.Type && a.AggregateID == b.AggregateID && a.Subject == b.Subject &&
		a.RequestID == b.RequestID && a.TraceID == b.TraceID && a.OccurTime.Equal(b.OccurTime) &&
		a.RecordTime.Equal(b.RecordTime) && bytes.Equal(a.Payload, b.Payload)
}

// TestConcurrentRedelivery records one event from many goroutines at once,
// as two consumer processes sharing a database might: exactly one wins.
func TestConcurrentRedelivery(t *testing.T) {
	sqldbtest.Run(t, func(t *testing.T, url string) {
		s, _ := openStore(t, url)
		ctx := t.Context()
		user := newID()
		ev := event(newID(), base)
		var (
			wg     sync.WaitGroup
			firsts atomic.Int32
			errs   = make(chan error, 8)
		)
		for range 8 {
			wg.Go(func() {
				first, err := s.Record(ctx, ev, note(user, ev))
				if err != nil {
					errs <- err
					return
				}
				if first {
					firsts.Add(1)
				}
			})
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			// The inbox insert of a loser waits for the winner's commit
			// and then does nothing: no error either way.
			t.Errorf("Record: %v", err)
		}
		if got := firsts.Load(); got != 1 {
			t.Errorf("%d first records, want 1", got)
		}
		if first, err := s.Record(ctx, ev, note(user, ev)); err != nil || first {
			t.Errorf("Record after the race = %v, %v; want not first", first, err)
		}
		notes, err := s.Notifications(ctx, user, nil, 100)
		if err != nil || len(notes) != 1 {
			t.Errorf("notifications = %d, %v; want 1", len(notes), err)
		}
	})
}

func TestAuditIsAppendOnly(t *testing.T) {
	sqldbtest.Run(t, func(t *testing.T, url string) {
		s, db := openStore(t, url)
		ctx := t.Context()
		ev := event(newID(), base)
		if _, err := s.Record(ctx, ev, nil); err != nil {
			t.Fatal(err)
		}
		for _, q := range []string{
			"UPDATE audit_events SET type = 'forged' WHERE event_id = ?",
			"DELETE FROM audit_events WHERE event_id = ?",
		} {
			if _, err := db.ExecContext(ctx, db.Rebind(q), ev.ID); err == nil {
				t.Errorf("%q succeeded on the audit log", q)
			}
		}
		evs, err := s.Events(ctx, ev.AggregateID, nil, 10)
		if err != nil || len(evs) != 1 || evs[0].Type != ev.Type {
			t.Errorf("audit after tampering = %+v, %v", evs, err)
		}
	})
}

func TestPagination(t *testing.T) {
	sqldbtest.Run(t, func(t *testing.T, url string) {
		s, _ := openStore(t, url)
		ctx := t.Context()
		user, other, agg := newID(), newID(), newID()
		var want []string
		// Pairs share a time, so the id breaks ties.
		for i := range 7 {
			at := base.Add(time.Duration(i/2) * time.Millisecond)
			ev := event(agg, at)
			n := note(user, ev)
			if _, err := s.Record(ctx, ev, n); err != nil {
				t.Fatal(err)
			}
			want = append(want, n.ID+"/"+ev.ID)
			oev := event(newID(), at)
			if _, err := s.Record(ctx, oev, note(other, oev)); err != nil {
				t.Fatal(err)
			}
		}
		for _, size := range []int{1, 2, 3, 7, 8} {
			t.Run(fmt.Sprint("size ", size), func(t *testing.T) {
				var notes, evs []string
				var pos *domain.Position
				for {
					page, err := s.Notifications(ctx, user, pos, size)
					if err != nil {
						t.Fatal(err)
					}
					for _, n := range page {
						notes = append(notes, n.ID)
					}
					if len(page) < size {
						break
					}
					last := page[len(page)-1]
					pos = &domain.Position{Time: last.CreateTime, ID: last.ID}
				}
				pos = nil
				for {
					page, err := s.Events(ctx, agg, pos, size)
					if err != nil {
						t.Fatal(err)
					}
					for _, e := range page {
						evs = append(evs, e.ID)
					}
					if len(page) < size {
						break
					}
					last := page[len(page)-1]
					pos = &domain.Position{Time: last.RecordTime, ID: last.ID}
				}
				if len(notes) != len(want) || len(evs) != len(want) {
					t.Fatalf("got %d notifications and %d events, want %d", len(notes), len(evs), len(want))
				}
				for i, w := range want {
					if got := notes[i] + "/" + evs[i]; got != w {
						t.Errorf("row %d = %s, want %s", i, got, w)
					}
				}
			})
		}
	})
}

func TestUnackedAndAck(t *testing.T) {
	sqldbtest.Run(t, func(t *testing.T, url string) {
		s, _ := openStore(t, url)
		ctx := t.Context()
		user, other := newID(), newID()
		var ids []string
		for i := range 4 {
			ev := event(newID(), base.Add(time.Duration(i)*time.Second))
			n := note(user, ev)
			if _, err := s.Record(ctx, ev, n); err != nil {
				t.Fatal(err)
			}
			ids = append(ids, n.ID)
		}
		ackAt := base.Add(time.Hour)
		tests := []struct {
			name     string
			user, id string
			want     []string // unacked after the ack
		}{
			{"another user's ack does nothing", other, ids[1], ids},
			{"unknown id does nothing", user, newID(), ids},
			{"ack the second", user, ids[1], []string{ids[0], ids[2], ids[3]}},
			{"ack it again", user, ids[1], []string{ids[0], ids[2], ids[3]}},
			{"ack the first", user, ids[0], []string{ids[2], ids[3]}},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				if err := s.Ack(ctx, tt.user, tt.id, ackAt); err != nil {
					t.Fatal(err)
				}
				un, err := s.Unacked(ctx, user, 10)
				if err != nil {
					t.Fatal(err)
				}
				var got []string
				for _, n := range un {
					got = append(got, n.ID)
				}
				if fmt.Sprint(got) != fmt.Sprint(tt.want) {
					t.Errorf("unacked = %v, want %v", got, tt.want)
				}
			})
		}
		if un, err := s.Unacked(ctx, user, 1); err != nil || len(un) != 1 || un[0].ID != ids[2] {
			t.Errorf("Unacked(limit 1) = %v, %v", un, err)
		}
		all, err := s.Notifications(ctx, user, nil, 10)
		if err != nil {
			t.Fatal(err)
		}
		if !all[1].AckTime.Equal(ackAt) || all[2].Acked() {
			t.Errorf("ack times = %v, %v", all[1].AckTime, all[2].AckTime)
		}
	})
}

func TestOpenTwice(t *testing.T) {
	sqldbtest.Run(t, func(t *testing.T, url string) {
		openStore(t, url)
		openStore(t, url) // migrations already applied: a no-op
	})
}

// TestRecordAll records several events in one transaction, one of them
// twice and one already recorded before: each is stored once.
func TestRecordAll(t *testing.T) {
	sqldbtest.Run(t, func(t *testing.T, url string) {
		s, _ := openStore(t, url)
		ctx := t.Context()
		user, order := newID(), newID()
		before := event(order, base)
		if _, err := s.Record(ctx, before, note(user, before)); err != nil {
			t.Fatal(err)
		}
		a, b := event(order, base.Add(time.Second)), event(order, base.Add(2*time.Second))
		first, err := s.RecordAll(ctx, []domain.Entry{
			{Event: a, Notification: note(user, a)},
			{Event: before, Notification: note(user, before)},
			{Event: b},
			{Event: a, Notification: note(user, a)},
		})
		if err != nil {
			t.Fatal(err)
		}
		if want := []bool{true, false, true, false}; fmt.Sprint(first) != fmt.Sprint(want) {
			t.Errorf("first = %v, want %v", first, want)
		}
		evs, err := s.Events(ctx, order, nil, 10)
		if err != nil {
			t.Fatal(err)
		}
		if len(evs) != 3 || evs[0].ID != before.ID || evs[1].ID != a.ID || evs[2].ID != b.ID {
			t.Errorf("audit = %+v, want before, a, b", evs)
		}
		notes, err := s.Notifications(ctx, user, nil, 10)
		if err != nil {
			t.Fatal(err)
		}
		if len(notes) != 2 {
			t.Errorf("notifications = %+v, want 2", notes)
		}
	})
}
