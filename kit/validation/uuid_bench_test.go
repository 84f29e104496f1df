package validation_test

import (
	"testing"

	"buf.build/go/protovalidate"

	userv1 "github.com/duetkit/duet/gen/duet/user/v1"
	"github.com/duetkit/duet/kit/validation"
)

// BenchmarkLowerUUIDs prices LowerUUIDs against Check, which kit/server
// runs just before it on every request: a lower-case id (the usual case,
// read and left alone), an upper-case one (rewritten) and a request
// without UUIDs (one look-up of its plan).
func BenchmarkLowerUUIDs(b *testing.B) {
	v, err := protovalidate.New()
	if err != nil {
		b.Fatal(err)
	}
	const id = "0e4b2a7c-9d3f-4c1a-8b6e-5f2d1c0a9b8e"
	b.Run("check", func(b *testing.B) {
		req := &userv1.GetUserRequest{Id: id}
		for b.Loop() {
			if err := validation.Check(v, req); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("lower-case", func(b *testing.B) {
		req := &userv1.GetUserRequest{Id: id}
		for b.Loop() {
			validation.LowerUUIDs(req)
		}
	})
	b.Run("upper-case", func(b *testing.B) {
		req := &userv1.GetUserRequest{}
		for b.Loop() {
			req.Id = "0E4B2A7C-9D3F-4C1A-8B6E-5F2D1C0A9B8E"
			validation.LowerUUIDs(req)
		}
	})
	b.Run("no-uuid", func(b *testing.B) {
		req := &userv1.ListUsersRequest{PageSize: 20}
		for b.Loop() {
			validation.LowerUUIDs(req)
		}
	})
}
