package user_test

import (
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"testing"

	"github.com/google/uuid"
	"go.uber.org/goleak"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/types/known/fieldmaskpb"

	userv1 "github.com/duetkit/duet/gen/duet/user/v1"
	"github.com/duetkit/duet/kit/apierr"
	"github.com/duetkit/duet/kit/apierr/apierrtest"
	"github.com/duetkit/duet/kit/server"
	"github.com/duetkit/duet/kit/server/servertest"
	"github.com/duetkit/duet/kit/sqldb/sqldbtest"
	"github.com/duetkit/duet/services/user"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		// OpenTelemetry's process-wide worker is not ours.
		goleak.IgnoreTopFunction("go.opencensus.io/stats/view.(*worker).start"),
	)
}

// start opens the user service on the database at url, serves it through
// kit/server on a loopback port and returns a client over kit/client.
func start(t *testing.T, url string) userv1.UserServiceClient {
	t.Helper()
	return startConfig(t, user.Config{DatabaseURL: url})
}

// startConfig is start with a whole Config; a nil Logger discards logs.
func startConfig(t *testing.T, cfg user.Config) userv1.UserServiceClient {
	t.Helper()
	logger := cfg.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
		cfg.Logger = logger
	}
	svc, err := user.Open(t.Context(), cfg)
	if err != nil {
		t.Fatalf("user.Open: %v", err)
	}
	t.Cleanup(func() { // after the server has drained: cleanups run last-in first-out
		if err := svc.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return userv1.NewUserServiceClient(servertest.Start(t, server.Config{Name: "user", Logger: logger}, svc.Register))
}

func mask(paths ...string) *fieldmaskpb.FieldMask { return &fieldmaskpb.FieldMask{Paths: paths} }

func TestUserService(t *testing.T) {
	sqldbtest.Run(t, func(t *testing.T, url string) {
		c := start(t, url)
		ctx := t.Context()

		ann, err := c.CreateUser(ctx, &userv1.CreateUserRequest{Email: "Ann@Example.com", Name: "Ann"})
		if err != nil {
			t.Fatalf("CreateUser: %v", err)
		}
		u := ann.GetUser()
		if _, err := uuid.Parse(u.GetId()); err != nil || u.GetEmail() != "Ann@Example.com" || u.GetName() != "Ann" ||
			u.GetCreateTime() == nil || !u.GetCreateTime().AsTime().Equal(u.GetUpdateTime().AsTime()) {
			t.Fatalf("created user = %v", u)
		}
		bob, err := c.CreateUser(ctx, &userv1.CreateUserRequest{Email: "bob@example.com", Name: "Bob"})
		if err != nil {
			t.Fatalf("CreateUser: %v", err)
		}
		missing := uuid.NewString()

		tests := []struct {
			name   string
			call   func() error
			code   codes.Code
			reason string
			field  string
		}{
			{name: "create duplicate email in other case", code: codes.AlreadyExists, reason: "EMAIL_TAKEN", field: "email",
				call: func() error {
					_, err := c.CreateUser(ctx, &userv1.CreateUserRequest{Email: "ann@EXAMPLE.com", Name: "Other"})
					return err
				}},
			{name: "create bad email", code: codes.InvalidArgument, reason: apierr.ReasonInvalidArgument, field: "email",
				call: func() error {
					_, err := c.CreateUser(ctx, &userv1.CreateUserRequest{Email: "not-an-email", Name: "X"})
					return err
				}},
			{name: "create blank name", code: codes.InvalidArgument, reason: apierr.ReasonInvalidArgument, field: "name",
				call: func() error {
					_, err := c.CreateUser(ctx, &userv1.CreateUserRequest{Email: "blank@example.com", Name: "   "})
					return err
				}},
			{name: "get", code: codes.OK, call: func() error {
				got, err := c.GetUser(ctx, &userv1.GetUserRequest{Id: u.GetId()})
				if err == nil && got.GetUser().GetEmail() != u.GetEmail() {
					return fmt.Errorf("GetUser = %v, want %v", got.GetUser(), u)
				}
				return err
			}},
			{name: "get missing", code: codes.NotFound, reason: "USER_NOT_FOUND",
				call: func() error { _, err := c.GetUser(ctx, &userv1.GetUserRequest{Id: missing}); return err }},
			{name: "get bad id", code: codes.InvalidArgument, reason: apierr.ReasonInvalidArgument, field: "id",
				call: func() error { _, err := c.GetUser(ctx, &userv1.GetUserRequest{Id: "42"}); return err }},
			{name: "update name", code: codes.OK, call: func() error {
				got, err := c.UpdateUser(ctx, &userv1.UpdateUserRequest{
					User: &userv1.User{Id: u.GetId(), Name: "Annie", Email: "ignored"}, UpdateMask: mask("name")})
				if err == nil && (got.GetUser().GetName() != "Annie" || got.GetUser().GetEmail() != u.GetEmail() ||
					!got.GetUser().GetUpdateTime().AsTime().After(u.GetUpdateTime().AsTime())) {
					return fmt.Errorf("UpdateUser = %v", got.GetUser())
				}
				return err
			}},
			{name: "update email taken", code: codes.AlreadyExists, reason: "EMAIL_TAKEN", field: "user.email",
				call: func() error {
					_, err := c.UpdateUser(ctx, &userv1.UpdateUserRequest{
						User: &userv1.User{Id: u.GetId(), Email: "BOB@example.com"}, UpdateMask: mask("email")})
					return err
				}},
			{name: "update bad email", code: codes.InvalidArgument, reason: apierr.ReasonInvalidArgument, field: "user.email",
				call: func() error {
					_, err := c.UpdateUser(ctx, &userv1.UpdateUserRequest{
						User: &userv1.User{Id: u.GetId(), Email: "nope"}, UpdateMask: mask("email")})
					return err
				}},
			{name: "update empty name", code: codes.InvalidArgument, reason: apierr.ReasonInvalidArgument, field: "user.name",
				call: func() error {
					_, err := c.UpdateUser(ctx, &userv1.UpdateUserRequest{
						User: &userv1.User{Id: u.GetId()}, UpdateMask: mask("name")})
					return err
				}},
			{name: "update without mask", code: codes.InvalidArgument, reason: apierr.ReasonInvalidArgument, field: "update_mask",
				call: func() error {
					_, err := c.UpdateUser(ctx, &userv1.UpdateUserRequest{User: &userv1.User{Id: u.GetId(), Name: "X"}})
					return err
				}},
			{name: "update empty mask", code: codes.InvalidArgument, reason: apierr.ReasonInvalidArgument, field: "update_mask",
				call: func() error {
					_, err := c.UpdateUser(ctx, &userv1.UpdateUserRequest{User: &userv1.User{Id: u.GetId(), Name: "X"}, UpdateMask: mask()})
					return err
				}},
			{name: "update unknown path", code: codes.InvalidArgument, reason: apierr.ReasonInvalidArgument, field: "update_mask",
				call: func() error {
					_, err := c.UpdateUser(ctx, &userv1.UpdateUserRequest{
						User: &userv1.User{Id: u.GetId(), Name: "X"}, UpdateMask: mask("name", "nickname")})
					return err
				}},
			{name: "update ignores the id and output-only paths", code: codes.OK,
				call: func() error {
					resp, err := c.UpdateUser(ctx, &userv1.UpdateUserRequest{
						User: &userv1.User{Id: u.GetId(), Name: "Annie"}, UpdateMask: mask("id", "name", "create_time", "update_time")})
					if err == nil && resp.GetUser().GetName() != "Annie" {
						return fmt.Errorf("updated to %v", resp.GetUser())
					}
					return err
				}},
			{name: "update bad id", code: codes.InvalidArgument, reason: apierr.ReasonInvalidArgument, field: "user.id",
				call: func() error {
					_, err := c.UpdateUser(ctx, &userv1.UpdateUserRequest{User: &userv1.User{Id: "42", Name: "X"}, UpdateMask: mask("name")})
					return err
				}},
			{name: "update missing user", code: codes.NotFound, reason: "USER_NOT_FOUND",
				call: func() error {
					_, err := c.UpdateUser(ctx, &userv1.UpdateUserRequest{User: &userv1.User{Id: missing, Name: "X"}, UpdateMask: mask("name")})
					return err
				}},
			{name: "update without user", code: codes.InvalidArgument, reason: apierr.ReasonInvalidArgument, field: "user",
				call: func() error {
					_, err := c.UpdateUser(ctx, &userv1.UpdateUserRequest{UpdateMask: mask("name")})
					return err
				}},
			{name: "list bad token", code: codes.InvalidArgument, reason: apierr.ReasonInvalidArgument, field: "page_token",
				call: func() error {
					_, err := c.ListUsers(ctx, &userv1.ListUsersRequest{PageToken: "garbage"})
					return err
				}},
			{name: "list bad page size", code: codes.InvalidArgument, reason: apierr.ReasonInvalidArgument, field: "page_size",
				call: func() error {
					_, err := c.ListUsers(ctx, &userv1.ListUsersRequest{PageSize: 101})
					return err
				}},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) { apierrtest.Check(t, tt.call(), tt.code, tt.reason, tt.field) })
		}

		// Bob is untouched by the failed attempts to take his address.
		got, err := c.GetUser(ctx, &userv1.GetUserRequest{Id: bob.GetUser().GetId()})
		if err != nil || got.GetUser().GetEmail() != "bob@example.com" {
			t.Errorf("bob = %v, %v", got.GetUser(), err)
		}
	})
}

