package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sync"
	"syscall"
	"time"
)

// Startup is scenario 5: the duet binary's start-up time and memory.
type Startup struct {
	Binary       string  `json:"binary"`
	BuildSeconds float64 `json:"build_seconds,omitempty"`
	// ColdRunsMs are starts on a fresh data directory (migrations, a new
	// JetStream store), WarmRunsMs restarts on an existing one; each is the
	// time from exec to the first 200 from /readyz. ColdReadyMs and
	// WarmReadyMs are their medians.
	ColdRunsMs  []float64 `json:"cold_runs_ms"`
	WarmRunsMs  []float64 `json:"warm_runs_ms"`
	ColdReadyMs float64   `json:"cold_ready_ms"`
	WarmReadyMs float64   `json:"warm_ready_ms"`
	// IdleRSSKB is VmRSS after IdleWait of doing nothing; LoadRSSKB the
	// highest VmRSS seen under load; HWMKB the kernel's peak (VmHWM).
	IdleWait  string  `json:"idle_wait"`
	IdleRSSKB int64   `json:"idle_rss_kb"`
	LoadRSSKB int64   `json:"load_rss_kb"`
	HWMKB     int64   `json:"hwm_kb"`
	LoadConc  int     `json:"load_concurrency"`
	LoadRPS   float64 `json:"load_rps"`
	// ShutdownMs is SIGTERM to exit after the load.
	ShutdownMs float64 `json:"shutdown_ms"`
}

// moduleRoot finds the directory of go.mod above the working directory.
func moduleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("no go.mod above the working directory: run from the repository")
		}
		dir = parent
	}
}

// buildDuet builds cmd/duet into dir.
func buildDuet(ctx context.Context, dir string) (string, time.Duration, error) {
	root, err := moduleRoot()
	if err != nil {
		return "", 0, err
	}
	bin := filepath.Join(dir, "duet")
	start := time.Now()
	cmd := exec.CommandContext(ctx, "go", "build", "-o", bin, "./cmd/duet")
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", 0, fmt.Errorf("go build ./cmd/duet: %v\n%s", err, out)
	}
	return bin, time.Since(start), nil
}

// gatewayLine finds the REST gateway's address in the banner `duet up`
// prints once its listeners are bound.
var gatewayLine = regexp.MustCompile(`REST gateway\s+http://(\S+)`)

// duetProc is a running `duet up`.
type duetProc struct {
	cmd  *exec.Cmd
	addr string
	done chan error
}

// startDuet runs `duet up` on dataDir with every port free and returns once
// /readyz answers 200, with the time that took.
//
// duet binds its own free ports (":0") and the gateway's is read from its
// banner: a port the bench found free and closed again could be taken by
// any outgoing connection on the machine before duet binds it, which
// failed a start now and then.
func startDuet(ctx context.Context, bin, dataDir string) (*duetProc, time.Duration, error) {
	free := "127.0.0.1:0"
	cmd := exec.Command(bin, "up", "--data-dir", dataDir, "--http-addr", free,
		"--user-addr", free, "--order-addr", free, "--payment-addr", free, "--inventory-addr", free, "--notification-addr", free)
	// Logs go to stderr, as in production; here to /dev/null.
	cmd.Stderr = nil
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, 0, err
	}
	cmd.Env = os.Environ()
	tieToParent(cmd)
	start := time.Now()
	if err := cmd.Start(); err != nil {
		return nil, 0, err
	}
	d := &duetProc{cmd: cmd, done: make(chan error, 1)}
	addrs := make(chan string, 1)
	read := make(chan struct{})
	go func() {
		defer close(read)
		sc := bufio.NewScanner(stdout)
		sent := false
		for sc.Scan() {
			if m := gatewayLine.FindStringSubmatch(sc.Text()); m != nil && !sent {
				addrs <- m[1]
				sent = true
			}
		}
	}()
	go func() {
		<-read // Wait must not close the pipe before the banner is read
		d.done <- cmd.Wait()
	}()
	hc := &http.Client{Timeout: time.Second}
	deadline := time.NewTimer(60 * time.Second)
	defer deadline.Stop()
	poll := time.NewTicker(2 * time.Millisecond)
	defer poll.Stop()
	for {
		select {
		case d.addr = <-addrs:
		case err := <-d.done:
			d.done <- err
			return nil, 0, fmt.Errorf("duet exited before it was ready: %v", err)
		case <-deadline.C:
			d.stop()
			return nil, 0, errors.New("duet not ready after 60s")
		case <-ctx.Done():
			d.stop()
			return nil, 0, ctx.Err()
		case <-poll.C:
		}
		if d.addr == "" {
			continue // no banner yet
		}
		resp, err := hc.Get("http://" + d.addr + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return d, time.Since(start), nil
			}
		}
	}
}

