package system_test

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"

	"github.com/duetkit/duet/internal/system"
	"github.com/duetkit/duet/kit/logger"
	"github.com/duetkit/duet/kit/tracing/tracingtest"
)

// TestRESTSpans: with an exporter, a REST call is one sampled trace from
// the gateway's server span through its gRPC client span to the user
// service's server span. The gateway used to make up a trace that was not
// sampled, and the default sampler (parent-based) dropped every span
// behind it: nothing was exported for any REST call.
func TestRESTSpans(t *testing.T) {
	rec := tracingtest.Record(t)

	sys := start(t, system.Config{})
	if r := do(t, "POST", "http://"+sys.HTTPAddr+"/v1/users", `{"email":"ada@example.com","name":"Ada"}`); r.status != 200 {
		t.Fatalf("create user: %d %s", r.status, r.raw)
	}
	// The spans end as each side finishes, some after the response.
	var kinds map[trace.SpanKind][]string
	deadline := time.Now().Add(10 * time.Second)
	for {
		kinds = map[trace.SpanKind][]string{}
		var root trace.TraceID
		for _, s := range rec.Ended() {
			if s.Name() == "POST" && s.SpanKind() == trace.SpanKindServer && s.SpanContext().IsSampled() {
				root = s.SpanContext().TraceID()
			}
		}
		for _, s := range rec.Ended() {
			if root.IsValid() && s.SpanContext().TraceID() == root {
				kinds[s.SpanKind()] = append(kinds[s.SpanKind()], s.Name())
			}
		}
		if len(kinds[trace.SpanKindServer]) >= 2 && len(kinds[trace.SpanKindClient]) >= 1 || time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if len(kinds[trace.SpanKindServer]) < 2 || len(kinds[trace.SpanKindClient]) < 1 {
		t.Errorf("spans of the REST call's trace by kind: %v; want the gateway's and the user service's server spans and a client span", kinds)
	}
}

// TestSagaKeepsTrace: every log line of an order's request, the saga's
// calls to the user, inventory and payment services included, names one
// trace. The saga runs the order from its stored state in a worker, and
// its calls had the request id but each a trace of its own.
func TestSagaKeepsTrace(t *testing.T) {
	// Each log line is one write, so the services may share a file.
	logs, err := os.Create(filepath.Join(t.TempDir(), "log"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { logs.Close() }) // after the system's shutdown, which logs
	sys := start(t, system.Config{Logger: logger.New(logs, slog.LevelInfo, "")})
	base := "http://" + sys.HTTPAddr
	if r := do(t, "POST", base+"/v1/products", `{"sku":"A","name":"A","price":{"currencyCode":"USD","units":"100"},"stock":10}`); r.status != 200 {
		t.Fatalf("create product: %d %s", r.status, r.raw)
	}
	u := do(t, "POST", base+"/v1/users", `{"email":"trace@example.com","name":"Trace"}`)
	body := fmt.Sprintf(`{"userId":%q,"items":[{"sku":"A","quantity":1}],"paymentToken":"tok_approve","idempotencyKey":"k","wait":true}`, path(u.body, "user", "id"))
	if r := do(t, "POST", base+"/v1/orders", body, "X-Request-ID", "saga-trace-1"); path(r.body, "order", "status") != "ORDER_STATUS_CONFIRMED" {
		t.Fatalf("order: %d %s", r.status, r.raw)
	}
	// The saga's last calls may log just after the answer.
	want := []string{"CreateOrder", "GetUser", "BatchGetProducts", "ReserveStock", "Charge", "CommitStock"}
	var traces map[string][]string // trace id -> methods logged under it
	deadline := time.Now().Add(10 * time.Second)
	for {
		traces = map[string][]string{}
		written, err := os.ReadFile(logs.Name())
		if err != nil {
			t.Fatal(err)
		}
		for _, line := range strings.Split(string(written), "\n") {
			var l struct {
				RequestID string `json:"request_id"`
				TraceID   string `json:"trace_id"`
				Method    string `json:"grpc.method"`
			}
			if json.Unmarshal([]byte(line), &l) == nil && l.RequestID == "saga-trace-1" && l.Method != "" {
				traces[l.TraceID] = append(traces[l.TraceID], l.Method)
			}
		}
		logged := 0
		for _, methods := range traces {
			for _, m := range want {
				if slices.Contains(methods, m) {
					logged++
				}
			}
		}
		if logged == len(want) || time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if len(traces) != 1 {
		t.Errorf("the order's calls logged under %d traces, want one: %v", len(traces), traces)
	}
	for id, methods := range traces {
		for _, m := range want {
			if !slices.Contains(methods, m) || id == "" {
				t.Errorf("trace %q: logged %v, want %s among them", id, methods, m)
			}
		}
	}
}

// TestRESTTraceContext: a REST request's traceparent starts the gateway's
// trace only when the gateway trusts it (TrustTraceContext); by default
// the gateway starts a trace of its own, linked to the caller's, so a
// public client neither picks the trace ids the services log under nor
// forces its calls to be sampled.
func TestRESTTraceContext(t *testing.T) {
	const callerTrace = "4bf92f3577b34da6a3ce929d0e0e4736"
	for _, trust := range []bool{false, true} {
		t.Run(fmt.Sprintf("trust=%v", trust), func(t *testing.T) {
			rec := tracingtest.Record(t)
			sys := start(t, system.Config{TrustTraceContext: trust})
			r := do(t, "GET", "http://"+sys.HTTPAddr+"/v1/users?pageSize=1", "",
				"traceparent", "00-"+callerTrace+"-00f067aa0ba902b7-01")
			if r.status != 200 {
				t.Fatalf("list users: %d %s", r.status, r.raw)
			}
			var gw sdktrace.ReadOnlySpan
			deadline := time.Now().Add(10 * time.Second)
			for gw == nil {
				for _, s := range rec.Ended() {
					if s.Name() == "GET" && s.SpanKind() == trace.SpanKindServer {
						gw = s
					}
				}
				if gw == nil && time.Now().After(deadline) {
					t.Fatal("no gateway span ended")
				}
				time.Sleep(20 * time.Millisecond)
			}
			continued := gw.SpanContext().TraceID().String() == callerTrace
			linked := len(gw.Links()) == 1 && gw.Links()[0].SpanContext.TraceID().String() == callerTrace
			if continued != trust || linked == trust {
				t.Errorf("gateway span in trace %s, links %v: continued the caller's trace %v, linked to it %v; want continued %v",
					gw.SpanContext().TraceID(), gw.Links(), continued, linked, trust)
			}
		})
	}
}
