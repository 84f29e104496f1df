package main

import (
	"testing"
	"time"
)

// TestBestStep: the orders maximum comes from the two best steps measured
// again, by those runs alone, among steps whose every run was sustained.
// Taking the single run that won the ramp reported 275/s at C=8 (its lucky
// 300 and a 250 measured after) while C=16 did 285 every time.
func TestBestStep(t *testing.T) {
	step := func(conc int, rps float64, errs int64) *Cell {
		return &Cell{Conc: conc, Reps: []Rep{{Requests: int64(rps * 3), Errors: errs, RPS: rps}}}
	}
	again := func(c *Cell, rps ...float64) {
		c.Reps = nil
		for _, r := range rps {
			c.Reps = append(c.Reps, Rep{Requests: int64(r * 3), RPS: r})
		}
		c.summarize()
	}
	tests := []struct {
		name     string
		fresh16  []float64
		errs16   int64 // errors in C=16's second fresh run
		wantConc int
		wantRPS  float64
	}{
		{"the steady step beats the lucky one", []float64{285, 286}, 0, 16, 285.5},
		{"a step failing in its fresh runs is not sustained", []float64{285, 286}, 500, 8, 252.5},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cells := []*Cell{step(4, 200, 0), step(8, 300, 0), step(16, 285, 0), step(32, 310, 40)} // C=32: 4 % errors
			top := topSteps(cells, 2)
			if len(top) != 2 || top[0].Conc != 8 || top[1].Conc != 16 {
				t.Fatalf("topSteps chose %v, want C=8 and C=16", top)
			}
			again(top[0], 250, 255)
			again(top[1], tt.fresh16...)
			if tt.errs16 > 0 {
				top[1].Reps[1].Errors = tt.errs16
				top[1].summarize()
			}
			best := bestStep(top)
			if best == nil || best.Conc != tt.wantConc || best.Summary.RPS != tt.wantRPS {
				t.Fatalf("bestStep = %+v, want C=%d at %v/s", best, tt.wantConc, tt.wantRPS)
			}
		})
	}
}

// TestVerdictsNeedCleanRuns: a target is not met by cells that failed
// calls, nor the orders p99 by an open loop whose failures, left out of
// the latencies, were more than 1 % of its sends.
func TestVerdictsNeedCleanRuns(t *testing.T) {
	cell := func(name string, conc int, rps, p50 float64, errs int64) *Cell {
		c := &Cell{Scenario: "transport", Name: name, Payload: sizeLabel(sizeSmall), Conc: conc, Mode: "closed",
			Reps: []Rep{{Requests: 1000, Errors: errs, RPS: rps, P50us: p50}, {Requests: 1000, Errors: errs, RPS: rps, P50us: p50}}}
		c.summarize()
		c.Summary.P50us = p50
		return c
	}
	met := func(r *Results, name string) string { return ratio(t, r, name).Met }
	tests := []struct {
		name          string
		kitErrs       int64
		halfErrs      int64
		wantKit, want string
	}{
		{"clean", 0, 0, "yes", "yes"},
		{"errors", 3, 50, "no", "no"},
		{"under 1 % of orders failed", 0, 5, "yes", "yes"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := &Results{
				Cells: []*Cell{
					cell(kitEcho, 64, 9500, 100, tt.kitErrs), cell(grpcEcho, 64, 10000, 100, 0),
				},
				Orders: []Orders{{DB: "sqlite", MaxRPS: 1600, MaxConc: 32, HalfRate: 800, HalfP99us: 20000, HalfSends: 1000, HalfErrors: tt.halfErrs}},
			}
			r.computeRatios()
			if got := met(r, "kit/grpc throughput, 100B, C=64"); got != tt.wantKit {
				t.Errorf("kit throughput met = %q, want %q", got, tt.wantKit)
			}
			if got := met(r, "orders p99 ms at half load (open loop), sqlite"); got != tt.want {
				t.Errorf("orders p99 met = %q, want %q", got, tt.want)
			}
		})
	}
}

