package main

import (
	"context"
	"fmt"
	"math"
	"sync"
	"sync/atomic"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
)

// Latencies are recorded in nanoseconds up to 60 s with three significant
// digits. The lowest discernible value must be 1 ns for that to hold from
// the bottom: HdrHistogram's finest step is the power of two below it, and
// 1 µs made every step under a millisecond 512 ns wide (a 27 µs p50 read
// up to 2 % high).
const (
	histMin = int64(1)
	histMax = int64(60 * time.Second)
	histSig = 3
)

func newHist() *hdrhistogram.Histogram { return hdrhistogram.New(histMin, histMax, histSig) }

func record(h *hdrhistogram.Histogram, d time.Duration) {
	v := int64(d)
	if v < histMin {
		v = histMin
	}
	if v > histMax {
		v = histMax
	}
	_ = h.RecordValue(v)
}

// call performs one request. worker is the caller's index (0..C-1) and seq
// counts calls across the whole run, for unique keys.
type call func(ctx context.Context, worker int, seq int64) error

// Rep is one measured repetition of a cell.
type Rep struct {
	Requests int64   `json:"requests"`
	Errors   int64   `json:"errors"`
	Seconds  float64 `json:"seconds"`
	RPS      float64 `json:"rps"`
	P50us    float64 `json:"p50_us"`
	P90us    float64 `json:"p90_us"`
	P99us    float64 `json:"p99_us"`
	MaxUs    float64 `json:"max_us"`
	// ClientCPU and ServerCPU are CPU microseconds per successful request
	// of the load generator's and the server's process; -1 when unknown.
	ClientCPU float64 `json:"client_cpu_us_per_req"`
	ServerCPU float64 `json:"server_cpu_us_per_req"`
	// ServerRSSKB is the server process's RSS after the repetition.
	ServerRSSKB int64 `json:"server_rss_kb,omitempty"`
	// Late counts open-loop sends that left more than 1 ms after their
	// scheduled time (the generator or the in-flight bound held them up);
	// their latency still counts from the scheduled time.
	Late       int64  `json:"late,omitempty"`
	FirstError string `json:"first_error,omitempty"`
	// Slices is how many turns the repetition was measured in, when it
	// took turns with the other side of a comparison (interleave).
	Slices int `json:"slices,omitempty"`

	hist *hdrhistogram.Histogram
}

// outcome is what a load loop saw.
type outcome struct {
	ok, errs, late int64
	elapsed        time.Duration
	// lat holds the latencies of the successes, one slice a worker: the
	// loop only appends to them, and histogram builds the histogram after
	// the measured window. A histogram a worker (221 KB of counts each,
	// 14 MB at C=64 every half-second slice) cost the load generator's
	// CPU figure the allocating and zeroing, and the collections after.
	lat      [][]time.Duration
	firstErr error
}

// histogram returns the latencies of o's successes as a histogram.
func (o outcome) histogram() *hdrhistogram.Histogram {
	h := newHist()
	for _, l := range o.lat {
		for _, d := range l {
			record(h, d)
		}
	}
	return h
}

// latencyRoom is the room a worker's latency slice starts with: a slice
// at C=64 takes a few hundred calls a worker.
const latencyRoom = 512

type errOnce struct {
	once sync.Once
	err  error
}

func (e *errOnce) set(err error) { e.once.Do(func() { e.err = err }) }

var seq atomic.Int64

// closedLoop runs conc workers, each sending its next request as soon as
// the previous one answers, for d. Only successes are in the histogram.
func closedLoop(ctx context.Context, conc int, d time.Duration, do call) outcome {
	ctx, cancel := context.WithTimeout(ctx, d+30*time.Second)
	defer cancel()
	lat := make([][]time.Duration, conc)
	var ok, errs atomic.Int64
	var first errOnce
	var wg sync.WaitGroup
	start := time.Now()
	deadline := start.Add(d)
	for w := range conc {
		wg.Go(func() {
			var n, e int64
			l := make([]time.Duration, 0, latencyRoom)
			defer func() { lat[w] = l }()
			for {
				t0 := time.Now()
				if !t0.Before(deadline) {
					break
				}
				err := do(ctx, w, seq.Add(1))
				if err != nil {
					e++
					first.set(err)
					if ctx.Err() != nil {
						break
					}
					continue
				}
				n++
				l = append(l, time.Since(t0))
			}
			ok.Add(n)
			errs.Add(e)
		})
	}
	wg.Wait()
	return outcome{ok: ok.Load(), errs: errs.Load(), elapsed: time.Since(start), lat: lat, firstErr: first.err}
}

