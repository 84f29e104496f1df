package server

import (
	"context"
	"errors"
	"time"

	"google.golang.org/grpc"

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
	stop := context.AfterFunc(d.draining, func() { cancel(errDraining) })
	defer stop()
	err := handler(srv, &drainStream{ServerStream: ss, ctx: ctx, bidi: info.IsClientStream})
	if errors.Is(context.Cause(ctx), errDraining) {
		// Whatever the handler made of its context ending, the client
		// must learn that it may open the stream again.
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
}

func (s *drainStream) Context() context.Context { return s.ctx }

// RecvMsg waits for the client's next message or for Shutdown, whichever
// comes first. grpc-go's own receive cannot be cancelled but by ending the
// call, which the handler does once this returns: until then it runs on in
// a goroutine of its own, and ends with the call.
func (s *drainStream) RecvMsg(m any) error {
	if !s.bidi {
		return s.ServerStream.RecvMsg(m)
	}
	if s.cutOff {
		return errShuttingDown()
	}
	done := make(chan error, 1)
	go func() { done <- s.ServerStream.RecvMsg(m) }()
	select {
	case err := <-done:
		return err
	case <-s.ctx.Done():
		if errors.Is(context.Cause(s.ctx), errDraining) {
			s.cutOff = true
			return errShuttingDown()
		}
		// The client went away: grpc-go's receive fails as well.
		return <-done
	}
}

// errShuttingDown is the error with which Shutdown ends a stream.
func errShuttingDown() error {
	return apierr.Unavailable(apierr.ReasonShuttingDown, "the server is shutting down; open the stream again", ShutdownRetryAfter)
}
