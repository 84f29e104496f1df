package server

import (
	"sync/atomic"
	"testing"
	"time"

	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

// TestLastWord: a health Watch ends at Shutdown only once its client has
// been sent a status other than SERVING, whichever of Shutdown and the
// Watch's sends comes first.
func TestLastWord(t *testing.T) {
	status := func(s healthpb.HealthCheckResponse_ServingStatus) *healthpb.HealthCheckResponse {
		return &healthpb.HealthCheckResponse{Status: s}
	}
	serving, notServing := status(healthpb.HealthCheckResponse_SERVING), status(healthpb.HealthCheckResponse_NOT_SERVING)
	tests := []struct {
		name string
		// before are sent before Shutdown starts, after after it.
		before, after []*healthpb.HealthCheckResponse
		// endsAt is how many of after have been sent when the stream
		// ends (0: at once).
		endsAt int
	}{
		{name: "told NOT_SERVING already", before: []*healthpb.HealthCheckResponse{serving, notServing}, endsAt: 0},
		{name: "serving, then told", before: []*healthpb.HealthCheckResponse{serving}, after: []*healthpb.HealthCheckResponse{notServing}, endsAt: 1},
		// The first SERVING was still being sent when Shutdown started.
		{name: "nothing sent yet", after: []*healthpb.HealthCheckResponse{serving, notServing}, endsAt: 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var ended atomic.Int32
			l := newLastWord(func() { ended.Add(1) }, time.Hour)
			for _, m := range tt.before {
				l.sent(m)
			}
			l.drain()
			sent := 0
			for ended.Load() == 0 && sent < len(tt.after) {
				l.sent(tt.after[sent])
				sent++
			}
			if ended.Load() == 0 || sent != tt.endsAt {
				t.Errorf("ended %d times after %d sends following Shutdown, want once after %d", ended.Load(), sent, tt.endsAt)
			}
		})
	}
}
