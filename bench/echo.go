package main

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"

	benchv1 "github.com/duetkit/duet/gen/duet/bench/v1"
	"github.com/duetkit/duet/kit/client"
)

// The echo transports of scenarios 1 and 2.
const (
	tcpEcho   = "tcp"        // length-prefixed frames on raw TCP: the floor
	grpcEcho  = "grpc"       // grpc-go, default options on both sides
	httpPool  = "http-pool"  // net/http + encoding/json, HTTP/1.1 keep-alive, one connection per worker
	httpOne   = "http-1conn" // the same over exactly one connection
	kitEcho   = "kit"        // kit/server + kit/client, every default on, and an end user's token checked
	sizeSmall = 100
	sizeLarge = 4096

	// Diagnostic variants of kitEcho, not run by default: each switches
	// one default off (on both sides where the client has it too) or, for
	// kit-synclog, writes the access log on the request's own goroutine
	// (logger.New instead of logger.NewAsync), to show what it costs.
	// kit-noworkers runs every call on a goroutine of its own, as bare
	// grpc-go does, instead of kit/server's stream workers: the kit's chain
	// without the one default that makes calls cheaper. kit-noauthn sends
	// no token and checks none: what an end user's token costs, in
	// grpc-go's metadata and HPACK handling of a 300-byte header (indexed
	// after a connection's first call, sent again whenever the per-call
	// headers have pushed it out of the table) and in kit/authn.
	kitNoLog     = "kit-noaccesslog"
	kitNoTrace   = "kit-notracing"
	kitSyncLog   = "kit-synclog"
	kitNoWorkers = "kit-noworkers"
	kitNoAuthn   = "kit-noauthn"
)

// echoTransports run by default; knownTransports may be asked for.
var (
	echoTransports  = []string{tcpEcho, grpcEcho, httpPool, httpOne, kitEcho}
	knownTransports = append(slices.Clone(echoTransports), kitNoLog, kitNoTrace, kitSyncLog, kitNoWorkers, kitNoAuthn)
)

func roleOf(transport string) string {
	switch transport {
	case httpPool, httpOne:
		return roleHTTP
	}
	return transport
}

func sizeLabel(n int) string {
	if n >= 1024 {
		return fmt.Sprintf("%dKB", n/1024)
	}
	return fmt.Sprintf("%dB", n)
}

// echoClient returns a call that echoes size bytes over transport to the
// server srv said hello with, from conc workers, and a function that
// releases its connections.
func echoClient(transport string, srv hello, size, conc int) (call, func(), error) {
	addr := srv.Addr
	payload := bytes.Repeat([]byte{'d'}, size)
	check := func(n int) error {
		if n != size {
			return fmt.Errorf("echo returned %d bytes, want %d", n, size)
		}
		return nil
	}
	switch transport {
	case tcpEcho:
		conns := make([]net.Conn, conc)
		bufs := make([][]byte, conc)
		for w := range conns {
			c, err := net.Dial("tcp", addr)
			if err != nil {
				for _, c := range conns[:w] {
					c.Close()
				}
				return nil, nil, err
			}
			conns[w] = c
			bufs[w] = make([]byte, 4+size)
		}
		frame := make([]byte, 4+size)
		binary.BigEndian.PutUint32(frame, uint32(size))
		copy(frame[4:], payload)
		do := func(ctx context.Context, w int, _ int64) error {
			c, buf := conns[w], bufs[w]
			if _, err := c.Write(frame); err != nil {
				return err
			}
			if _, err := io.ReadFull(c, buf[:4]); err != nil {
				return err
			}
			n := int(binary.BigEndian.Uint32(buf[:4]))
			if err := check(n); err != nil {
				return err
			}
			_, err := io.ReadFull(c, buf[4:4+n])
			return err
		}
		return do, func() {
			for _, c := range conns {
				c.Close()
			}
		}, nil

	case grpcEcho, kitEcho, kitNoLog, kitNoTrace, kitSyncLog, kitNoWorkers, kitNoAuthn:
		var conn *grpc.ClientConn
		var err error
		switch transport {
		case grpcEcho:
			conn, err = grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
		default:
			conn, err = client.New(addr, client.Config{DisableTracing: transport == kitNoTrace})
		}
		if err != nil {
			return nil, nil, err
		}
		// Every kit call carries an end user's token, which the server
		// checks (kit/authn), put in each call's metadata as the gateway
		// forwards one.
		var authorization string
		if transport != grpcEcho && transport != kitNoAuthn {
			authorization = "Bearer " + srv.Token
		}
		echo := benchv1.NewEchoServiceClient(conn)
		do := func(ctx context.Context, _ int, _ int64) error {
			if authorization != "" {
				ctx = metadata.AppendToOutgoingContext(ctx, "authorization", authorization)
			}
			resp, err := echo.Echo(ctx, &benchv1.EchoRequest{Payload: payload})
			if err != nil {
				return err
			}
			return check(len(resp.GetPayload()))
		}
		return do, func() { conn.Close() }, nil

	case httpPool, httpOne:
		tr := &http.Transport{
			MaxIdleConns:        conc,
			MaxIdleConnsPerHost: conc,
			IdleConnTimeout:     time.Minute,
			DisableCompression:  true,
		}
		if transport == httpOne {
			// One connection: HTTP/1.1 has no multiplexing, so the workers
			// queue for it, as the seeds' "single connection" client does.
			tr.MaxConnsPerHost = 1
			tr.MaxIdleConnsPerHost = 1
		}
		hc := &http.Client{Transport: tr}
		url := "http://" + addr + "/echo"
		do := func(ctx context.Context, _ int, _ int64) error {
			body, err := json.Marshal(&jsonEcho{Payload: payload})
			if err != nil {
				return err
			}
			req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
			if err != nil {
				return err
			}
			req.Header.Set("Content-Type", "application/json")
			resp, err := hc.Do(req)
			if err != nil {
				return err
			}
			defer resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				_, _ = io.Copy(io.Discard, resp.Body)
				return fmt.Errorf("HTTP %d", resp.StatusCode)
			}
			var m jsonEcho
			err = json.NewDecoder(resp.Body).Decode(&m)
			_, _ = io.Copy(io.Discard, resp.Body)
			if err != nil {
				return err
			}
			return check(len(m.Payload))
		}
		return do, tr.CloseIdleConnections, nil
	}
	return nil, nil, fmt.Errorf("unknown transport %q", transport)
}

