package grpchandler

import "time"

// SetFirstMessageTimeout shortens FirstMessageTimeout for a test; the
// returned function restores it.
func SetFirstMessageTimeout(d time.Duration) (restore func()) {
	old := firstMessageTimeout
	firstMessageTimeout = d
	return func() { firstMessageTimeout = old }
}

// SetReadOutageLimit shortens ReadOutageLimit for a test; the returned
// function restores it.
func SetReadOutageLimit(d time.Duration) (restore func()) {
	old := readOutageLimit
	readOutageLimit = d
	return func() { readOutageLimit = old }
}
