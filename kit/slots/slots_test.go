package slots_test

import (
	"errors"
	"sync"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/duetkit/duet/kit/apierr"
	"github.com/duetkit/duet/kit/slots"
)

func TestTakeAndRelease(t *testing.T) {
	type step struct {
		take    bool // Take, or Release
		key     string
		wantErr error
		total   int // slots taken after the step
	}
	tests := []struct {
		name   string
		limits slots.Limits
		steps  []step
	}{
		{name: "per key", limits: slots.Limits{PerKey: 2, Total: 10}, steps: []step{
			{take: true, key: "a", total: 1},
			{take: true, key: "a", total: 2},
			{take: true, key: "a", wantErr: slots.ErrKeyFull, total: 2},
			{take: true, key: "b", total: 3},
			{key: "a", total: 2},
			{take: true, key: "a", total: 3},
		}},
		{name: "in all", limits: slots.Limits{PerKey: 2, Total: 2}, steps: []step{
			{take: true, key: "a", total: 1},
			{take: true, key: "b", total: 2},
			{take: true, key: "c", wantErr: slots.ErrFull, total: 2},
			{key: "b", total: 1},
			{take: true, key: "c", total: 2},
		}},
		{name: "key first", limits: slots.Limits{PerKey: 1, Total: 1}, steps: []step{
			{take: true, key: "a", total: 1},
			{take: true, key: "a", wantErr: slots.ErrKeyFull, total: 1},
			{take: true, key: "b", wantErr: slots.ErrFull, total: 1},
		}},
		{name: "no bounds", steps: []step{
			{take: true, key: "a", total: 1},
			{take: true, key: "a", total: 2},
		}},
		{name: "release of what was not taken", limits: slots.Limits{PerKey: 1, Total: 1}, steps: []step{
			{key: "a", total: 0},
			{take: true, key: "a", total: 1},
			{key: "b", total: 1},
			{take: true, key: "b", wantErr: slots.ErrFull, total: 1},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := slots.New(tt.limits)
			for i, s := range tt.steps {
				var err error
				if s.take {
					err = c.Take(s.key)
				} else {
					c.Release(s.key)
				}
				if !errors.Is(err, s.wantErr) {
					t.Fatalf("step %d (%+v): error %v, want %v", i, s, err, s.wantErr)
				}
				if total, _ := c.Taken(s.key); total != s.total {
					t.Fatalf("step %d (%+v): %d taken, want %d", i, s, total, s.total)
				}
			}
		})
	}
}

// TestConcurrent: under -race, many takers never hold more than the
// bounds, and every slot comes back.
func TestConcurrent(t *testing.T) {
	c := slots.New(slots.Limits{PerKey: 3, Total: 5})
	var mu sync.Mutex
	held, most := 0, 0
	var wg sync.WaitGroup
	for i := range 40 {
		wg.Go(func() {
			key := string(rune('a' + i%4))
			for range 50 {
				if c.Take(key) != nil {
					continue
				}
				mu.Lock()
				held++
				most = max(most, held)
				mu.Unlock()
				if total, byKey := c.Taken(key); total > 5 || byKey > 3 {
					t.Errorf("%d taken, %d by %s: past the bounds", total, byKey, key)
				}
				mu.Lock()
				held--
				mu.Unlock()
				c.Release(key)
			}
		})
	}
	wg.Wait()
	if total, _ := c.Taken("a"); total != 0 || most > 5 {
		t.Errorf("%d still taken, %d at most; want none left, at most 5", total, most)
	}
}

func TestStatus(t *testing.T) {
	c := slots.New(slots.Limits{PerKey: 2, Total: 7})
	tests := []struct {
		name      string
		err       error
		limit     string
		wantRetry bool
		message   string
	}{
		{name: "key full", err: slots.ErrKeyFull, limit: "2", message: "this order has 2 watches open, the most one may have; close one first"},
		{name: "full", err: slots.ErrFull, limit: "7", wantRetry: true, message: "the server has as many watches open as it takes; try again later"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := c.Status(tt.err, "TOO_MANY_WATCHES", "watches", "order")
			if apierr.Code(err) != codes.ResourceExhausted || apierr.Reason(err) != "TOO_MANY_WATCHES" ||
				apierr.Info(err).GetMetadata()["limit"] != tt.limit || status.Convert(err).Message() != tt.message {
				t.Errorf("Status = %v (info %v), want RESOURCE_EXHAUSTED TOO_MANY_WATCHES, limit %s, %q", err, apierr.Info(err), tt.limit, tt.message)
			}
			if d, ok := apierr.RetryDelay(err); ok != tt.wantRetry || (ok && d != slots.RetryAfter) {
				t.Errorf("retry delay %v (%v), want one %v", d, ok, tt.wantRetry)
			}
		})
	}
}
