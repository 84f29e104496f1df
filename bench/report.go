package main

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
)

// Cell is one measured configuration: a transport or operation at one
// payload and concurrency, measured Reps times.
type Cell struct {
	Scenario string  `json:"scenario"`       // transport, rest, orders
	Name     string  `json:"name"`           // transport, or path (gateway, grpc) for rest and orders
	Op       string  `json:"op,omitempty"`   // the operation, for rest and orders
	DB       string  `json:"db,omitempty"`   // sqlite or postgres, for orders
	Payload  string  `json:"payload"`        // 100B, 4KB, small, medium
	Conc     int     `json:"concurrency"`    // closed loop: workers; open loop: 0
	Mode     string  `json:"mode"`           // closed or open
	Rate     float64 `json:"rate,omitempty"` // open loop: requests per second sent
	Reps     []Rep   `json:"reps"`
	// Summary merges the repetitions: RPS is their median, latencies come
	// from their merged histograms, CPU is total CPU over total requests.
	Summary Rep `json:"summary"`
	// Spread is (max-min)/median of the repetitions' RPS: the noise;
	// absent for a cell measured once (the orders ramp's steps), whose
	// noise was not measured.
	Spread float64 `json:"rps_spread,omitempty"`
}

func (c *Cell) summarize() {
	if len(c.Reps) == 0 {
		return
	}
	t := newTally()
	rps := make([]float64, 0, len(c.Reps))
	for _, r := range c.Reps {
		t.add(r)
		rps = append(rps, r.RPS)
	}
	s := t.rep()
	s.RPS = median(rps)
	if s.RPS > 0 {
		s.RPS = math.Round(s.RPS*10) / 10
		c.Spread = math.Round((slices.Max(rps)-slices.Min(rps))/s.RPS*1000) / 1000
	}
	s.ClientCPU, s.ServerCPU = round1(s.ClientCPU), round1(s.ServerCPU)
	c.Summary = s
	for i := range c.Reps {
		r := &c.Reps[i]
		r.RPS = math.Round(r.RPS*10) / 10
		r.ClientCPU, r.ServerCPU = round1(r.ClientCPU), round1(r.ServerCPU)
		r.Seconds = math.Round(r.Seconds*1000) / 1000
	}
}

func round1(v float64) float64 { return math.Round(v*10) / 10 }

func median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := slices.Clone(v)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// Results is everything a run measured; it is written as JSON.
type Results struct {
	Date    time.Time `json:"date"`
	Command string    `json:"command"`
	Machine Machine   `json:"machine"`
	Config  Config    `json:"config"`
	Seconds float64   `json:"total_seconds"`
	// Cells holds scenarios 1 to 4: transport, rest and orders.
	Cells   []*Cell  `json:"cells"`
	Orders  []Orders `json:"orders,omitempty"`
	Startup *Startup `json:"startup,omitempty"`
	Ratios  []Ratio  `json:"ratios"`
	Notes   []string `json:"notes,omitempty"`
}

// Ratio compares two cells of the same run, or one figure with a target.
type Ratio struct {
	Name   string  `json:"name"`
	Value  float64 `json:"value"`
	Target string  `json:"target,omitempty"`
	// Met is "yes", "no", or empty when there is no target.
	Met string `json:"met,omitempty"`
	// PerRep holds the same ratio repetition by repetition, when both
	// cells have every repetition: the two sides of a pair ran back to
	// back, so their spread is the ratio's own noise, which Value (a
	// ratio of medians) does not show.
	PerRep []float64 `json:"per_repetition,omitempty"`
	Note   string    `json:"note,omitempty"`
}

// shown rounds v to digits decimals for the report, or to as many more
// (up to six) as it takes for the rounded figure to meet ok exactly when
// v does: the verdict is v's, and 0.8496 shown as 0.85 beside "no" would
// read as a mistake (the verdict used to be the rounded figure's, so a
// 0.8496 met the 0.85 target).
func shown(v float64, digits int, ok func(float64) bool) float64 {
	for ; ; digits++ {
		p := math.Pow(10, float64(digits))
		r := math.Round(v*p) / p
		if ok == nil || ok(r) == ok(v) || digits >= 6 {
			return r
		}
	}
}

// spreadCell is a cell's spread for the tables: "-" when it ran once and
// its noise is unknown, rather than a 0 % it was never shown to have.
func spreadCell(c *Cell) string {
	if len(c.Reps) < 2 {
		return "-"
	}
	return fmt.Sprintf("%.0f%%", c.Spread*100)
}

