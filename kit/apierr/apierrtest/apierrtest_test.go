package apierrtest_test

import (
	"slices"
	"testing"

	"google.golang.org/grpc/codes"

	"github.com/duetkit/duet/kit/apierr"
	"github.com/duetkit/duet/kit/apierr/apierrtest"
)

// recorder is a testing.TB that records failures instead of failing.
type recorder struct {
	testing.TB
	failures []string
}

func (r *recorder) Errorf(format string, args ...any) { r.failures = append(r.failures, "error") }
func (r *recorder) Fatalf(format string, args ...any) { r.failures = append(r.failures, "fatal") }

func TestCheck(t *testing.T) {
	taken := apierr.New(codes.AlreadyExists, "EMAIL_TAKEN", "taken", apierr.Field("email", "in use"))
	notFound := apierr.NotFound("USER_NOT_FOUND", "user", "1")
	tests := []struct {
		name   string
		err    error
		code   codes.Code
		reason string
		field  string
		want   []string // failures reported
	}{
		{name: "ok", err: nil, code: codes.OK},
		{name: "matching field", err: taken, code: codes.AlreadyExists, reason: "EMAIL_TAKEN", field: "email"},
		{name: "matching, no field", err: notFound, code: codes.NotFound, reason: "USER_NOT_FOUND"},
		{name: "error where none expected", err: taken, code: codes.OK, want: []string{"fatal"}},
		{name: "none where an error expected", err: nil, code: codes.NotFound, reason: "USER_NOT_FOUND", want: []string{"fatal"}},
		{name: "wrong code stops", err: notFound, code: codes.AlreadyExists, reason: "x", field: "y", want: []string{"fatal"}},
		{name: "wrong reason", err: notFound, code: codes.NotFound, reason: "ORDER_NOT_FOUND", want: []string{"error"}},
		{name: "other field", err: taken, code: codes.AlreadyExists, reason: "EMAIL_TAKEN", field: "name", want: []string{"error"}},
		{name: "field where none expected", err: taken, code: codes.AlreadyExists, reason: "EMAIL_TAKEN", want: []string{"error"}},
		{name: "wrong reason and field", err: notFound, code: codes.NotFound, reason: "X", field: "id", want: []string{"error", "error"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := &recorder{TB: t}
			apierrtest.Check(r, tt.err, tt.code, tt.reason, tt.field)
			if !slices.Equal(r.failures, tt.want) {
				t.Errorf("failures = %v, want %v", r.failures, tt.want)
			}
		})
	}
}
