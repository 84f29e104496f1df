package domain

import (
	"context"
	"sync"
	"time"

	"github.com/google/uuid"
)

// Page sizes for the list operations.
const (
	DefaultPageSize = 20
	MaxPageSize     = 100
)

// Position is where a listing ordered by (Time, ID) resumes: after the row
// with this time and id. Notifications are ordered by create time and id,
// the audit log by record time and event id.
type Position struct {
	Time time.Time
	ID   string
}

// NotificationPage is one page of a user's notifications, oldest first.
type NotificationPage struct {
	Notifications []Notification
	// Next is where the following page starts, nil on the last page.
	Next *Position
}

// EventPage is one page of an aggregate's audit log, oldest first.
type EventPage struct {
	Events []Event
	// Next is where the following page starts, nil on the last page.
	Next *Position
}

// Repository stores notifications and the audit log.
type Repository interface {
	// RecordAll, in one transaction and in order, for each entry marks its
	// event's ID as processed (the inbox), appends the event to the audit
	// log and stores its notification when it is not nil. An event whose
	// ID was processed before (earlier in entries too) writes nothing and
	// reports first = false, so a redelivered event has exactly one
	// effect. first has one element per entry.
	RecordAll(ctx context.Context, entries []Entry) (first []bool, err error)
	// Notifications returns up to limit notifications of userID after pos
	// (from the start when pos is nil), ordered by (CreateTime, ID).
	Notifications(ctx context.Context, userID string, after *Position, limit int) ([]Notification, error)
	// Unacked returns up to limit notifications of userID that are not
	// acknowledged, ordered by (CreateTime, ID).
	Unacked(ctx context.Context, userID string, limit int) ([]Notification, error)
	// Ack sets the ack time of notification id if it belongs to userID and
	// is not acknowledged yet; otherwise it does nothing.
	Ack(ctx context.Context, userID, id string, at time.Time) error
	// Events returns up to limit audit log entries of aggregateID after pos
	// (from the start when pos is nil), ordered by (RecordTime, ID).
	Events(ctx context.Context, aggregateID string, after *Position, limit int) ([]Event, error)
}

// Service runs the notification use cases over a Repository, and tells
// subscribers (Watch) when a user has a new notification.
type Service struct {
	repo  Repository
	now   func() time.Time
	newID func() (string, error)

	mu       sync.Mutex
	watchers map[string]map[chan struct{}]struct{}
}

// Option configures a Service.
type Option func(*Service)

// WithClock makes the Service read the time from now; tests use it.
func WithClock(now func() time.Time) Option { return func(s *Service) { s.now = now } }

// NewService returns a Service over repo.
func NewService(repo Repository, opts ...Option) *Service {
	s := &Service{repo: repo, now: time.Now, newID: newID, watchers: make(map[string]map[chan struct{}]struct{})}
	for _, o := range opts {
		o(s)
	}
	return s
}

// newID returns a version 7 UUID: time-ordered, so new rows land at the end
// of the primary-key index.
func newID() (string, error) {
	id, err := uuid.NewV7()
	if err != nil {
		return "", err
	}
	return id.String(), nil
}

// Entry is one event to record with the notification it makes (nil for
// none); see Repository.RecordAll.
type Entry struct {
	Event        Event
	Notification *Notification
}

// Incoming is one consumed event and what it tells; see RecordAll.
type Incoming struct {
	Event      Event
	Occurrence Occurrence
}

// Recorded is what became of one Incoming: the notification made (nil when
// none was, including for a repeat) and whether this was the first time
// its event was seen.
type Recorded struct {
	Notification *Notification
	First        bool
}

// Record handles one consumed event: it appends ev to the audit log and, when
// o calls for one, makes a notification, both at once and only the first
// time ev.ID is seen. It returns the notification made (nil when none was,
// including for a repeat) and whether this was the first time. Watchers of
// the notification's user are woken after it is stored.
func (s *Service) Record(ctx context.Context, ev Event, o Occurrence) (*Notification, bool, error) {
	out, err := s.RecordAll(ctx, []Incoming{{Event: ev, Occurrence: o}})
	if err != nil {
		return nil, false, err
	}
	return out[0].Notification, out[0].First, nil
}

// RecordAll is Record for several consumed events at once, in order and in
// one transaction: all of them are recorded, or none (then with an error).
// It returns one Recorded per event.
func (s *Service) RecordAll(ctx context.Context, in []Incoming) ([]Recorded, error) {
	entries := make([]Entry, len(in))
	var last time.Time
	for i, inc := range in {
		// Each event gets a later record time than the one before it, as
		// when they are recorded one by one: the audit log is read in
		// record time order.
		now := s.now().UTC().Truncate(time.Microsecond)
		if !now.After(last) && i > 0 {
			now = last.Add(time.Microsecond)
		}
		last = now
		ev := inc.Event
		ev.RecordTime = now
		entries[i].Event = ev
		if msg, ok := Compose(inc.Occurrence); ok {
			id, err := s.newID()
			if err != nil {
				return nil, err
			}
			entries[i].Notification = &Notification{
				ID:         id,
				UserID:     msg.UserID,
				Kind:       msg.Kind,
				Title:      msg.Title,
				Body:       msg.Body,
				SubjectID:  msg.SubjectID,
				EventID:    ev.ID,
				CreateTime: now,
			}
		}
	}
	first, err := s.repo.RecordAll(ctx, entries)
	if err != nil {
		return nil, err
	}
	out := make([]Recorded, len(in))
	for i, e := range entries {
		if !first[i] {
			continue
		}
		out[i] = Recorded{Notification: e.Notification, First: true}
		if e.Notification != nil {
			s.wake(e.Notification.UserID)
		}
	}
	return out, nil
}

