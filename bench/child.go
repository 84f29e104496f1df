package main

import (
	"bufio"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/pprof"
	"strings"
	"sync"
	"syscall"
	"time"

	"google.golang.org/grpc"

	benchv1 "github.com/duetkit/duet/gen/duet/bench/v1"
	"github.com/duetkit/duet/internal/system"
	"github.com/duetkit/duet/kit/authn"
	"github.com/duetkit/duet/kit/authn/devissuer"
	"github.com/duetkit/duet/kit/logger"
	"github.com/duetkit/duet/kit/server"
	"github.com/duetkit/duet/kit/tracing"
)

// The server side of every scenario runs in a child process: the bench
// binary re-executes itself with roleEnv set. The child prints one JSON line
// (its addresses) on stdout, then answers "stats" lines on stdin with its
// own CPU time and RSS, and exits when stdin closes, so it can never outlive
// the load generator.
const (
	roleEnv       = "DUET_BENCH_ROLE"
	profileEnv    = "DUET_BENCH_CPUPROFILE" // file the child writes a CPU profile to
	dataDirEnv    = "DUET_BENCH_DATA_DIR"   // the system role's data directory
	dbURLsEnv     = "DUET_BENCH_DB_URLS"    // the system role's database URLs, JSON {service: url}
	roleTCP       = "tcp"
	roleGRPC      = "grpc"
	roleHTTP      = "http"
	roleKit       = "kit"
	roleSystem    = "system"
	statsCommand  = "stats"
	maxFrameBytes = 1 << 20
)

// hello is the first line a child writes: the addresses it serves.
type hello struct {
	Addr string `json:"addr,omitempty"`
	// Token is an end user's token the kit's echo server accepts.
	Token                                               string `json:"token,omitempty"`
	HTTP, User, Order, Payment, Inventory, Notification string `json:",omitempty"`
	Error                                               string `json:"error,omitempty"`
}

// writeAllocs writes the process's allocation profile (every allocation
// sampled since it started) to path; a failure only loses the profile.
func writeAllocs(path string) {
	f, err := os.Create(path)
	if err != nil {
		return
	}
	defer f.Close()
	_ = pprof.Lookup("allocs").WriteTo(f, 0)
}

// procStats is a child's answer to "stats".
type procStats struct {
	CPU   time.Duration `json:"cpu_ns"`
	RSSKB int64         `json:"rss_kb"`
}

// isChild reports whether this process was started as a bench server.
func isChild() bool { return os.Getenv(roleEnv) != "" }

// childMain runs the server role named by roleEnv and exits.
func childMain() {
	role := os.Getenv(roleEnv)
	if path := os.Getenv(profileEnv); path != "" {
		if f, err := os.Create(path); err == nil {
			if err := pprof.StartCPUProfile(f); err == nil {
				defer func() { pprof.StopCPUProfile(); f.Close() }()
			}
		}
		// Where the allocations come from, next to the CPU profile: the
		// collector's share of the CPU follows the bytes allocated.
		defer writeAllocs(strings.TrimSuffix(path, ".pprof") + ".allocs.pprof")
	}
	out := json.NewEncoder(os.Stdout)
	h, stop, err := serveRole(role)
	if err != nil {
		_ = out.Encode(hello{Error: err.Error()})
		os.Exit(1)
	}
	_ = out.Encode(h)
	in := bufio.NewScanner(os.Stdin)
	for in.Scan() {
		if strings.TrimSpace(in.Text()) == statsCommand {
			_ = out.Encode(procStats{CPU: selfCPU(), RSSKB: rssKB(os.Getpid())})
		}
	}
	stop()
}

