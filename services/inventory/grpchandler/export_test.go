package grpchandler

import "time"

// SetImportIdleTimeout shortens ImportIdleTimeout for a test; the returned
// function restores it.
func SetImportIdleTimeout(d time.Duration) (restore func()) {
	old := importIdleTimeout
	importIdleTimeout = d
	return func() { importIdleTimeout = old }
}

// ImportsRunning is how many stock imports hold a slot (at most
// MaxConcurrentImports).
func (h *Handler) ImportsRunning() int { return len(h.imports) }

// SetImportTimeout shortens ImportTimeout for a test; the returned
// function restores it.
func SetImportTimeout(d time.Duration) (restore func()) {
	old := importTimeout
	importTimeout = d
	return func() { importTimeout = old }
}
