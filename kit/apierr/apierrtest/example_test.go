package apierrtest_test

import (
	"fmt"
	"testing"

	"google.golang.org/grpc/codes"

	"github.com/duetkit/duet/kit/apierr"
	"github.com/duetkit/duet/kit/apierr/apierrtest"
)

// printer is the *testing.T of the example: it prints what a test would
// report.
type printer struct{ testing.TB }

func (printer) Helper()                             {}
func (printer) Errorf(format string, args ...any)   { fmt.Printf(format+"\n", args...) }
func (p printer) Fatalf(format string, args ...any) { p.Errorf(format, args...) }

// In a test, pass the *testing.T and what the call returned.
func ExampleCheck() {
	t := printer{}
	err := apierr.New(codes.AlreadyExists, "EMAIL_TAKEN", "email is already in use", apierr.Field("email", "in use"))
	apierrtest.Check(t, err, codes.AlreadyExists, "EMAIL_TAKEN", "email") // passes
	apierrtest.Check(t, err, codes.AlreadyExists, "EMAIL_TAKEN", "name")
	// Output:
	// field violations = ["email"], want "name" (err: rpc error: code = AlreadyExists reason = EMAIL_TAKEN desc = email is already in use)
}
