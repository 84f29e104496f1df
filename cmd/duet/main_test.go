package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/duetkit/duet/internal/logbuffer"
	"github.com/duetkit/duet/services/inventory"
)

// testClient is the tests' HTTP client: a request that hangs fails the
// test after a minute instead of holding it for go test's whole timeout.
var testClient = &http.Client{Timeout: time.Minute}

// send makes an HTTP request with authorization as its Authorization
// header (none when empty) and returns the answer's status, headers and
// body.
func send(t *testing.T, ctx context.Context, method, url, authorization, body string) (int, http.Header, []byte) {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if authorization != "" {
		req.Header.Set("Authorization", authorization)
	}
	resp, err := testClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, resp.Header, b
}

// TestMain lets the test binary stand in for duet: run with DUET_TEST_AS_DUET=1
// it executes main, so tests can start real duet processes and signal them.
func TestMain(m *testing.M) {
	if os.Getenv("DUET_TEST_AS_DUET") == "1" {
		main()
		os.Exit(0)
	}
	// The tests start whole systems and commands in this process: each
	// must leave no goroutine behind.
	goleak.VerifyTestMain(m,
		// The OpenCensus worker some dependency starts at init is process-wide.
		goleak.IgnoreTopFunction("go.opencensus.io/stats/view.(*worker).start"),
	)
}

func TestHelpDocumentsEveryFlagAndItsEnvironmentVariable(t *testing.T) {
	// stock and order took --help for a missing subcommand: `duet help
	// order` printed the flags, then failed.
	for _, cmd := range []string{"up", "serve", "stock", "order"} {
		t.Run(cmd, func(t *testing.T) {
			var out bytes.Buffer
			err := run(context.Background(), []string{"help", cmd}, &out, &out)
			if err != nil && !errors.Is(err, flag.ErrHelp) {
				t.Fatalf("help %s returned %v", cmd, err)
			}
			out.Reset()
			err = run(context.Background(), []string{cmd, "--help"}, &out, &out)
			if !errors.Is(err, flag.ErrHelp) {
				t.Fatalf("--help returned %v", err)
			}
			for _, flagName := range map[string][]string{
				"up": {"data-dir", "log-level", "drain-timeout", "http-addr", "user-addr", "order-addr", "payment-addr",
					"inventory-addr", "notification-addr", "nats-url", "event-stream", "event-prefix", "saga-step-timeout", "saga-max-backlog", "import-retention", "trust-trace-context", "cors-origins"},
				"serve": {"data-dir", "log-level", "drain-timeout", "listen", "database-url", "user-target", "order-target", "payment-target",
					"inventory-target", "notification-target", "nats-url", "metrics-addr", "not-serving-delay", "event-stream", "event-prefix", "saga-step-timeout", "saga-max-backlog", "import-retention", "trust-trace-context", "cors-origins",
					"tls-cert", "tls-key", "tls-ca", "tls-refresh", "access-policy"},
				"stock": {"inventory-target", "tls-cert", "tls-key", "tls-ca", "tls-refresh", "token"},
				"order": {"order-target", "tls-cert", "tls-key", "tls-ca", "tls-refresh", "token"},
			}[cmd] {
				want := fmt.Sprintf("--%s  [%s]", flagName, envName(flagName))
				if !strings.Contains(out.String(), want) {
					t.Errorf("help lacks %q:\n%s", want, out.String())
				}
			}
		})
	}
}

// TestImportIDNotFromEnvironment: --import-id names one import, so no
// environment variable sets it (a DUET_IMPORT_ID left in a job's
// environment would have every later import skipped), and the help says so.
func TestImportIDNotFromEnvironment(t *testing.T) {
	var out bytes.Buffer
	if err := run(context.Background(), []string{"stock", "--help"}, &out, &out); !errors.Is(err, flag.ErrHelp) {
		t.Fatalf("--help returned %v", err)
	}
	if !strings.Contains(out.String(), "--import-id  [command line only]") {
		t.Errorf("help does not say --import-id is command line only:\n%s", out.String())
	}
	t.Setenv("DUET_IMPORT_ID", "from-the-environment")
	fs := newFlagSet("stock", "test", &out)
	id := fs.String("import-id", "", "")
	if err := parse(fs, nil); err != nil || *id != "" {
		t.Fatalf("parse with DUET_IMPORT_ID set = %q, %v; want it ignored", *id, err)
	}
}

