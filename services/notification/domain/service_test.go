package domain_test

import (
	"cmp"
	"context"
	"errors"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/duetkit/duet/services/notification/domain"
)

// memRepo is an in-memory domain.Repository.
type memRepo struct {
	mu     sync.Mutex
	seen   map[string]bool
	events []domain.Event
	notes  []domain.Notification
	fail   error
}

func newMemRepo() *memRepo { return &memRepo{seen: map[string]bool{}} }

func (r *memRepo) RecordAll(_ context.Context, entries []domain.Entry) ([]bool, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.fail != nil {
		return nil, r.fail
	}
	first := make([]bool, len(entries))
	for i, e := range entries {
		if r.seen[e.Event.ID] {
			continue
		}
		r.seen[e.Event.ID] = true
		first[i] = true
		r.events = append(r.events, e.Event)
		if e.Notification != nil {
			r.notes = append(r.notes, *e.Notification)
		}
	}
	return first, nil
}

func after(t time.Time, id string, pos *domain.Position) bool {
	if pos == nil {
		return true
	}
	return t.After(pos.Time) || t.Equal(pos.Time) && id > pos.ID
}

func (r *memRepo) Notifications(_ context.Context, userID string, pos *domain.Position, limit int) ([]domain.Notification, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []domain.Notification
	for _, n := range r.notes {
		if n.UserID == userID && after(n.CreateTime, n.ID, pos) {
			out = append(out, n)
		}
	}
	slices.SortFunc(out, func(a, b domain.Notification) int {
		return cmp.Or(a.CreateTime.Compare(b.CreateTime), cmp.Compare(a.ID, b.ID))
	})
	return out[:min(limit, len(out))], nil
}

func (r *memRepo) Unacked(ctx context.Context, userID string, limit int) ([]domain.Notification, error) {
	all, _ := r.Notifications(ctx, userID, nil, len(r.notes))
	all = slices.DeleteFunc(all, domain.Notification.Acked)
	return all[:min(limit, len(all))], nil
}

func (r *memRepo) Ack(_ context.Context, userID, id string, at time.Time) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	for i, n := range r.notes {
		if n.ID == id && n.UserID == userID && !n.Acked() {
			r.notes[i].AckTime = at
		}
	}
	return nil
}

func (r *memRepo) Events(_ context.Context, aggregateID string, pos *domain.Position, limit int) ([]domain.Event, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []domain.Event
	for _, e := range r.events {
		if e.AggregateID == aggregateID && after(e.RecordTime, e.ID, pos) {
			out = append(out, e)
		}
	}
	return out[:min(limit, len(out))], nil
}

// clock returns a clock that advances one millisecond per reading.
func clock() func() time.Time {
	var mu sync.Mutex
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	return func() time.Time {
		mu.Lock()
		defer mu.Unlock()
		now = now.Add(time.Millisecond)
		return now
	}
}

