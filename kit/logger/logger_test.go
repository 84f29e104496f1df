package logger_test

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"os"
	"testing"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"

	"github.com/duetkit/duet/kit/logger"
	"github.com/duetkit/duet/kit/requestid"
)

func TestContextIDsInEveryLine(t *testing.T) {
	var buf bytes.Buffer
	log := logger.New(&buf, slog.LevelInfo, "order")
	tp := sdktrace.NewTracerProvider()
	defer tp.Shutdown(context.Background())
	ctx, span := tp.Tracer("test").Start(requestid.NewContext(context.Background(), "req-1"), "op")
	defer span.End()

	log.InfoContext(ctx, "charged", "amount", 5)
	log.With("k", "v").WithGroup("g").InfoContext(ctx, "grouped")
	log.Info("no context ids")

	dec := json.NewDecoder(&buf)
	var lines []map[string]any
	for dec.More() {
		var m map[string]any
		if err := dec.Decode(&m); err != nil {
			t.Fatal(err)
		}
		lines = append(lines, m)
	}
	if len(lines) != 3 {
		t.Fatalf("got %d lines, want 3", len(lines))
	}
	if lines[0]["request_id"] != "req-1" || lines[0]["trace_id"] != span.SpanContext().TraceID().String() || lines[0]["service"] != "order" {
		t.Errorf("first line = %v, want request_id, trace_id and service", lines[0])
	}
	if g, _ := lines[1]["g"].(map[string]any); g["request_id"] != "req-1" {
		t.Errorf("grouped line = %v, want request_id inside the group", lines[1])
	}
	if _, ok := lines[2]["request_id"]; ok {
		t.Errorf("line without context has a request_id: %v", lines[2])
	}
}

func ExampleNewHandler() {
	ctx := requestid.NewContext(context.Background(), "req-9")
	// Any slog handler can be wrapped; this one drops the time so the
	// output is stable.
	log := slog.New(logger.NewHandler(slog.NewJSONHandler(os.Stdout, &slog.HandlerOptions{
		ReplaceAttr: func(_ []string, a slog.Attr) slog.Attr {
			if a.Key == slog.TimeKey {
				return slog.Attr{}
			}
			return a
		},
	})))
	log.InfoContext(ctx, "hello")
	// Output: {"level":"INFO","msg":"hello","request_id":"req-9"}
}

func TestLogAttrs(t *testing.T) {
	var buf bytes.Buffer
	log := logger.New(&buf, slog.LevelInfo, "gateway")
	ctx := requestid.NewContext(context.Background(), "req-9")

	logger.LogAttrs(ctx, log, slog.LevelDebug, "below the level")
	if buf.Len() != 0 {
		t.Fatalf("a debug line was written at level info: %s", buf.Bytes())
	}
	logger.LogAttrs(ctx, log, slog.LevelWarn, "finished call", slog.Int("status", 503))
	var line map[string]any
	if err := json.Unmarshal(buf.Bytes(), &line); err != nil {
		t.Fatalf("%v: %s", err, buf.Bytes())
	}
	for k, want := range map[string]any{"level": "WARN", "msg": "finished call", "status": 503.0, "request_id": "req-9", "service": "gateway"} {
		if line[k] != want {
			t.Errorf("%s = %v, want %v (line %s)", k, line[k], want, buf.Bytes())
		}
	}
	if line["time"] == nil {
		t.Errorf("no time in %s", buf.Bytes())
	}
}
