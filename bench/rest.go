package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net/http"
	"os"
	"time"

	"github.com/valyala/fasthttp"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	userv1 "github.com/duetkit/duet/gen/duet/user/v1"
)

// runID tells this run's rows (emails, idempotency keys) from any other's.
var runID = func() string {
	var b [4]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}()

// startSystemChild runs the embedded shop in a child process, in a fresh
// data directory, on the databases in urls (nil: SQLite files).
func startSystemChild(cfg *Config, dir, name string, urls map[string]string) (*child, error) {
	env := append([]string{dataDirEnv + "=" + dir}, cfg.profileEnv(name)...)
	if urls != nil {
		env = append(env, dbURLsEnv+"="+mustJSON(urls))
	}
	return startChild(roleSystem, env...)
}

// loadClient is the load generator's HTTP/1.1 client: keep-alive
// connections to one host, at most conns of them, from fasthttp.
//
// Why not net/http's client: on two shared cores the load generator's CPU
// is taken from the servers it measures, and net/http's client spends about
// 35 µs of CPU per small request here against wrk's 20, so the gateway
// looked slower under the bench than under an independent probe with wrk
// (bench/README.md). fasthttp's client is in wrk's class; the direct-gRPC
// paths keep grpc-go's own client, the leanest there is for them. The
// seeds' net/http baseline (scenario 1) keeps net/http on both ends: it
// measures net/http itself.
type loadClient struct {
	hc *fasthttp.HostClient
}

// newLoadClient returns a client for the HTTP server at addr (host:port).
func newLoadClient(addr string, conns int) *loadClient {
	return &loadClient{hc: &fasthttp.HostClient{
		Addr:                          addr,
		MaxConns:                      conns,
		MaxConnWaitTimeout:            loadTimeout,
		MaxIdleConnDuration:           time.Minute,
		NoDefaultUserAgentHeader:      true,
		DisableHeaderNamesNormalizing: true,
	}}
}

// loadTimeout bounds a request whose context has no deadline.
const loadTimeout = 30 * time.Second

// close drops the client's idle connections.
func (c *loadClient) close() { c.hc.CloseIdleConnections() }

// do sends one request to path and reads the whole answer, which must have
// the status want; check, when not nil, vets the body, which is only valid
// during the call. The body is read, not decoded: decoding is the client's
// business on either path.
func (c *loadClient) do(ctx context.Context, method, path string, body []byte, want int, check func(body []byte) error) error {
	deadline, ok := ctx.Deadline()
	if !ok {
		deadline = time.Now().Add(loadTimeout)
	}
	req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
	defer func() {
		fasthttp.ReleaseRequest(req)
		fasthttp.ReleaseResponse(resp)
	}()
	req.Header.SetMethod(method)
	req.SetRequestURI(path)
	req.Header.SetHost(c.hc.Addr)
	if body != nil {
		req.Header.SetContentType("application/json")
		req.SetBodyRaw(body)
	}
	if err := c.hc.DoDeadline(req, resp, deadline); err != nil {
		return fmt.Errorf("%s %s: %w", method, path, err)
	}
	if got := resp.StatusCode(); got != want {
		return fmt.Errorf("%s %s: HTTP %d: %.200s", method, path, got, resp.Body())
	}
	if check != nil {
		return check(resp.Body())
	}
	return nil
}

// bareConn is a default grpc-go connection: the load generator of the
// direct-gRPC paths, as lean as the HTTP one.
func bareConn(addr string) (*grpc.ClientConn, error) {
	return grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
}

// restOp is one operation measured over both paths, gateway and direct,
// and for GetUser over a third, Connect's.
type restOp struct {
	op, payload string
	conc        []int
	gateway     func(ctx context.Context, hc *loadClient, w int, seq int64) error
	direct      func(ctx context.Context, c userv1.UserServiceClient, w int, seq int64) error
	// connect, when set, is the operation in the Connect protocol at the
	// gateway (a JSON POST to its gRPC path, as a browser's client sends
	// it), a third path taking turns with the two at connectConc.
	connect     func(ctx context.Context, hc *loadClient, w int, seq int64) error
	connectConc int
}

