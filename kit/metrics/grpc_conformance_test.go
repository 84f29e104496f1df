package metrics

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	grpcprom "github.com/grpc-ecosystem/go-grpc-middleware/providers/prometheus"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/test/bufconn"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// waitFor bounds every wait on the test server, so a broken scenario fails
// instead of hanging.
const waitFor = 10 * time.Second

const testService = "duet.metricstest.v1.Test"

// Every call to the test service says how it should go in the "behaviour"
// metadata entry, as ";"-separated key=value pairs:
//
//	send=N     server-streaming: send N messages first
//	recv=N     client-streaming and bidi: end after reading N messages
//	code=N     end with status code N (0: OK)
//	wrap=1     wrap the status error with fmt.Errorf
//	plain=1    end with a plain (non-status) error
//	ctxerr=1   end with a bare context.DeadlineExceeded
//	block=1    signal entry, then wait for the call's context to end and
//	           return its error
type behaviour struct {
	send, recv         int
	code               codes.Code
	wrap, plain, block bool
	ctxErr             bool
}

func parseBehaviour(ctx context.Context) behaviour {
	var b behaviour
	md, _ := metadata.FromIncomingContext(ctx)
	for _, v := range md.Get("behaviour") {
		for _, kv := range strings.Split(v, ";") {
			k, val, _ := strings.Cut(kv, "=")
			n, _ := strconv.Atoi(val)
			switch k {
			case "send":
				b.send = n
			case "recv":
				b.recv = n
			case "code":
				b.code = codes.Code(n)
			case "wrap":
				b.wrap = true
			case "plain":
				b.plain = true
			case "ctxerr":
				b.ctxErr = true
			case "block":
				b.block = true
			}
		}
	}
	return b
}

// end is how the handler finishes, once any messages are exchanged.
func (b behaviour) end(ctx context.Context, srv *testServer) error {
	switch {
	case b.block:
		srv.entered <- struct{}{}
		<-ctx.Done()
		return ctx.Err()
	case b.plain:
		return errors.New("plain failure")
	case b.ctxErr:
		return context.DeadlineExceeded
	case b.code == codes.OK:
		return nil
	case b.wrap:
		return fmt.Errorf("wrapped: %w", status.Error(b.code, "failure"))
	}
	return status.Error(b.code, "failure")
}

// testServer implements the hand-written test service below and tracks
// calls in flight, so a test can wait until the server has recorded every
// call before it gathers metrics.
type testServer struct {
	entered  chan struct{}
	inflight atomic.Int64
	idle     chan struct{} // gets a token whenever a call ends
}

func newTestServer() *testServer {
	return &testServer{entered: make(chan struct{}, 64), idle: make(chan struct{}, 1)}
}

func (s *testServer) track() func() {
	s.inflight.Add(1)
	return func() {
		s.inflight.Add(-1)
		select {
		case s.idle <- struct{}{}:
		default:
		}
	}
}

// trackUnary and trackStream run outside the metrics interceptors, so a
// call counts as ended only once its metrics are recorded.
func (s *testServer) trackUnary(ctx context.Context, req any, _ *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	defer s.track()()
	return handler(ctx, req)
}

func (s *testServer) trackStream(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	defer s.track()()
	return handler(srv, ss)
}

func (s *testServer) waitIdle(t *testing.T) {
	t.Helper()
	deadline := time.NewTimer(waitFor)
	defer deadline.Stop()
	for s.inflight.Load() != 0 {
		select {
		case <-s.idle:
		case <-deadline.C:
			t.Fatalf("%d calls still in flight on the server", s.inflight.Load())
		}
	}
}

func (s *testServer) waitEntered(t *testing.T) {
	t.Helper()
	select {
	case <-s.entered:
	case <-time.After(waitFor):
		t.Fatal("server handler never started")
	}
}