func TestListUsersPages(t *testing.T) {
	sqldbtest.Run(t, func(t *testing.T, url string) {
		c := start(t, url)
		ctx := t.Context()
		var want []string
		for i := range 25 {
			r, err := c.CreateUser(ctx, &userv1.CreateUserRequest{Email: fmt.Sprintf("u%02d@example.com", i), Name: "U"})
			if err != nil {
				t.Fatal(err)
			}
			want = append(want, r.GetUser().GetId())
		}
		for _, tt := range []struct {
			pageSize  int32
			wantSizes []int
		}{
			{pageSize: 0, wantSizes: []int{20, 5}},
			{pageSize: 7, wantSizes: []int{7, 7, 7, 4}},
			{pageSize: 25, wantSizes: []int{25}},
			{pageSize: 100, wantSizes: []int{25}},
		} {
			t.Run(fmt.Sprint("page size ", tt.pageSize), func(t *testing.T) {
				var got []string
				var sizes []int
				tok := ""
				for range 10 {
					resp, err := c.ListUsers(ctx, &userv1.ListUsersRequest{PageSize: tt.pageSize, PageToken: tok})
					if err != nil {
						t.Fatal(err)
					}
					sizes = append(sizes, len(resp.GetUsers()))
					for _, u := range resp.GetUsers() {
						got = append(got, u.GetId())
					}
					if tok = resp.GetNextPageToken(); tok == "" {
						break
					}
				}
				if !slices.Equal(sizes, tt.wantSizes) {
					t.Errorf("page sizes = %v, want %v", sizes, tt.wantSizes)
				}
				if !slices.Equal(got, want) {
					t.Errorf("listed ids not in creation order:\n got %v\nwant %v", got, want)
				}
			})
		}
	})
}