// serveRole starts the servers of role on free loopback ports and returns
// their addresses and a function that stops them.
func serveRole(role string) (hello, func(), error) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return hello{}, nil, err
	}
	addr := lis.Addr().String()
	switch role {
	case roleTCP:
		go serveTCPEcho(lis)
		return hello{Addr: addr}, func() { lis.Close() }, nil
	case roleHTTP:
		srv := &http.Server{Handler: http.HandlerFunc(httpEcho)}
		go srv.Serve(lis)
		return hello{Addr: addr}, func() { srv.Close() }, nil
	case roleGRPC:
		// grpc-go exactly as it comes: no options at all.
		srv := grpc.NewServer()
		benchv1.RegisterEchoServiceServer(srv, echoServer{})
		go srv.Serve(lis)
		return hello{Addr: addr}, srv.Stop, nil
	case roleKit, kitNoLog, kitNoTrace, kitSyncLog, kitNoWorkers, kitNoAuthn:
		// What `duet up` does: the tracer provider, a JSON logger at info
		// (so the access log writes a line per call; /dev/null keeps the
		// write system call and drops the bytes), and kit/server's defaults.
		// The diagnostic variants switch one thing each.
		shutdownTracing, err := tracing.Setup(context.Background(), "bench")
		if err != nil {
			return hello{}, nil, err
		}
		log, closeLog, err := devNullLogger("echo", role != kitSyncLog)
		if err != nil {
			return hello{}, nil, err
		}
		verifier, token, closeVerifier, err := benchVerifier()
		if err != nil {
			closeLog()
			return hello{}, nil, err
		}
		cfg := server.Config{Name: "echo", Logger: log, Authenticator: verifier}
		switch role {
		case kitNoLog:
			cfg.DisableAccessLog = true
		case kitNoTrace:
			cfg.DisableTracing = true
		case kitNoWorkers:
			cfg.StreamWorkers = -1
		case kitNoAuthn:
			cfg.Authenticator = nil
		}
		srv, err := server.New(cfg)
		if err != nil {
			return hello{}, nil, err
		}
		benchv1.RegisterEchoServiceServer(srv, echoServer{})
		go srv.Serve(lis)
		return hello{Addr: addr, Token: token}, func() {
			srv.Shutdown(context.Background())
			_ = shutdownTracing(context.Background())
			closeVerifier()
			closeLog()
		}, nil
	case roleSystem:
		lis.Close()
		return startSystem()
	}
	lis.Close()
	return hello{}, nil, fmt.Errorf("unknown role %q", role)
}

// benchVerifier is kit/authn checking tokens of an issuer made for the
// run, and a token of its for the clients to send: the end user's token
// a call through the gateway carries.
func benchVerifier() (v *authn.Verifier, token string, close func(), err error) {
	const iss, aud = "https://bench.duet.invalid", "bench"
	issuer, err := devissuer.New(iss, "bench")
	if err != nil {
		return nil, "", nil, err
	}
	keys, err := issuer.KeySet()
	if err != nil {
		return nil, "", nil, err
	}
	dir, err := os.MkdirTemp("", "duet-bench-keys")
	if err != nil {
		return nil, "", nil, err
	}
	file := filepath.Join(dir, "keys.json")
	if err := os.WriteFile(file, keys, 0o600); err != nil {
		os.RemoveAll(dir)
		return nil, "", nil, err
	}
	v, err = authn.Load(context.Background(), authn.Config{KeysFile: file, Issuer: iss, Audience: aud})
	if err != nil {
		os.RemoveAll(dir)
		return nil, "", nil, err
	}
	token, err = issuer.Sign(devissuer.Claims{Subject: "bench-user", Audience: []string{aud}, Expiry: time.Now().Add(24 * time.Hour)})
	if err != nil {
		v.Close()
		os.RemoveAll(dir)
		return nil, "", nil, err
	}
	return v, token, func() { v.Close(); os.RemoveAll(dir) }, nil
}

// devNullLogger is kit/logger's JSON logger at info writing to /dev/null:
// as `duet` runs it (logger.NewAsync) when async is set, else written on
// the caller's goroutine (logger.New). close flushes and stops it.
func devNullLogger(service string, async bool) (log *slog.Logger, close func(), err error) {
	f, err := os.OpenFile(os.DevNull, os.O_WRONLY, 0)
	if err != nil {
		return nil, nil, err
	}
	if !async {
		return logger.New(f, slog.LevelInfo, service), func() { f.Close() }, nil
	}
	log, h := logger.NewAsync(f, slog.LevelInfo, service)
	return log, func() {
		_ = h.Close(context.Background())
		f.Close()
	}, nil
}

// startSystem runs the whole shop as `duet up` does (tracing, JSON logs at
// info), on free ports, with the databases named in dbURLsEnv or SQLite
// files in dataDirEnv.
func startSystem() (hello, func(), error) {
	ctx := context.Background()
	shutdownTracing, err := tracing.Setup(ctx, "duet")
	if err != nil {
		return hello{}, nil, err
	}
	log, closeLog, err := devNullLogger("", true)
	if err != nil {
		return hello{}, nil, err
	}
	var urls map[string]string
	if s := os.Getenv(dbURLsEnv); s != "" {
		if err := json.Unmarshal([]byte(s), &urls); err != nil {
			return hello{}, nil, fmt.Errorf("%s: %w", dbURLsEnv, err)
		}
	}
	free := "127.0.0.1:0"
	// The system runs as `duet up` would, with duet's GC target.
	system.TuneGC()
	sys, err := system.Start(ctx, system.Config{
		DataDir:  os.Getenv(dataDirEnv),
		HTTPAddr: free, UserAddr: free, OrderAddr: free, PaymentAddr: free, InventoryAddr: free, NotificationAddr: free,
		UserDB: urls[system.User], OrderDB: urls[system.Order], PaymentDB: urls[system.Payment],
		InventoryDB: urls[system.Inventory], NotificationDB: urls[system.Notification],
		Logger: log,
	})
	if err != nil {
		return hello{}, nil, err
	}
	h := hello{HTTP: sys.HTTPAddr, User: sys.UserAddr, Order: sys.OrderAddr, Payment: sys.PaymentAddr,
		Inventory: sys.InventoryAddr, Notification: sys.NotificationAddr}
	return h, func() {
		ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		_ = sys.Shutdown(ctx)
		_ = shutdownTracing(ctx)
		closeLog()
	}, nil
}