// unaryMethod makes the handler of a unary method from what it does.
func unaryMethod(name string, do func(ctx context.Context, srv *testServer, in any) (any, error)) grpc.MethodDesc {
	return grpc.MethodDesc{MethodName: name, Handler: func(srv any, ctx context.Context, dec func(any) error, interceptor grpc.UnaryServerInterceptor) (any, error) {
		in := new(wrapperspb.StringValue)
		if err := dec(in); err != nil {
			return nil, err
		}
		h := func(ctx context.Context, req any) (any, error) { return do(ctx, srv.(*testServer), req) }
		if interceptor == nil {
			return h(ctx, in)
		}
		return interceptor(ctx, in, &grpc.UnaryServerInfo{Server: srv, FullMethod: "/" + testService + "/" + name}, h)
	}}
}

func serverStreamHandler(srv any, ss grpc.ServerStream) error {
	ctx := ss.Context()
	b := parseBehaviour(ctx)
	in := new(wrapperspb.StringValue)
	if err := ss.RecvMsg(in); err != nil {
		return err
	}
	for i := range b.send {
		if err := ss.SendMsg(wrapperspb.String(strconv.Itoa(i))); err != nil {
			return err
		}
	}
	return b.end(ctx, srv.(*testServer))
}

func clientStreamHandler(srv any, ss grpc.ServerStream) error {
	ctx := ss.Context()
	b := parseBehaviour(ctx)
	n := 0
	for b.code == codes.OK || n < b.recv {
		err := ss.RecvMsg(new(wrapperspb.StringValue))
		if err == io.EOF {
			break
		}
		if err != nil {
			return err
		}
		n++
	}
	if err := b.end(ctx, srv.(*testServer)); err != nil {
		return err
	}
	return ss.SendMsg(wrapperspb.String(strconv.Itoa(n)))
}

func bidiHandler(srv any, ss grpc.ServerStream) error {
	ctx := ss.Context()
	b := parseBehaviour(ctx)
	for n := 0; b.code == codes.OK || n < b.recv; n++ {
		in := new(wrapperspb.StringValue)
		err := ss.RecvMsg(in)
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
		if err := ss.SendMsg(in); err != nil {
			return err
		}
	}
	return b.end(ctx, srv.(*testServer))
}

var testDesc = grpc.ServiceDesc{
	ServiceName: testService,
	HandlerType: (*any)(nil),
	Methods: []grpc.MethodDesc{
		unaryMethod("Unary", func(ctx context.Context, srv *testServer, in any) (any, error) {
			if err := parseBehaviour(ctx).end(ctx, srv); err != nil {
				return nil, err
			}
			return in, nil
		}),
		unaryMethod("Other", func(_ context.Context, _ *testServer, in any) (any, error) { return in, nil }),
		// Fail always fails, so it never gets a msg_sent series.
		unaryMethod("Fail", func(context.Context, *testServer, any) (any, error) {
			return nil, status.Error(codes.Unavailable, "always")
		}),
	},
	Streams: []grpc.StreamDesc{
		{StreamName: "ServerStream", Handler: serverStreamHandler, ServerStreams: true},
		{StreamName: "ClientStream", Handler: clientStreamHandler, ClientStreams: true},
		{StreamName: "Bidi", Handler: bidiHandler, ServerStreams: true, ClientStreams: true},
		// Upload is ClientStream under another name, called only with
		// success, which grpcprom never counts as handled on the client.
		{StreamName: "Upload", Handler: clientStreamHandler, ClientStreams: true},
	},
}

var (
	serverStreamDesc = &testDesc.Streams[0]
	clientStreamDesc = &testDesc.Streams[1]
	bidiDesc         = &testDesc.Streams[2]
	uploadDesc       = &testDesc.Streams[3]
)

// interceptorSet is one implementation under test, on both sides.
type interceptorSet struct {
	unaryServer  grpc.UnaryServerInterceptor
	streamServer grpc.StreamServerInterceptor
	unaryClient  grpc.UnaryClientInterceptor
	streamClient grpc.StreamClientInterceptor
}