// openLoop sends requests at a fixed rate for d, whatever the answers, so
// a slow answer cannot hold back the next send (no coordinated omission):
// each latency runs from the request's scheduled time. At most maxInFlight
// requests are outstanding; a send held back by that bound is late, and its
// wait counts in its latency. Sends are paced by startPacer: the
// generator's own timer slack would count as latency too, and with Go's
// timers on Linux it was half a millisecond at the median.
func openLoop(ctx context.Context, rate float64, d time.Duration, maxInFlight int, do call) outcome {
	ctx, cancel := context.WithTimeout(ctx, d+30*time.Second)
	defer cancel()
	interval := time.Duration(float64(time.Second) / rate)
	var mu sync.Mutex
	var ok, errs, late atomic.Int64
	var first errOnce
	slots := make(chan struct{}, maxInFlight)
	var wg sync.WaitGroup
	n := int64(math.Ceil(float64(d) / float64(interval)))
	lats := make([]time.Duration, 0, n)
	pace, start := startPacer(interval)
	defer pace.close()
	for i := int64(0); i < n; {
		due, err := pace.wait()
		if err != nil {
			// Not seen; rather than end the loop early, go on sleeping.
			pace = &sleepPacer{start: start, interval: interval, due: i}
			continue
		}
		for ; i < n && i < due; i++ {
			at := start.Add(time.Duration(i) * interval)
			slots <- struct{}{}
			if time.Since(at) > time.Millisecond {
				late.Add(1)
			}
			w := int(i % int64(maxInFlight))
			wg.Go(func() {
				defer func() { <-slots }()
				if err := do(ctx, w, seq.Add(1)); err != nil {
					errs.Add(1)
					first.set(err)
					return
				}
				lat := time.Since(at)
				ok.Add(1)
				mu.Lock()
				lats = append(lats, lat)
				mu.Unlock()
			})
		}
	}
	wg.Wait()
	return outcome{ok: ok.Load(), errs: errs.Load(), late: late.Load(), elapsed: time.Since(start), lat: [][]time.Duration{lats}, firstErr: first.err}
}

// cpuSource reads a server process's CPU time and RSS.
type cpuSource func() (procStats, error)

func childSource(c *child) cpuSource { return c.stats }

// measure runs one repetition: load (a closed or open loop) between two
// readings of both processes' CPU time.
func measure(server cpuSource, load func() outcome) (Rep, error) {
	s0, err := server()
	if err != nil {
		return Rep{}, fmt.Errorf("server stats: %w", err)
	}
	c0 := selfCPU()
	o := load()
	c1 := selfCPU()
	s1, err := server()
	if err != nil {
		return Rep{}, fmt.Errorf("server stats: %w", err)
	}
	hist := o.histogram()
	r := Rep{
		Requests:    o.ok,
		Errors:      o.errs,
		Late:        o.late,
		Seconds:     o.elapsed.Seconds(),
		ServerRSSKB: s1.RSSKB,
		ClientCPU:   -1,
		ServerCPU:   -1,
		hist:        hist,
	}
	if o.firstErr != nil {
		r.FirstError = o.firstErr.Error()
	}
	if o.elapsed > 0 {
		r.RPS = float64(o.ok) / o.elapsed.Seconds()
	}
	if o.ok > 0 {
		r.ClientCPU = usPer(c1-c0, o.ok)
		r.ServerCPU = usPer(s1.CPU-s0.CPU, o.ok)
	}
	r.P50us, r.P90us, r.P99us, r.MaxUs = quantiles(hist)
	return r, nil
}

// tally adds up repetitions, or the slices of one: counts and time, CPU
// weighted by requests, the largest RSS, the first error, and one
// histogram of every latency.
type tally struct {
	sum        Rep
	hist       *hdrhistogram.Histogram
	cli, srv   float64
	cliN, srvN int64
}

func newTally() *tally { return &tally{hist: newHist()} }

