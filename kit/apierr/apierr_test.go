package apierr_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	spb "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/duetkit/duet/kit/apierr"
)

// wire sends err through the same conversion grpc-go does on both ends:
// the server turns it into a status proto, the client rebuilds an error.
func wire(err error) error {
	st, _ := status.FromError(err)
	return status.ErrorProto(st.Proto())
}

func TestDetailsSurviveTheWire(t *testing.T) {
	tests := []struct {
		name       string
		err        error
		wantCode   codes.Code
		wantReason string
		wantFields []apierr.FieldViolation
		wantRetry  time.Duration
	}{
		{
			name:       "invalid field",
			err:        apierr.InvalidField("email", "must be an email address"),
			wantCode:   codes.InvalidArgument,
			wantReason: apierr.ReasonInvalidArgument,
			wantFields: []apierr.FieldViolation{{Field: "email", Description: "must be an email address"}},
		},
		{
			name:       "not found",
			err:        apierr.NotFound("USER_NOT_FOUND", "user", "42"),
			wantCode:   codes.NotFound,
			wantReason: "USER_NOT_FOUND",
		},
		{
			name:       "temporary",
			err:        apierr.Unavailable("PROVIDER_UNAVAILABLE", "try later", 1500*time.Millisecond),
			wantCode:   codes.Unavailable,
			wantReason: "PROVIDER_UNAVAILABLE",
			wantRetry:  1500 * time.Millisecond,
		},
		{
			name:       "wrapped",
			err:        fmt.Errorf("charging: %w", apierr.New(codes.FailedPrecondition, "PAYMENT_DECLINED", "declined")),
			wantCode:   codes.FailedPrecondition,
			wantReason: "PAYMENT_DECLINED",
		},
		{
			name:     "plain error has no reason",
			err:      errors.New("boom"),
			wantCode: codes.Unknown,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := wire(tt.err)
			if c := apierr.Code(got); c != tt.wantCode {
				t.Errorf("code = %v, want %v", c, tt.wantCode)
			}
			if r := apierr.Reason(got); r != tt.wantReason {
				t.Errorf("reason = %q, want %q", r, tt.wantReason)
			}
			if tt.wantReason != "" {
				if info := apierr.Info(got); info.GetDomain() != apierr.Domain {
					t.Errorf("domain = %q, want %q", info.GetDomain(), apierr.Domain)
				}
			}
			fv := apierr.FieldViolations(got)
			if len(fv) != len(tt.wantFields) {
				t.Fatalf("field violations = %+v, want %+v", fv, tt.wantFields)
			}
			for i := range fv {
				if fv[i] != tt.wantFields[i] {
					t.Errorf("violation %d = %+v, want %+v", i, fv[i], tt.wantFields[i])
				}
			}
			d, ok := apierr.RetryDelay(got)
			if ok != (tt.wantRetry != 0) || d != tt.wantRetry {
				t.Errorf("retry = %v, %v; want %v", d, ok, tt.wantRetry)
			}
		})
	}
}

func TestPreconditionAndMetadata(t *testing.T) {
	err := wire(apierr.New(codes.FailedPrecondition, "USER_NOT_FOUND", "no such user",
		apierr.Precondition("USER", "users/42", "does not exist"),
		apierr.Metadata("user_id", "42")))
	st, _ := status.FromError(err)
	if len(st.Details()) != 2 {
		t.Fatalf("details = %v, want ErrorInfo and PreconditionFailure", st.Details())
	}
	if got := apierr.Info(err).GetMetadata()["user_id"]; got != "42" {
		t.Errorf("metadata user_id = %q, want 42", got)
	}
	if !apierr.Is(err, "USER_NOT_FOUND") || apierr.Is(nil, "USER_NOT_FOUND") {
		t.Error("Is does not match reasons")
	}
}

// TestInvalidUTF8KeepsDetails: an error that echoes a request's bytes
// which are not UTF-8 (in its message or a detail) still reaches the
// client with its reason, field and retry delay. Protobuf refused to
// marshal such a status, and the client got the code with no details.
func TestInvalidUTF8KeepsDetails(t *testing.T) {
	err := apierr.New(codes.InvalidArgument, apierr.ReasonInvalidArgument, "bad name \xff\xfe",
		apierr.Field("user.name", "has \xff in it"),
		apierr.Metadata("name", "\xc3"),
		apierr.Precondition("USER", "users/\xff", "\xfe"),
		apierr.RetryAfter(time.Second))
	st, _ := status.FromError(err)
	// What grpc-go does with the status on the server: marshal it into
	// grpc-status-details-bin.
	raw, merr := proto.Marshal(st.Proto())
	if merr != nil {
		t.Fatalf("the status does not marshal: %v", merr)
	}
	var back spb.Status
	if err := proto.Unmarshal(raw, &back); err != nil {
		t.Fatal(err)
	}
	got := status.ErrorProto(&back)
	if apierr.Reason(got) != apierr.ReasonInvalidArgument {
		t.Errorf("reason = %q, want %q", apierr.Reason(got), apierr.ReasonInvalidArgument)
	}
	if fv := apierr.FieldViolations(got); len(fv) != 1 || fv[0].Field != "user.name" || fv[0].Description != "has \uFFFD in it" {
		t.Errorf("field violations = %+v", fv)
	}
	if d, ok := apierr.RetryDelay(got); !ok || d != time.Second {
		t.Errorf("retry delay = %v, %v; want 1s", d, ok)
	}
	if msg := status.Convert(got).Message(); msg != "bad name \uFFFD" {
		t.Errorf("message = %q", msg)
	}
}

// TestCallCode: the code a call ends with for a handler's error, context
// errors included, which Code reads as Unknown.
func TestCallCode(t *testing.T) {
	tests := []struct {
		name string
		err  error
		want codes.Code
	}{
		{"nil", nil, codes.OK},
		{"status", status.Error(codes.NotFound, "x"), codes.NotFound},
		{"wrapped status", fmt.Errorf("reading: %w", status.Error(codes.Unavailable, "x")), codes.Unavailable},
		{"apierr", apierr.New(codes.FailedPrecondition, "R", "x"), codes.FailedPrecondition},
		{"deadline", context.DeadlineExceeded, codes.DeadlineExceeded},
		{"wrapped cancel", fmt.Errorf("query: %w", context.Canceled), codes.Canceled},
		{"plain", errors.New("boom"), codes.Unknown},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := apierr.CallCode(tt.err); got != tt.want {
				t.Errorf("CallCode(%v) = %v, want %v", tt.err, got, tt.want)
			}
		})
	}
}

// TestNilErrorIsInternal: a handler that returns a nil *Error as its error
// (`var err *apierr.Error; …; return nil, err`) returns a non-nil error.
// Reading its status panicked outside every recovery interceptor, in the
// metrics and the access log, taking the process down; it reads as the
// INTERNAL bug it is.
func TestNilErrorIsInternal(t *testing.T) {
	var e *apierr.Error
	var err error = e
	if code := apierr.Code(err); code != codes.Internal {
		t.Errorf("Code = %v, want Internal", code)
	}
	if code := apierr.CallCode(err); code != codes.Internal {
		t.Errorf("CallCode = %v, want Internal", code)
	}
	if reason := apierr.Reason(err); reason != apierr.ReasonInternal {
		t.Errorf("Reason = %q, want %s", reason, apierr.ReasonInternal)
	}
	if err.Error() == "" || e.Code() != codes.Internal {
		t.Errorf("Error() %q, Code() %v", err.Error(), e.Code())
	}
}
