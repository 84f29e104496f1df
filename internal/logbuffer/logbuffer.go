// Package logbuffer is a buffer that a process's logs, or a child's
// output, can be written to from goroutines while a test reads it.
package logbuffer

import (
	"bytes"
	"encoding/json"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/duetkit/duet/internal/await"
)

// Buffer is a bytes.Buffer safe for concurrent writes and reads. The zero
// value is empty and ready.
type Buffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

// Write appends p.
func (b *Buffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

// String returns what was written so far.
func (b *Buffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// Lines decodes what was written so far as JSON records, one after
// another (slog's JSON lines), and fails t on anything else.
func (b *Buffer) Lines(t testing.TB) []map[string]any {
	t.Helper()
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []map[string]any
	dec := json.NewDecoder(bytes.NewReader(b.buf.Bytes()))
	for dec.More() {
		var rec map[string]any
		if err := dec.Decode(&rec); err != nil {
			t.Fatalf("log is not JSON records: %v in %s", err, b.buf.Bytes())
		}
		out = append(out, rec)
	}
	return out
}

// WaitFor waits up to within for what was written to hold text, and
// fails t with what was written if it never does.
func (b *Buffer) WaitFor(t testing.TB, text string, within time.Duration) {
	t.Helper()
	if !await.Within(within, func() bool { return strings.Contains(b.String(), text) }) {
		t.Fatalf("nothing written says %q:\n%s", text, b.String())
	}
}
