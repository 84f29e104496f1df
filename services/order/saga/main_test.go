package saga_test

import (
	"testing"

	"go.uber.org/goleak"
)

// The runner and the feed start goroutines and timers; none may outlive
// the tests.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
