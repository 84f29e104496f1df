//go:build !linux

package main

import "time"

// startPacer starts pacing sends every interval, the first one now, and
// returns the pacer and the time send 0 is due.
func startPacer(interval time.Duration) (pacer, time.Time) {
	start := time.Now()
	return &sleepPacer{start: start, interval: interval}, start
}