// runTransports measures every echo transport at every payload size and
// concurrency, repetition after repetition, each transport's server in a
// process of its own.
func runTransports(ctx context.Context, cfg *Config, p *printer) ([]*Cell, error) {
	servers := map[string]*child{}
	defer func() {
		for _, c := range servers {
			c.stop()
		}
	}()
	// One server process per server configuration: the HTTP transports
	// share one.
	for _, t := range cfg.Transports {
		key := roleOf(t)
		if servers[key] != nil {
			continue
		}
		c, err := startChild(key, cfg.profileEnv(key)...)
		if err != nil {
			return nil, err
		}
		servers[key] = c
	}
	// The table lists cells transport by transport, in the order asked for.
	var cells []*Cell
	index := map[string]*Cell{}
	key := func(t string, size, conc int) string { return fmt.Sprintf("%s/%d/%d", t, size, conc) }
	for _, t := range cfg.Transports {
		for _, size := range cfg.Sizes {
			for _, conc := range cfg.Concurrency {
				cell := &Cell{Scenario: "transport", Name: t, Payload: sizeLabel(size), Conc: conc, Mode: "closed"}
				index[key(t, size, conc)] = cell
				cells = append(cells, cell)
			}
		}
	}
	// They are measured point by point instead: at each size and
	// concurrency every transport in turn, slice by slice (interleave),
	// the kit next to bare grpc-go, and in reverse order on every other
	// repetition. A ratio then compares turns under a second apart, not
	// minutes, so a slow spell of a shared machine weighs on both sides
	// of it alike, and neither side always goes first.
	order := measureOrder(cfg.Transports)
	for rep := range cfg.Reps {
		turn := turnOrder(order, rep)
		for _, size := range cfg.Sizes {
			for _, conc := range cfg.Concurrency {
				cs := make([]contender, 0, len(turn))
				for _, t := range turn {
					srv := servers[roleOf(t)]
					do, closeClient, err := echoClient(t, srv.hello, size, conc)
					if err != nil {
						closeAll(cs)
						return nil, fmt.Errorf("%s: %w", key(t, size, conc), err)
					}
					cs = append(cs, contender{do: do, server: childSource(srv), close: closeClient})
				}
				reps, err := interleave(ctx, cs, conc, cfg.Warmup, cfg.Duration, cfg.Slice)
				closeAll(cs)
				if err != nil {
					return nil, fmt.Errorf("echo %s C=%d: %w", sizeLabel(size), conc, err)
				}
				for i, t := range turn {
					r := reps[i]
					cell := index[key(t, size, conc)]
					cell.Reps = append(cell.Reps, r)
					p.progress("transport rep %d/%d  %-10s %-5s C=%-3d %9.0f req/s  p50 %7.1f µs", rep+1, cfg.Reps, t, sizeLabel(size), conc, r.RPS, r.P50us)
				}
			}
		}
	}
	for _, c := range cells {
		c.summarize()
	}
	return cells, nil
}

// measureOrder returns the transports in the order they take turns at one
// size and concurrency: the kit's diagnostic variants, the kit, bare
// grpc-go, then the HTTP baselines and the TCP floor, so that the cells
// each ratio of the report compares run close together and the kit runs
// right next to bare grpc-go. The sort is stable: asked-for order breaks
// ties.
func measureOrder(transports []string) []string {
	rank := func(t string) int {
		switch t {
		case kitEcho:
			return 1
		case grpcEcho:
			return 2
		case httpPool:
			return 3
		case httpOne:
			return 4
		case tcpEcho:
			return 5
		}
		return 0 // the kit's diagnostic variants
	}
	out := slices.Clone(transports)
	slices.SortStableFunc(out, func(a, b string) int { return rank(a) - rank(b) })
	return out
}

// turnOrder returns the order in which the sides of a comparison take
// their turns in repetition (or slice) rep: as given in even ones,
// reversed in odd ones, so that no side always goes first.
func turnOrder[T any](order []T, rep int) []T {
	turn := slices.Clone(order)
	if rep%2 == 1 {
		slices.Reverse(turn)
	}
	return turn
}