func grpcpromSet(reg *prometheus.Registry) interceptorSet {
	sm := grpcprom.NewServerMetrics(grpcprom.WithServerHandlingTimeHistogram(grpcprom.WithHistogramBuckets(handlingBuckets())))
	cm := grpcprom.NewClientMetrics(grpcprom.WithClientHandlingTimeHistogram(grpcprom.WithHistogramBuckets(handlingBuckets())))
	reg.MustRegister(sm, cm)
	return interceptorSet{sm.UnaryServerInterceptor(), sm.StreamServerInterceptor(), cm.UnaryClientInterceptor(), cm.StreamClientInterceptor()}
}

func ownSet(reg *prometheus.Registry) interceptorSet {
	sm := NewServerMetrics(handlingBuckets())
	cm := NewClientMetrics(handlingBuckets())
	reg.MustRegister(sm, cm)
	return interceptorSet{sm.UnaryServerInterceptor(), sm.StreamServerInterceptor(), cm.UnaryClientInterceptor(), cm.StreamClientInterceptor()}
}

// harness is a test server and a client connected to it over bufconn.
type harness struct {
	t   *testing.T
	srv *testServer
	cc  *grpc.ClientConn
}

func startHarness(t *testing.T, set interceptorSet) *harness {
	t.Helper()
	lis := bufconn.Listen(1 << 20)
	ts := newTestServer()
	gs := grpc.NewServer(
		grpc.ChainUnaryInterceptor(ts.trackUnary, set.unaryServer),
		grpc.ChainStreamInterceptor(ts.trackStream, set.streamServer),
	)
	gs.RegisterService(&testDesc, ts)
	served := make(chan error, 1)
	go func() { served <- gs.Serve(lis) }()
	cc, err := grpc.NewClient("passthrough:///bufconn",
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return lis.DialContext(ctx) }),
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithUnaryInterceptor(set.unaryClient),
		grpc.WithStreamInterceptor(set.streamClient),
	)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cc.Close()
		gs.Stop()
		if err := <-served; err != nil {
			t.Errorf("serve: %v", err)
		}
	})
	return &harness{t: t, srv: ts, cc: cc}
}

func withBehaviour(ctx context.Context, b string) context.Context {
	return metadata.AppendToOutgoingContext(ctx, "behaviour", b)
}

func (h *harness) unary(ctx context.Context, method, b string) error {
	return h.cc.Invoke(withBehaviour(ctx, b), method, wrapperspb.String("hi"), new(wrapperspb.StringValue))
}

// expectCode fails the test unless err carries want, so that a scenario
// that goes differently than planned does not pass unnoticed.
func (h *harness) expectCode(what string, err error, want codes.Code) {
	h.t.Helper()
	if got := status.Code(err); got != want {
		h.t.Errorf("%s: got %v (%v), want %v", what, got, err, want)
	}
}

// open starts a call of desc's method with behaviour b.
func (h *harness) open(ctx context.Context, desc *grpc.StreamDesc, b string) grpc.ClientStream {
	h.t.Helper()
	cs, err := h.cc.NewStream(withBehaviour(ctx, b), desc, "/"+testService+"/"+desc.StreamName)
	if err != nil {
		h.t.Fatal(err)
	}
	return cs
}

// sendAndClose sends n messages, reading one back after each if echo, and
// then closes the sending side.
func (h *harness) sendAndClose(cs grpc.ClientStream, n int, echo bool) {
	h.t.Helper()
	for range n {
		if err := cs.SendMsg(wrapperspb.String("hi")); err != nil {
			h.t.Fatal(err)
		}
		if !echo {
			continue
		}
		if err := cs.RecvMsg(new(wrapperspb.StringValue)); err != nil {
			h.t.Fatal(err)
		}
	}
	if err := cs.CloseSend(); err != nil {
		h.t.Fatal(err)
	}
}

// recvAll reads until RecvMsg fails and returns how many messages came and
// the error that ended them.
func recvAll(cs grpc.ClientStream) (int, error) {
	for n := 0; ; n++ {
		if err := cs.RecvMsg(new(wrapperspb.StringValue)); err != nil {
			return n, err
		}
	}
}

const unaryPath = "/" + testService + "/Unary"

