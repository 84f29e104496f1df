// Package apierr builds and reads gRPC status errors that carry structured
// details (google.rpc.ErrorInfo, BadRequest, PreconditionFailure, RetryInfo),
// so every error that crosses the wire has a code, a stable machine-readable
// reason, and, where it applies, the offending field.
//
// Handlers return an *Error; grpc-go turns it into a status through its
// GRPCStatus method. Clients read the reason with Reason and the rest with
// the other readers, whatever process produced the error.
package apierr

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"
	"unicode/utf8"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/protoadapt"
	"google.golang.org/protobuf/types/known/durationpb"
)

// Domain is the ErrorInfo domain of errors raised by Duet services.
const Domain = "duet.dev"

// Reasons shared by every service. Services add their own, such as
// EMAIL_TAKEN or PAYMENT_DECLINED; a reason never changes once published.
const (
	ReasonInvalidArgument = "INVALID_ARGUMENT"
	ReasonInternal        = "INTERNAL"
	ReasonUnavailable     = "UNAVAILABLE"
	ReasonDeadline        = "DEADLINE_EXCEEDED"
	ReasonCanceled        = "CANCELED"
	// ReasonShuttingDown (code UNAVAILABLE) ends a stream that would not
	// end by itself, a watch or a subscription, because the server is
	// shutting down: the client opens it again, on another instance or
	// after the restart.
	ReasonShuttingDown = "SHUTTING_DOWN"
	// ReasonConflict (code ABORTED): the call lost a race with a
	// concurrent one over the same data (a database deadlock or
	// serialisation failure) and had no effect; it may be sent again as
	// it is. See Conflict.
	ReasonConflict = "CONFLICT"
	// ReasonUnknownMethod (code UNIMPLEMENTED): no service on the server
	// has the method called; the client's contract is newer than the
	// server's, or it called the wrong server.
	ReasonUnknownMethod = "UNKNOWN_METHOD"
)

// ConflictRetryAfter is the RetryInfo delay of Conflict: the race is
// usually over by then.
const ConflictRetryAfter = 100 * time.Millisecond

// Error is a status error under construction. The zero value is not useful;
// start from New or one of the shorthands.
type Error struct {
	code     codes.Code
	reason   string
	message  string
	metadata map[string]string
	fields   []*errdetails.BadRequest_FieldViolation
	precond  []*errdetails.PreconditionFailure_Violation
	retry    time.Duration
	hasRetry bool
}

// Detail adds structured detail to an Error.
type Detail func(*Error)

// New returns an error with the given code, stable reason and human message.
func New(code codes.Code, reason, message string, details ...Detail) *Error {
	e := &Error{code: code, reason: reason, message: validUTF8(message)}
	for _, d := range details {
		d(e)
	}
	return e
}

// Metadata adds key/value pairs to the ErrorInfo, for example the id of the
// resource involved. Pairs are given as alternating keys and values.
func Metadata(kv ...string) Detail {
	return func(e *Error) {
		if e.metadata == nil {
			e.metadata = make(map[string]string, len(kv)/2)
		}
		for i := 0; i+1 < len(kv); i += 2 {
			e.metadata[validUTF8(kv[i])] = validUTF8(kv[i+1])
		}
	}
}

// Field adds a BadRequest field violation. field is the path of the field in
// the request, as in "items[0].quantity".
func Field(field, description string) Detail {
	return func(e *Error) {
		e.fields = append(e.fields, &errdetails.BadRequest_FieldViolation{Field: validUTF8(field), Description: validUTF8(description)})
	}
}

// Precondition adds a PreconditionFailure violation: typ names the kind of
// check ("USER", "PAYMENT"), subject what failed it ("users/42").
func Precondition(typ, subject, description string) Detail {
	return func(e *Error) {
		e.precond = append(e.precond, &errdetails.PreconditionFailure_Violation{Type: validUTF8(typ), Subject: validUTF8(subject), Description: validUTF8(description)})
	}
}

// validUTF8 replaces what is not UTF-8 in s (a request's own bytes,
// echoed) with U+FFFD. Protobuf strings must be UTF-8: one that is not
// fails the marshalling of the whole status, and grpc-go then sends the
// code and message without any details (no reason, no field, no
// RetryInfo).
func validUTF8(s string) string {
	if utf8.ValidString(s) {
		return s
	}
	return strings.ToValidUTF8(s, "\uFFFD")
}

// RetryAfter adds RetryInfo telling the client how long to wait before trying again.
func RetryAfter(d time.Duration) Detail {
	return func(e *Error) { e.retry, e.hasRetry = d, true }
}

// InvalidField is the usual validation error: INVALID_ARGUMENT, reason
// INVALID_ARGUMENT, naming one field.
func InvalidField(field, description string) *Error {
	return New(codes.InvalidArgument, ReasonInvalidArgument, fmt.Sprintf("invalid %s: %s", field, description), Field(field, description))
}

// NotFound is NOT_FOUND with the given reason, naming the missing resource in
// the ErrorInfo metadata under "id".
func NotFound(reason, what, id string) *Error {
	return New(codes.NotFound, reason, fmt.Sprintf("%s %q not found", what, id), Metadata("id", id))
}

// Unavailable is UNAVAILABLE with RetryInfo: a temporary failure worth retrying.
func Unavailable(reason, message string, retryAfter time.Duration) *Error {
	return New(codes.Unavailable, reason, message, RetryAfter(retryAfter))
}

