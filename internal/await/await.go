// Package await waits, in tests, for a condition to hold, with a
// deadline: a test waits on what it needs (a row written, a message
// delivered), never by sleeping a fixed time, and fails saying what never
// came.
package await

import (
	"testing"
	"time"
)

// poll is how often Until and Within look at their condition again.
const poll = 2 * time.Millisecond

// Until polls cond until it holds, and fails t naming what it waited for
// if within passes first.
func Until(t testing.TB, what string, within time.Duration, cond func() bool) {
	t.Helper()
	if !Within(within, cond) {
		t.Fatalf("timed out after %v waiting for %s", within, what)
	}
}

// Within polls cond until it holds, and reports whether it did before d
// passed.
func Within(d time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(poll)
	}
	return true
}
