package validation_test

import (
	"fmt"

	"buf.build/go/protovalidate"

	userv1 "github.com/duetkit/duet/gen/duet/user/v1"
	"github.com/duetkit/duet/kit/apierr"
	"github.com/duetkit/duet/kit/validation"
)

// Check turns the rules written in the contract into an INVALID_ARGUMENT
// error that names every offending field, as a client reads it back.
// kit/server runs it for every request through UnaryServerInterceptor.
func ExampleCheck() {
	v, err := protovalidate.New()
	if err != nil {
		panic(err)
	}
	err = validation.Check(v, &userv1.CreateUserRequest{Email: "not-an-email", Name: ""})
	fmt.Println(apierr.Code(err), apierr.Reason(err))
	for _, f := range apierr.FieldViolations(err) {
		fmt.Println(f.Field)
	}
	fmt.Println(validation.Check(v, &userv1.CreateUserRequest{Email: "ada@example.com", Name: "Ada"}))
	// Output:
	// InvalidArgument INVALID_ARGUMENT
	// email
	// name
	// <nil>
}
