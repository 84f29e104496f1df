package user_test

import (
	"context"
	"slices"
	"testing"

	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/types/known/fieldmaskpb"

	userv1 "github.com/duetkit/duet/gen/duet/user/v1"
	"github.com/duetkit/duet/kit/events"
	"github.com/duetkit/duet/kit/events/eventstest"
	"github.com/duetkit/duet/kit/requestid"
	"github.com/duetkit/duet/services/user"
)

// TestEvents: sign-ups and changes reach the bus as user.created and
// user.updated (with the fields that changed), carrying the request id of
// the call; calls that change nothing publish nothing.
func TestEvents(t *testing.T) {
	eventstest.Matrix(t, func(t *testing.T, url string, bus *events.Bus) {
		client := startConfig(t, user.Config{DatabaseURL: url, Bus: bus})
		got := eventstest.Collect(t, bus, "user.*")
		as := func(id string) context.Context {
			return metadata.AppendToOutgoingContext(t.Context(), requestid.Header, id)
		}
		created, err := client.CreateUser(as("req-create"), &userv1.CreateUserRequest{Email: "ann@example.com", Name: "Ann"})
		if err != nil {
			t.Fatal(err)
		}
		id := created.GetUser().GetId()
		update := func(reqID string, u *userv1.User, paths ...string) {
			t.Helper()
			u.Id = id
			if _, err := client.UpdateUser(as(reqID), &userv1.UpdateUserRequest{User: u, UpdateMask: &fieldmaskpb.FieldMask{Paths: paths}}); err != nil {
				t.Fatalf("%s: %v", reqID, err)
			}
		}
		update("req-rename", &userv1.User{Name: "Annie"}, "name")
		update("req-same", &userv1.User{Name: "Annie", Email: "ann@example.com"}, "name", "email") // changes nothing
		update("req-email", &userv1.User{Name: "Annie", Email: "annie@example.com"}, "name", "email")
		// A refused change publishes nothing either.
		if _, err := client.CreateUser(as("req-taken"), &userv1.CreateUserRequest{Email: "ANNIE@example.com", Name: "Other"}); err == nil {
			t.Fatal("duplicate email accepted")
		}
		if _, err := client.CreateUser(as("req-bob"), &userv1.CreateUserRequest{Email: "bob@example.com", Name: "Bob"}); err != nil {
			t.Fatal(err)
		}

		want := []struct {
			subject, requestID, email, name string
			changed                         []string
		}{
			{"user.created", "req-create", "ann@example.com", "Ann", nil},
			{"user.updated", "req-rename", "ann@example.com", "Annie", []string{"name"}},
			{"user.updated", "req-email", "annie@example.com", "Annie", []string{"email"}},
			{"user.created", "req-bob", "bob@example.com", "Bob", nil},
		}
		// Events arrive in order: once Bob's is in, nothing unwanted can
		// still be on its way before it.
		msgs := got.Wait(t, len(want))
		if len(msgs) != len(want) {
			t.Fatalf("got %d events, want %d", len(msgs), len(want))
		}
		for i, w := range want {
			m := msgs[i]
			var u *userv1.User
			var changed []string
			switch m.Subject {
			case "user.created":
				var ev userv1.UserCreated
				if err := m.Unmarshal(&ev); err != nil {
					t.Fatal(err)
				}
				u = ev.GetUser()
			case "user.updated":
				var ev userv1.UserUpdated
				if err := m.Unmarshal(&ev); err != nil {
					t.Fatal(err)
				}
				u, changed = ev.GetUser(), ev.GetChanged().GetPaths()
			}
			if m.Subject != w.subject || m.RequestID != w.requestID || u.GetEmail() != w.email || u.GetName() != w.name ||
				!slices.Equal(changed, w.changed) || m.AggregateID != u.GetId() || u.GetUpdateTime() == nil {
				t.Errorf("event %d = %s %s %v changed %v; want %s %s %s/%s changed %v",
					i, m.Subject, m.RequestID, u, changed, w.subject, w.requestID, w.email, w.name, w.changed)
			}
		}
	})
}
