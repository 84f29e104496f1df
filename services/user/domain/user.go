// Package domain holds the user service's rules: what a valid email and name
// are, when two emails are the same, which fields an update may change, and
// how users are paged. It knows nothing of gRPC or SQL; the store and the
// gRPC handler adapt it to the outside world.
package domain

import (
	"errors"
	"fmt"
	"regexp"
	"strings"
	"time"

	"github.com/google/uuid"

	"github.com/duetkit/duet/kit/displaytext"
)

// Limits on user fields. They match the contract's validation rules, so a
// request that passed those passes these.
const (
	MaxEmailLen = 254
	MaxNameLen  = 100 // in characters
)

// Errors the domain reports. Adapters translate them; the gRPC handler maps
// ErrNotFound to NOT_FOUND (USER_NOT_FOUND) and ErrEmailTaken to
// ALREADY_EXISTS (EMAIL_TAKEN).
var (
	// ErrNotFound means no user has the given id.
	ErrNotFound = errors.New("user not found")
	// ErrEmailTaken means another user already has the email, compared
	// case-insensitively.
	ErrEmailTaken = errors.New("email already in use")
)

// ValidationError is bad input to a domain operation.
type ValidationError struct {
	// Field names the offending field relative to the user ("email",
	// "name", "id") or the operation's own argument ("update_mask",
	// "page_size"). Adapters turn it into a request field path.
	Field string
	// Description says what is wrong, in words safe to show a client.
	Description string
}

// Error implements error.
func (e *ValidationError) Error() string {
	return fmt.Sprintf("invalid %s: %s", e.Field, e.Description)
}

func invalid(field, format string, args ...any) *ValidationError {
	return &ValidationError{Field: field, Description: fmt.Sprintf(format, args...)}
}

// User is a customer of the shop.
type User struct {
	// ID is a UUID assigned on creation.
	ID string
	// Email is the address as the user gave it, letter case included.
	Email string
	// Name is the display name.
	Name string
	// CreateTime and UpdateTime are UTC, truncated to the microsecond.
	CreateTime, UpdateTime time.Time
}

// EmailKey is the form of u's email that uniqueness is decided on.
func (u User) EmailKey() string { return EmailKey(u.Email) }

// emailPattern is the WHATWG HTML definition of a valid email address, the
// one protovalidate's string.email rule applies: ASCII only, a permissive
// local part, and a domain of LDH labels of up to 63 characters.
var emailPattern = regexp.MustCompile(`^[a-zA-Z0-9.!#$%&'*+/=?^_` + "`" + `{|}~-]+@[a-zA-Z0-9](?:[a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?(?:\.[a-zA-Z0-9](?:[a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?)*$`)

// NormalizeEmail trims the spaces around email and checks that what is left
// is a valid address. Letter case is kept: the address is stored as given.
func NormalizeEmail(email string) (string, error) {
	email = strings.TrimSpace(email)
	switch {
	case email == "":
		return "", invalid("email", "must not be empty")
	case len(email) > MaxEmailLen:
		return "", invalid("email", "must be at most %d characters", MaxEmailLen)
	case !emailPattern.MatchString(email):
		return "", invalid("email", "must be a valid email address")
	}
	return email, nil
}

// EmailKey returns the uniqueness key of a normalised email: the address in
// lower case. Valid addresses are ASCII, so lower-casing is exact; the whole
// address is folded, not only the domain, so that "Ann@x.io" and "ann@x.io"
// can never belong to two users.
func EmailKey(email string) string { return strings.ToLower(email) }

// NormalizeName trims the spaces around name and checks what is left as
// displaytext does: 1 to MaxNameLen characters, something visible among
// them, nothing that would break or reorder the text a name is shown in
// (a greeting, a list, a log line).
func NormalizeName(name string) (string, error) {
	name = strings.TrimSpace(name)
	if err := displaytext.Check(name, MaxNameLen); err != nil {
		return "", invalid("name", "%v", err)
	}
	return name, nil
}

// CheckID checks that id is a UUID, the only form user ids take. UUIDs are
// case-insensitive on input (RFC 9562); the service looks them up lowered.
func CheckID(id string) error {
	if id == "" {
		return invalid("id", "must not be empty")
	}
	if _, err := uuid.Parse(id); err != nil || len(id) != 36 {
		return invalid("id", "must be a UUID")
	}
	return nil
}

