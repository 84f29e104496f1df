package grpchandler

import "time"

// SetImportIdleTimeout shortens ImportIdleTimeout for a test; the returned
// function restores it.
func SetImportIdleTimeout(d time.Duration) (restore func()) {
	old := importIdleTimeout
	importIdleTimeout = d
	return func() { importIdleTimeout = old }
}
