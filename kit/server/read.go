package server

import (
	"context"
	"slices"
	"time"

	"google.golang.org/grpc"
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
// failure.

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
				s.unread(ctx, fullMethod, start, err)
			}
			return err
		}, interceptor)
	}
}

// unread writes the access log line of a unary call whose request could
// not be read and counts the call, as the interceptors it never reached
// would have.
func (s *Server) unread(ctx context.Context, fullMethod string, start time.Time, err error) {
	s.metrics.UnreadCall(fullMethod, start, err)
	if s.outer.log != nil {
		logCall(s.outer.incoming(ctx), s.outer.log, fullMethod, "unary", start, err, requestUnread)
	}
}
