package logger_test

import (
	"context"
	"io"
	"log/slog"
	"os"
	"testing"

	"github.com/duetkit/duet/kit/logger"
	"github.com/duetkit/duet/kit/requestid"
)

// BenchmarkAccessLine logs an access-log-sized line (six attributes and the
// request id) from parallel callers through New, written on the caller's
// goroutine, and through NewAsync, where the caller queues the record and
// a writer goroutine formats and writes batches. The timer runs until
// NewAsync's writer is done, so ns/op counts all the work; on two cores
// the writer shares the CPU with the callers.
//
//	go test -run '^$' -bench AccessLine -benchmem ./kit/logger
func BenchmarkAccessLine(b *testing.B) {
	ctx := requestid.NewContext(context.Background(), "3f9a4c1e-8b2d-4e6f-9a0b-1c2d3e4f5a6b")
	line := func(l *slog.Logger) {
		logger.LogAttrs(ctx, l, slog.LevelInfo, "finished call",
			slog.String("grpc.service", "duet.bench.v1.EchoService"),
			slog.String("grpc.method", "Echo"),
			slog.String("grpc.method_type", "unary"),
			slog.String("grpc.code", "OK"),
			slog.Int64("grpc.time_us", 42),
			slog.String("peer.address", "127.0.0.1:53412"),
		)
	}
	devNull, err := os.OpenFile(os.DevNull, os.O_WRONLY, 0)
	if err != nil {
		b.Fatal(err)
	}
	defer devNull.Close()
	// io.Discard costs nothing to write to; /dev/null costs a write(2),
	// as a file or a pipe does, without keeping the bytes.
	for _, w := range []struct {
		name string
		w    io.Writer
	}{{"discard", io.Discard}, {"devnull", devNull}} {
		b.Run("sync/"+w.name, func(b *testing.B) {
			l := logger.New(w.w, slog.LevelInfo, "echo")
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					line(l)
				}
			})
		})
		b.Run("async/"+w.name, func(b *testing.B) {
			l, async := logger.NewAsync(w.w, slog.LevelInfo, "echo")
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					line(l)
				}
			})
			// The writer's work is part of the cost: wait for it.
			if err := async.Close(context.Background()); err != nil {
				b.Fatal(err)
			}
		})
	}
}
