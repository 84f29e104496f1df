package tracingtest_test

import (
	"testing"

	"go.opentelemetry.io/otel"

	"github.com/duetkit/duet/kit/tracing"
	"github.com/duetkit/duet/kit/tracing/tracingtest"
)

// TestRecord: spans ended during the test are recorded, and exporting
// ends with the test.
func TestRecord(t *testing.T) {
	t.Run("recording", func(t *testing.T) {
		rec := tracingtest.Record(t)
		if !tracing.Exporting() {
			t.Fatal("Exporting() = false while recording")
		}
		_, span := otel.Tracer("test").Start(t.Context(), "work")
		span.End()
		if got := rec.Ended(); len(got) != 1 || got[0].Name() != "work" {
			t.Fatalf("recorded %d spans, want the one named work", len(got))
		}
	})
	if tracing.Exporting() {
		t.Error("Exporting() = true after the recording test ended")
	}
}
