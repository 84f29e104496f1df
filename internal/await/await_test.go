package await_test

import (
	"sync/atomic"
	"testing"
	"time"

	"github.com/duetkit/duet/internal/await"
)

// TestWithin: a condition that comes to hold is waited for; one that never
// does is given up on once the time has passed, not before.
func TestWithin(t *testing.T) {
	var calls atomic.Int32
	if !await.Within(10*time.Second, func() bool { return calls.Add(1) == 3 }) {
		t.Error("a condition that held on its third look was given up on")
	}
	start := time.Now()
	if await.Within(20*time.Millisecond, func() bool { return false }) {
		t.Error("a condition that never held was said to")
	}
	if waited := time.Since(start); waited < 20*time.Millisecond {
		t.Errorf("gave up after %v, before the 20ms given", waited)
	}
}

// recorder is a testing.TB that keeps what Fatalf says.
type recorder struct {
	testing.TB
	failed string
}

func (r *recorder) Helper() {}

func (r *recorder) Fatalf(format string, args ...any) { r.failed = format }

// TestUntil: a condition never met fails the test, saying what it was.
func TestUntil(t *testing.T) {
	r := &recorder{TB: t}
	await.Until(r, "the moon", time.Millisecond, func() bool { return false })
	if r.failed == "" {
		t.Error("a condition never met did not fail the test")
	}
	r.failed = ""
	await.Until(r, "the sun", time.Second, func() bool { return true })
	if r.failed != "" {
		t.Error("a condition met failed the test")
	}
}