// pageSize turns a requested page size into the one to use.
func pageSize(size int) (int, error) {
	switch {
	case size == 0:
		return DefaultPageSize, nil
	case size < 0 || size > MaxPageSize:
		return 0, invalid("page_size", "must be between 0 and %d", MaxPageSize)
	}
	return size, nil
}

// Notifications returns the page of at most size notifications of userID
// (0 means DefaultPageSize) that follows after, or the first page when
// after is nil.
func (s *Service) Notifications(ctx context.Context, userID string, size int, after *Position) (NotificationPage, error) {
	if err := CheckID("user_id", userID); err != nil {
		return NotificationPage{}, err
	}
	size, err := pageSize(size)
	if err != nil {
		return NotificationPage{}, err
	}
	// One extra row tells whether another page follows without a count.
	ns, err := s.repo.Notifications(ctx, userID, after, size+1)
	if err != nil {
		return NotificationPage{}, err
	}
	page := NotificationPage{Notifications: ns}
	if len(ns) > size {
		page.Notifications = ns[:size]
		last := page.Notifications[size-1]
		page.Next = &Position{Time: last.CreateTime, ID: last.ID}
	}
	return page, nil
}

// Events returns the page of at most size audit log entries of aggregateID
// (0 means DefaultPageSize) that follows after, or the first page when
// after is nil.
func (s *Service) Events(ctx context.Context, aggregateID string, size int, after *Position) (EventPage, error) {
	if err := CheckID("aggregate_id", aggregateID); err != nil {
		return EventPage{}, err
	}
	size, err := pageSize(size)
	if err != nil {
		return EventPage{}, err
	}
	evs, err := s.repo.Events(ctx, aggregateID, after, size+1)
	if err != nil {
		return EventPage{}, err
	}
	page := EventPage{Events: evs}
	if len(evs) > size {
		page.Events = evs[:size]
		last := page.Events[size-1]
		page.Next = &Position{Time: last.RecordTime, ID: last.ID}
	}
	return page, nil
}

// Unacked returns up to limit unacknowledged notifications of userID, oldest
// first.
func (s *Service) Unacked(ctx context.Context, userID string, limit int) ([]Notification, error) {
	if err := CheckID("user_id", userID); err != nil {
		return nil, err
	}
	if limit <= 0 {
		return nil, nil
	}
	return s.repo.Unacked(ctx, userID, limit)
}

// Ack records that userID's client has shown notification id. Acking a
// notification twice, one of another user or one that does not exist does
// nothing and is not an error: acks are repeated legitimately (a client
// that reconnects re-acks what it was re-sent), and an error for another
// user's id would tell the caller that the id exists.
func (s *Service) Ack(ctx context.Context, userID, id string) error {
	if err := CheckID("user_id", userID); err != nil {
		return err
	}
	if err := CheckID("notification_id", id); err != nil {
		return err
	}
	return s.repo.Ack(ctx, userID, id, s.now().UTC().Truncate(time.Microsecond))
}

// Watch returns a channel that receives a value after a notification for
// userID is stored, and a function that stops the watch. Wake-ups coalesce:
// the channel holds at most one, meaning "something new may be there; look".
// Watch before reading the unacknowledged notifications, so one stored in
// between is not missed. Only notifications recorded by this Service (this
// process) wake watchers.
func (s *Service) Watch(userID string) (<-chan struct{}, func()) {
	ch := make(chan struct{}, 1)
	s.mu.Lock()
	set := s.watchers[userID]
	if set == nil {
		set = make(map[chan struct{}]struct{})
		s.watchers[userID] = set
	}
	set[ch] = struct{}{}
	s.mu.Unlock()
	var once sync.Once
	return ch, func() {
		once.Do(func() {
			s.mu.Lock()
			defer s.mu.Unlock()
			// ch's set is still the user's: a set leaves the map only
			// once it is empty, and ch is in it until now.
			set := s.watchers[userID]
			delete(set, ch)
			if len(set) == 0 {
				delete(s.watchers, userID)
			}
		})
	}
}

// wake signals every watcher of userID without blocking.
func (s *Service) wake(userID string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for ch := range s.watchers[userID] {
		select {
		case ch <- struct{}{}:
		default: // a wake-up is already pending
		}
	}
}

// Watchers returns how many watches are open, for tests and metrics.
func (s *Service) Watchers() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, set := range s.watchers {
		n += len(set)
	}
	return n
}
