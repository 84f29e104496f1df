package logger_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"testing"

	"go.uber.org/goleak"

	"github.com/duetkit/duet/kit/logger"
	"github.com/duetkit/duet/kit/requestid"

	"github.com/duetkit/duet/internal/logbuffer"
)

// TestAsyncKeepsEveryLineInOrder logs from many goroutines at once, through
// derived handlers too, and checks that Close leaves every line written,
// each goroutine's in the order it logged them, with its request id.
func TestAsyncKeepsEveryLineInOrder(t *testing.T) {
	defer goleak.VerifyNone(t)
	var buf logbuffer.Buffer
	log, async := logger.NewAsync(&buf, slog.LevelInfo, "order")

	const workers, perWorker = 8, 500
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			ctx := requestid.NewContext(context.Background(), fmt.Sprintf("req-%d", w))
			l := log.With("worker", w)
			if w%2 == 1 {
				l = l.WithGroup("g")
			}
			for i := range perWorker {
				l.InfoContext(ctx, "line", "seq", i)
			}
		})
	}
	wg.Wait()
	log.Debug("below the level")
	if err := async.Close(context.Background()); err != nil {
		t.Fatal(err)
	}

	lines := buf.Lines(t)
	if len(lines) != workers*perWorker {
		t.Fatalf("got %d lines, want %d", len(lines), workers*perWorker)
	}
	next := make([]float64, workers)
	for _, l := range lines {
		w := int(l["worker"].(float64))
		fields := l
		if w%2 == 1 {
			fields = l["g"].(map[string]any)
		}
		if fields["seq"] != next[w] {
			t.Fatalf("worker %d: seq %v after %v", w, fields["seq"], next[w]-1)
		}
		next[w]++
		if fields["request_id"] != fmt.Sprintf("req-%d", w) || l["service"] != "order" {
			t.Fatalf("line %v: want request_id req-%d and service order", l, w)
		}
	}
}

func TestAsyncAfterClose(t *testing.T) {
	defer goleak.VerifyNone(t)
	var buf logbuffer.Buffer
	log, async := logger.NewAsync(&buf, slog.LevelInfo, "")
	log.Info("queued")
	for range 2 { // a second Close is harmless
		if err := async.Close(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	log.Info("after close")
	lines := buf.Lines(t)
	if len(lines) != 2 || lines[0]["msg"] != "queued" || lines[1]["msg"] != "after close" {
		t.Fatalf("lines = %v, want queued then after close", lines)
	}
}

// gate is a writer that holds every Write until it is opened.
type gate struct {
	entered chan struct{} // receives once per Write
	open    chan struct{}
	buf     logbuffer.Buffer
}

func (g *gate) Write(p []byte) (int, error) {
	g.entered <- struct{}{}
	<-g.open
	return g.buf.Write(p)
}

// TestAsyncCloseGivesUp: Close returns when its context ends, even with the
// writer stuck; the writer then finishes the queue on its own.
func TestAsyncCloseGivesUp(t *testing.T) {
	defer goleak.VerifyNone(t)
	g := &gate{entered: make(chan struct{}, 16), open: make(chan struct{})}
	log, async := logger.NewAsync(g, slog.LevelInfo, "")
	log.Info("stuck")
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := async.Close(ctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("Close with an ended context = %v, want context.Canceled", err)
	}
	close(g.open)
	if err := async.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	if lines := g.buf.Lines(t); len(lines) != 1 || lines[0]["msg"] != "stuck" {
		t.Fatalf("lines = %v, want the stuck line", lines)
	}
}

func ExampleNewAsync() {
	var buf bytes.Buffer
	log, async := logger.NewAsync(&buf, slog.LevelInfo, "order")
	// Close on every way out of the process: it writes what is queued.
	defer async.Close(context.Background())

	log.InfoContext(requestid.NewContext(context.Background(), "req-7"), "order placed", "lines", 3)

	_ = async.Close(context.Background()) // here, to read buf below
	var line struct {
		Msg       string `json:"msg"`
		Service   string `json:"service"`
		RequestID string `json:"request_id"`
		Lines     int    `json:"lines"`
	}
	if err := json.Unmarshal(buf.Bytes(), &line); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return
	}
	fmt.Printf("%+v\n", line)
	// Output: {Msg:order placed Service:order RequestID:req-7 Lines:3}
}

func ExampleNewAsyncHandler() {
	// Any slog handler can be put behind the queue; this text handler
	// drops the time so the output is stable.
	async := logger.NewAsyncHandler(slog.NewTextHandler(os.Stdout, &slog.HandlerOptions{
		ReplaceAttr: func(_ []string, a slog.Attr) slog.Attr {
			if a.Key == slog.TimeKey {
				return slog.Attr{}
			}
			return a
		},
	}))
	log := slog.New(async).With("service", "order")
	log.Info("first")
	log.WithGroup("saga").Info("second", "step", "RESERVE")
	// Close writes what is queued, in order.
	_ = async.Close(context.Background())
	// Output:
	// level=INFO msg=first service=order
	// level=INFO msg=second service=order saga.step=RESERVE
}