func TestFlagsFromEnvironment(t *testing.T) {
	t.Setenv("DUET_LOG_LEVEL", "shout")
	err := run(context.Background(), []string{"up"}, &bytes.Buffer{}, &bytes.Buffer{})
	if err == nil || !strings.Contains(err.Error(), "log-level") {
		t.Fatalf("a bad DUET_LOG_LEVEL gave %v, want a log-level error", err)
	}
	err = run(context.Background(), []string{"serve", "nonsense"}, &bytes.Buffer{}, &bytes.Buffer{})
	if err == nil || !strings.Contains(err.Error(), "log-level") {
		t.Fatalf("serve with a bad DUET_LOG_LEVEL gave %v", err)
	}
}

func TestBadArguments(t *testing.T) {
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"fly"}, "unknown command"},
		{[]string{"serve"}, "needs a component"},
		{[]string{"serve", "kitchen", "--listen", "127.0.0.1:0"}, "unknown component"},
		{[]string{"serve", "order", "--listen", "127.0.0.1:0", "--data-dir", "DATA"}, "--user-target"},
		{[]string{"stock"}, "subcommand: import"},
		{[]string{"stock", "import"}, "exactly one FILE.csv"},
		{[]string{"stock", "import", "no-such-file.csv"}, "no such file"},
		{[]string{"order", "watch"}, "exactly one ORDER_ID"},
		{[]string{"up", "extra"}, "unexpected arguments"},
		// Servers read a drain of 0 or less as their default, while up
		// gave its whole shutdown drain+5s: in-flight calls were cut.
		{[]string{"up", "--data-dir", "DATA", "--drain-timeout=-10s"}, "--drain-timeout must be positive"},
		{[]string{"serve", "user", "--listen", "127.0.0.1:0", "--data-dir", "DATA", "--drain-timeout", "0s"}, "--drain-timeout must be positive"},
		{[]string{"serve", "order", "--listen", "127.0.0.1:0", "--data-dir", "DATA", "--saga-step-timeout=-1s"}, "--saga-step-timeout must be positive"},
		{[]string{"serve", "user", "--listen", "127.0.0.1:0", "--data-dir", "DATA", "--not-serving-delay=-1s"}, "--not-serving-delay must not be negative"},
		{[]string{"up", "--data-dir", "DATA", "--saga-max-backlog=0"}, "--saga-max-backlog must be positive"},
		{[]string{"up", "--data-dir", "DATA", "--saga-max-backlog=-2"}, "--saga-max-backlog must be positive"},
		// 0 would be the default, thirty days, not "no time"; an id
		// forgotten in minutes would not outlive its import's retries.
		{[]string{"serve", "inventory", "--listen", "127.0.0.1:0", "--data-dir", "DATA", "--import-retention=0s"}, "--import-retention must be at least 1h"},
		{[]string{"up", "--data-dir", "DATA", "--import-retention=59m"}, "--import-retention must be at least 1h"},
		// "" listened on every interface, on a port chosen at random.
		{[]string{"serve", "user", "--listen", "", "--data-dir", "DATA"}, "--listen: an address is required"},
		// Targets grpc.NewClient takes and every call then fails with,
		// or that dial port 443: refused before anything starts.
		{[]string{"serve", "order", "--listen", "127.0.0.1:0", "--data-dir", "DATA", "--user-target", "usersvc", "--payment-target", "127.0.0.1:1", "--inventory-target", "127.0.0.1:1"}, "--user-target"},
		{[]string{"serve", "order", "--listen", "127.0.0.1:0", "--data-dir", "DATA", "--user-target", "127.0.0.1:1", "--payment-target", "dns:///payments", "--inventory-target", "127.0.0.1:1"}, "--payment-target"},
		{[]string{"serve", "gateway", "--listen", "127.0.0.1:0", "--user-target", "127.0.0.1:1", "--order-target", "http://orders:9092", "--payment-target", "127.0.0.1:1"}, "--order-target"},
		{[]string{"serve", "gateway", "--listen", "127.0.0.1:0", "--user-target", "127.0.0.1:1", "--order-target", "127.0.0.1:1", "--payment-target", "127.0.0.1:1", "--notification-target", ":"}, "--notification-target"},
		{[]string{"order", "watch", "--order-target", "orders", "0b7f5b4e-8a1e-4f57-9d7e-0d4b8f3e2a11"}, "--order-target"},
		// Mutual TLS: files checked before anything starts; a refresh
		// that would read them in a loop refused.
		{[]string{"serve", "user", "--listen", "127.0.0.1:0", "--data-dir", "DATA", "--tls-cert", "cert.pem"}, "all needed"},
		{[]string{"serve", "user", "--listen", "127.0.0.1:0", "--data-dir", "DATA", "--tls-cert", "c.pem", "--tls-key", "k.pem", "--tls-ca", "ca.pem"}, "open ca.pem: no such file"},
		{[]string{"serve", "user", "--listen", "127.0.0.1:0", "--data-dir", "DATA", "--tls-cert", "c.pem", "--tls-key", "k.pem", "--tls-ca", "ca.pem", "--tls-refresh", "1ms"}, "--tls-refresh must be at least 1s"},
		{[]string{"serve", "user", "--listen", "127.0.0.1:0", "--data-dir", "DATA", "--access-policy", "policy.json"}, "--access-policy needs mutual TLS"},
		{[]string{"serve", "gateway", "--listen", "127.0.0.1:0", "--user-target", "127.0.0.1:1", "--order-target", "127.0.0.1:1", "--payment-target", "127.0.0.1:1", "--access-policy", "policy.json"}, "--access-policy is for services"},
		{[]string{"order", "watch", "--tls-cert", "c.pem", "--tls-key", "k.pem", "--tls-ca", "ca.pem", "0b7f5b4e-8a1e-4f57-9d7e-0d4b8f3e2a11"}, "open ca.pem: no such file"},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			for i, a := range tt.args {
				if a == "DATA" {
					tt.args[i] = t.TempDir()
				}
			}
			// In a directory of its own: a refused command creates
			// nothing (serve created ./.duet before refusing a component).
			dir := t.TempDir()
			t.Chdir(dir)
			// Bounded: a command that wrongly starts returns when it ends.
			ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
			defer cancel()
			err := run(ctx, tt.args, &bytes.Buffer{}, &bytes.Buffer{})
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("run(%v) = %v, want an error containing %q", tt.args, err, tt.want)
			}
			if entries, _ := os.ReadDir(dir); len(entries) > 0 {
				t.Errorf("run(%v) left %v behind", tt.args, entries)
			}
		})
	}
}

