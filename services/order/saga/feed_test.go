package saga_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/duetkit/duet/services/order/domain"
	"github.com/duetkit/duet/services/order/saga"
)

func state(version int64, status domain.Status, step domain.Step) *domain.Order {
	return &domain.Order{ID: "o", UserID: alice, Version: version, Status: status, Step: step}
}

// Two users.
const (
	alice = "11111111-1111-4111-8111-111111111111"
	bob   = "22222222-2222-4222-8222-222222222222"
)

// store is the order as a reader sees it.
type store struct {
	mu    sync.Mutex
	order *domain.Order
	reads int
	// onRead runs after each read, with the order read.
	onRead func(o *domain.Order)
}

func (s *store) read(_ context.Context, id string) (*domain.Order, error) {
	s.mu.Lock()
	o := s.order
	s.reads++
	onRead := s.onRead
	s.mu.Unlock()
	if o == nil || o.ID != id {
		return nil, domain.ErrNotFound
	}
	if onRead != nil {
		onRead(o)
	}
	return o, nil
}

func (s *store) set(o *domain.Order) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.order = o
}

// collect watches o until it ends and returns what was sent, as
// "version:status:step".
func collect(ctx context.Context, f *saga.Feed, st *store, poll time.Duration) ([]string, error) {
	var sent []string
	err := f.Watch(ctx, "o", st.read, poll, func(o *domain.Order) error {
		sent = append(sent, fmt.Sprintf("%d:%s:%s", o.Version, o.Status, o.Step))
		return nil
	})
	return sent, err
}

func TestWatchSendsEveryChangeInOrder(t *testing.T) {
	const p = domain.StatusPending
	tests := []struct {
		name string
		// first is the order as read; changes are published after it.
		first   *domain.Order
		changes []*domain.Order
		want    []string
	}{
		{
			name:  "a whole saga",
			first: state(1, p, domain.StepCheckUser),
			changes: []*domain.Order{state(2, p, domain.StepPrice), state(3, p, domain.StepReserve), state(4, p, domain.StepCharge),
				state(5, p, domain.StepCommit), state(6, domain.StatusConfirmed, domain.StepDone)},
			want: []string{"1:PENDING:CHECK_USER", "2:PENDING:PRICE", "3:PENDING:RESERVE", "4:PENDING:CHARGE", "5:PENDING:COMMIT", "6:CONFIRMED:DONE"},
		},
		{
			name:    "retries are not changes",
			first:   state(1, p, domain.StepCharge),
			changes: []*domain.Order{state(2, p, domain.StepCharge), state(3, p, domain.StepCharge), state(4, p, domain.StepRelease), state(5, domain.StatusCancelled, domain.StepDone)},
			want:    []string{"1:PENDING:CHARGE", "4:PENDING:RELEASE", "5:CANCELLED:DONE"},
		},
		{
			name:    "changes older than the read are dropped",
			first:   state(3, p, domain.StepReserve),
			changes: []*domain.Order{state(2, p, domain.StepPrice), state(3, p, domain.StepReserve), state(4, domain.StatusRejected, domain.StepDone)},
			want:    []string{"3:PENDING:RESERVE", "4:REJECTED:DONE"},
		},
		{
			name:  "terminal at once",
			first: state(9, domain.StatusConfirmed, domain.StepDone),
			want:  []string{"9:CONFIRMED:DONE"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := saga.NewFeed()
			st := &store{order: tt.first}
			// Changes are published while the watcher reads: it subscribed
			// first, so none is lost.
			st.onRead = func(*domain.Order) {
				st.onRead = nil
				for _, c := range tt.changes {
					f.Publish(c)
				}
			}
			got, err := collect(t.Context(), f, st, 0)
			if err != nil || fmt.Sprint(got) != fmt.Sprint(tt.want) {
				t.Fatalf("sent %v, %v; want %v", got, err, tt.want)
			}
			if n := f.Subscribers(); n != 0 {
				t.Fatalf("%d subscriptions left", n)
			}
		})
	}
}

func TestWatchPollsForChangesFromElsewhere(t *testing.T) {
	f := saga.NewFeed()
	st := &store{order: state(1, domain.StatusPending, domain.StepCharge)}
	st.onRead = func(o *domain.Order) {
		// Another replica finishes the saga; nothing is published here.
		if o.Version == 1 {
			st.set(state(2, domain.StatusConfirmed, domain.StepDone))
		}
	}
	got, err := collect(t.Context(), f, st, 5*time.Millisecond)
	if err != nil || fmt.Sprint(got) != "[1:PENDING:CHARGE 2:CONFIRMED:DONE]" {
		t.Fatalf("sent %v, %v", got, err)
	}
}

func TestWatchEnds(t *testing.T) {
	errSend := errors.New("client gone")
	tests := []struct {
		name    string
		order   *domain.Order
		cancel  bool
		send    error
		wantErr error
	}{
		{"unknown order", nil, false, nil, domain.ErrNotFound},
		{"caller cancels", state(1, domain.StatusPending, domain.StepPrice), true, nil, context.Canceled},
		{"send fails", state(1, domain.StatusPending, domain.StepPrice), false, errSend, errSend},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := saga.NewFeed()
			st := &store{order: tt.order}
			ctx, cancel := context.WithCancel(t.Context())
			defer cancel()
			err := f.Watch(ctx, "o", st.read, time.Hour, func(*domain.Order) error {
				if tt.cancel {
					cancel()
				}
				return tt.send
			})
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("Watch = %v, want %v", err, tt.wantErr)
			}
			if n := f.Subscribers(); n != 0 {
				t.Fatalf("%d subscriptions left", n)
			}
		})
	}
}

