// Package apierrtest checks, in tests, that an error is the one a client of
// a Duet service should see: its gRPC code, its stable ErrorInfo reason and
// the field its BadRequest names, read back with kit/apierr.
package apierrtest

import (
	"slices"
	"testing"

	"google.golang.org/grpc/codes"

	"github.com/duetkit/duet/kit/apierr"
)

// Check fails the test unless err has code and, when code is not OK, the
// ErrorInfo reason and field violations that go with it: one naming field
// among them (others may name other fields), or none at all when field is
// empty. A wrong code stops the test, as
// nothing else about the error can be right; a wrong reason or field is
// reported and the test goes on.
func Check(t testing.TB, err error, code codes.Code, reason, field string) {
	t.Helper()
	if got := apierr.Code(err); got != code {
		t.Fatalf("code = %v, want %v (err: %v)", got, code, err)
		return
	}
	if code == codes.OK {
		return
	}
	if got := apierr.Reason(err); got != reason {
		t.Errorf("reason = %q, want %q (err: %v)", got, reason, err)
	}
	var fields []string
	for _, v := range apierr.FieldViolations(err) {
		fields = append(fields, v.Field)
	}
	if field == "" && len(fields) > 0 || field != "" && !slices.Contains(fields, field) {
		t.Errorf("field violations = %q, want %q (err: %v)", fields, field, err)
	}
}