// TestServeFailingToStartSkipsTheDelay: a service that cannot take its
// metrics address fails at once, not after its --not-serving-delay: it
// never served, so no balancer needs the time.
func TestServeFailingToStartSkipsTheDelay(t *testing.T) {
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	done := make(chan error, 1)
	go func() {
		done <- run(t.Context(), []string{"serve", "inventory", "--listen", "127.0.0.1:0", "--data-dir", t.TempDir(),
			"--metrics-addr", busy.Addr().String(), "--not-serving-delay", "1h"}, &bytes.Buffer{}, &bytes.Buffer{})
	}()
	select {
	case err := <-done:
		if err == nil || !strings.Contains(err.Error(), "metrics listen") {
			t.Fatalf("serve with a busy --metrics-addr = %v, want a metrics listen error", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("serve with a busy --metrics-addr had not failed after 30 s: it waits its --not-serving-delay")
	}
}

// TestEmptyEnvironmentIsUnset: a DUET_* variable set to "" overrode the
// flag's default with "": DUET_LISTEN= listened on every interface, on a
// port chosen at random, and DUET_DRAIN_TIMEOUT= failed as a duration.
func TestEmptyEnvironmentIsUnset(t *testing.T) {
	t.Chdir(t.TempDir())
	t.Setenv("DUET_LISTEN", "")
	t.Setenv("DUET_DRAIN_TIMEOUT", "")
	t.Setenv("DUET_TRUST_TRACE_CONTEXT", "")
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	// Past the flags and the listen address, order stops at its peers.
	err := run(ctx, []string{"serve", "order"}, &bytes.Buffer{}, &bytes.Buffer{})
	if err == nil || !strings.Contains(err.Error(), "order needs --user-target") {
		t.Fatalf("run = %v, want the defaults taken and the missing targets named", err)
	}
}

// addrFlags returns the names of cmd's listen-address flags ("…-addr"), as
// its --help lists them.
func addrFlags(t *testing.T, cmd string) []string {
	t.Helper()
	var out bytes.Buffer
	if err := run(context.Background(), []string{cmd, "--help"}, &out, &out); !errors.Is(err, flag.ErrHelp) {
		t.Fatalf("--help returned %v", err)
	}
	var names []string
	for _, m := range regexp.MustCompile(`(?m)^\s*--([a-z-]+-addr)\s`).FindAllStringSubmatch(out.String(), -1) {
		names = append(names, m[1])
	}
	if len(names) < 6 {
		t.Fatalf("found %d address flags (%v) in %s --help, want the gateway's and every service's", len(names), names, cmd)
	}
	return names
}

// TestSIGTERMDrainsAndExitsZero starts a real duet process, waits until its
// gateway is ready, sends SIGTERM and expects a clean exit.
func TestSIGTERMDrainsAndExitsZero(t *testing.T) {
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	// Every listener on a free port: anything on the machine (another
	// package's test, a duet left running) may hold the defaults.
	args := []string{"up", "--data-dir", t.TempDir()}
	for _, name := range addrFlags(t, "up") {
		args = append(args, "--"+name, "127.0.0.1:0")
	}
	cmd := exec.CommandContext(ctx, exe, args...)
	cmd.Env = append(os.Environ(), "DUET_TEST_AS_DUET=1")
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr logbuffer.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	// The banner names the gateway's address; it is README's, but for
	// the addresses and the data directory.
	var (
		gateway string
		banner  strings.Builder
	)
	sc := bufio.NewScanner(stdout)
	for sc.Scan() {
		banner.WriteString(sc.Text() + "\n")
		if f := strings.Fields(sc.Text()); len(f) >= 3 && f[0] == "REST" {
			gateway = f[2]
		}
		if strings.HasPrefix(sc.Text(), "Press Ctrl+C") {
			break
		}
	}
	if gateway == "" {
		cmd.Process.Kill()
		cmd.Wait()
		t.Fatalf("no gateway address in the banner; stderr:\n%s", stderr.String())
	}
	if got, want := bannerShape(banner.String()), bannerShape(readmeBanner(t)); got != want {
		t.Errorf("the banner is not README's:\n%s\nREADME shows:\n%s", got, want)
	}
	go func() {
		for sc.Scan() {
		}
	}()
	resp, err := testClient.Get(gateway + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("/readyz = %d", resp.StatusCode)
	}
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("duet exited with %v after SIGTERM; stderr:\n%s", err, stderr.String())
	}
	if !strings.Contains(stderr.String(), `"msg":"stopped"`) {
		t.Errorf("no clean stop logged:\n%s", stderr.String())
	}
}

// readmeBanner returns the banner README.md shows `duet` printing.
func readmeBanner(t *testing.T) string {
	t.Helper()
	return readmeBlock(t, "`duet` prints what to open:\n\n```\n")
}

// readmeBlock returns what README.md holds after start, up to the end of
// the code block that start is in or opens.
func readmeBlock(t *testing.T, start string) string {
	t.Helper()
	readme, err := os.ReadFile(filepath.Join("..", "..", "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	_, rest, ok := strings.Cut(string(readme), start)
	block, _, closed := strings.Cut(rest, "```")
	if !ok || !closed {
		t.Fatalf("README shows no block after %q", start)
	}
	return block
}

var (
	loopbackAddr = regexp.MustCompile(`127\.0\.0\.1:[0-9]+`)
	dataDir      = regexp.MustCompile(`data in [^)]*\)`)
)

// bannerShape is a banner with its addresses and data directory left out.
func bannerShape(banner string) string {
	banner = loopbackAddr.ReplaceAllString(banner, "ADDR")
	return dataDir.ReplaceAllString(banner, "data in DIR)")
}

// TestImportRetention: --import-retention, or DUET_IMPORT_RETENTION,
// reaches the inventory service's configuration, under up and serve
// alike; unset, its default.
func TestImportRetention(t *testing.T) {
	tests := []struct {
		name string
		env  string
		args []string
		want time.Duration
	}{
		{"default", "", nil, inventory.DefaultImportRetention},
		{"flag", "", []string{"--import-retention", "48h"}, 48 * time.Hour},
		{"environment", "72h", nil, 72 * time.Hour},
		{"flag over environment", "72h", []string{"--import-retention=24h"}, 24 * time.Hour},
		{"for ever", "", []string{"--import-retention=-1s"}, -time.Second},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Setenv("DUET_IMPORT_RETENTION", tt.env)
			args := append([]string{"inventory", "--listen", "127.0.0.1:0", "--data-dir", t.TempDir()}, tt.args...)
			_, cfg, _, err := serveConfig(args, &bytes.Buffer{})
			if err != nil {
				t.Fatal(err)
			}
			if cfg.ImportRetention != tt.want {
				t.Errorf("serve: ImportRetention = %v, want %v", cfg.ImportRetention, tt.want)
			}
			upCfg, _, err := upConfig(append([]string{"--data-dir", t.TempDir()}, tt.args...), &bytes.Buffer{})
			if err != nil {
				t.Fatal(err)
			}
			if upCfg.ImportRetention != tt.want {
				t.Errorf("up: ImportRetention = %v, want %v", upCfg.ImportRetention, tt.want)
			}
		})
	}
}