// stop sends SIGTERM and waits for the exit (SIGKILL after 30s).
func (d *duetProc) stop() time.Duration {
	start := time.Now()
	_ = d.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-d.done:
	case <-time.After(30 * time.Second):
		_ = d.cmd.Process.Kill()
		<-d.done
	}
	return time.Since(start)
}

// runStartup builds the duet binary (unless cfg.DuetBin names one), times
// cold and warm starts to /readyz, and reads its RSS idle and under a
// GetUser load through the gateway.
func runStartup(ctx context.Context, cfg *Config, p *printer) (*Startup, error) {
	tmp, err := os.MkdirTemp("", "duet-bench-startup-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(tmp)
	s := &Startup{Binary: cfg.DuetBin, IdleWait: cfg.IdleWait.String(), LoadConc: 64}
	if s.Binary == "" {
		bin, took, err := buildDuet(ctx, tmp)
		if err != nil {
			return nil, err
		}
		s.Binary, s.BuildSeconds = "go build ./cmd/duet (temporary)", round1(took.Seconds())
		cfg.duetBin = bin
	} else {
		cfg.duetBin = cfg.DuetBin
	}
	var dataDir string
	for i := range cfg.StartRuns {
		dataDir = filepath.Join(tmp, fmt.Sprintf("data-%d", i))
		d, took, err := startDuet(ctx, cfg.duetBin, dataDir)
		if err != nil {
			return nil, err
		}
		d.stop()
		s.ColdRunsMs = append(s.ColdRunsMs, round1(float64(took)/1e6))
		p.progress("startup: fresh data dir, ready in %v", took.Round(time.Millisecond))
	}
	var d *duetProc
	for i := range cfg.StartRuns {
		var took time.Duration
		d, took, err = startDuet(ctx, cfg.duetBin, dataDir)
		if err != nil {
			return nil, err
		}
		s.WarmRunsMs = append(s.WarmRunsMs, round1(float64(took)/1e6))
		p.progress("startup: existing data dir, ready in %v", took.Round(time.Millisecond))
		if i < cfg.StartRuns-1 {
			d.stop()
		}
	}
	s.ColdReadyMs, s.WarmReadyMs = median(s.ColdRunsMs), median(s.WarmRunsMs)
	defer func() {
		if d != nil {
			d.stop()
		}
	}()

	pid := d.cmd.Process.Pid
	time.Sleep(cfg.IdleWait)
	s.IdleRSSKB = rssKB(pid)

	hc := newLoadClient(d.addr, s.LoadConc)
	defer hc.close()
	var created struct {
		User struct {
			ID string `json:"id"`
		} `json:"user"`
	}
	err = hc.do(ctx, http.MethodPost, "/v1/users", fmt.Appendf(nil, `{"email":"rss-%s@example.com","name":"RSS"}`, runID), http.StatusOK, func(b []byte) error {
		if err := json.Unmarshal(b, &created); err != nil || created.User.ID == "" {
			return fmt.Errorf("create user: %v: %s", err, b)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	userPath := "/v1/users/" + created.User.ID
	var mu sync.Mutex
	stopSampling := make(chan struct{})
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		t := time.NewTicker(50 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-stopSampling:
				return
			case <-t.C:
				v := rssKB(pid)
				mu.Lock()
				s.LoadRSSKB = max(s.LoadRSSKB, v)
				mu.Unlock()
			}
		}
	}()
	o := closedLoop(ctx, s.LoadConc, cfg.Duration, func(ctx context.Context, _ int, _ int64) error {
		return hc.do(ctx, http.MethodGet, userPath, nil, http.StatusOK, nil)
	})
	close(stopSampling)
	<-sampled
	s.LoadRSSKB = max(s.LoadRSSKB, rssKB(pid))
	s.HWMKB = hwmKB(pid)
	s.LoadRPS = round1(float64(o.ok) / o.elapsed.Seconds())
	if o.errs > 0 {
		return nil, fmt.Errorf("startup load: %d errors, first: %v", o.errs, o.firstErr)
	}
	s.ShutdownMs = round1(float64(d.stop()) / 1e6)
	d = nil
	p.progress("startup: idle RSS %.1f MB, under load %.1f MB (%.0f req/s), shutdown %.0f ms",
		float64(s.IdleRSSKB)/1024, float64(s.LoadRSSKB)/1024, s.LoadRPS, s.ShutdownMs)
	return s, nil
}
