// Package wire converts the user domain to its duet.user.v1 wire form: the
// User message the API returns, and the events published through
// kit/events. The gRPC handler and the store share it, so a user reads the
// same in a response and in an event.
package wire

import (
	"fmt"

	"google.golang.org/protobuf/types/known/fieldmaskpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	userv1 "github.com/duetkit/duet/gen/duet/user/v1"
	"github.com/duetkit/duet/kit/events"
	"github.com/duetkit/duet/services/user/domain"
)

// Event subjects, relative to the bus prefix.
const (
	SubjectCreated = "user.created"
	SubjectUpdated = "user.updated"
)

// User converts a domain user to its API message.
func User(u domain.User) *userv1.User {
	return &userv1.User{
		Id:         u.ID,
		Email:      u.Email,
		Name:       u.Name,
		CreateTime: timestamppb.New(u.CreateTime),
		UpdateTime: timestamppb.New(u.UpdateTime),
	}
}

// Event converts a domain event to the outbox event published for it; the
// user id is the aggregate id.
func Event(e domain.Event) (events.Event, error) {
	ev := events.Event{AggregateID: e.User.ID}
	switch e.Kind {
	case domain.EventCreated:
		ev.Subject, ev.Message = SubjectCreated, &userv1.UserCreated{User: User(e.User)}
	case domain.EventUpdated:
		// The domain's paths are the API's field names.
		ev.Subject, ev.Message = SubjectUpdated, &userv1.UserUpdated{
			User:    User(e.User),
			Changed: &fieldmaskpb.FieldMask{Paths: append([]string(nil), e.Changed...)},
		}
	default:
		return events.Event{}, fmt.Errorf("user event of unknown kind %q", e.Kind)
	}
	return ev, nil
}