// scenarios is the call sequence both implementations see. Each runs to
// completion on the client; blocked server handlers are waited for by
// waitIdle before metrics are gathered.
var scenarios = []struct {
	name string
	run  func(ctx context.Context, h *harness)
}{
	{"unary ok", func(ctx context.Context, h *harness) {
		for range 3 {
			h.expectCode("Unary", h.unary(ctx, unaryPath, ""), codes.OK)
		}
		h.expectCode("Other", h.unary(ctx, "/"+testService+"/Other", ""), codes.OK)
	}},
	{"unary method that always fails", func(ctx context.Context, h *harness) {
		h.expectCode("Fail", h.unary(ctx, "/"+testService+"/Fail", ""), codes.Unavailable)
	}},
	{"unary status errors", func(ctx context.Context, h *harness) {
		for _, c := range []codes.Code{codes.InvalidArgument, codes.NotFound, codes.Unavailable, codes.NotFound, codes.Internal} {
			h.expectCode("Unary", h.unary(ctx, unaryPath, fmt.Sprintf("code=%d", c)), c)
		}
	}},
	{"unary wrapped status error", func(ctx context.Context, h *harness) {
		h.expectCode("Unary", h.unary(ctx, unaryPath, fmt.Sprintf("code=%d;wrap=1", codes.AlreadyExists)), codes.AlreadyExists)
	}},
	{"unary plain error", func(ctx context.Context, h *harness) {
		h.expectCode("Unary", h.unary(ctx, unaryPath, "plain=1"), codes.Unknown)
	}},
	{"unary bare context error", func(ctx context.Context, h *harness) {
		h.expectCode("Unary", h.unary(ctx, unaryPath, "ctxerr=1"), codes.DeadlineExceeded)
	}},
	// No scenario ends with a code past Unauthenticated: grpcprom labels
	// one "Code(N)", these metrics Unknown (TestPeerChosenCodes).
	{"unary cancelled while running", func(ctx context.Context, h *harness) {
		ctx, cancel := context.WithCancel(ctx)
		done := make(chan error, 1)
		go func() { done <- h.unary(ctx, unaryPath, "block=1") }()
		h.srv.waitEntered(h.t)
		cancel()
		h.expectCode("Unary", <-done, codes.Canceled)
	}},
	{"unary deadline already passed", func(ctx context.Context, h *harness) {
		ctx, cancel := context.WithDeadline(ctx, time.Now().Add(-time.Second))
		defer cancel()
		h.expectCode("Unary", h.unary(ctx, unaryPath, ""), codes.DeadlineExceeded)
	}},
	{"unary already cancelled", func(ctx context.Context, h *harness) {
		ctx, cancel := context.WithCancel(ctx)
		cancel()
		h.expectCode("Unary", h.unary(ctx, unaryPath, ""), codes.Canceled)
	}},
	{"unary unimplemented and malformed methods", func(ctx context.Context, h *harness) {
		h.expectCode("Missing", h.unary(ctx, "/"+testService+"/Missing", ""), codes.Unimplemented)
		h.expectCode("malformed", h.unary(ctx, "malformed", ""), codes.Unimplemented)
	}},
	{"server stream", func(ctx context.Context, h *harness) {
		for _, tc := range []struct {
			b        string
			messages int
			code     codes.Code
		}{
			{"send=3", 3, codes.OK},
			{"send=0", 0, codes.OK},
			{fmt.Sprintf("send=2;code=%d", codes.FailedPrecondition), 2, codes.FailedPrecondition},
			{fmt.Sprintf("code=%d", codes.NotFound), 0, codes.NotFound},
		} {
			cs := h.open(ctx, serverStreamDesc, tc.b)
			h.sendAndClose(cs, 1, false)
			n, err := recvAll(cs)
			if err == io.EOF {
				err = nil
			}
			h.expectCode(tc.b, err, tc.code)
			if n != tc.messages {
				h.t.Errorf("%s: got %d messages, want %d", tc.b, n, tc.messages)
			}
		}
	}},
	{"server stream read again after its end", func(ctx context.Context, h *harness) {
		cs := h.open(ctx, serverStreamDesc, "send=1")
		h.sendAndClose(cs, 1, false)
		if _, err := recvAll(cs); err != io.EOF {
			h.t.Fatalf("got %v, want io.EOF", err)
		}
		if err := cs.RecvMsg(new(wrapperspb.StringValue)); err == nil {
			h.t.Fatal("RecvMsg after the end succeeded")
		}
	}},
	{"server stream cancelled while running", func(ctx context.Context, h *harness) {
		ctx, cancel := context.WithCancel(ctx)
		defer cancel()
		cs := h.open(ctx, serverStreamDesc, "send=2;block=1")
		h.sendAndClose(cs, 1, false)
		for range 2 {
			if err := cs.RecvMsg(new(wrapperspb.StringValue)); err != nil {
				h.t.Fatal(err)
			}
		}
		h.srv.waitEntered(h.t)
		cancel()
		_, err := recvAll(cs)
		h.expectCode("ServerStream", err, codes.Canceled)
	}},
	{"server stream already cancelled", func(ctx context.Context, h *harness) {
		ctx, cancel := context.WithCancel(ctx)
		cancel()
		_, err := h.cc.NewStream(ctx, serverStreamDesc, "/"+testService+"/ServerStream")
		h.expectCode("NewStream", err, codes.Canceled)
	}},
	{"client stream", func(ctx context.Context, h *harness) {
		for _, tc := range []struct {
			b    string
			send int
			code codes.Code
		}{
			{"", 3, codes.OK},
			{"", 0, codes.OK},
			{fmt.Sprintf("recv=1;code=%d", codes.ResourceExhausted), 1, codes.ResourceExhausted},
			{fmt.Sprintf("code=%d", codes.PermissionDenied), 0, codes.PermissionDenied},
		} {
			cs := h.open(ctx, clientStreamDesc, tc.b)
			h.sendAndClose(cs, tc.send, false)
			h.expectCode(fmt.Sprintf("ClientStream %q", tc.b), cs.RecvMsg(new(wrapperspb.StringValue)), tc.code)
		}
	}},
	{"client stream that only succeeds", func(ctx context.Context, h *harness) {
		for range 2 {
			cs := h.open(ctx, uploadDesc, "")
			h.sendAndClose(cs, 1, false)
			h.expectCode("Upload", cs.RecvMsg(new(wrapperspb.StringValue)), codes.OK)
		}
	}},
	{"bidi stream", func(ctx context.Context, h *harness) {
		for _, tc := range []struct {
			b    string
			send int
			code codes.Code
		}{
			{"", 3, codes.OK},
			{fmt.Sprintf("recv=1;code=%d", codes.InvalidArgument), 1, codes.InvalidArgument},
			{fmt.Sprintf("code=%d", codes.Aborted), 0, codes.Aborted},
		} {
			cs := h.open(ctx, bidiDesc, tc.b)
			h.sendAndClose(cs, tc.send, true)
			_, err := recvAll(cs)
			if err == io.EOF {
				err = nil
			}
			h.expectCode(fmt.Sprintf("Bidi %q", tc.b), err, tc.code)
		}
	}},
	{"bidi stream cancelled while running", func(ctx context.Context, h *harness) {
		ctx, cancel := context.WithCancel(ctx)
		defer cancel()
		cs := h.open(ctx, bidiDesc, "")
		if err := cs.SendMsg(wrapperspb.String("hi")); err != nil {
			h.t.Fatal(err)
		}
		if err := cs.RecvMsg(new(wrapperspb.StringValue)); err != nil {
			h.t.Fatal(err)
		}
		cancel()
		_, err := recvAll(cs)
		h.expectCode("Bidi", err, codes.Canceled)
	}},
	{"concurrent calls", func(ctx context.Context, h *harness) {
		var wg sync.WaitGroup
		for g := range 8 {
			wg.Go(func() {
				for i := range 25 {
					c := []codes.Code{codes.OK, codes.NotFound, codes.Unavailable}[(g+i)%3]
					h.expectCode("Unary", h.unary(ctx, unaryPath, fmt.Sprintf("code=%d", c)), c)
				}
			})
		}
		wg.Wait()
	}},
}