func TestWait(t *testing.T) {
	t.Run("until terminal", func(t *testing.T) {
		f := saga.NewFeed()
		st := &store{order: state(1, domain.StatusPending, domain.StepCharge)}
		st.onRead = func(*domain.Order) {
			st.onRead = nil
			go f.Publish(state(2, domain.StatusCancelled, domain.StepDone))
		}
		o, err := f.Wait(t.Context(), "o", st.read, 0)
		if err != nil || o.Status != domain.StatusCancelled {
			t.Fatalf("Wait = %+v, %v", o, err)
		}
	})
	t.Run("until the deadline", func(t *testing.T) {
		f := saga.NewFeed()
		st := &store{order: state(1, domain.StatusPending, domain.StepCharge)}
		// Version 2 is ready before the wait's select; a deadline passed
		// by then too (20 ms was, under load) lets the select pick
		// either, at random.
		ctx, cancel := context.WithTimeout(t.Context(), 500*time.Millisecond)
		defer cancel()
		st.onRead = func(*domain.Order) {
			st.onRead = nil
			f.Publish(state(2, domain.StatusPending, domain.StepCommit))
		}
		o, err := f.Wait(ctx, "o", st.read, 0)
		if err != nil || o.Version != 2 || o.Status != domain.StatusPending {
			t.Fatalf("Wait = %+v, %v; want the last state seen, no error", o, err)
		}
	})
}

// TestWaitFromKey subscribes by idempotency key before the order exists,
// as a waiting CreateOrder does, and waits from the order created: every
// change is seen and the order is never read back.
func TestWaitFromKey(t *testing.T) {
	f := saga.NewFeed()
	st := &store{}
	sub := f.SubscribeKey(alice, "k")
	defer sub.Close()
	created := state(1, domain.StatusPending, domain.StepCheckUser)
	created.IdempotencyKey = "k"
	// Changes stored before the wait begins must not be lost.
	for _, o := range []*domain.Order{
		state(2, domain.StatusPending, domain.StepPrice),
		state(3, domain.StatusPending, domain.StepReserve),
	} {
		o.IdempotencyKey = "k"
		f.Publish(o)
	}
	// Another user's order under the same key, further on and terminal:
	// not this one (keys are each user's), so the wait goes on.
	other := state(9, domain.StatusRejected, domain.StepDone)
	other.ID, other.UserID, other.IdempotencyKey = "other", bob, "k"
	f.Publish(other)
	go func() {
		done := state(4, domain.StatusConfirmed, domain.StepDone)
		done.IdempotencyKey = "k"
		f.Publish(done)
	}()
	o, err := f.WaitFrom(t.Context(), sub, created, st.read, time.Hour)
	if err != nil || o.Version != 4 || o.Status != domain.StatusConfirmed {
		t.Fatalf("WaitFrom = %+v, %v; want version 4 CONFIRMED", o, err)
	}
	if st.reads != 0 {
		t.Errorf("read the order %d times, want 0", st.reads)
	}
	sub.Close()
	if n := f.Subscribers(); n != 0 {
		t.Errorf("%d subscribers left", n)
	}
}

// TestKeysAreEachUsers: each guard against following another user's
// order under the same idempotency key, alone. A subscription by key
// collects only its user's order; and following an order skips a change
// of another order, however it came.
func TestKeysAreEachUsers(t *testing.T) {
	f := saga.NewFeed()
	sub := f.SubscribeKey(alice, "k")
	defer sub.Close()
	theirs := state(5, domain.StatusConfirmed, domain.StepDone)
	theirs.ID, theirs.UserID, theirs.IdempotencyKey = "theirs", bob, "k"
	f.Publish(theirs)
	if got := sub.Take(); len(got) != 0 {
		t.Fatalf("alice's subscription to k collected %+v, bob's order", got[0])
	}
	// A stray change of another order, even of the same user and key,
	// does not end a wait for this one.
	created := state(1, domain.StatusPending, domain.StepCheckUser)
	created.IdempotencyKey = "k"
	stray := state(9, domain.StatusRejected, domain.StepDone)
	stray.ID, stray.IdempotencyKey = "stray", "k"
	f.Publish(stray)
	go func() {
		done := state(2, domain.StatusConfirmed, domain.StepDone)
		done.IdempotencyKey = "k"
		f.Publish(done)
	}()
	o, err := f.WaitFrom(t.Context(), sub, created, (&store{}).read, time.Hour)
	if err != nil || o.ID != "o" || o.Status != domain.StatusConfirmed {
		t.Fatalf("WaitFrom = %+v, %v; want order o CONFIRMED", o, err)
	}
}

func TestSubscriptionNeverBlocksPublish(t *testing.T) {
	f := saga.NewFeed()
	sub := f.Subscribe("o")
	defer sub.Close()
	steps := []domain.Step{domain.StepPrice, domain.StepReserve}
	for v := range int64(1000) {
		f.Publish(state(v+1, domain.StatusPending, steps[v%2]))
	}
	got := sub.Take()
	if len(got) == 0 || len(got) > 32 || got[len(got)-1].Version != 1000 {
		t.Fatalf("a reader that took nothing for 1000 changes holds %d, last %+v; want at most 32, ending with the latest", len(got), got[len(got)-1])
	}
	// Retries of one step replace each other.
	for v := range int64(10) {
		f.Publish(state(2000+v, domain.StatusPending, domain.StepCharge))
	}
	if got := sub.Take(); len(got) != 1 || got[0].Version != 2009 {
		t.Fatalf("10 changes of one step held as %d", len(got))
	}
}
