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

// LowerUUIDs gives every id the contract marks as a UUID one spelling, so
// a store that looks ids up by exact match finds an upper-case one too.
// kit/server runs it after Check.
func ExampleLowerUUIDs() {
	req := &userv1.GetUserRequest{Id: "0E4B2A7C-9D3F-4C1A-8B6E-5F2D1C0A9B8E"}
	validation.LowerUUIDs(req)
	fmt.Println(req.GetId())
	// Output:
	// 0e4b2a7c-9d3f-4c1a-8b6e-5f2d1c0a9b8e
}
