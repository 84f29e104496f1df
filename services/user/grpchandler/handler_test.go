package grpchandler_test

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"testing"

	"github.com/google/uuid"
	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/fieldmaskpb"

	userv1 "github.com/duetkit/duet/gen/duet/user/v1"
	"github.com/duetkit/duet/kit/apierr"
	"github.com/duetkit/duet/kit/client"
	"github.com/duetkit/duet/kit/pagetoken"
	"github.com/duetkit/duet/kit/server"
	"github.com/duetkit/duet/kit/server/servertest"
	"github.com/duetkit/duet/services/user/domain"
	"github.com/duetkit/duet/services/user/grpchandler"
	"github.com/duetkit/duet/services/user/store"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		goleak.IgnoreTopFunction("go.opencensus.io/stats/view.(*worker).start"),
	)
}

// serve runs h behind kit/server with protovalidate switched off, so these
// tests see what the handler itself answers to input the contract's rules
// would normally have stopped earlier.
func serve(t *testing.T, h *grpchandler.Handler) userv1.UserServiceClient {
	t.Helper()
	srv := servertest.NewServer(t, server.Config{Logger: slog.New(slog.DiscardHandler), DisableValidation: true},
		func(r grpc.ServiceRegistrar) { userv1.RegisterUserServiceServer(r, h) })
	return userv1.NewUserServiceClient(srv.Dial(t, client.Config{DisableRetries: true}))
}

func TestHandlerValidatesWithoutProtovalidate(t *testing.T) {
	db, err := store.Open(t.Context(), "sqlite::memory:")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = db.Close() })
	c := serve(t, grpchandler.New(domain.NewService(store.New(db)), slog.New(slog.DiscardHandler)))
	ctx := t.Context()
	ann, err := c.CreateUser(ctx, &userv1.CreateUserRequest{Email: "ann@example.com", Name: "Ann"})
	if err != nil {
		t.Fatal(err)
	}
	id := ann.GetUser().GetId()
	otherScope := pagetoken.Encode(pagetoken.Cursor{Scope: "orders:" + id, ID: id})

	tests := []struct {
		name  string
		call  func() error
		field string
	}{
		{name: "create empty email", field: "email", call: func() error {
			_, err := c.CreateUser(ctx, &userv1.CreateUserRequest{Name: "X"})
			return err
		}},
		{name: "create long name", field: "name", call: func() error {
			_, err := c.CreateUser(ctx, &userv1.CreateUserRequest{Email: "x@example.com", Name: strings.Repeat("x", 101)})
			return err
		}},
		{name: "get empty id", field: "id", call: func() error {
			_, err := c.GetUser(ctx, &userv1.GetUserRequest{})
			return err
		}},
		{name: "get non-uuid id", field: "id", call: func() error {
			_, err := c.GetUser(ctx, &userv1.GetUserRequest{Id: "users/1"})
			return err
		}},
		{name: "list negative page size", field: "page_size", call: func() error {
			_, err := c.ListUsers(ctx, &userv1.ListUsersRequest{PageSize: -1})
			return err
		}},
		{name: "list token of another listing", field: "page_token", call: func() error {
			_, err := c.ListUsers(ctx, &userv1.ListUsersRequest{PageToken: otherScope})
			return err
		}},
		{name: "update without user", field: "user", call: func() error {
			_, err := c.UpdateUser(ctx, &userv1.UpdateUserRequest{UpdateMask: &fieldmaskpb.FieldMask{Paths: []string{"name"}}})
			return err
		}},
		{name: "update non-uuid id", field: "user.id", call: func() error {
			_, err := c.UpdateUser(ctx, &userv1.UpdateUserRequest{User: &userv1.User{Id: "x", Name: "X"},
				UpdateMask: &fieldmaskpb.FieldMask{Paths: []string{"name"}}})
			return err
		}},
		{name: "update email with spaces inside", field: "user.email", call: func() error {
			_, err := c.UpdateUser(ctx, &userv1.UpdateUserRequest{User: &userv1.User{Id: id, Email: "a b@example.com"},
				UpdateMask: &fieldmaskpb.FieldMask{Paths: []string{"email"}}})
			return err
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.call()
			if apierr.Code(err) != codes.InvalidArgument || apierr.Reason(err) != apierr.ReasonInvalidArgument {
				t.Fatalf("err = %v, want INVALID_ARGUMENT", err)
			}
			v := apierr.FieldViolations(err)
			if len(v) != 1 || v[0].Field != tt.field {
				t.Errorf("field violations = %+v, want one on %q", v, tt.field)
			}
		})
	}
}

// brokenRepo fails every call with an error whose text must never reach a
// client.
type brokenRepo struct{}

var errSecret = errors.New("dial tcp 10.0.0.7:5432: password authentication failed for user svc")

func (brokenRepo) Create(context.Context, domain.User, ...domain.Event) error { return errSecret }
func (brokenRepo) Get(context.Context, string) (domain.User, error) {
	return domain.User{}, errSecret
}
func (brokenRepo) List(context.Context, *domain.Position, int) ([]domain.User, error) {
	return nil, errSecret
}
func (brokenRepo) Update(context.Context, string, func(*domain.User) ([]domain.Event, error)) (domain.User, error) {
	return domain.User{}, errSecret
}

func TestHandlerHidesInternalErrors(t *testing.T) {
	c := serve(t, grpchandler.New(domain.NewService(brokenRepo{}), slog.New(slog.DiscardHandler)))
	ctx := t.Context()
	id := uuid.NewString()
	calls := map[string]func() error{
		"create": func() error {
			_, err := c.CreateUser(ctx, &userv1.CreateUserRequest{Email: "a@example.com", Name: "A"})
			return err
		},
		"get":  func() error { _, err := c.GetUser(ctx, &userv1.GetUserRequest{Id: id}); return err },
		"list": func() error { _, err := c.ListUsers(ctx, &userv1.ListUsersRequest{}); return err },
		"update": func() error {
			_, err := c.UpdateUser(ctx, &userv1.UpdateUserRequest{User: &userv1.User{Id: id, Name: "A"},
				UpdateMask: &fieldmaskpb.FieldMask{Paths: []string{"name"}}})
			return err
		},
	}
	for name, call := range calls {
		t.Run(name, func(t *testing.T) {
			err := call()
			if apierr.Code(err) != codes.Internal || apierr.Reason(err) != apierr.ReasonInternal {
				t.Fatalf("err = %v, want INTERNAL", err)
			}
			if msg := status.Convert(err).Message(); strings.Contains(msg, "password") || strings.Contains(msg, "10.0.0.7") {
				t.Errorf("message leaks the cause: %q", msg)
			}
		})
	}
}
