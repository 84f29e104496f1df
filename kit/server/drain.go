package server

import (
	"context"
	"errors"
	"fmt"
	"runtime/debug"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/duetkit/duet/kit/apierr"
)

// ShutdownRetryAfter is the RetryInfo delay of the UNAVAILABLE
// (apierr.ReasonShuttingDown) with which Shutdown ends long-lived streams.
const ShutdownRetryAfter = time.Second

// errDraining is the cause with which streamDrain cancels a stream.
var errDraining = errors.New("server: shutting down")

// streamDrain ends server-streaming and bidirectional calls when Shutdown
// starts. They are watches and subscriptions: they end when the client
// goes away, not by themselves, so a graceful stop that waited for them
// would wait out its whole bound and then cut every other call off too.
// Client-streaming calls (uploads) and the methods listed in finite drain
// like unary ones.
type streamDrain struct {
	// draining is done when Shutdown starts.
	draining context.Context
	finite   map[string]bool
}

func (d *streamDrain) intercept(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	if !info.IsServerStream || d.finite[info.FullMethod] {
		return handler(srv, ss)
	}
	ctx, cancel := context.WithCancelCause(ss.Context())
	defer cancel(nil)
	ds := &drainStream{ServerStream: ss, ctx: ctx, bidi: info.IsClientStream}
	end := func() { cancel(errDraining) }
	if info.FullMethod == healthpb.Health_Watch_FullMethodName {
		ds.health = newLastWord(end, healthWatchGrace)
		end = ds.health.drain
	}
	stop := context.AfterFunc(d.draining, end)
	defer stop()
	err := handler(srv, ds)
	if err != nil && errors.Is(context.Cause(ctx), errDraining) {
		// Whatever error the handler made of its context ending, the
		// client must learn that it may open the stream again. A handler
		// that finished (a watch that sent its terminal state as Shutdown
		// started) keeps its own clean end.
		return errShuttingDown()
	}
	return err
}

// drainStream is a stream whose context Shutdown cancels.
type drainStream struct {
	grpc.ServerStream
	ctx context.Context
	// bidi: the client streams too, and a handler may be waiting in
	// RecvMsg for its next message, which a context does not interrupt.
	bidi bool
	// cutOff is set once a RecvMsg was abandoned to Shutdown.
	cutOff bool
	// health is set on a grpc.health.v1 Watch.
	health *lastWord
}

// SendMsg sends m, and lets a health Watch end once it has said its
// last word.
func (s *drainStream) SendMsg(m any) error {
	err := s.ServerStream.SendMsg(m)
	if s.health != nil {
		s.health.sent(m)
	}
	return err
}

// healthWatchGrace bounds how long Shutdown waits for a health Watch to
// send the NOT_SERVING that health.Shutdown gave it.
const healthWatchGrace = 500 * time.Millisecond

// lastWord ends a grpc.health.v1 Watch at Shutdown only once it has told
// its client NOT_SERVING. Shutdown queues that status for every watcher
// just before streams are ended, and grpc-go's Watch, finding both the
// update and its context's end ready, picks one at random: half the
// watchers would lose the last word that lets them stop sending at once.
type lastWord struct {
	end   func()
	grace time.Duration
	// serving: the last status sent was SERVING, or none has been sent
	// yet (the first, being sent when Shutdown starts, may be SERVING).
	serving atomic.Bool
	// draining: Shutdown has started.
	draining atomic.Bool
}

// newLastWord returns a lastWord that ends its Watch with end, at most
// grace after Shutdown started.
func newLastWord(end func(), grace time.Duration) *lastWord {
	l := &lastWord{end: end, grace: grace}
	l.serving.Store(true)
	return l
}

// sent records a status sent, and ends the stream if Shutdown waits for it.
func (l *lastWord) sent(m any) {
	if r, ok := m.(*healthpb.HealthCheckResponse); ok {
		l.serving.Store(r.GetStatus() == healthpb.HealthCheckResponse_SERVING)
	}
	if l.draining.Load() && !l.serving.Load() {
		l.end()
	}
}

// drain runs when Shutdown starts: the stream ends now if its client
// already knows, else after its next send, or after healthWatchGrace.
// Both sides store before they load, so one of them sees the other.
func (l *lastWord) drain() {
	l.draining.Store(true)
	if !l.serving.Load() {
		l.end()
		return
	}
	time.AfterFunc(l.grace, l.end)
}

func (s *drainStream) Context() context.Context { return s.ctx }

// RecvMsg waits for the client's next message or for Shutdown, whichever
// comes first. grpc-go's own receive cannot be cancelled but by ending the
// call, which the handler does once this returns: until then it runs on in
// a goroutine of its own, and ends with the call. It may still decode into
// m meanwhile, so a handler must not read m after RecvMsg failed
// (generated Recv methods allocate a new message each time). The cost is a
// goroutine per message received on a bidirectional stream.
func (s *drainStream) RecvMsg(m any) error {
	if !s.bidi {
		return s.ServerStream.RecvMsg(m)
	}
	if s.cutOff {
		return errShuttingDown()
	}
	done := make(chan received, 1)
	go func() {
		// A panic in the receive (a codec, a stats handler) would end
		// the process from here; it is raised again on the handler's
		// goroutine, where the recovery interceptor turns it into
		// INTERNAL as it would without this goroutine.
		defer func() {
			if p := recover(); p != nil {
				done <- received{panicked: fmt.Sprintf("%v (in RecvMsg)\n%s", p, debug.Stack())}
			}
		}()
		done <- received{err: s.ServerStream.RecvMsg(m)}
	}()
	select {
	case r := <-done:
		return r.result()
	case <-s.ctx.Done():
		if errors.Is(context.Cause(s.ctx), errDraining) {
			s.cutOff = true
			return errShuttingDown()
		}
		// The client went away: grpc-go's receive fails as well.
		return (<-done).result()
	}
}

// received is the outcome of a RecvMsg run on a goroutine of its own.
type received struct {
	err      error
	panicked any // non-nil: the receive panicked with this
}

func (r received) result() error {
	if r.panicked != nil {
		panic(r.panicked)
	}
	return r.err
}

// errShuttingDown is the error with which Shutdown ends a stream.
func errShuttingDown() error {
	return apierr.Unavailable(apierr.ReasonShuttingDown, "the server is shutting down; open the stream again", ShutdownRetryAfter)
}
