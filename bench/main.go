// Command bench measures Duet side by side with honest baselines, on
// loopback, in one bounded run, and reports ratios measured in that run:
//
//  1. transport baselines — raw TCP echo, bare grpc-go, net/http +
//     encoding/json over HTTP/1.1 (a connection pool, and exactly one
//     connection) — for ~100 B and ~4 KB messages at concurrency 1, 8, 64;
//  2. the same echo through Duet's kit (kit/server and kit/client with every
//     default on), against bare grpc-go;
//  3. the REST edge: GetUser, ListUsers and CreateUser through the gateway
//     against direct gRPC, on one embedded system;
//  4. whole orders: POST /v1/orders with "wait" through the gateway, the
//     highest sustained rate (closed loop) and latency at half of it (open
//     loop), on SQLite and, when DUET_TEST_POSTGRES_URL is set, PostgreSQL;
//  5. start-up time to /readyz and RSS of the duet binary.
//
// Servers run in child processes (this binary re-executed), so client and
// server CPU per request are measured apart. Run it from the repository root:
//
//	go run ./bench            # the full run, about 7 minutes
//	go run ./bench -quick     # a smoke run, about a minute
//
// It prints Markdown tables on stdout, progress on stderr, and writes every
// figure to -out (bench/results.json) and a plot to -plot.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/duetkit/duet/kit/sqldb/sqldbtest"
	"github.com/duetkit/duet/kit/tracing"
)

// Config is one run's configuration; it is printed and saved with the results.
type Config struct {
	Scenarios   []string      `json:"scenarios"`
	Duration    time.Duration `json:"duration_ns"`
	Warmup      time.Duration `json:"warmup_ns"`
	Slice       time.Duration `json:"slice_ns"`
	Reps        int           `json:"repetitions"`
	Transports  []string      `json:"transports"`
	Sizes       []int         `json:"payload_bytes"`
	Concurrency []int         `json:"concurrency"`
	RESTConc    []int         `json:"rest_concurrency"`
	SeedUsers   int           `json:"seed_users"`
	OrderRamp   []int         `json:"order_ramp"`
	OrderRate   float64       `json:"order_rate,omitempty"`
	Postgres    bool          `json:"postgres"`
	StartRuns   int           `json:"start_runs"`
	IdleWait    time.Duration `json:"idle_wait_ns"`
	DuetBin     string        `json:"duet_bin,omitempty"`
	Profile     string        `json:"profile_dir,omitempty"`
	Quick       bool          `json:"quick"`

	duetBin string
}

// profileEnv asks a child to write a CPU profile named for it, when -profile is set.
func (c *Config) profileEnv(name string) []string {
	if c.Profile == "" {
		return nil
	}
	return []string{profileEnv + "=" + filepath.Join(c.Profile, name+".pprof")}
}

const (
	scTransport = "transport"
	scREST      = "rest"
	scOrders    = "orders"
	scStartup   = "startup"
)

var allScenarios = []string{scTransport, scREST, scOrders, scStartup}

