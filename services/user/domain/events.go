package domain

// EventKind says what happened to a user.
type EventKind string

// The changes to a user that other services hear about.
const (
	// EventCreated: a user signed up.
	EventCreated EventKind = "created"
	// EventUpdated: fields of a user changed.
	EventUpdated EventKind = "updated"
)

// Event is a change to a user, reported to other services (a welcome
// message, an audit log). The Repository records it in the same transaction
// as the change, so it is published exactly when the change committed.
type Event struct {
	// Kind is what happened.
	Kind EventKind
	// User is the user after the change.
	User User
	// Changed names the fields that changed (PathEmail, PathName), for
	// EventUpdated.
	Changed []string
}