func (r *Results) find(scenario, name, op, payload string, conc int) *Cell {
	for _, c := range r.Cells {
		if c.Scenario == scenario && c.Name == name && c.Op == op && c.Payload == payload && c.Conc == conc && c.Mode == "closed" {
			return c
		}
	}
	return nil
}

// computeRatios derives the ratios the issue asks for, and the seeds'
// claims, from cells measured in this run.
func (r *Results) computeRatios() {
	add := func(name string, num, den *Cell, f func(Rep) float64, target string, ok func(float64) bool, note string) {
		if num == nil || den == nil || f(den.Summary) <= 0 || f(num.Summary) <= 0 {
			return
		}
		v := f(num.Summary) / f(den.Summary)
		ra := Ratio{Name: name, Value: shown(v, 3, ok), Target: target, Note: note, PerRep: perRep(num, den, f)}
		if ok != nil {
			// A side that failed calls may have been fast by failing:
			// its figure meets no target.
			clean := num.Summary.Errors == 0 && den.Summary.Errors == 0
			ra.Met = yesNo(ok(v) && clean)
			if !clean {
				ra.Note += fmt.Sprintf("; not met: %d and %d errors", num.Summary.Errors, den.Summary.Errors)
			}
		}
		r.Ratios = append(r.Ratios, ra)
	}
	rps := func(s Rep) float64 { return s.RPS }
	p50 := func(s Rep) float64 { return s.P50us }
	srvCPU := func(s Rep) float64 { return s.ServerCPU }
	totalCPU := func(s Rep) float64 {
		if s.ServerCPU < 0 || s.ClientCPU < 0 {
			return -1
		}
		return s.ServerCPU + s.ClientCPU
	}
	atLeast := func(t float64) func(float64) bool { return func(v float64) bool { return v >= t } }
	atMost := func(t float64) func(float64) bool { return func(v float64) bool { return v <= t } }
	tr := func(name string, size, conc int) *Cell { return r.find("transport", name, "", sizeLabel(size), conc) }

	for _, size := range []int{sizeSmall, sizeLarge} {
		l := sizeLabel(size)
		add("kit/grpc throughput, "+l+", C=64", tr(kitEcho, size, 64), tr(grpcEcho, size, 64), rps, ">= 0.85", atLeast(0.85), "issue 4 item 2")
		add("kit/grpc p50, "+l+", C=1", tr(kitEcho, size, 1), tr(grpcEcho, size, 1), p50, "<= 1.15", atMost(1.15), "issue 4 item 2")
		for _, v := range []string{kitNoLog, kitNoTrace, kitSyncLog, kitNoWorkers, kitNoAuthn} {
			add(v+"/grpc throughput, "+l+", C=64", tr(v, size, 64), tr(grpcEcho, size, 64), rps, "", nil, "diagnostic: kit with one change")
			add(v+"/grpc server CPU per request, "+l+", C=64", tr(v, size, 64), tr(grpcEcho, size, 64), srvCPU, "", nil, "diagnostic: kit with one change")
		}
		add("kit/grpc server CPU per request, "+l+", C=64", tr(kitEcho, size, 64), tr(grpcEcho, size, 64), srvCPU, "", nil, "where the kit's time goes")
		add("kit/grpc client+server CPU per request, "+l+", C=64", tr(kitEcho, size, 64), tr(grpcEcho, size, 64), totalCPU, "", nil, "its inverse bounds the throughput ratio when CPU-bound; less noisy than req/s")
		add("grpc/tcp throughput, "+l+", C=64", tr(grpcEcho, size, 64), tr(tcpEcho, size, 64), rps, "", nil, "gRPC against the floor")
		add("grpc/http-pool throughput, "+l+", C=64", tr(grpcEcho, size, 64), tr(httpPool, size, 64), rps, "", nil, `seeds: "3-10x faster"`)
		add("http-pool/grpc p50, "+l+", C=1", tr(httpPool, size, 1), tr(grpcEcho, size, 1), p50, "", nil, `seeds: "P50 5 ms -> 1.5 ms" claims 3.3`)
		add("grpc/http-1conn throughput, "+l+", C=64", tr(grpcEcho, size, 64), tr(httpOne, size, 64), rps, "", nil, `seeds: "single-connection RPS 500 -> 5000" claims 10`)
		add("grpc/http-1conn throughput, "+l+", C=1", tr(grpcEcho, size, 1), tr(httpOne, size, 1), rps, "", nil, "one connection, one call at a time")
		add("http-pool/grpc server CPU per request, "+l+", C=64", tr(httpPool, size, 64), tr(grpcEcho, size, 64), srvCPU, "", nil, `seeds: "CPU 35% -> 12%" claims 2.9`)
		add("http-pool/grpc client+server CPU per request, "+l+", C=64", tr(httpPool, size, 64), tr(grpcEcho, size, 64), totalCPU, "", nil, "")
	}
	rest := func(path, op, payload string, conc int) *Cell { return r.find("rest", path, op, payload, conc) }
	gwGet, directGet := rest("gateway", "GetUser", "small", 64), rest("grpc", "GetUser", "small", 64)
	add("gateway/direct throughput, GetUser (small), C=64", gwGet, directGet, rps, ">= 0.5", atLeast(0.5), "issue 4 item 3")
	// The system's own CPU does not depend on how much the load generator
	// spends, so it is the figure an independent probe (bench/probe.sh,
	// wrk and ghz) can be held to; the throughput ratio is not.
	add("gateway/direct server CPU per request, GetUser (small), C=64", gwGet, directGet, srvCPU, "", nil, "the system's CPU: compare with bench/probe.sh's")
	add("gateway/direct client+server CPU per request, GetUser (small), C=64", gwGet, directGet, totalCPU, "", nil, "its inverse bounds the throughput ratio when CPU-bound")
	add("gateway/direct throughput, ListUsers page of 20 (medium), C=64", rest("gateway", "ListUsers", "medium", 64), rest("grpc", "ListUsers", "medium", 64), rps, "", nil, "issue 4 item 3 (0.13 for stock grpc-gateway)")
	add("gateway/direct throughput, CreateUser (small), C=64", rest("gateway", "CreateUser", "small", 64), rest("grpc", "CreateUser", "small", 64), rps, "", nil, "a write: SQLite bounds both")
	add("gateway/direct p50, GetUser, C=1", rest("gateway", "GetUser", "small", 1), rest("grpc", "GetUser", "small", 1), p50, "", nil, `seeds: "P50 5 ms -> 1.5 ms", REST edge vs gRPC`)
	add("connect/direct throughput, GetUser (small), C=64", rest("connect", "GetUser", "small", 64), directGet, rps, "", nil, "browsers' path: the Connect protocol (a JSON POST) at the gateway")
	add("connect/gateway throughput, GetUser (small), C=64", rest("connect", "GetUser", "small", 64), gwGet, rps, "", nil, "Connect against REST at the same gateway")

	for _, o := range r.Orders {
		if o.MaxRPS == 0 {
			// -order-rate: one offered rate, no ramp, so neither target applies.
			continue
		}
		maxNote := fmt.Sprintf("closed loop, best at C=%d", o.MaxConc)
		if o.MaxAtRampEnd {
			maxNote += ", the ramp's last step: a lower bound"
		}
		// An order that failed is not in the latencies, and failing
		// fast would make the p99 look better: the p99 counts only when
		// at most 1 % of the sends failed.
		halfNote := fmt.Sprintf("%.0f orders/s offered", o.HalfRate)
		fewErrors := float64(o.HalfErrors) <= 0.01*float64(o.HalfSends)
		if o.HalfErrors > 0 {
			halfNote += fmt.Sprintf(", %d of %d sends failed", o.HalfErrors, o.HalfSends)
		}
		r.Ratios = append(r.Ratios,
			Ratio{Name: "max sustained orders/s, " + o.DB, Value: o.MaxRPS, Target: ">= 1500", Met: yesNo(o.MaxRPS >= 1500), Note: maxNote},
			Ratio{Name: "orders p99 ms at half load (open loop), " + o.DB, Value: shown(o.HalfP99us/1000, 1, atMost(25)), Target: "<= 25", Met: yesNo(o.HalfP99us > 0 && o.HalfP99us <= 25000 && fewErrors), Note: halfNote})
	}
	if s := r.Startup; s != nil {
		if s.ColdReadyMs > 0 {
			r.Ratios = append(r.Ratios, Ratio{Name: "start to /readyz 200 ms (fresh data dir)", Value: s.ColdReadyMs, Target: "<= 1000", Met: yesNo(s.ColdReadyMs <= 1000)})
		}
		if s.WarmReadyMs > 0 {
			r.Ratios = append(r.Ratios, Ratio{Name: "start to /readyz 200 ms (existing data dir)", Value: s.WarmReadyMs, Target: "<= 1000", Met: yesNo(s.WarmReadyMs <= 1000)})
		}
		if s.IdleRSSKB > 0 {
			r.Ratios = append(r.Ratios, Ratio{Name: "idle RSS MB", Value: math.Round(float64(s.IdleRSSKB)/1024*10) / 10, Target: "<= 100", Met: yesNo(s.IdleRSSKB <= 100*1024)})
		}
	}
}