// NewUser validates email and name and returns a user created at now with
// the given id.
func NewUser(id, email, name string, now time.Time) (User, error) {
	email, err := NormalizeEmail(email)
	if err != nil {
		return User{}, err
	}
	name, err = NormalizeName(name)
	if err != nil {
		return User{}, err
	}
	now = Timestamp(now)
	return User{ID: id, Email: email, Name: name, CreateTime: now, UpdateTime: now}, nil
}

// Timestamp puts t in the form stored timestamps take: UTC, microseconds.
func Timestamp(t time.Time) time.Time { return t.UTC().Truncate(time.Microsecond) }

// Update paths: the only fields of a user a client may change.
const (
	PathEmail = "email"
	PathName  = "name"
)

// Changes carries new values for the fields an update names; fields not
// named are ignored.
type Changes struct {
	Email string
	Name  string
}

// ignoredPaths are fields of a user an update mask may name to no effect:
// the id, which names the user (the request's own id wins), and the
// output-only times. A REST PATCH infers its mask from every key of its
// body, so sending back the user a GET returned names them all; as AIP-203
// has it, output-only fields in a request are ignored, not an error.
var ignoredPaths = map[string]bool{"id": true, "create_time": true, "update_time": true}

// CheckPaths validates an update mask: at least one of "email" and "name",
// and no path but those and the ignored ones.
func CheckPaths(paths []string) error {
	updatable := 0
	for _, p := range paths {
		switch {
		case p == PathEmail || p == PathName:
			updatable++
		case !ignoredPaths[p]:
			// The path is the client's, of any length, and the message
			// is logged: it echoes the first 64 characters.
			return invalid("update_mask", "field %.64q cannot be updated; updatable fields are %q and %q", p, PathEmail, PathName)
		}
	}
	if updatable == 0 {
		return invalid("update_mask", "must name at least one field: %q or %q", PathEmail, PathName)
	}
	return nil
}

// CheckUpdate validates an update before any user is loaded: the mask, and
// the new value of every field it names.
func CheckUpdate(paths []string, c Changes) error {
	_, err := c.normalize(paths)
	return err
}

// normalize validates paths and returns c with the named fields normalised.
func (c Changes) normalize(paths []string) (Changes, error) {
	if err := CheckPaths(paths); err != nil {
		return Changes{}, err
	}
	var err error
	for _, p := range paths {
		switch p {
		case PathEmail:
			if c.Email, err = NormalizeEmail(c.Email); err != nil {
				return Changes{}, err
			}
		case PathName:
			if c.Name, err = NormalizeName(c.Name); err != nil {
				return Changes{}, err
			}
		}
	}
	return c, nil
}

// Apply changes the fields of u named in paths to their values in c, at
// time now. It reports whether anything changed; UpdateTime moves only
// then, so repeating an update is a no-op.
func (u *User) Apply(paths []string, c Changes, now time.Time) (bool, error) {
	changed, err := u.ApplyChanges(paths, c, now)
	return len(changed) > 0, err
}

// ApplyChanges is Apply, reporting which fields changed: PathEmail and
// PathName, in that order, each at most once. A field named in paths whose
// value stays the same did not change.
func (u *User) ApplyChanges(paths []string, c Changes, now time.Time) ([]string, error) {
	c, err := c.normalize(paths)
	if err != nil {
		return nil, err
	}
	next := *u
	for _, p := range paths {
		switch p {
		case PathEmail:
			next.Email = c.Email
		case PathName:
			next.Name = c.Name
		}
	}
	var changed []string
	if next.Email != u.Email {
		changed = append(changed, PathEmail)
	}
	if next.Name != u.Name {
		changed = append(changed, PathName)
	}
	if len(changed) == 0 {
		return nil, nil
	}
	next.UpdateTime = Timestamp(now)
	if next.UpdateTime.Before(u.UpdateTime) {
		// The clock stepped back; never let update_time go backwards.
		next.UpdateTime = u.UpdateTime
	}
	*u = next
	return changed, nil
}