func (t *tally) add(r Rep) {
	t.sum.Requests += r.Requests
	t.sum.Errors += r.Errors
	t.sum.Late += r.Late
	t.sum.Seconds += r.Seconds
	t.sum.ServerRSSKB = max(t.sum.ServerRSSKB, r.ServerRSSKB)
	if t.sum.FirstError == "" {
		t.sum.FirstError = r.FirstError
	}
	if r.hist != nil {
		t.hist.Merge(r.hist)
	}
	if r.ClientCPU >= 0 {
		t.cli += r.ClientCPU * float64(r.Requests)
		t.cliN += r.Requests
	}
	if r.ServerCPU >= 0 {
		t.srv += r.ServerCPU * float64(r.Requests)
		t.srvN += r.Requests
	}
}

// rep returns the total as one Rep, CPU per request over all of it and
// latencies from the merged histogram; RPS is the caller's to set.
func (t *tally) rep() Rep {
	r := t.sum
	r.ClientCPU, r.ServerCPU = -1, -1
	if t.cliN > 0 {
		r.ClientCPU = t.cli / float64(t.cliN)
	}
	if t.srvN > 0 {
		r.ServerCPU = t.srv / float64(t.srvN)
	}
	r.P50us, r.P90us, r.P99us, r.MaxUs = quantiles(t.hist)
	r.hist = t.hist
	return r
}

// contender is one side of a comparison: its calls, and the process whose
// CPU they are charged to.
type contender struct {
	do     call
	server cpuSource
	// close releases its client; nil when there is nothing to release.
	close func()
}

// closeAll releases the clients of cs.
func closeAll(cs []contender) {
	for _, c := range cs {
		if c.close != nil {
			c.close()
		}
	}
}

// leadIn is the short warm-up a contender runs before each of its slices
// after the first: enough to wake its client and the server's goroutines
// after the other side's turn, a tenth of the full warm-up.
func leadIn(warmup time.Duration) time.Duration { return warmup / 10 }

// interleave measures each contender for d at concurrency conc, in the
// order given, taking turns slice by slice: d is cut into slices of about
// slice (one when slice is 0 or at least d), each contender runs one
// slice, then the next, and the order reverses from one round to the next.
// A shared machine's speed drifts by tens of percent within seconds;
// short turns put both sides of a ratio through the same spells, where
// one turn of d each let a slow spell fall on one side only (kit/bare,
// 100 B, C=64, four runs each in one hour on a 2-CPU VM: 0.788–0.979
// with one 3 s turn per repetition, 0.905–0.934 with turns of 0.5 s).
// Each contender warms up for warmup before its first slice and for a
// tenth of it (leadIn) before the others, and returns one Rep, the sum of
// its slices.
func interleave(ctx context.Context, cs []contender, conc int, warmup, d, slice time.Duration) ([]Rep, error) {
	n := 1
	if slice > 0 && slice < d {
		n = int((d + slice/2) / slice)
	}
	per := d / time.Duration(n)
	idx := make([]int, len(cs))
	for i := range idx {
		idx[i] = i
	}
	parts := make([]*tally, len(cs))
	for i := range parts {
		parts[i] = newTally()
	}
	for s := range n {
		lead := leadIn(warmup)
		if s == 0 {
			lead = warmup
		}
		for _, i := range turnOrder(idx, s) {
			c := cs[i]
			if lead > 0 {
				closedLoop(ctx, conc, lead, c.do)
			}
			r, err := measure(c.server, func() outcome { return closedLoop(ctx, conc, per, c.do) })
			if err != nil {
				return nil, err
			}
			parts[i].add(r)
		}
	}
	out := make([]Rep, len(cs))
	for i, t := range parts {
		r := t.rep()
		if r.Seconds > 0 {
			r.RPS = float64(r.Requests) / r.Seconds
		}
		r.Slices = n
		out[i] = r
	}
	return out, nil
}

func usPer(d time.Duration, n int64) float64 {
	return float64(d) / float64(time.Microsecond) / float64(n)
}

func quantiles(h *hdrhistogram.Histogram) (p50, p90, p99, max float64) {
	if h == nil || h.TotalCount() == 0 {
		return 0, 0, 0, 0
	}
	us := func(v int64) float64 { return math.Round(float64(v)/1e2) / 10 }
	return us(h.ValueAtQuantile(50)), us(h.ValueAtQuantile(90)), us(h.ValueAtQuantile(99)), us(h.Max())
}
