package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TestMain lets the test binary play the bench servers: the tool
// re-executes its own binary (here, this one) as each server process.
func TestMain(m *testing.M) {
	if isChild() {
		childMain()
		return
	}
	os.Exit(m.Run())
}

// TestQuickRun runs the whole tool with tiny durations and checks that the
// JSON holds every scenario, cell and ratio. It asserts nothing about
// timings: they mean nothing on a test machine.
func TestQuickRun(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a dozen processes and builds cmd/duet")
	}
	dir := t.TempDir()
	out, plot := filepath.Join(dir, "results.json"), filepath.Join(dir, "plot.svg")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	var stdout, stderr bytes.Buffer
	err := run(ctx, []string{"-quick", "-duration", "60ms", "-warmup", "10ms", "-slice", "20ms", "-order-ramp", "1,4",
		"-idle-wait", "10ms", "-out", out, "-plot", plot}, &stdout, &stderr)
	if err != nil {
		t.Fatalf("run: %v\nstderr:\n%s", err, stderr.String())
	}
	var res Results
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &res); err != nil {
		t.Fatal(err)
	}

	if res.Machine.CPUs == 0 || res.Machine.GoVersion == "" || res.Machine.Libraries["google.golang.org/grpc"] == "" {
		t.Errorf("machine = %+v, want CPUs, Go version and library versions", res.Machine)
	}
	if c := res.Machine.Calibration; c.WarmNs <= 0 || c.ColdNs <= 0 || c.SleepUs <= 0 || c.ColdRatio != c.ColdNs/c.WarmNs {
		t.Errorf("calibration = %+v, want both times, the sleep, and their ratio", c)
	}
	if !strings.Contains(stdout.String(), "calibration: 1 MiB random reads: ") {
		t.Errorf("the table does not print the calibration:\n%s", stdout.String())
	}
	if res.Config.Reps < 2 || !res.Config.Quick {
		t.Errorf("config = %+v", res.Config)
	}
	cells := map[string]*Cell{}
	for _, c := range res.Cells {
		key := fmt.Sprintf("%s/%s/%s/%s/%s/%d/%s", c.Scenario, c.Name, c.Op, c.DB, c.Payload, c.Conc, c.Mode)
		cells[key] = c
		if len(c.Reps) < 1 || c.Summary.Requests == 0 {
			t.Errorf("%s: no successful request: %+v", key, c.Summary)
		}
	}
	want := func(key string, reps int) {
		t.Helper()
		c, ok := cells[key]
		if !ok {
			t.Errorf("no cell %s", key)
			return
		}
		if len(c.Reps) < reps {
			t.Errorf("%s: %d repetitions, want %d", key, len(c.Reps), reps)
		}
		// Echo and REST cells take turns in slices (-slice 20ms of 60ms).
		if c.Scenario == "transport" || c.Scenario == "rest" {
			for _, r := range c.Reps {
				if r.Slices != 3 {
					t.Errorf("%s: a repetition of %d slices, want 3", key, r.Slices)
				}
			}
		}
	}
	for _, tr := range echoTransports {
		for _, size := range []string{"100B", "4KB"} {
			for _, conc := range []int{1, 8, 64} {
				want(fmt.Sprintf("transport/%s///%s/%d/closed", tr, size, conc), 2)
			}
		}
	}
	for _, path := range []string{"gateway", "grpc"} {
		want("rest/"+path+"/GetUser//small/1/closed", 2)
		want("rest/"+path+"/GetUser//small/64/closed", 2)
		want("rest/"+path+"/ListUsers//medium/64/closed", 2)
		want("rest/"+path+"/CreateUser//small/64/closed", 2)
	}
	dbs := []string{"sqlite"}
	if res.Config.Postgres {
		dbs = append(dbs, "postgres")
	}
	for _, db := range dbs {
		want("orders/gateway/CreateOrder/"+db+"/1 line/1/closed", 1)
		want("orders/gateway/CreateOrder/"+db+"/1 line/4/closed", 1)
		want("orders/gateway/CreateOrder/"+db+"/1 line/0/open", 2)
	}
	if len(res.Orders) != len(dbs) {
		t.Errorf("orders summaries = %+v, want one per database %v", res.Orders, dbs)
	}
	for _, o := range res.Orders {
		if o.MaxRPS <= 0 || o.HalfRate <= 0 || o.HalfP99us <= 0 {
			t.Errorf("orders summary %+v lacks a figure", o)
		}
	}
	s := res.Startup
	if s == nil || len(s.ColdRunsMs) == 0 || len(s.WarmRunsMs) == 0 || s.IdleRSSKB <= 0 || s.LoadRSSKB <= 0 {
		t.Errorf("startup = %+v, want start times and RSS", s)
	}

	ratios := map[string]bool{}
	for _, r := range res.Ratios {
		ratios[r.Name] = true
		// Cell-against-cell ratios carry one figure per repetition; the
		// orders and start-up figures are not ratios of two cells.
		pair := strings.Contains(strings.Fields(r.Name)[0], "/") // "kit/grpc …", not "max sustained orders/s"
		if pair && len(r.PerRep) != res.Config.Reps {
			t.Errorf("ratio %q: per_repetition %v, want %d figures", r.Name, r.PerRep, res.Config.Reps)
		}
		if !pair && r.PerRep != nil {
			t.Errorf("ratio %q: per_repetition %v, want none", r.Name, r.PerRep)
		}
		for _, v := range r.PerRep {
			if v <= 0 {
				t.Errorf("ratio %q: per_repetition %v has a figure <= 0", r.Name, r.PerRep)
			}
		}
	}
	for _, name := range []string{
		"kit/grpc throughput, 100B, C=64",
		"kit/grpc p50, 100B, C=1",
		"kit/grpc throughput, 4KB, C=64",
		"gateway/direct throughput, GetUser (small), C=64",
		"gateway/direct server CPU per request, GetUser (small), C=64",
		"gateway/direct client+server CPU per request, GetUser (small), C=64",
		"gateway/direct throughput, ListUsers page of 20 (medium), C=64",
		"connect/direct throughput, GetUser (small), C=64",
		"grpc/http-1conn throughput, 100B, C=64",
		"max sustained orders/s, sqlite",
		"idle RSS MB",
	} {
		if !ratios[name] {
			t.Errorf("no ratio %q", name)
		}
	}

	table := stdout.String()
	for _, want := range []string{"machine:", "libraries:", "config:", "### Ratios", "per repetition", "kit", "http-1conn", "CreateOrder", "/readyz"} {
		if !strings.Contains(table, want) {
			t.Errorf("table lacks %q:\n%s", want, table)
		}
	}
	if svg, err := os.ReadFile(plot); err != nil || !bytes.Contains(svg, []byte("<svg")) || !bytes.Contains(svg, []byte("polyline")) {
		t.Errorf("plot: %v, %.200s", err, svg)
	}
}