func TestRecord(t *testing.T) {
	ctx := t.Context()
	repo := newMemRepo()
	svc := domain.NewService(repo, domain.WithClock(clock()))
	wake, stop := svc.Watch(userID)
	defer stop()
	other, stopOther := svc.Watch(orderID)
	defer stopOther()

	created := domain.Occurrence{What: domain.UserCreated, UserID: userID, SubjectID: userID, UserName: "Ann"}
	ev := domain.Event{ID: "0190a3c4-0000-7000-8000-00000000e001", Type: "duet.user.v1.UserCreated", AggregateID: userID, Payload: []byte{1, 2}}

	tests := []struct {
		name      string
		ev        domain.Event
		occ       domain.Occurrence
		wantFirst bool
		wantNote  domain.Kind
	}{
		{name: "first delivery", ev: ev, occ: created, wantFirst: true, wantNote: domain.KindWelcome},
		{name: "redelivery", ev: ev, occ: created, wantFirst: false},
		{name: "no notification", ev: domain.Event{ID: "e2", Type: "duet.payment.v1.PaymentCaptured", AggregateID: payID},
			occ: domain.Occurrence{What: domain.HappeningOther, UserID: userID}, wantFirst: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			n, first, err := svc.Record(ctx, tt.ev, tt.occ)
			if err != nil {
				t.Fatal(err)
			}
			if first != tt.wantFirst {
				t.Errorf("first = %v, want %v", first, tt.wantFirst)
			}
			if tt.wantNote == "" {
				if n != nil {
					t.Errorf("notification %+v, want none", n)
				}
				select {
				case <-wake:
					t.Error("watcher woken without a notification")
				default:
				}
				return
			}
			if n == nil || n.Kind != tt.wantNote || n.EventID != tt.ev.ID || n.UserID != userID || n.CreateTime.IsZero() {
				t.Fatalf("notification = %+v", n)
			}
			select {
			case <-wake:
			default:
				t.Error("watcher not woken")
			}
		})
	}
	if len(repo.notes) != 1 || len(repo.events) != 2 {
		t.Errorf("stored %d notifications and %d events, want 1 and 2", len(repo.notes), len(repo.events))
	}
	if repo.events[0].RecordTime.IsZero() {
		t.Error("record time not set")
	}
	select {
	case <-other:
		t.Error("another user's watcher woken")
	default:
	}

	repo.fail = errors.New("disk on fire")
	if _, _, err := svc.Record(ctx, domain.Event{ID: "e3"}, created); !errors.Is(err, repo.fail) {
		t.Errorf("Record with failing repo = %v", err)
	}
}

func TestWatchCoalescesAndStops(t *testing.T) {
	repo := newMemRepo()
	svc := domain.NewService(repo, domain.WithClock(clock()))
	wake, stop := svc.Watch(userID)
	_, stop2 := svc.Watch(userID)
	if got := svc.Watchers(); got != 2 {
		t.Fatalf("Watchers = %d, want 2", got)
	}
	for i := range 3 {
		ev := domain.Event{ID: string(rune('a' + i))}
		if _, _, err := svc.Record(t.Context(), ev, domain.Occurrence{What: domain.OrderConfirmed, UserID: userID, SubjectID: orderID}); err != nil {
			t.Fatal(err)
		}
	}
	<-wake
	select {
	case <-wake:
		t.Error("wake-ups did not coalesce")
	default:
	}
	stop()
	stop() // idempotent
	stop2()
	if got := svc.Watchers(); got != 0 {
		t.Errorf("Watchers after stop = %d, want 0", got)
	}
}

func TestPagination(t *testing.T) {
	ctx := t.Context()
	repo := newMemRepo()
	svc := domain.NewService(repo, domain.WithClock(clock()))
	const total = 5
	for i := range total {
		ev := domain.Event{ID: string(rune('a' + i)), AggregateID: orderID}
		if _, _, err := svc.Record(ctx, ev, domain.Occurrence{What: domain.OrderConfirmed, UserID: userID, SubjectID: orderID}); err != nil {
			t.Fatal(err)
		}
	}
	tests := []struct {
		size      int
		wantPages int
	}{{1, 5}, {2, 3}, {5, 1}, {0, 1}, {100, 1}}
	for _, tt := range tests {
		var pos *domain.Position
		pages, notes := 0, 0
		for {
			p, err := svc.Notifications(ctx, userID, tt.size, pos)
			if err != nil {
				t.Fatal(err)
			}
			pages++
			notes += len(p.Notifications)
			if p.Next == nil {
				break
			}
			pos = p.Next
		}
		if pages != tt.wantPages || notes != total {
			t.Errorf("size %d: %d pages, %d notifications; want %d, %d", tt.size, pages, notes, tt.wantPages, total)
		}
		var epos *domain.Position
		pages, evs := 0, 0
		for {
			p, err := svc.Events(ctx, orderID, tt.size, epos)
			if err != nil {
				t.Fatal(err)
			}
			pages++
			evs += len(p.Events)
			if p.Next == nil {
				break
			}
			epos = p.Next
		}
		if pages != tt.wantPages || evs != total {
			t.Errorf("size %d: %d audit pages, %d events; want %d, %d", tt.size, pages, evs, tt.wantPages, total)
		}
	}
}