// echoServer answers Echo with the request's payload.
type echoServer struct {
	benchv1.UnimplementedEchoServiceServer
}

func (echoServer) Echo(_ context.Context, req *benchv1.EchoRequest) (*benchv1.EchoResponse, error) {
	return &benchv1.EchoResponse{Payload: req.GetPayload()}, nil
}

// jsonEcho is the body of the HTTP/1.1 + encoding/json echo, in both directions.
type jsonEcho struct {
	Payload []byte `json:"payload"`
}

func httpEcho(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost || r.URL.Path != "/echo" {
		http.NotFound(w, r)
		return
	}
	var m jsonEcho
	if err := json.NewDecoder(r.Body).Decode(&m); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(&m)
}

// serveTCPEcho echoes length-prefixed frames (a 4-byte big-endian length,
// then the bytes) on every connection: the floor no RPC stack can beat.
func serveTCPEcho(lis net.Listener) {
	for {
		c, err := lis.Accept()
		if err != nil {
			return
		}
		go func() {
			defer c.Close()
			buf := make([]byte, 4+4096)
			for {
				if _, err := io.ReadFull(c, buf[:4]); err != nil {
					return
				}
				n := int(binary.BigEndian.Uint32(buf[:4]))
				if n > maxFrameBytes {
					return
				}
				if cap(buf) < 4+n {
					buf = append(buf[:4], make([]byte, n)...)
				}
				buf = buf[:4+n]
				if _, err := io.ReadFull(c, buf[4:]); err != nil {
					return
				}
				if _, err := c.Write(buf); err != nil {
					return
				}
			}
		}()
	}
}

// child is a running server process.
type child struct {
	role  string
	cmd   *exec.Cmd
	stdin io.WriteCloser
	out   *bufio.Reader
	hello hello

	mu   sync.Mutex
	done chan error
}

// startChild re-executes this binary as role, with extra environment, and
// waits for its hello line.
func startChild(role string, env ...string) (*child, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(exe)
	cmd.Env = append(append(os.Environ(), roleEnv+"="+role), env...)
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	c := &child{role: role, cmd: cmd, stdin: stdin, out: bufio.NewReader(stdout), done: make(chan error, 1)}
	line, err := c.line(helloTimeout)
	if err == nil {
		err = json.Unmarshal(line, &c.hello)
	}
	if err == nil && c.hello.Error != "" {
		err = errors.New(c.hello.Error)
	}
	go func() { c.done <- cmd.Wait() }()
	if err != nil {
		c.stop()
		return nil, fmt.Errorf("%s server: %w", role, err)
	}
	return c, nil
}

// stats asks the child for its CPU time and RSS.
func (c *child) stats() (procStats, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	var s procStats
	if _, err := io.WriteString(c.stdin, statsCommand+"\n"); err != nil {
		return s, err
	}
	line, err := c.line(statsTimeout)
	if err != nil {
		return s, err
	}
	return s, json.Unmarshal(line, &s)
}

// Bounds on a child's answers: a child that hung (a server stuck, a
// database that does not answer) otherwise held the whole run for ever.
const (
	// helloTimeout bounds a start, migrations and seeding included.
	helloTimeout = 2 * time.Minute
	// statsTimeout bounds an answer to statsCommand.
	statsTimeout = 30 * time.Second
)

// line reads the child's next line, or kills the child when none comes
// within d.
func (c *child) line(d time.Duration) ([]byte, error) {
	type read struct {
		line []byte
		err  error
	}
	got := make(chan read, 1)
	go func() {
		line, err := c.out.ReadBytes('\n')
		got <- read{line, err}
	}()
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case r := <-got:
		return r.line, r.err
	case <-t.C:
		_ = c.cmd.Process.Kill()
		<-got // the kill closes its stdout
		return nil, fmt.Errorf("%s server: no answer within %v; killed", c.role, d)
	}
}

// stop closes the child's stdin, which makes it shut down, and waits a
// bounded time before killing it.
func (c *child) stop() {
	c.stdin.Close()
	select {
	case <-c.done:
	case <-time.After(40 * time.Second):
		_ = c.cmd.Process.Signal(syscall.SIGKILL)
		<-c.done
	}
}