// TestConformsToGRPCProm runs the same calls through grpcprom's
// interceptors and through ours, each on its own registry, and checks that
// both expose the same grpc_* metrics: names, help, types, label pairs,
// counter values, and histogram sample counts and bucket bounds. Latency
// (histogram sums and bucket counts) differs from run to run and is left
// out.
func TestConformsToGRPCProm(t *testing.T) {
	run := func(t *testing.T, newSet func(*prometheus.Registry) interceptorSet) string {
		reg := prometheus.NewRegistry()
		h := startHarness(t, newSet(reg))
		ctx, cancel := context.WithTimeout(context.Background(), waitFor)
		defer cancel()
		for _, sc := range scenarios {
			h.t = t
			t.Run(sc.name, func(t *testing.T) {
				h.t = t
				sc.run(ctx, h)
			})
		}
		h.t = t
		h.srv.waitIdle(t)
		return exposition(t, reg)
	}
	var want, got string
	t.Run("grpcprom", func(t *testing.T) { want = run(t, grpcpromSet) })
	t.Run("own", func(t *testing.T) { got = run(t, ownSet) })
	if t.Failed() {
		return
	}
	for _, name := range []string{
		"grpc_server_started_total", "grpc_server_handled_total", "grpc_server_msg_received_total",
		"grpc_server_msg_sent_total", "grpc_server_handling_seconds",
		"grpc_client_started_total", "grpc_client_handled_total", "grpc_client_msg_received_total",
		"grpc_client_msg_sent_total", "grpc_client_handling_seconds",
	} {
		if !strings.Contains(want, "# "+name+" ") {
			t.Errorf("grpcprom exposed no %s; the scenarios no longer cover it", name)
		}
	}
	if got != want {
		t.Errorf("exposition differs from grpcprom's\n%s", lineDiff(want, got))
	}
}