// TestConcurrentCreateSameEmail: of many simultaneous sign-ups with one
// address, exactly one succeeds and every other gets EMAIL_TAKEN.
func TestConcurrentCreateSameEmail(t *testing.T) {
	sqldbtest.Run(t, func(t *testing.T, url string) {
		c := start(t, url)
		const n = 12
		errs := make([]error, n)
		var wg sync.WaitGroup
		for i := range n {
			wg.Go(func() {
				email := "race@example.com"
				if i%2 == 0 {
					email = "Race@Example.com"
				}
				_, errs[i] = c.CreateUser(t.Context(), &userv1.CreateUserRequest{Email: email, Name: "Racer"})
			})
		}
		wg.Wait()
		wins := 0
		for _, err := range errs {
			if err == nil {
				wins++
				continue
			}
			apierrtest.Check(t, err, codes.AlreadyExists, "EMAIL_TAKEN", "email")
		}
		if wins != 1 {
			t.Errorf("%d creates succeeded, want exactly 1", wins)
		}
	})
}

func TestOpenErrors(t *testing.T) {
	for _, url := range []string{"", "mysql://nope", "sqlite:" + t.TempDir()} {
		if svc, err := user.Open(t.Context(), user.Config{DatabaseURL: url}); err == nil {
			_ = svc.Close()
			t.Errorf("Open(%q) succeeded, want error", url)
		}
	}
}

// TestConcurrentUpdatesConflict: on PostgreSQL run at SERIALIZABLE (a
// database administrator's choice Duet must live with), concurrent updates
// of one user lose races with serialization failures. Those calls answer
// ABORTED, reason CONFLICT, with a retry delay: no bug, nothing changed,
// and the client may send them again; never INTERNAL.
func TestConcurrentUpdatesConflict(t *testing.T) {
	pg, ok := sqldbtest.URLs(t)["postgres"]
	if !ok {
		t.Skipf("%s is not set", sqldbtest.PostgresEnv)
	}
	c := start(t, pg+"&default_transaction_isolation=serializable")
	created, err := c.CreateUser(t.Context(), &userv1.CreateUserRequest{Email: "busy@example.com", Name: "Busy"})
	if err != nil {
		t.Fatal(err)
	}
	id := created.GetUser().GetId()
	conflicts := 0
	for round := 0; round < 20 && conflicts == 0; round++ {
		const n = 8
		errs := make([]error, n)
		var wg sync.WaitGroup
		for i := range n {
			wg.Go(func() {
				_, errs[i] = c.UpdateUser(t.Context(), &userv1.UpdateUserRequest{
					User: &userv1.User{Id: id, Name: fmt.Sprintf("Busy %d.%d", round, i)}, UpdateMask: mask("name"),
				})
			})
		}
		wg.Wait()
		for _, err := range errs {
			if err == nil {
				continue
			}
			conflicts++
			apierrtest.Check(t, err, codes.Aborted, apierr.ReasonConflict, "")
			if d, ok := apierr.RetryDelay(err); !ok || d <= 0 {
				t.Errorf("conflict without a retry delay: %v", err)
			}
		}
	}
	if conflicts == 0 {
		t.Skip("no update conflicted in 20 rounds of 8 at once")
	}
}