// TestFlags checks that bad configurations are refused before anything runs.
func TestFlags(t *testing.T) {
	for _, args := range [][]string{
		{"-reps", "1"},
		{"-scenarios", "nope"},
		{"-transports", "carrier-pigeon"},
		{"-concurrency", "0"},
		{"-duration", "0s"},
		{"-slice", "-1s"},
		{"-order-rate", "-5"},
		{"-order-rate", "NaN"},
		{"-order-rate", "2e9"},
	} {
		var stdout, stderr bytes.Buffer
		if err := run(context.Background(), args, &stdout, &stderr); err == nil {
			t.Errorf("run(%v) = nil, want an error", args)
		}
	}
}

// TestMeasureOrder checks that every ratio the report draws compares
// transports that take their turns next to each other.
func TestMeasureOrder(t *testing.T) {
	for _, tc := range []struct {
		in, want []string
	}{
		{echoTransports, []string{kitEcho, grpcEcho, httpPool, httpOne, tcpEcho}},
		{[]string{tcpEcho, kitNoLog, grpcEcho, kitEcho}, []string{kitNoLog, kitEcho, grpcEcho, tcpEcho}},
		{[]string{kitEcho, kitNoLog, grpcEcho, kitNoTrace}, []string{kitNoLog, kitNoTrace, kitEcho, grpcEcho}},
		{[]string{grpcEcho}, []string{grpcEcho}},
	} {
		got := measureOrder(tc.in)
		if !slices.Equal(got, tc.want) {
			t.Errorf("measureOrder(%v) = %v, want %v", tc.in, got, tc.want)
		}
	}
	if !slices.Equal(echoTransports, []string{tcpEcho, grpcEcho, httpPool, httpOne, kitEcho}) {
		t.Errorf("measureOrder changed its argument: %v", echoTransports)
	}
}

// TestPerRep checks the repetition-by-repetition ratio: one figure per
// pair, none when the cells do not pair up or a figure is missing.
func TestPerRep(t *testing.T) {
	cell := func(rps ...float64) *Cell {
		c := &Cell{}
		for _, v := range rps {
			c.Reps = append(c.Reps, Rep{RPS: v})
		}
		return c
	}
	rps := func(r Rep) float64 { return r.RPS }
	for _, tc := range []struct {
		name     string
		num, den *Cell
		want     []float64
	}{
		{"pairs", cell(900, 1100), cell(1000, 1000), []float64{0.9, 1.1}},
		{"rounded to three places", cell(1, 2), cell(3, 3), []float64{0.333, 0.667}},
		{"different repetitions", cell(900, 1100, 1000), cell(1000, 1000), nil},
		{"one repetition", cell(900), cell(1000), nil},
		{"a missing figure", cell(900, -1), cell(1000, 1000), nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := perRep(tc.num, tc.den, rps); !slices.Equal(got, tc.want) {
				t.Errorf("perRep = %v, want %v", got, tc.want)
			}
		})
	}
}

