package server

import (
	"context"
	"errors"
	"io"
	"slices"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// A unary request the server cannot read.
//
// grpc-go reads a unary call's request in the generated handler, before it
// calls any interceptor, and answers a failure itself: a request over
// MaxRecvMsgSize (RESOURCE_EXHAUSTED), bytes that are not the method's
// message, cut short or missing (INTERNAL), or none before the call's
// deadline. Such a call passed no interceptor, so neither the access log
// nor the metrics showed it: a client sending what the server refuses
// that way went unseen. reporting wraps each unary method's handler so
// that it is logged and counted as any other call. Its answer stays
// grpc-go's, which has written it by the time the handler hears of the
// failure. (A request compressed with an encoding the server lacks is
// refused before any handler, UNIMPLEMENTED, and still shows nowhere but
// in a stats.Handler.)
//
// A stream's handler reads its messages inside the stream interceptors,
// which log and count such a failure already; readFailures marks it so
// that its line has the level a unary call's has.

// reporting returns a copy of desc whose unary methods log and count a
// call whose request cannot be read (Server.unread).
func (s *Server) reporting(desc *grpc.ServiceDesc) *grpc.ServiceDesc {
	d := *desc
	d.Methods = slices.Clone(desc.Methods)
	for i, m := range d.Methods {
		d.Methods[i].Handler = s.reportUnread("/"+desc.ServiceName+"/"+m.MethodName, m.Handler)
	}
	return &d
}

// reportUnread wraps a unary method's handler: its request is read as
// before, and a failure to read it goes through Server.unread.
func (s *Server) reportUnread(fullMethod string, handler grpc.MethodHandler) grpc.MethodHandler {
	return func(srv any, ctx context.Context, dec func(any) error, interceptor grpc.UnaryServerInterceptor) (any, error) {
		return handler(srv, ctx, func(req any) error {
			// Reading is the first thing a generated handler does: the
			// call's start, give or take a closure's allocation.
			start := time.Now()
			err := dec(req)
			if err != nil {
				err = sentStatus(err)
				s.unread(ctx, fullMethod, start, err)
			}
			return err
		}, interceptor)
	}
}

// sentStatus is the status grpc-go sent for err, a failure to read a
// request, as its toRPCErr makes it: a message cut short by the client's
// end of stream, which grpc-go returns bare when it comes after the
// request (reading on to find none), was INTERNAL; a context's error its
// code. Logged bare, the line and the metrics would say UNKNOWN.
func sentStatus(err error) error {
	if _, ok := status.FromError(err); ok {
		return err
	}
	if errors.Is(err, io.ErrUnexpectedEOF) {
		return status.Error(codes.Internal, err.Error())
	}
	return status.FromContextError(err).Err()
}

// unread writes the access log line of a unary call whose request could
// not be read and counts the call, as the interceptors it never reached
// would have.
func (s *Server) unread(ctx context.Context, fullMethod string, start time.Time, err error) {
	s.metrics.UnreadCall(fullMethod, start, err)
	if s.outer.log != nil {
		// An id made up here is not sent back: grpc-go has written the
		// call's status, and with it the trailers.
		ctx, _ = s.outer.incoming(ctx)
		logCall(ctx, s.outer.log, fullMethod, "unary", start, err, requestUnread)
	}
}

// readFailures is a server stream that remembers its first failure to
// receive a message, other than the client's end of stream.
type readFailures struct {
	grpc.ServerStream
	// failed is set once; kit/server's drain may run a RecvMsg on a
	// goroutine of its own that outlives the handler.
	failed atomic.Pointer[error]
}

func (r *readFailures) RecvMsg(m any) error {
	err := r.ServerStream.RecvMsg(m)
	if err != nil && err != io.EOF {
		r.failed.CompareAndSwap(nil, &err)
	}
	return err
}

// unread reports whether err, the end of the stream's handler, is the
// stream's failure to receive a message.
func (r *readFailures) unread(err error) bool {
	f := r.failed.Load()
	return err != nil && f != nil && errors.Is(err, *f)
}