// Conflict is ABORTED, reason ReasonConflict, with RetryInfo: the call
// lost a race with a concurrent one and had no effect.
func Conflict() *Error {
	return New(codes.Aborted, ReasonConflict, "the call conflicted with a concurrent one and had no effect; retry it",
		RetryAfter(ConflictRetryAfter))
}

// StoreRetryAfter is the RetryInfo delay of StoreUnavailable: long
// enough for a pool to reconnect or a failover to finish its first step.
const StoreRetryAfter = time.Second

// StoreUnavailable is UNAVAILABLE, reason ReasonUnavailable, with
// RetryInfo: the service's database is down, restarting or refusing
// connections for now (sqldb.IsUnavailable). The message does not say the
// call had no effect: a connection lost during a commit leaves that
// unknown, so a retried write must be idempotent or checked first.
func StoreUnavailable() *Error {
	return Unavailable(ReasonUnavailable, "the service's database is unavailable for now; retry later", StoreRetryAfter)
}

// Internal is an INTERNAL error whose message reveals nothing of the cause.
// Log the cause where it happened; never send it.
func Internal() *Error {
	return New(codes.Internal, ReasonInternal, "internal error")
}

// Error implements error.
func (e *Error) Error() string {
	if e == nil {
		return nilError
	}
	return fmt.Sprintf("rpc error: code = %s reason = %s desc = %s", e.code, e.reason, e.message)
}

// nilError is the text of a nil *Error returned as an error: a handler
// that declares `var err *apierr.Error` and returns it when nothing went
// wrong returns a non-nil error. It reads as an INTERNAL error, as the bug
// it is; reading its status used to panic outside every recovery
// interceptor, taking the process down.
const nilError = "apierr: a nil *Error returned as an error"

// Code returns the gRPC code (INTERNAL for a nil *Error).
func (e *Error) Code() codes.Code {
	if e == nil {
		return codes.Internal
	}
	return e.code
}

// GRPCStatus returns the status with all details attached; grpc-go calls it
// when a handler returns the error. A nil *Error is Internal's status.
func (e *Error) GRPCStatus() *status.Status {
	if e == nil {
		return Internal().GRPCStatus()
	}
	s := status.New(e.code, e.message)
	details := []protoadapt.MessageV1{&errdetails.ErrorInfo{Reason: e.reason, Domain: Domain, Metadata: e.metadata}}
	if len(e.fields) > 0 {
		details = append(details, &errdetails.BadRequest{FieldViolations: e.fields})
	}
	if len(e.precond) > 0 {
		details = append(details, &errdetails.PreconditionFailure{Violations: e.precond})
	}
	if e.hasRetry {
		details = append(details, &errdetails.RetryInfo{RetryDelay: durationpb.New(e.retry)})
	}
	withDetails, err := s.WithDetails(details...)
	if err != nil {
		return s
	}
	return withDetails
}

// details returns the status details of err, or nil when err carries no status.
func details(err error) []any {
	if err == nil {
		return nil
	}
	s, ok := status.FromError(err)
	if !ok {
		return nil
	}
	return s.Details()
}

// Info returns the ErrorInfo carried by err, or nil.
func Info(err error) *errdetails.ErrorInfo {
	for _, d := range details(err) {
		if info, ok := d.(*errdetails.ErrorInfo); ok {
			return info
		}
	}
	return nil
}

// Reason returns the stable reason carried by err, or "" when it has none.
func Reason(err error) string {
	if info := Info(err); info != nil {
		return info.GetReason()
	}
	return ""
}

// Is reports whether err carries the given reason.
func Is(err error, reason string) bool { return err != nil && Reason(err) == reason }

// Code returns the gRPC code of err: OK for nil, Unknown for an error without status.
func Code(err error) codes.Code { return status.Code(err) }

// CallCode is the code a call ends with when its handler returns err, as
// grpc-go sends it: a status error's code (wrapped or not), CANCELED or
// DEADLINE_EXCEEDED for a context error (bare or wrapped), where Code says
// Unknown, and Unknown for any other error. It builds no status for
// context and plain errors, as status.FromContextError would: the access
// log and the metrics call it on every call.
func CallCode(err error) codes.Code {
	if err == nil {
		return codes.OK
	}
	if s, ok := status.FromError(err); ok {
		return s.Code()
	}
	switch {
	case errors.Is(err, context.DeadlineExceeded):
		return codes.DeadlineExceeded
	case errors.Is(err, context.Canceled):
		return codes.Canceled
	}
	return codes.Unknown
}

// FieldViolation is one invalid field, as read back from an error.
type FieldViolation struct {
	// Field is the path of the field in the request.
	Field string
	// Description says what is wrong with it.
	Description string
}

// FieldViolations returns the BadRequest field violations carried by err.
func FieldViolations(err error) []FieldViolation {
	var out []FieldViolation
	for _, d := range details(err) {
		if br, ok := d.(*errdetails.BadRequest); ok {
			for _, v := range br.GetFieldViolations() {
				out = append(out, FieldViolation{Field: v.GetField(), Description: v.GetDescription()})
			}
		}
	}
	return out
}

// RetryDelay returns the delay suggested by err's RetryInfo, if it has one.
func RetryDelay(err error) (time.Duration, bool) {
	for _, d := range details(err) {
		if ri, ok := d.(*errdetails.RetryInfo); ok {
			return ri.GetRetryDelay().AsDuration(), true
		}
	}
	return 0, false
}

// As reports whether err is, or wraps, an *Error and returns it.
func As(err error) (*Error, bool) {
	var e *Error
	ok := errors.As(err, &e)
	return e, ok
}
