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
	"unicode/utf8"

	"buf.build/gen/go/bufbuild/protovalidate/protocolbuffers/go/buf/validate"
	"buf.build/go/protovalidate"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/proto"

	"github.com/duetkit/duet/kit/apierr"
)

// MaxViolations bounds the field violations one error lists; the message
// says how many more there were. A 4 MB request of two-byte list items can
// break a per-item rule two million times, and naming every one would cost
// the server gigabytes and the access log a line as long.
const MaxViolations = 100

// fullReportSize is the largest message (in encoded bytes) whose every
// broken rule is looked for. A larger message that breaks a rule is
// reported by its first violation only, found by protovalidate's fail-fast
// mode, so the work spent on a bad request stays bounded by its size
// rather than by the number of rules it breaks.
const fullReportSize = 16 << 10

// failFast is built once. protovalidate still copies its configuration for
// a call given options, one small allocation a request (and no second
// pass over a valid message).
var failFast = []protovalidate.ValidationOption{protovalidate.WithFailFast()}

// Check validates msg and returns nil, or an INVALID_ARGUMENT *apierr.Error
// with one BadRequest field violation per broken rule, at most
// MaxViolations of them. For a message over 16 KiB only the first broken
// rule found is reported.
func Check(v protovalidate.Validator, msg proto.Message) error {
	// A valid message costs one pass either way: fail-fast stops early
	// only at a violation.
	err := v.Validate(msg, failFast...)
	if err == nil {
		return nil
	}
	if proto.Size(msg) <= fullReportSize {
		if full := v.Validate(msg); full != nil {
			err = full
		}
	}
	var verr *protovalidate.ValidationError
	if !errors.As(err, &verr) {
		// A rule that does not compile is our bug, not the caller's.
		return apierr.Internal()
	}
	shown := verr.Violations
	if len(shown) > MaxViolations {
		shown = shown[:MaxViolations]
	}
	details := make([]apierr.Detail, 0, len(shown))
	fields := make([]string, 0, len(shown)+1)
	for _, viol := range shown {
		field := shortPath(protovalidate.FieldPathString(shortKeys(viol.Proto.GetField())))
		details = append(details, apierr.Field(field, viol.Proto.GetMessage()))
		fields = append(fields, fmt.Sprintf("%s: %s", field, viol.Proto.GetMessage()))
	}
	if more := len(verr.Violations) - len(shown); more > 0 {
		fields = append(fields, fmt.Sprintf("and %d more", more))
	}
	return apierr.New(codes.InvalidArgument, apierr.ReasonInvalidArgument,
		"invalid request: "+strings.Join(fields, "; "), details...)
}

// MaxMapKey bounds each map key in a field path as a violation reports
// it, in bytes; a longer one is cut at a character's start and ends in
// "…". A map key in a path ("labels[\"…\"].value") is the caller's own,
// up to the whole message's size, and echoed in full it made the error
// megabytes long: in the status message, in the BadRequest and in the
// access log, and, encoded for the trailer, past what the client would
// take. The path's other elements, and its end, are kept.
const MaxMapKey = 64

// shortKeys returns path with its string map keys cut to MaxMapKey bytes,
// a copy when any is longer.
func shortKeys(path *validate.FieldPath) *validate.FieldPath {
	long := false
	for _, el := range path.GetElements() {
		if len(el.GetStringKey()) > MaxMapKey {
			long = true
		}
	}
	if !long {
		return path
	}
	path = proto.CloneOf(path)
	for _, el := range path.GetElements() {
		if key := el.GetStringKey(); len(key) > MaxMapKey {
			el.Subscript = &validate.FieldPathElement_StringKey{StringKey: key[:runeStart(key, MaxMapKey)] + "…"}
		}
	}
	return path
}

// MaxFieldPath bounds a whole field path as a violation reports it, in
// bytes: a message that nests itself through maps or lists makes a path
// as deep as the request is large. A longer one keeps its first 128 bytes
// and its end, the field that broke the rule, with "…" between.
const MaxFieldPath = 512

func shortPath(path string) string {
	if len(path) <= MaxFieldPath {
		return path
	}
	head := runeStart(path, 128)
	tail := len(path) - (MaxFieldPath - 128 - len("…"))
	for tail < len(path) && !utf8.RuneStart(path[tail]) {
		tail++
	}
	return path[:head] + "…" + path[tail:]
}

// runeStart returns the largest index of s no greater than n at which a
// character starts, so that s[:i] cuts no character in two.
func runeStart(s string, n int) int {
	for n > 0 && n < len(s) && !utf8.RuneStart(s[n]) {
		n--
	}
	return n
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
