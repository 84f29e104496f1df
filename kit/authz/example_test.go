package authz_test

import (
	"context"
	"fmt"

	"google.golang.org/grpc"

	userv1 "github.com/duetkit/duet/gen/duet/user/v1"
	"github.com/duetkit/duet/kit/apierr"
	"github.com/duetkit/duet/kit/authn"
	"github.com/duetkit/duet/kit/authz"
)

// A user reads their own record and no one else's. On a server, give the
// Permissions to kit/server after an Authenticator, which puts the caller
// in each call's context: server.Config{Authenticator: verifier,
// Permissions: perms}; here the interceptor is called by hand.
func Example() {
	perms, err := authz.New(authz.Config{Rules: map[string]authz.Rule{
		userv1.UserService_GetUser_FullMethodName: {
			Request: `request.id == caller.subject || "admin" in caller.scopes`,
			Why:     "a user reads their own record only",
		},
	}})
	if err != nil {
		fmt.Println(err)
		return
	}
	intercept := perms.UnaryInterceptor()
	info := &grpc.UnaryServerInfo{FullMethod: userv1.UserService_GetUser_FullMethodName}
	getUser := func(_ context.Context, req any) (any, error) {
		return &userv1.GetUserResponse{User: &userv1.User{Id: req.(*userv1.GetUserRequest).GetId()}}, nil
	}

	ann := authn.NewContext(context.Background(), authn.Identity{Subject: "ann"})
	resp, err := intercept(ann, &userv1.GetUserRequest{Id: "ann"}, info, getUser)
	fmt.Println("ann reads ann:", resp.(*userv1.GetUserResponse).GetUser().GetId(), err)

	_, err = intercept(ann, &userv1.GetUserRequest{Id: "bob"}, info, getUser)
	fmt.Println("ann reads bob:", apierr.Code(err), apierr.Reason(err))

	admin := authn.NewContext(context.Background(), authn.Identity{Subject: "cy", Scopes: []string{"admin"}})
	_, err = intercept(admin, &userv1.GetUserRequest{Id: "bob"}, info, getUser)
	fmt.Println("an admin reads bob:", err)

	_, err = authz.New(authz.Config{Rules: map[string]authz.Rule{
		userv1.UserService_GetUser_FullMethodName: {Request: `request.user_id == caller.subject`},
	}})
	fmt.Println("a misspelt field:", err != nil)
	// Output:
	// ann reads ann: ann <nil>
	// ann reads bob: PermissionDenied NOT_PERMITTED
	// an admin reads bob: <nil>
	// a misspelt field: true
}
