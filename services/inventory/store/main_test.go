package store_test

import (
	"testing"

	"go.uber.org/goleak"
)

// The store tests race goroutines against the database; none may outlive them.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
