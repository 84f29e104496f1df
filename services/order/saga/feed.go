package saga

import (
	"context"
	"sync"
	"time"

	"github.com/duetkit/duet/services/order/domain"
)

// maxPending bounds what a subscription holds for a slow reader. Changes
// to the same status and step replace each other, and an order has only a
// handful of steps, so the bound is never reached in practice; if it were,
// the oldest changes would go and the reader would still see the latest.
const maxPending = 32

// Feed passes every stored change of an order to the subscribers of that
// order in this process. It implements domain.Notifier.
type Feed struct {
	mu sync.Mutex
	// subs holds the subscriptions by order id (Subscribe), and by
	// idempotency key under keyPrefix (SubscribeKey).
	subs map[string]map[*Subscription]struct{}
}

// keyPrefix sets the keys of subscriptions by idempotency key apart from
// order ids.
const keyPrefix = "key:"

// NewFeed returns a Feed with no subscribers.
func NewFeed() *Feed { return &Feed{subs: map[string]map[*Subscription]struct{}{}} }

// Publish implements domain.Notifier. It never blocks on a subscriber.
func (f *Feed) Publish(o *domain.Order) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for s := range f.subs[o.ID] {
		s.push(o)
	}
	if o.IdempotencyKey != "" {
		for s := range f.subs[userKey(o.UserID, o.IdempotencyKey)] {
			s.push(o)
		}
	}
}

// Subscribe starts collecting the changes of the order with the given id.
// Close the subscription when done.
func (f *Feed) Subscribe(id string) *Subscription { return f.subscribe(id) }

// SubscribeKey starts collecting the changes of the order userID created
// with the idempotency key key, which may not exist yet: subscribing
// before creating the order means that no change of it is missed, so
// waiting for it needs no read (see WaitFrom). Close the subscription when
// done. Keys are each user's own: another user's order under the same key
// is not this one.
func (f *Feed) SubscribeKey(userID, key string) *Subscription {
	return f.subscribe(userKey(userID, key))
}

// userKey is the subscription key of userID's idempotency key key (NUL
// appears in neither).
func userKey(userID, key string) string { return keyPrefix + userID + "\x00" + key }

func (f *Feed) subscribe(key string) *Subscription {
	s := &Subscription{feed: f, key: key, ready: make(chan struct{}, 1)}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.subs[key] == nil {
		f.subs[key] = map[*Subscription]struct{}{}
	}
	f.subs[key][s] = struct{}{}
	return s
}

// Subscribers counts the open subscriptions, for tests and metrics.
func (f *Feed) Subscribers() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	n := 0
	for _, subs := range f.subs {
		n += len(subs)
	}
	return n
}

// Subscription is one subscriber's queue of changes to one order.
type Subscription struct {
	feed  *Feed
	key   string
	ready chan struct{}

	mu      sync.Mutex
	pending []*domain.Order
}

func (s *Subscription) push(o *domain.Order) {
	s.mu.Lock()
	if n := len(s.pending); n > 0 && s.pending[n-1].Status == o.Status && s.pending[n-1].Step == o.Step {
		s.pending[n-1] = o
	} else {
		if n == maxPending {
			s.pending = s.pending[1:]
		}
		s.pending = append(s.pending, o)
	}
	s.mu.Unlock()
	select {
	case s.ready <- struct{}{}:
	default:
	}
}

// Ready is signalled when changes are waiting to be taken.
func (s *Subscription) Ready() <-chan struct{} { return s.ready }

// Take returns the waiting changes, oldest first, and empties the queue.
func (s *Subscription) Take() []*domain.Order {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := s.pending
	s.pending = nil
	return out
}

// Close ends the subscription.
func (s *Subscription) Close() {
	s.feed.mu.Lock()
	defer s.feed.mu.Unlock()
	delete(s.feed.subs[s.key], s)
	if len(s.feed.subs[s.key]) == 0 {
		delete(s.feed.subs, s.key)
	}
}

// Reader reads an order as stored.
type Reader func(ctx context.Context, id string) (*domain.Order, error)

// Watch calls send with the order with the given id as read, then with
// every later state whose status or step differs from the last one sent,
// in order, and returns nil after sending a terminal state. It returns
// ctx's error when ctx ends first, and send's or read's errors.
//
// It subscribes before reading, so no change stored after the read is
// missed; versions put the read and the changes in order. Changes stored
// by another process do not reach the feed: every poll interval (0 for
// never) the order is read again to catch them.
func (f *Feed) Watch(ctx context.Context, id string, read Reader, poll time.Duration, send func(*domain.Order) error) error {
	sub := f.Subscribe(id)
	defer sub.Close()
	o, err := read(ctx, id)
	if err != nil {
		return err
	}
	return follow(ctx, sub, o, read, poll, send)
}

// follow sends o, then every later change sub collects or a poll reads
// whose status or step differs from the last one sent, until one is
// terminal; see Watch. o must be as stored at or after sub began.
func follow(ctx context.Context, sub *Subscription, o *domain.Order, read Reader, poll time.Duration, send func(*domain.Order) error) error {
	id := o.ID
	if err := send(o); err != nil {
		return err
	}
	sent, version := o, o.Version
	var tick <-chan time.Time
	if poll > 0 {
		t := time.NewTicker(poll)
		defer t.Stop()
		tick = t.C
	}
	for !sent.Status.Terminal() {
		var changes []*domain.Order
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-sub.Ready():
			changes = sub.Take()
		case <-tick:
			o, err := read(ctx, id)
			if err != nil {
				if ctx.Err() != nil {
					return ctx.Err()
				}
				return err
			}
			changes = []*domain.Order{o}
		}
		for _, o := range changes {
			if o.ID != id || o.Version <= version {
				// Another order's: a subscription by key can only
				// collect the order's own, but a stray one must not
				// end the wait with another user's order.
				continue
			}
			version = o.Version
			if o.Status == sent.Status && o.Step == sent.Step {
				continue
			}
			if err := send(o); err != nil {
				return err
			}
			sent = o
		}
	}
	return nil
}

// Wait returns the order with the given id once it is terminal, or as it
// last was when ctx ends (then with no error, if it was read at all).
func (f *Feed) Wait(ctx context.Context, id string, read Reader, poll time.Duration) (*domain.Order, error) {
	return wait(ctx, func(send func(*domain.Order) error) error {
		return f.Watch(ctx, id, read, poll, send)
	})
}

// WaitFrom is Wait for an order already in hand: o, as stored at or after
// sub began (sub collects its changes, from SubscribeKey or Subscribe).
// It reads the order only to poll for changes stored by other processes.
// It does not close sub.
func (f *Feed) WaitFrom(ctx context.Context, sub *Subscription, o *domain.Order, read Reader, poll time.Duration) (*domain.Order, error) {
	return wait(ctx, func(send func(*domain.Order) error) error {
		return follow(ctx, sub, o, read, poll, send)
	})
}

// wait runs watch and returns the last order it sent; see Wait.
func wait(ctx context.Context, watch func(send func(*domain.Order) error) error) (*domain.Order, error) {
	var last *domain.Order
	err := watch(func(o *domain.Order) error {
		last = o
		return nil
	})
	if err != nil && last != nil && ctx.Err() != nil {
		return last, nil
	}
	return last, err
}
