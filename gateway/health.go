package gateway

import (
	"context"
	"encoding/json"
	"net/http"
	"strconv"
	"sync"

	"google.golang.org/genproto/googleapis/rpc/code"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
)

// backend is one service the gateway forwards to.
type backend struct {
	// name identifies it in /readyz answers: "user", "order", "payment",
	// "inventory", "notification".
	name string
	// service is its full gRPC name, whose health status is checked.
	service string
	conn    *grpc.ClientConn
}

// check returns the backend's health status name, "SERVING" when ready,
// or the gRPC code name of the failed check ("UNAVAILABLE",
// "DEADLINE_EXCEEDED"). It asks for the service's own status and falls
// back to the server's overall one ("") for servers that do not register
// per-service statuses.
func (b backend) check(ctx context.Context) string {
	client := healthpb.NewHealthClient(b.conn)
	resp, err := client.Check(ctx, &healthpb.HealthCheckRequest{Service: b.service})
	if status.Code(err) == codes.NotFound {
		resp, err = client.Check(ctx, &healthpb.HealthCheckRequest{})
	}
	if err != nil {
		return code.Code_name[int32(status.Code(err))]
	}
	return resp.GetStatus().String()
}

// readiness is the JSON body of /readyz.
type readiness struct {
	// Status is "ready", "not ready" or, after MarkNotReady, "shutting
	// down".
	Status string `json:"status"`
	// Backends maps each backend to its health status.
	Backends map[string]string `json:"backends"`
	// NotReady names the backends that are not SERVING, if any.
	NotReady []string `json:"notReady,omitempty"`
}

// serveHealthz answers 200 while the process can serve HTTP at all; it
// checks nothing else, so a backend outage never gets the gateway restarted.
func (g *Gateway) serveHealthz(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
}

// MarkNotReady makes /readyz answer 503, status "shutting down", from
// now on, while every other request is served as before. Call it before
// Shutdown (or Drain), as long before as balancers that poll /readyz take
// to act (a Kubernetes readiness probe's failureThreshold × periodSeconds,
// a proxy's health checks), so that they take the gateway out of rotation
// while it still serves: their callers would otherwise meet a closed
// listener. It cannot be undone.
func (g *Gateway) MarkNotReady() { g.notReady.Store(true) }

// serveReadyz answers 200 when every backend's grpc.health.v1 status is
// SERVING and 503 otherwise, naming the backends that are not; after
// MarkNotReady, 503 without asking them. The checks run in parallel,
// bounded together by Config.ReadyTimeout.
func (g *Gateway) serveReadyz(w http.ResponseWriter, r *http.Request) {
	if g.notReady.Load() {
		writeJSON(w, http.StatusServiceUnavailable, readiness{Status: "shutting down", Backends: map[string]string{}})
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), g.cfg.ReadyTimeout)
	defer cancel()
	results := make([]string, len(g.backends))
	var wg sync.WaitGroup
	for i, b := range g.backends {
		wg.Go(func() { results[i] = b.check(ctx) })
	}
	wg.Wait()

	body := readiness{Status: "ready", Backends: make(map[string]string, len(g.backends))}
	for i, b := range g.backends {
		body.Backends[b.name] = results[i]
		if results[i] != healthpb.HealthCheckResponse_SERVING.String() {
			body.NotReady = append(body.NotReady, b.name)
		}
	}
	code := http.StatusOK
	if len(body.NotReady) > 0 {
		body.Status, code = "not ready", http.StatusServiceUnavailable
		g.log.WarnContext(r.Context(), "gateway: not ready", "backends", body.Backends)
	}
	writeJSON(w, code, body)
}

// writeJSON writes v as an uncached JSON response.
func writeJSON(w http.ResponseWriter, code int, v any) {
	buf, err := json.Marshal(v)
	if err != nil {
		writeError(w, internalError())
		return
	}
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Cache-Control", "no-store")
	h.Set("Content-Length", strconv.Itoa(len(buf)))
	w.WriteHeader(code)
	_, _ = w.Write(buf)
}
