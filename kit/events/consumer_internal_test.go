package events

import (
	"testing"
	"time"
)

func TestRestartWait(t *testing.T) {
	for _, tc := range []struct {
		name         string
		prev, pulled time.Duration
		want         time.Duration
	}{
		{"first interruption", 0, 0, nakDelayMin},
		{"setup keeps failing", nakDelayMin, 0, 2 * nakDelayMin},
		{"doubles", 800 * time.Millisecond, 0, 1600 * time.Millisecond},
		{"capped", 4 * time.Second, 0, setupRetryMax},
		{"stays capped", setupRetryMax, 0, setupRetryMax},
		{"a short pull does not reset", setupRetryMax, time.Second, setupRetryMax},
		{"a long pull resets", setupRetryMax, time.Hour, nakDelayMin},
		{"just over the cap resets", 2 * time.Second, setupRetryMax + time.Millisecond, nakDelayMin},
	} {
		if got := restartWait(tc.prev, tc.pulled); got != tc.want {
			t.Errorf("%s: restartWait(%v, %v) = %v, want %v", tc.name, tc.prev, tc.pulled, got, tc.want)
		}
	}
}