// runREST measures GetUser, ListUsers (a page of 20: the medium message)
// and CreateUser through the gateway and over direct gRPC to the user
// service, and GetUser at C=64 in the Connect protocol too, on one
// embedded system in a child process.
func runREST(ctx context.Context, cfg *Config, p *printer) ([]*Cell, error) {
	dir, err := os.MkdirTemp("", "duet-bench-rest-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	sys, err := startSystemChild(cfg, dir, "rest-system", nil)
	if err != nil {
		return nil, err
	}
	defer sys.stop()
	conn, err := bareConn(sys.hello.User)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	users := userv1.NewUserServiceClient(conn)
	ids, err := seedUsers(ctx, users, cfg.SeedUsers, "rest")
	if err != nil {
		return nil, err
	}
	pick := func(w int, seq int64) string { return ids[(int(seq)+w)%len(ids)] }
	email := func(seq int64) string { return fmt.Sprintf("b%s-%d@example.com", runID, seq) }
	ops := []restOp{
		{
			op: "GetUser", payload: "small", conc: cfg.RESTConc,
			gateway: func(ctx context.Context, hc *loadClient, w int, seq int64) error {
				return hc.do(ctx, http.MethodGet, "/v1/users/"+pick(w, seq), nil, http.StatusOK, nil)
			},
			direct: func(ctx context.Context, c userv1.UserServiceClient, w int, seq int64) error {
				_, err := c.GetUser(ctx, &userv1.GetUserRequest{Id: pick(w, seq)})
				return err
			},
			connect: func(ctx context.Context, hc *loadClient, w int, seq int64) error {
				body := fmt.Appendf(nil, `{"id":%q}`, pick(w, seq))
				return hc.do(ctx, http.MethodPost, userv1.UserService_GetUser_FullMethodName, body, http.StatusOK, nil)
			},
			connectConc: 64,
		},
		{
			op: "ListUsers", payload: "medium", conc: []int{64},
			gateway: func(ctx context.Context, hc *loadClient, w int, seq int64) error {
				return hc.do(ctx, http.MethodGet, "/v1/users?pageSize=20", nil, http.StatusOK, nil)
			},
			direct: func(ctx context.Context, c userv1.UserServiceClient, w int, seq int64) error {
				_, err := c.ListUsers(ctx, &userv1.ListUsersRequest{PageSize: 20})
				return err
			},
		},
		{
			op: "CreateUser", payload: "small", conc: []int{64},
			gateway: func(ctx context.Context, hc *loadClient, w int, seq int64) error {
				body := fmt.Appendf(nil, `{"email":%q,"name":"Bench User"}`, email(seq))
				return hc.do(ctx, http.MethodPost, "/v1/users", body, http.StatusOK, nil)
			},
			direct: func(ctx context.Context, c userv1.UserServiceClient, w int, seq int64) error {
				_, err := c.CreateUser(ctx, &userv1.CreateUserRequest{Email: email(seq), Name: "Bench User"})
				return err
			},
		},
	}
	var cells []*Cell
	index := map[string]*Cell{}
	for rep := range cfg.Reps {
		// Gateway and direct calls of one point (and Connect's, at its
		// point) take turns slice by slice (interleave), gateway and direct
		// each first on every other repetition, so that neither always
		// meets the machine warmer or after the other's leftovers.
		for _, op := range ops {
			for _, conc := range op.conc {
				paths := []string{"gateway", "grpc"}
				if op.connect != nil && conc == op.connectConc {
					// Between the two, so that gateway and direct
					// still take the first turn by repetition.
					paths = []string{"gateway", "connect", "grpc"}
				}
				paths = turnOrder(paths, rep)
				cs := make([]contender, 0, len(paths))
				for _, path := range paths {
					side := contender{server: childSource(sys)}
					switch path {
					case "gateway", "connect":
						hc := newLoadClient(sys.hello.HTTP, conc)
						call := op.gateway
						if path == "connect" {
							call = op.connect
						}
						side.do = func(ctx context.Context, w int, seq int64) error { return call(ctx, hc, w, seq) }
						side.close = hc.close
					default:
						c, err := bareConn(sys.hello.User)
						if err != nil {
							closeAll(cs)
							return nil, err
						}
						uc := userv1.NewUserServiceClient(c)
						side.do = func(ctx context.Context, w int, seq int64) error { return op.direct(ctx, uc, w, seq) }
						side.close = func() { c.Close() }
					}
					cs = append(cs, side)
				}
				reps, err := interleave(ctx, cs, conc, cfg.Warmup, cfg.Duration, cfg.Slice)
				closeAll(cs)
				if err != nil {
					return nil, fmt.Errorf("%s C=%d: %w", op.op, conc, err)
				}
				for i, path := range paths {
					key := fmt.Sprintf("%s/%s/%d", op.op, path, conc)
					cell := index[key]
					if cell == nil {
						cell = &Cell{Scenario: "rest", Name: path, Op: op.op, Payload: op.payload, Conc: conc, Mode: "closed"}
						index[key] = cell
						cells = append(cells, cell)
					}
					r := reps[i]
					cell.Reps = append(cell.Reps, r)
					p.progress("rest rep %d/%d  %-10s via %-7s C=%-3d %8.0f req/s  p50 %7.1f µs  errors %d %s", rep+1, cfg.Reps, op.op, path, conc, r.RPS, r.P50us, r.Errors, r.FirstError)
				}
			}
		}
	}
	for _, c := range cells {
		c.summarize()
	}
	return cells, nil
}

// seedUsers creates n users over direct gRPC and returns their ids.
func seedUsers(ctx context.Context, users userv1.UserServiceClient, n int, tag string) ([]string, error) {
	ids := make([]string, 0, n)
	for i := range n {
		ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		resp, err := users.CreateUser(ctx, &userv1.CreateUserRequest{
			Email: fmt.Sprintf("seed-%s-%s-%d@example.com", tag, runID, i),
			Name:  fmt.Sprintf("Seed User %d", i),
		})
		cancel()
		if err != nil {
			return nil, fmt.Errorf("seed user %d: %w", i, err)
		}
		ids = append(ids, resp.GetUser().GetId())
	}
	return ids, nil
}