// TestHistogramPrecision: three significant digits from the bottom: a
// 27 µs latency reads 27.0, not the top of a 512 ns step.
func TestHistogramPrecision(t *testing.T) {
	for _, d := range []time.Duration{27 * time.Microsecond, 150 * time.Microsecond, 1234 * time.Microsecond} {
		h := newHist()
		record(h, d)
		p50, _, _, _ := quantiles(h)
		want := float64(d) / 1e3
		if p50 < want || p50 > want*1.001+0.05 {
			t.Errorf("%v reads %.1f µs", d, p50)
		}
	}
}

// TestVerdictOnTheUnroundedFigure: a target is met by the figure measured,
// not by its rounding, and the figure shown keeps the digits the verdict
// turns on. A kit/bare ratio of 0.8496 was shown as 0.85 and met.
func TestVerdictOnTheUnroundedFigure(t *testing.T) {
	tests := []struct {
		name      string
		kitRPS    float64
		p99us     float64
		wantKit   string
		wantValue float64
		wantP99   string
		wantP99V  float64
	}{
		{name: "just under", kitRPS: 8496, p99us: 25040, wantKit: "no", wantValue: 0.8496, wantP99: "no", wantP99V: 25.04},
		{name: "just over", kitRPS: 8504, p99us: 24960, wantKit: "yes", wantValue: 0.85, wantP99: "yes", wantP99V: 25},
		{name: "clear", kitRPS: 9312, p99us: 21230, wantKit: "yes", wantValue: 0.931, wantP99: "yes", wantP99V: 21.2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cell := func(name string, rps float64) *Cell {
				c := &Cell{Scenario: "transport", Name: name, Payload: sizeLabel(sizeSmall), Conc: 64, Mode: "closed",
					Reps: []Rep{{Requests: 1000, RPS: rps}, {Requests: 1000, RPS: rps}}}
				c.summarize()
				return c
			}
			r := &Results{
				Cells:  []*Cell{cell(kitEcho, tt.kitRPS), cell(grpcEcho, 10000)},
				Orders: []Orders{{DB: "sqlite", MaxRPS: 1600, MaxConc: 32, HalfRate: 800, HalfP99us: tt.p99us, HalfSends: 1000}},
			}
			r.computeRatios()
			if ra := ratio(t, r, "kit/grpc throughput, 100B, C=64"); ra.Met != tt.wantKit || ra.Value != tt.wantValue {
				t.Errorf("kit throughput %v met %q, want %v met %q", ra.Value, ra.Met, tt.wantValue, tt.wantKit)
			}
			if ra := ratio(t, r, "orders p99 ms at half load (open loop), sqlite"); ra.Met != tt.wantP99 || ra.Value != tt.wantP99V {
				t.Errorf("p99 %v met %q, want %v met %q", ra.Value, ra.Met, tt.wantP99V, tt.wantP99)
			}
		})
	}
}

// TestRatioText: a figure is printed as rounded, without float noise.
func TestRatioText(t *testing.T) {
	a, b := 300.1, 300.3
	for _, tc := range []struct {
		v    float64
		want string
	}{
		{0.8496, "0.8496"},
		{0.93, "0.93"},
		{(a + b) / 2, "300.2"}, // 300.20000000000005 in float64
		{25.04, "25.04"},
		{1717.8, "1718"},
	} {
		if got := ratioText(tc.v); got != tc.want {
			t.Errorf("ratioText(%v) = %q, want %q", tc.v, got, tc.want)
		}
	}
}

// ratio returns r's ratio of the given name, failing the test when r has
// none: a check of a ratio that is not there would pass unseen.
func ratio(t *testing.T, r *Results, name string) Ratio {
	t.Helper()
	for _, ra := range r.Ratios {
		if ra.Name == name {
			return ra
		}
	}
	t.Fatalf("no ratio %q in %+v", name, r.Ratios)
	return Ratio{}
}
