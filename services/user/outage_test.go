package user_test

import (
	"testing"

	"google.golang.org/grpc/codes"

	userv1 "github.com/duetkit/duet/gen/duet/user/v1"
	"github.com/duetkit/duet/internal/tcpproxy"
	"github.com/duetkit/duet/kit/apierr"
	"github.com/duetkit/duet/kit/apierr/apierrtest"
	"github.com/duetkit/duet/kit/sqldb/sqldbtest"
)

// TestDatabaseOutage: with its PostgreSQL gone (down, restarting, failing
// over), the service answers UNAVAILABLE with a retry delay, which
// clients and balancers retry and alerts read as an outage. It answered
// INTERNAL, which says "a bug" and is not retried.
func TestDatabaseOutage(t *testing.T) {
	u := sqldbtest.Postgres(t)
	proxy := tcpproxy.Start(t, u.Host)
	u.Host = proxy.Addr()
	c := start(t, u.String())
	created, err := c.CreateUser(t.Context(), &userv1.CreateUserRequest{Email: "outage@example.com", Name: "Out"})
	if err != nil {
		t.Fatal(err)
	}
	proxy.Cut()
	calls := map[string]func() error{
		"GetUser": func() error {
			_, err := c.GetUser(t.Context(), &userv1.GetUserRequest{Id: created.GetUser().GetId()})
			return err
		},
		"CreateUser": func() error {
			_, err := c.CreateUser(t.Context(), &userv1.CreateUserRequest{Email: "later@example.com", Name: "Later"})
			return err
		},
		"ListUsers": func() error {
			_, err := c.ListUsers(t.Context(), &userv1.ListUsersRequest{})
			return err
		},
	}
	for name, call := range calls {
		t.Run(name, func(t *testing.T) {
			err := call()
			apierrtest.Check(t, err, codes.Unavailable, apierr.ReasonUnavailable, "")
			if d, ok := apierr.RetryDelay(err); !ok || d <= 0 {
				t.Errorf("no retry delay: %v", err)
			}
		})
	}
}
