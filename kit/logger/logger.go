// Package logger builds the structured JSON logger every Duet process uses.
// Its handler adds the request id and trace id found in the context to each
// record, so a log line written anywhere in a call chain names its request.
package logger

import (
	"context"
	"io"
	"log/slog"
	"time"

	"go.opentelemetry.io/otel/trace"

	"github.com/duetkit/duet/kit/requestid"
)

// New returns a JSON logger writing to w at the given level, with the
// context handler installed. service, when not empty, is added to every line.
func New(w io.Writer, level slog.Leveler, service string) *slog.Logger {
	l := slog.New(NewHandler(slog.NewJSONHandler(w, &slog.HandlerOptions{Level: level})))
	if service != "" {
		l = l.With("service", service)
	}
	return l
}

// LogAttrs is slog.Logger.LogAttrs without a source position, for lines
// written on every request (access logs): the Logger method walks the
// stack (runtime.Callers) each time for a position that is always the
// same line. It does nothing when l is not enabled at level.
func LogAttrs(ctx context.Context, l *slog.Logger, level slog.Level, msg string, attrs ...slog.Attr) {
	if !l.Enabled(ctx, level) {
		return
	}
	r := slog.NewRecord(time.Now(), level, msg, 0)
	r.AddAttrs(attrs...)
	_ = l.Handler().Handle(ctx, r)
}

// Handler wraps another slog.Handler and adds request_id and trace_id
// attributes taken from the record's context.
type Handler struct {
	next slog.Handler
}

// NewHandler wraps next.
func NewHandler(next slog.Handler) *Handler { return &Handler{next: next} }

// Enabled implements slog.Handler.
func (h *Handler) Enabled(ctx context.Context, level slog.Level) bool {
	return h.next.Enabled(ctx, level)
}

// Handle implements slog.Handler.
func (h *Handler) Handle(ctx context.Context, r slog.Record) error {
	if ctx != nil {
		// One AddAttrs call: each call may grow the record's attribute
		// slice once more.
		var attrs [2]slog.Attr
		n := 0
		if id := requestid.FromContext(ctx); id != "" {
			attrs[n] = slog.String("request_id", id)
			n++
		}
		if sc := trace.SpanContextFromContext(ctx); sc.HasTraceID() {
			attrs[n] = slog.String("trace_id", sc.TraceID().String())
			n++
		}
		r.AddAttrs(attrs[:n]...)
	}
	return h.next.Handle(ctx, r)
}

// WithAttrs implements slog.Handler.
func (h *Handler) WithAttrs(attrs []slog.Attr) slog.Handler {
	return &Handler{next: h.next.WithAttrs(attrs)}
}

// WithGroup implements slog.Handler.
func (h *Handler) WithGroup(name string) slog.Handler {
	return &Handler{next: h.next.WithGroup(name)}
}
