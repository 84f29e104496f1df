package logger

import (
	"bytes"
	"context"
	"log/slog"
	"sync"
	"testing"

	"go.uber.org/goleak"
)

// TestAsyncFullQueueWaits fills a queue of two behind a writer that is
// held, and checks that the queue never grows past its size and that every
// line still comes out, in order, once the writer is let go.
func TestAsyncFullQueueWaits(t *testing.T) {
	defer goleak.VerifyNone(t)
	entered := make(chan struct{}, 16)
	open := make(chan struct{})
	var mu sync.Mutex
	var out bytes.Buffer
	w := writerFunc(func(p []byte) (int, error) {
		entered <- struct{}{}
		<-open
		mu.Lock()
		defer mu.Unlock()
		return out.Write(p)
	})
	a := newAsync(slog.NewTextHandler(w, nil), 2, 0, nil)
	log := slog.New(a)

	log.Info("1")
	<-entered // the writer holds line 1
	log.Info("2")
	log.Info("3")
	done := make(chan struct{})
	go func() {
		defer close(done)
		log.Info("4") // waits for room
	}()
	a.q.mu.Lock()
	n := len(a.q.pending)
	a.q.mu.Unlock()
	if n > 2 {
		t.Fatalf("%d records queued, more than the queue's 2", n)
	}
	close(open)
	<-done
	if err := a.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	var msgs []string
	for _, line := range bytes.Split(bytes.TrimSpace(out.Bytes()), []byte("\n")) {
		i := bytes.Index(line, []byte("msg="))
		msgs = append(msgs, string(line[i+4:]))
	}
	if got := len(msgs); got != 4 || msgs[0] != "1" || msgs[1] != "2" || msgs[2] != "3" || msgs[3] != "4" {
		t.Fatalf("lines %q, want 1 2 3 4", msgs)
	}
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }
