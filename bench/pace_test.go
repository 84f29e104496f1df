package main

import (
	"context"
	"sync/atomic"
	"testing"
	"time"
)

// TestPacer checks both pacers against the clock: a send is never handed
// out before it is due, and a reader that falls behind gets every send it
// missed in one wait.
func TestPacer(t *testing.T) {
	const interval = 100 * time.Microsecond
	cases := []struct {
		name  string
		start func() pacer
	}{
		{"platform", func() pacer { p, _ := startPacer(interval); return p }},
		{"sleep", func() pacer { return &sleepPacer{start: time.Now(), interval: interval} }},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			// The pacer's clock starts somewhere between these two
			// readings (a timerfd is armed by a system call after its
			// start is read; the goroutine may be preempted in between),
			// so the bounds below take the side of each that can hold.
			before := time.Now()
			p := c.start()
			after := time.Now()
			defer p.close()
			// dueBy is how many sends are due at most by now.
			dueBy := func() int64 { return int64(time.Since(before)/interval) + 1 }
			var last int64
			for range 20 {
				due, err := p.wait()
				if err != nil {
					t.Fatal(err)
				}
				if max := dueBy(); due > max {
					t.Fatalf("wait returned %d sends due, only %d can be by now", due, max)
				}
				if due <= last {
					t.Fatalf("wait returned %d after %d: no new send", due, last)
				}
				last = due
			}
			// A reader that falls behind, as a busy load generator does.
			behind := time.Now()
			time.Sleep(50 * interval)
			due, err := p.wait()
			if err != nil {
				t.Fatal(err)
			}
			// At least 50 intervals passed since behind, and every send
			// due by behind was due already.
			if min := int64(behind.Sub(after)/interval) + 50; due < min {
				t.Fatalf("after falling behind by 50 intervals, wait returned %d sends due, want at least %d", due, min)
			}
		})
	}
}

// TestOpenLoopSendsEveryRequest checks that the open loop makes exactly
// its rate × duration calls, none before its time.
func TestOpenLoopSendsEveryRequest(t *testing.T) {
	const rate, d = 2000.0, 50 * time.Millisecond
	var calls, early atomic.Int64
	start := time.Now()
	interval := time.Duration(float64(time.Second) / rate)
	out := openLoop(t.Context(), rate, d, 8, func(_ context.Context, _ int, _ int64) error {
		n := calls.Add(1)
		// The n-th call (from 1) is due n-1 intervals after the start;
		// the loop's own start is a little after ours.
		if time.Since(start) < time.Duration(n-1)*interval {
			early.Add(1)
		}
		return nil
	})
	if want := int64(rate * d.Seconds()); out.ok != want || calls.Load() != want {
		t.Errorf("open loop made %d calls, %d ok; want %d", calls.Load(), out.ok, want)
	}
	if early.Load() != 0 {
		t.Errorf("%d calls left before they were due", early.Load())
	}
}
