// Package validation checks incoming requests against the protovalidate
// rules written in the .proto contract, before any handler runs.
//
// go-grpc-middleware's protovalidate interceptor reports violations as
// buf.validate.Violations; Duet clients expect the standard
// google.rpc.BadRequest instead (the gateway and every gRPC client can read
// it), so this package converts them.
package validation

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"buf.build/go/protovalidate"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/proto"

	"github.com/duetkit/duet/kit/apierr"
)

// Check validates msg and returns nil, or an INVALID_ARGUMENT *apierr.Error
// with one BadRequest field violation per broken rule.
func Check(v protovalidate.Validator, msg proto.Message) error {
	err := v.Validate(msg)
	if err == nil {
		return nil
	}
	var verr *protovalidate.ValidationError
	if !errors.As(err, &verr) {
		// A rule that does not compile is our bug, not the caller's.
		return apierr.Internal()
	}
	details := make([]apierr.Detail, 0, len(verr.Violations))
	fields := make([]string, 0, len(verr.Violations))
	for _, viol := range verr.Violations {
		field := protovalidate.FieldPathString(viol.Proto.GetField())
		details = append(details, apierr.Field(field, viol.Proto.GetMessage()))
		fields = append(fields, fmt.Sprintf("%s: %s", field, viol.Proto.GetMessage()))
	}
	return apierr.New(codes.InvalidArgument, apierr.ReasonInvalidArgument,
		"invalid request: "+strings.Join(fields, "; "), details...)
}

// UnaryServerInterceptor rejects requests that break their contract's
// rules and lowers the UUIDs of those that keep them (LowerUUIDs).
func UnaryServerInterceptor(v protovalidate.Validator) grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		if msg, ok := req.(proto.Message); ok {
			if err := Check(v, msg); err != nil {
				return nil, err
			}
			LowerUUIDs(msg)
		}
		return handler(ctx, req)
	}
}

// StreamServerInterceptor checks every message a client streams in, and
// lowers the UUIDs of those that keep their rules.
func StreamServerInterceptor(v protovalidate.Validator) grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		return handler(srv, &stream{ServerStream: ss, v: v})
	}
}

type stream struct {
	grpc.ServerStream
	v protovalidate.Validator
}

func (s *stream) RecvMsg(m any) error {
	if err := s.ServerStream.RecvMsg(m); err != nil {
		return err
	}
	if msg, ok := m.(proto.Message); ok {
		if err := Check(s.v, msg); err != nil {
			return err
		}
		LowerUUIDs(msg)
	}
	return nil
}
