package authz_test

import (
	"context"
	"testing"

	"google.golang.org/grpc"

	userv1 "github.com/duetkit/duet/gen/duet/user/v1"
	"github.com/duetkit/duet/kit/authn"
	"github.com/duetkit/duet/kit/authz"
)

// BenchmarkUnaryInterceptor is what a rule adds to a call: the baseline
// is the same interceptor on a method without one.
func BenchmarkUnaryInterceptor(b *testing.B) {
	perms, err := authz.New(authz.Config{Rules: map[string]authz.Rule{
		userv1.UserService_GetUser_FullMethodName:    {Request: `caller.peer != "" || "admin" in caller.scopes || request.id == caller.subject`},
		userv1.UserService_UpdateUser_FullMethodName: {Response: `response.user.id == caller.subject`},
	}})
	if err != nil {
		b.Fatal(err)
	}
	intercept := perms.UnaryInterceptor()
	ctx := authn.NewContext(context.Background(), authn.Identity{Subject: alice, Scopes: []string{"read", "write"}})
	req := &userv1.GetUserRequest{Id: alice}
	resp := &userv1.UpdateUserResponse{User: &userv1.User{Id: alice}}
	handler := func(context.Context, any) (any, error) { return resp, nil }
	for _, bc := range []struct{ name, method string }{
		{"no rule", userv1.UserService_ListUsers_FullMethodName},
		{"request rule", userv1.UserService_GetUser_FullMethodName},
		{"response rule", userv1.UserService_UpdateUser_FullMethodName},
	} {
		b.Run(bc.name, func(b *testing.B) {
			info := &grpc.UnaryServerInfo{FullMethod: bc.method}
			b.ReportAllocs()
			for b.Loop() {
				if _, err := intercept(ctx, req, info, handler); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