// exposition renders reg's grpc_* families as text, without anything that
// depends on timing: histogram sums, bucket counts and created timestamps.
func exposition(t *testing.T, reg *prometheus.Registry) string {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	for _, mf := range mfs {
		if !strings.HasPrefix(mf.GetName(), "grpc_") {
			continue
		}
		fmt.Fprintf(&b, "# %s %s %q\n", mf.GetName(), mf.GetType(), mf.GetHelp())
		lines := make([]string, 0, len(mf.GetMetric()))
		for _, m := range mf.GetMetric() {
			lines = append(lines, metricLine(mf.GetName(), m))
		}
		sort.Strings(lines) // Gather sorts already; this keeps the diff stable regardless.
		for _, l := range lines {
			b.WriteString(l)
			b.WriteByte('\n')
		}
	}
	return b.String()
}

func metricLine(name string, m *dto.Metric) string {
	var b strings.Builder
	b.WriteString(name)
	b.WriteByte('{')
	for i, lp := range m.GetLabel() {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, "%s=%q", lp.GetName(), lp.GetValue())
	}
	b.WriteString("} ")
	switch {
	case m.Counter != nil:
		fmt.Fprintf(&b, "%g", m.GetCounter().GetValue())
	case m.Histogram != nil:
		h := m.GetHistogram()
		fmt.Fprintf(&b, "count=%d le=[", h.GetSampleCount())
		for i, bk := range h.GetBucket() {
			if i > 0 {
				b.WriteByte(' ')
			}
			fmt.Fprintf(&b, "%g", bk.GetUpperBound())
		}
		b.WriteByte(']')
	default:
		fmt.Fprintf(&b, "unexpected %v", m)
	}
	return b.String()
}

// lineDiff lists the lines only one of want and got has.
func lineDiff(want, got string) string {
	count := map[string]int{}
	for _, l := range strings.Split(want, "\n") {
		count[l]++
	}
	for _, l := range strings.Split(got, "\n") {
		count[l]--
	}
	var b strings.Builder
	for _, l := range strings.Split(want, "\n") {
		if count[l] > 0 {
			fmt.Fprintf(&b, "- %s\n", l)
		}
	}
	for _, l := range strings.Split(got, "\n") {
		if count[l] < 0 {
			fmt.Fprintf(&b, "+ %s\n", l)
		}
	}
	return b.String()
}