// perRep returns f(num)/f(den) for each repetition, or nil unless both
// cells have the same repetitions, each with a positive figure.
func perRep(num, den *Cell, f func(Rep) float64) []float64 {
	if len(num.Reps) != len(den.Reps) || len(num.Reps) < 2 {
		return nil
	}
	out := make([]float64, len(num.Reps))
	for i := range num.Reps {
		n, d := f(num.Reps[i]), f(den.Reps[i])
		if n <= 0 || d <= 0 {
			return nil
		}
		out[i] = math.Round(n/d*1000) / 1000
	}
	return out
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

// printer writes progress to one writer and the report to another.
type printer struct {
	out, progressOut io.Writer
}

func (p *printer) progress(format string, args ...any) {
	if p.progressOut != nil {
		fmt.Fprintf(p.progressOut, "  "+format+"\n", args...)
	}
}

func fmtF(v float64, prec int) string {
	if v < 0 {
		return "-"
	}
	return fmt.Sprintf("%.*f", prec, v)
}

func fmtMs(us float64) string {
	if us <= 0 {
		return "-"
	}
	if us < 1000 {
		return fmt.Sprintf("%.0fµs", us)
	}
	return fmt.Sprintf("%.2fms", us/1000)
}

// writeTable prints the results as text tables, in Markdown so that
// bench/README.md can hold them verbatim.
func (r *Results) writeTable(w io.Writer) {
	fmt.Fprintf(w, "Duet bench, %s\n", r.Date.Format(time.RFC3339))
	fmt.Fprintf(w, "command: %s\n", r.Command)
	m := r.Machine
	fmt.Fprintf(w, "machine: %d CPUs (%s), GOMAXPROCS %d, %s, Linux %s, %.1f GiB RAM, load average at start %s, at end %s\n",
		m.CPUs, m.CPUModel, m.GOMAXPROCS, m.GoVersion, m.Kernel, float64(m.MemTotalKB)/(1<<20), m.LoadStart, m.LoadEnd)
	libs := make([]string, 0, len(m.Libraries))
	for _, k := range keyLibraries {
		if v, ok := m.Libraries[k]; ok {
			libs = append(libs, k+" "+v)
		}
	}
	fmt.Fprintf(w, "libraries: %s\n", strings.Join(libs, ", "))
	fmt.Fprintf(w, "calibration: %s\n", m.Calibration)
	c := r.Config
	turns := "one turn each"
	if c.Slice > 0 && c.Slice < c.Duration {
		turns = fmt.Sprintf("in slices of ~%s (+%s lead-in each after the first)", c.Slice, leadIn(c.Warmup))
	}
	fmt.Fprintf(w, "config: %d repetitions of %s after a %s warm-up per cell; echo and REST cells of one point take turns %s; load generator and servers in separate processes on loopback; total %.0fs\n\n",
		c.Reps, c.Duration, c.Warmup, turns, r.Seconds)

	sections := []struct{ scenario, title string }{
		{"transport", "1-2. Echo: transport baselines and the kit (closed loop)"},
		{"rest", "3. REST edge: the gateway (REST, and Connect for GetUser at C=64) against direct gRPC, same embedded system (closed loop)"},
		{"orders", "4. Whole orders: POST /v1/orders with wait through the gateway"},
	}
	for _, s := range sections {
		var cells []*Cell
		for _, c := range r.Cells {
			if c.Scenario == s.scenario {
				cells = append(cells, c)
			}
		}
		if len(cells) == 0 {
			continue
		}
		fmt.Fprintf(w, "### %s\n\n", s.title)
		tw := tabwriter.NewWriter(w, 0, 0, 1, ' ', 0)
		row(tw, "what", "payload", "C", "req/s", "spread", "p50", "p90", "p99", "client CPU µs/req", "server CPU µs/req", "errors")
		sepRow(tw, 11)
		for _, c := range cells {
			what := c.Name
			if c.Op != "" {
				what = c.Op + " via " + c.Name
			}
			if c.DB != "" {
				what += " (" + c.DB + ")"
			}
			conc := fmt.Sprint(c.Conc)
			if c.Mode == "open" {
				conc = fmt.Sprintf("open %.0f/s", c.Rate)
			}
			s := c.Summary
			row(tw, what, c.Payload, conc, fmtF(s.RPS, 0), spreadCell(c),
				fmtMs(s.P50us), fmtMs(s.P90us), fmtMs(s.P99us), fmtF(s.ClientCPU, 1), fmtF(s.ServerCPU, 1), fmt.Sprint(s.Errors))
		}
		tw.Flush()
		fmt.Fprintln(w)
	}
	for _, o := range r.Orders {
		if o.MaxRPS == 0 {
			fmt.Fprintf(w, "orders (%s): no ramp; at %.0f orders/s offered, open loop: p50 %s, p99 %s\n",
				o.DB, o.HalfRate, fmtMs(o.HalfP50us), fmtMs(o.HalfP99us))
			continue
		}
		fmt.Fprintf(w, "orders (%s): max sustained %.0f orders/s (closed loop, C=%d); at half that rate, open loop: p50 %s, p99 %s\n",
			o.DB, o.MaxRPS, o.MaxConc, fmtMs(o.HalfP50us), fmtMs(o.HalfP99us))
	}
	if len(r.Orders) > 0 {
		fmt.Fprintln(w)
	}
	if s := r.Startup; s != nil {
		fmt.Fprintf(w, "### 5. Start-up and footprint (the duet binary, `duet up`)\n\n")
		fmt.Fprintf(w, "| start to /readyz 200, fresh data dir | existing data dir | RSS idle | RSS under load (max) | peak RSS (VmHWM) | load | shutdown |\n|---|---|---|---|---|---|---|\n")
		fmt.Fprintf(w, "| %s (runs: %s) | %s (runs: %s) | %.1f MB | %.1f MB | %.1f MB | %s | %s |\n\n",
			fmtMsF(s.ColdReadyMs), joinMs(s.ColdRunsMs), fmtMsF(s.WarmReadyMs), joinMs(s.WarmRunsMs),
			float64(s.IdleRSSKB)/1024, float64(s.LoadRSSKB)/1024, float64(s.HWMKB)/1024,
			fmt.Sprintf("GetUser via gateway, C=%d, %.0f req/s", s.LoadConc, s.LoadRPS), fmtMsF(s.ShutdownMs))
	}
	if len(r.Ratios) > 0 {
		fmt.Fprintf(w, "### Ratios (same run)\n\n")
		tw := tabwriter.NewWriter(w, 0, 0, 1, ' ', 0)
		row(tw, "ratio", "value", "target", "met", "per repetition", "note")
		sepRow(tw, 6)
		for _, ra := range r.Ratios {
			reps := make([]string, len(ra.PerRep))
			for i, v := range ra.PerRep {
				reps[i] = ratioText(v)
			}
			row(tw, ra.Name, ratioText(ra.Value), ra.Target, ra.Met, strings.Join(reps, ", "), ra.Note)
		}
		tw.Flush()
		fmt.Fprintln(w)
	}
	for _, n := range r.Notes {
		fmt.Fprintf(w, "note: %s\n", n)
	}
}

func fmtMsF(ms float64) string {
	if ms <= 0 {
		return "-"
	}
	return fmt.Sprintf("%.0f ms", ms)
}

func joinMs(v []float64) string {
	s := make([]string, len(v))
	for i, x := range v {
		s[i] = fmt.Sprintf("%.0f", x)
	}
	return strings.Join(s, ", ")
}

// writeJSON writes r to path, creating its directory.
func (r *Results) writeJSON(path string) error {
	if dir := filepath.Dir(path); dir != "" {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return err
		}
	}
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, append(b, '\n'), 0o644)
}

// row writes one Markdown table row whose columns tabwriter aligns.
func row(w io.Writer, cols ...string) {
	fmt.Fprint(w, "| "+strings.Join(cols, "\t| ")+"\t|\n")
}

func sepRow(w io.Writer, n int) {
	cols := make([]string, n)
	for i := range cols {
		cols[i] = "---"
	}
	fmt.Fprint(w, "|"+strings.Join(cols, "\t|")+"\t|\n")
}

// ratioText prints a ratio as rounded for the JSON, and a figure of 1,000
// or more (orders/s) whole.
func ratioText(v float64) string {
	if math.Abs(v) >= 1000 {
		return fmt.Sprintf("%.0f", v)
	}
	// Every digit: shown keeps those a verdict turns on, which three
	// significant ones dropped (0.8496 printed 0.85 beside "no").
	return strconv.FormatFloat(math.Round(v*1e6)/1e6, 'f', -1, 64) // no float noise (300.20000000000005)
}
