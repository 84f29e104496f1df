package main

import (
	"fmt"
	"math/rand/v2"
	"runtime"
	"slices"
	"time"
)

// Calibration is a yardstick of the machine, taken before the scenarios,
// so that absolute figures from two machines (or two runs) can be set side
// by side. It times one probe: reads at random offsets in a 1 MiB buffer,
// about the size of a server's hot code and data. Run back to back, the
// probe finds its buffer in the CPU's caches (Warm); right after the
// thread slept, it may not (Cold). On some virtual machines the caches do
// not survive a short sleep — the host runs other work on the core, or
// flushes them on every switch — and then every request of a lightly
// loaded server runs cold: its CPU per request grows as the load falls, a
// property of the machine rather than of the server.
type Calibration struct {
	// WarmNs is the probe's best time in nanoseconds, run back to back.
	WarmNs float64 `json:"warm_ns"`
	// ColdNs is its median time right after a sleep of SleepUs.
	ColdNs float64 `json:"cold_ns"`
	// SleepUs is the sleep before each cold probe, in microseconds.
	SleepUs float64 `json:"sleep_us"`
	// ColdRatio is ColdNs / WarmNs: near 1 where the buffer stays in the
	// caches through the sleep; higher where deep idle states, other
	// tenants or the hypervisor take it out.
	ColdRatio float64 `json:"cold_ratio"`
}

const (
	calibrationBytes = 1 << 20
	calibrationReads = 20000
	calibrationSleep = time.Millisecond
	calibrationRuns  = 200
)

// calibrate takes the machine's Calibration (about a third of a second).
func calibrate() Calibration {
	// One OS thread throughout, so that the goroutine does not change
	// threads between probes. The thread may still change cores during a
	// sleep; that counts as cold, as it does for a server.
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	buf := make([]uint64, calibrationBytes/8)
	for i := range buf {
		buf[i] = uint64(i)
	}
	idx := make([]int32, calibrationReads)
	r := rand.New(rand.NewPCG(1, 2))
	for i := range idx {
		idx[i] = int32(r.IntN(len(buf)))
	}
	probe := func() float64 {
		start := time.Now()
		var sum uint64
		for _, i := range idx {
			sum += buf[i]
		}
		d := time.Since(start)
		calibrationSink = sum
		return float64(d.Nanoseconds())
	}
	warm := make([]float64, 0, calibrationRuns)
	probe() // first touch
	for range calibrationRuns {
		warm = append(warm, probe())
	}
	cold := make([]float64, 0, calibrationRuns)
	for range calibrationRuns {
		time.Sleep(calibrationSleep)
		cold = append(cold, probe())
	}
	c := Calibration{
		WarmNs:  slices.Min(warm),
		ColdNs:  median(cold),
		SleepUs: float64(calibrationSleep.Microseconds()),
	}
	if c.WarmNs > 0 {
		c.ColdRatio = c.ColdNs / c.WarmNs
	}
	return c
}

// String reads as a line of the report.
func (c Calibration) String() string {
	return fmt.Sprintf("1 MiB random reads: %.1f µs warm, %.1f µs after %.0f µs asleep (%.2f×)",
		c.WarmNs/1e3, c.ColdNs/1e3, c.SleepUs, c.ColdRatio)
}

// calibrationSink keeps the probe's reads from being optimised away.
var calibrationSink uint64