func main() {
	if isChild() {
		childMain()
		return
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	if err != nil && !errors.Is(err, flag.ErrHelp) {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

func ints(s string) ([]int, error) {
	var out []int
	for f := range strings.SplitSeq(s, ",") {
		if f = strings.TrimSpace(f); f == "" {
			continue
		}
		n, err := strconv.Atoi(f)
		if err != nil || n <= 0 {
			return nil, fmt.Errorf("%q is not a positive integer", f)
		}
		out = append(out, n)
	}
	return out, nil
}

func words(s string) []string {
	var out []string
	for f := range strings.SplitSeq(s, ",") {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, f)
		}
	}
	return out
}

// run parses args, runs the scenarios and reports; stdout gets the tables,
// stderr the progress.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	out := fs.String("out", "bench/results.json", "JSON results file")
	plot := fs.String("plot", "bench/throughput.svg", "SVG plot of throughput against concurrency per transport (empty: none)")
	quick := fs.Bool("quick", false, "smoke run: short cells, short ramp (about a minute)")
	only := fs.String("scenarios", strings.Join(allScenarios, ","), "scenarios to run: "+strings.Join(allScenarios, ", "))
	dur := fs.Duration("duration", 3*time.Second, "measured time per cell and repetition")
	warm := fs.Duration("warmup", time.Second, "warm-up per cell, not measured")
	slice := fs.Duration("slice", 500*time.Millisecond, "in the transport and REST scenarios, the sides of a comparison take turns in slices of about this length within each repetition (0: one turn of -duration each)")
	reps := fs.Int("reps", 2, "repetitions per cell (at least 2, so noise shows)")
	transports := fs.String("transports", strings.Join(echoTransports, ","), "echo transports: "+strings.Join(knownTransports, ", ")+" (those after kit are diagnostic variants of it)")
	sizes := fs.String("sizes", fmt.Sprintf("%d,%d", sizeSmall, sizeLarge), "echo payload sizes in bytes")
	conc := fs.String("concurrency", "1,8,64", "echo concurrency levels")
	ramp := fs.String("order-ramp", "1,2,4,8,16,32,64", "closed-loop concurrency steps of the order ramp")
	orderRate := fs.Float64("order-rate", 0, "orders/s to offer open loop instead of half the ramp's best; skips the ramp (a diagnostic: profile or probe one load)")
	pg := fs.String("postgres", os.Getenv(sqldbtest.PostgresEnv), "PostgreSQL URL for the orders scenario on PostgreSQL (default $"+sqldbtest.PostgresEnv+"; empty: SQLite only)")
	startRuns := fs.Int("start-runs", 3, "start-ups timed per kind (fresh and existing data dir)")
	idle := fs.Duration("idle-wait", 2*time.Second, "how long duet idles before its RSS is read")
	duetBin := fs.String("duet-bin", "", "a built duet binary for the start-up scenario (default: go build ./cmd/duet into a temporary directory)")
	profile := fs.String("profile", "", "directory for CPU profiles of every server process and of the load generator, and allocation profiles (NAME.allocs.pprof) of the server processes")
	if err := fs.Parse(args); err != nil {
		return err
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	if *quick {
		// Flags given explicitly win over the quick defaults.
		quickDefault := func(name string, apply func()) {
			if !set[name] {
				apply()
			}
		}
		quickDefault("duration", func() { *dur = 300 * time.Millisecond })
		quickDefault("warmup", func() { *warm = 100 * time.Millisecond })
		quickDefault("order-ramp", func() { *ramp = "1,8,32" })
		quickDefault("start-runs", func() { *startRuns = 1 })
		quickDefault("idle-wait", func() { *idle = 200 * time.Millisecond })
	}
	cfg := &Config{Duration: *dur, Warmup: *warm, Slice: *slice, Reps: *reps, Quick: *quick, StartRuns: *startRuns, IdleWait: *idle,
		DuetBin: *duetBin, Profile: *profile, Postgres: *pg != "", SeedUsers: 200, Transports: words(*transports),
		RESTConc: []int{1, 64}, Scenarios: words(*only), OrderRate: *orderRate}
	var err error
	if cfg.Sizes, err = ints(*sizes); err != nil {
		return fmt.Errorf("-sizes: %w", err)
	}
	if cfg.Concurrency, err = ints(*conc); err != nil {
		return fmt.Errorf("-concurrency: %w", err)
	}
	if cfg.OrderRamp, err = ints(*ramp); err != nil {
		return fmt.Errorf("-order-ramp: %w", err)
	}
	if cfg.Reps < 2 {
		return errors.New("-reps must be at least 2, so that noise shows")
	}
	// Written so that NaN fails too.
	if !(cfg.OrderRate >= 0 && cfg.OrderRate <= maxOrderRate) {
		return fmt.Errorf("-order-rate must be between 0 and %d orders/s", maxOrderRate)
	}
	if cfg.Duration <= 0 || cfg.Warmup < 0 || cfg.Slice < 0 || cfg.StartRuns < 1 {
		return errors.New("-duration must be positive, -warmup and -slice not negative, -start-runs at least 1")
	}
	for _, s := range cfg.Scenarios {
		if !slices.Contains(allScenarios, s) {
			return fmt.Errorf("-scenarios: unknown %q (have %s)", s, strings.Join(allScenarios, ", "))
		}
	}
	for _, t := range cfg.Transports {
		if !slices.Contains(knownTransports, t) {
			return fmt.Errorf("-transports: unknown %q (have %s)", t, strings.Join(knownTransports, ", "))
		}
	}
	if cfg.Profile != "" {
		if err := os.MkdirAll(cfg.Profile, 0o755); err != nil {
			return err
		}
		f, err := os.Create(filepath.Join(cfg.Profile, "loadgen.pprof"))
		if err != nil {
			return err
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer func() { pprof.StopCPUProfile(); f.Close() }()
	}

	res := &Results{Date: time.Now().UTC().Truncate(time.Second), Command: commandLine(args), Machine: machine(), Config: *cfg}
	p := &printer{out: stdout, progressOut: stderr}
	fmt.Fprintf(stderr, "bench: %d CPUs (%s), %s, load average %s; scenarios %s, %d reps of %s (+%s warm-up)\n",
		res.Machine.CPUs, res.Machine.CPUModel, res.Machine.GoVersion, res.Machine.LoadStart,
		strings.Join(cfg.Scenarios, ","), cfg.Reps, cfg.Duration, cfg.Warmup)
	fmt.Fprintf(stderr, "bench: %s\n", res.Machine.Calibration)
	// The kit's client side as a Duet process has it: tracing on. Only
	// kit/client's connections carry the OpenTelemetry stats handler, so
	// the baselines' clients are untouched.
	shutdownTracing, err := tracing.Setup(ctx, "bench")
	if err != nil {
		return err
	}
	defer shutdownTracing(context.WithoutCancel(ctx))
	start := time.Now()
	has := func(s string) bool { return slices.Contains(cfg.Scenarios, s) }
	if has(scTransport) {
		fmt.Fprintln(stderr, "bench: 1-2. echo over every transport")
		cells, err := runTransports(ctx, cfg, p)
		if err != nil {
			return fmt.Errorf("transport: %w", err)
		}
		res.Cells = append(res.Cells, cells...)
	}
	if has(scREST) {
		fmt.Fprintln(stderr, "bench: 3. REST edge")
		cells, err := runREST(ctx, cfg, p)
		if err != nil {
			return fmt.Errorf("rest: %w", err)
		}
		res.Cells = append(res.Cells, cells...)
	}
	if has(scOrders) {
		fmt.Fprintln(stderr, "bench: 4. whole orders")
		dbs := []struct {
			name string
			urls func() (map[string]string, func(), error)
		}{{"sqlite", func() (map[string]string, func(), error) { return nil, func() {}, nil }}}
		if *pg != "" {
			dbs = append(dbs, struct {
				name string
				urls func() (map[string]string, func(), error)
			}{"postgres", func() (map[string]string, func(), error) { return postgresSchemas(ctx, *pg) }})
		} else {
			res.Notes = append(res.Notes, "orders on PostgreSQL skipped: "+sqldbtest.PostgresEnv+" is not set")
		}
		for _, db := range dbs {
			urls, drop, err := db.urls()
			if err != nil {
				return fmt.Errorf("orders %s: %w", db.name, err)
			}
			cells, sum, err := runOrders(ctx, cfg, p, db.name, urls)
			drop()
			res.Cells = append(res.Cells, cells...)
			if err != nil {
				return fmt.Errorf("orders: %w", err)
			}
			res.Orders = append(res.Orders, sum)
		}
	}
	if has(scStartup) {
		fmt.Fprintln(stderr, "bench: 5. start-up and footprint")
		s, err := runStartup(ctx, cfg, p)
		if err != nil {
			return fmt.Errorf("startup: %w", err)
		}
		res.Startup = s
	}
	res.Seconds = round1(time.Since(start).Seconds())
	res.Machine.LoadEnd = loadAvg()
	res.computeRatios()
	res.writeTable(stdout)
	if *out != "" {
		if err := res.writeJSON(*out); err != nil {
			return err
		}
		fmt.Fprintf(stderr, "bench: wrote %s\n", *out)
	}
	if *plot != "" && has(scTransport) {
		if err := writePlot(res, *plot); err != nil {
			return err
		}
		fmt.Fprintf(stderr, "bench: wrote %s\n", *plot)
	}
	return nil
}

// commandLine is how this run was started, for the record.
func commandLine(args []string) string {
	return strings.TrimSpace("go run ./bench " + strings.Join(args, " "))
}
