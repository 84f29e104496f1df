package apierr_test

import (
	"fmt"

	"google.golang.org/grpc/codes"

	"github.com/duetkit/duet/kit/apierr"
)

// A handler returns an *apierr.Error; the client reads the reason and the
// offending field back from the status it receives.
func ExampleNew() {
	err := apierr.New(codes.AlreadyExists, "EMAIL_TAKEN", "email is already in use",
		apierr.Field("email", "already in use"))

	err2 := wire(err) // what the client sees
	fmt.Println(apierr.Code(err2), apierr.Reason(err2), apierr.FieldViolations(err2)[0].Field)
	// Output: AlreadyExists EMAIL_TAKEN email
}

// A handler answers a transaction that lost a race in the database
// (kit/sqldb.IsConflict) with Conflict: ABORTED, which had no effect and
// may be sent again after the suggested delay.
func ExampleConflict() {
	err := wire(apierr.Conflict())
	delay, _ := apierr.RetryDelay(err)
	fmt.Println(apierr.Code(err), apierr.Reason(err), delay)
	// Output: Aborted CONFLICT 100ms
}

// The answer to a database that is down (sqldb.IsUnavailable): UNAVAILABLE
// with a retry delay, which clients and the REST gateway (503,
// Retry-After) pass on.
func ExampleStoreUnavailable() {
	err := wire(apierr.StoreUnavailable())
	delay, _ := apierr.RetryDelay(err)
	fmt.Println(apierr.Code(err), apierr.Reason(err), delay)
	// Output: Unavailable UNAVAILABLE 1s
}