// TestTurnOrder checks that the sides of a comparison swap who goes first
// from one repetition to the next, and that the caller's order is kept.
func TestTurnOrder(t *testing.T) {
	order := []string{"gateway", "grpc"}
	for _, tc := range []struct {
		rep  int
		want []string
	}{
		{0, []string{"gateway", "grpc"}},
		{1, []string{"grpc", "gateway"}},
		{2, []string{"gateway", "grpc"}},
		{3, []string{"grpc", "gateway"}},
	} {
		if got := turnOrder(order, tc.rep); !slices.Equal(got, tc.want) {
			t.Errorf("turnOrder(%v, %d) = %v, want %v", order, tc.rep, got, tc.want)
		}
	}
	if !slices.Equal(order, []string{"gateway", "grpc"}) {
		t.Errorf("turnOrder changed its argument: %v", order)
	}
}

// TestInterleave checks that the sides of a comparison take turns slice
// by slice, in reverse order every other round, and that each side's
// slices add up: requests, time, and server CPU per request.
func TestInterleave(t *testing.T) {
	const n = 3
	var mu sync.Mutex
	var turns []int // who ran, one entry per change of side
	var cpu time.Duration
	server := func() (procStats, error) {
		mu.Lock()
		defer mu.Unlock()
		cpu += time.Millisecond // 1 ms of server CPU per measured slice
		return procStats{CPU: cpu}, nil
	}
	side := func(id int) contender {
		return contender{server: server, do: func(context.Context, int, int64) error {
			mu.Lock()
			defer mu.Unlock()
			if len(turns) == 0 || turns[len(turns)-1] != id {
				turns = append(turns, id)
			}
			return nil
		}}
	}
	reps, err := interleave(context.Background(), []contender{side(0), side(1), side(2)}, 1,
		10*time.Millisecond, 30*time.Millisecond, 10*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	// 0 1 2 | 2 1 0 | 0 1 2, each side's warm-up (or lead-in) running
	// right before its slice, so a side's consecutive turns merge.
	if want := []int{0, 1, 2, 1, 0, 1, 2}; !slices.Equal(turns, want) {
		t.Errorf("turns %v, want %v", turns, want)
	}
	for i, r := range reps {
		if r.Slices != n || r.Requests <= 0 || r.Seconds <= 0 {
			t.Errorf("side %d: %+v, want %d slices with requests and time", i, r, n)
			continue
		}
		if got, want := r.RPS, float64(r.Requests)/r.Seconds; math.Abs(got-want) > 1e-6*want {
			t.Errorf("side %d: RPS %v, want requests/seconds %v", i, got, want)
		}
		// Each slice read the server twice, 1 ms apart: n ms over all.
		if got, want := r.ServerCPU, float64(n*1000)/float64(r.Requests); math.Abs(got-want) > 1e-9*want {
			t.Errorf("side %d: server CPU %v µs/request, want %v", i, got, want)
		}
	}
}

// TestLoadLoopKeepsEveryLatency: each success of a closed or open loop is
// one latency in the repetition's histogram, and failures none.
func TestLoadLoopKeepsEveryLatency(t *testing.T) {
	var n atomic.Int64
	do := func(context.Context, int, int64) error {
		if n.Add(1)%3 == 0 {
			return errors.New("every third fails")
		}
		return nil
	}
	server := func() (procStats, error) { return procStats{}, nil }
	loops := map[string]func() outcome{
		"closed": func() outcome { return closedLoop(t.Context(), 8, 20*time.Millisecond, do) },
		"open":   func() outcome { return openLoop(t.Context(), 3000, 20*time.Millisecond, 8, do) },
	}
	for name, load := range loops {
		t.Run(name, func(t *testing.T) {
			r, err := measure(server, load)
			if err != nil {
				t.Fatal(err)
			}
			if r.Requests == 0 || r.Errors == 0 || r.hist.TotalCount() != r.Requests {
				t.Errorf("%d requests, %d errors, %d latencies; want one latency a request, some of each", r.Requests, r.Errors, r.hist.TotalCount())
			}
		})
	}
}

// TestLoadLoopAllocatesLittle: what the load generator allocates while it
// is measured counts in its CPU figure, and in collections after. A
// 221 KB histogram a worker made 14 MB at C=64 in every slice.
func TestLoadLoopAllocatesLittle(t *testing.T) {
	fail := errors.New("no server")
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	closedLoop(t.Context(), 64, 10*time.Millisecond, func(context.Context, int, int64) error { return fail })
	runtime.ReadMemStats(&after)
	if got := after.TotalAlloc - before.TotalAlloc; got > 2<<20 {
		t.Errorf("a closed loop at C=64 allocated %d KB beside its calls, want under 2 MB", got>>10)
	}
}