func TestInvalidArguments(t *testing.T) {
	ctx := t.Context()
	svc := domain.NewService(newMemRepo())
	tests := []struct {
		name  string
		call  func() error
		field string
	}{
		{"notifications bad user", func() error { _, err := svc.Notifications(ctx, "x", 0, nil); return err }, "user_id"},
		{"notifications big page", func() error { _, err := svc.Notifications(ctx, userID, 101, nil); return err }, "page_size"},
		{"notifications negative page", func() error { _, err := svc.Notifications(ctx, userID, -1, nil); return err }, "page_size"},
		{"events bad aggregate", func() error { _, err := svc.Events(ctx, "", 0, nil); return err }, "aggregate_id"},
		{"events big page", func() error { _, err := svc.Events(ctx, orderID, 1000, nil); return err }, "page_size"},
		{"unacked bad user", func() error { _, err := svc.Unacked(ctx, "nope", 1); return err }, "user_id"},
		{"ack bad user", func() error { return svc.Ack(ctx, "nope", orderID) }, "user_id"},
		{"ack bad id", func() error { return svc.Ack(ctx, userID, "nope") }, "notification_id"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var v *domain.ValidationError
			if err := tt.call(); !errors.As(err, &v) || v.Field != tt.field {
				t.Errorf("err = %v, want a validation error on %s", err, tt.field)
			}
		})
	}
}

func TestAck(t *testing.T) {
	ctx := t.Context()
	repo := newMemRepo()
	svc := domain.NewService(repo, domain.WithClock(clock()))
	n, _, err := svc.Record(ctx, domain.Event{ID: "e1"}, domain.Occurrence{What: domain.UserCreated, UserID: userID, SubjectID: userID})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name      string
		user, id  string
		wantAcked bool
	}{
		{"unknown id is ignored", userID, orderID, false},
		{"another user's is ignored", payID, n.ID, false},
		{"own", userID, n.ID, true},
		{"again", userID, n.ID, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := svc.Ack(ctx, tt.user, tt.id); err != nil {
				t.Fatal(err)
			}
			un, err := svc.Unacked(ctx, userID, 10)
			if err != nil {
				t.Fatal(err)
			}
			if acked := len(un) == 0; acked != tt.wantAcked {
				t.Errorf("acked = %v, want %v", acked, tt.wantAcked)
			}
		})
	}
	if un, err := svc.Unacked(ctx, userID, 0); err != nil || un != nil {
		t.Errorf("Unacked(limit 0) = %v, %v", un, err)
	}
}

// TestRecordAll records events together under a clock that stands still:
// each still gets a later record time than the one before, as recorded
// one by one, and repeats make nothing.
func TestRecordAll(t *testing.T) {
	repo := newMemRepo()
	at := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	svc := domain.NewService(repo, domain.WithClock(func() time.Time { return at }))
	created := domain.Occurrence{What: domain.UserCreated, UserID: userID, SubjectID: userID, UserName: "Ann"}
	in := []domain.Incoming{
		{Event: domain.Event{ID: "e1", AggregateID: userID}, Occurrence: created},
		{Event: domain.Event{ID: "e2", AggregateID: userID}},
		{Event: domain.Event{ID: "e1", AggregateID: userID}, Occurrence: created},
	}
	out, err := svc.RecordAll(t.Context(), in)
	if err != nil {
		t.Fatal(err)
	}
	if len(out) != 3 || !out[0].First || out[0].Notification == nil || !out[1].First || out[1].Notification != nil ||
		out[2].First || out[2].Notification != nil {
		t.Fatalf("RecordAll = %+v", out)
	}
	if len(repo.events) != 2 || !repo.events[0].RecordTime.Equal(at) || !repo.events[1].RecordTime.Equal(at.Add(time.Microsecond)) {
		t.Errorf("recorded %+v, want e1 at %v and e2 a microsecond later", repo.events, at)
	}
	if out[0].Notification.CreateTime != repo.events[0].RecordTime {
		t.Errorf("notification made at %v, its event recorded at %v", out[0].Notification.CreateTime, repo.events[0].RecordTime)
	}
}
