// Package slots bounds what a server holds open for its callers, such as
// long-lived streams: in all, and per key (a user, an order), so that one
// caller cannot take every slot. A slot is taken when a stream starts and
// given back when it ends.
//
// A stream that holds a goroutine and reads the database on a timer costs
// the server for as long as it lives; without a bound, a client opening
// streams in a loop, or one that never closes them, grows that cost without
// end.
package slots

import (
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

	"google.golang.org/grpc/codes"

	"github.com/duetkit/duet/kit/apierr"
)

// ErrKeyFull is Take's error when the key holds its Limits.PerKey slots.
var ErrKeyFull = errors.New("slots: every slot of this key is taken")

// ErrFull is Take's error when Limits.Total slots are taken.
var ErrFull = errors.New("slots: every slot is taken")

// Limits are the bounds of a Counter. A bound of zero or less is no bound.
type Limits struct {
	// PerKey bounds the slots one key holds.
	PerKey int
	// Total bounds the slots of all keys together.
	Total int
}

// Counter counts the slots taken, in all and per key. Its zero value
// bounds nothing; New sets the Limits. It is safe for concurrent use.
type Counter struct {
	limits Limits
	mu     sync.Mutex
	total  int
	perKey map[string]int
}

// New returns a Counter with the given limits.
func New(limits Limits) *Counter { return &Counter{limits: limits} }

// Take takes a slot for key, or returns ErrKeyFull or ErrFull (the key's
// bound is checked first: it is the one its caller can do something
// about). Each Take that returns nil must be matched by one Release.
func (c *Counter) Take(key string) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	switch {
	case c.limits.PerKey > 0 && c.perKey[key] >= c.limits.PerKey:
		return ErrKeyFull
	case c.limits.Total > 0 && c.total >= c.limits.Total:
		return ErrFull
	}
	if c.perKey == nil {
		c.perKey = make(map[string]int)
	}
	c.perKey[key]++
	c.total++
	return nil
}

// Release gives back a slot Take took for key.
func (c *Counter) Release(key string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	n, ok := c.perKey[key]
	if !ok {
		return // not taken: a caller's bug, not a reason to go negative
	}
	if n <= 1 {
		delete(c.perKey, key)
	} else {
		c.perKey[key] = n - 1
	}
	c.total--
}

// Taken returns the number of slots taken, in all and by key.
func (c *Counter) Taken(key string) (total, byKey int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.total, c.perKey[key]
}

// RetryAfter is the retry delay of Status for ErrFull: another caller's
// stream may end by then.
const RetryAfter = 5 * time.Second

// Status returns the gRPC status a server answers Take's error err with:
// RESOURCE_EXHAUSTED with reason, a message naming what is bounded
// ("subscriptions") and the kind of key ("user"), and the bound in the
// ErrorInfo's "limit"; for ErrFull, which is no fault of the caller's, a
// retry delay of RetryAfter too.
func (c *Counter) Status(err error, reason, what, keyKind string) error {
	if errors.Is(err, ErrKeyFull) {
		return apierr.New(codes.ResourceExhausted, reason,
			fmt.Sprintf("this %s has %d %s open, the most one may have; close one first", keyKind, c.limits.PerKey, what),
			apierr.Metadata("limit", strconv.Itoa(c.limits.PerKey)))
	}
	return apierr.New(codes.ResourceExhausted, reason,
		fmt.Sprintf("the server has as many %s open as it takes; try again later", what),
		apierr.Metadata("limit", strconv.Itoa(c.limits.Total)), apierr.RetryAfter(RetryAfter))
}
