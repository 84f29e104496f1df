package domain

import (
	"context"
	"strings"
	"time"

	"github.com/google/uuid"
)

// Page sizes for List.
const (
	DefaultPageSize = 20
	MaxPageSize     = 100
)

// Position is where a listing ordered by (CreateTime, ID) resumes: after
// the user with this create time and id.
type Position struct {
	CreateTime time.Time
	ID         string
}

// Page is one page of users, oldest first.
type Page struct {
	Users []User
	// Next is where the following page starts, nil on the last page.
	Next *Position
}

// Repository stores users and the events reporting changes to them.
// Implementations report ErrNotFound and ErrEmailTaken, enforce email
// uniqueness on EmailKey atomically (a unique index), never by reading before
// writing, and record events in the same transaction as their change.
type Repository interface {
	// Create stores a new user and the events reporting it.
	Create(ctx context.Context, u User, events ...Event) error
	// Get returns the user with id.
	Get(ctx context.Context, id string) (User, error)
	// List returns up to limit users after pos (from the start when pos is
	// nil), ordered by (CreateTime, ID).
	List(ctx context.Context, after *Position, limit int) ([]User, error)
	// Update loads the user with id, lets fn change it, and stores the
	// result with the events fn returns, all in one transaction. Every
	// change is reported, so no events means no change: when fn returns
	// none, or an error, nothing is written.
	Update(ctx context.Context, id string, fn func(*User) (events []Event, err error)) (User, error)
}

// Service runs the user use cases over a Repository.
type Service struct {
	repo  Repository
	now   func() time.Time
	newID func() (string, error)
}

// Option configures a Service.
type Option func(*Service)

// WithClock makes the Service read the time from now; tests use it.
func WithClock(now func() time.Time) Option { return func(s *Service) { s.now = now } }

// NewService returns a Service storing users in repo.
func NewService(repo Repository, opts ...Option) *Service {
	s := &Service{repo: repo, now: time.Now, newID: newID}
	for _, o := range opts {
		o(s)
	}
	return s
}

// newID returns a version 7 UUID: time-ordered, so new rows land at the end
// of the primary-key index instead of at random places in it.
func newID() (string, error) {
	id, err := uuid.NewV7()
	if err != nil {
		return "", err
	}
	return id.String(), nil
}

// Create registers a user and reports it (EventCreated). A taken email (in
// any letter case) is ErrEmailTaken.
func (s *Service) Create(ctx context.Context, email, name string) (User, error) {
	id, err := s.newID()
	if err != nil {
		return User{}, err
	}
	u, err := NewUser(id, email, name, s.now())
	if err != nil {
		return User{}, err
	}
	if err := s.repo.Create(ctx, u, Event{Kind: EventCreated, User: u}); err != nil {
		return User{}, err
	}
	return u, nil
}

// Get returns the user with id.
func (s *Service) Get(ctx context.Context, id string) (User, error) {
	if err := CheckID(id); err != nil {
		return User{}, err
	}
	return s.repo.Get(ctx, strings.ToLower(id))
}

// List returns the page of at most pageSize users (0 means
// DefaultPageSize) that follows after, or the first page when after is nil.
func (s *Service) List(ctx context.Context, pageSize int, after *Position) (Page, error) {
	switch {
	case pageSize == 0:
		pageSize = DefaultPageSize
	case pageSize < 0 || pageSize > MaxPageSize:
		return Page{}, invalid("page_size", "must be between 0 and %d", MaxPageSize)
	}
	// One extra row tells whether another page follows without a count.
	users, err := s.repo.List(ctx, after, pageSize+1)
	if err != nil {
		return Page{}, err
	}
	page := Page{Users: users}
	if len(users) > pageSize {
		page.Users = users[:pageSize]
		last := page.Users[pageSize-1]
		page.Next = &Position{CreateTime: last.CreateTime, ID: last.ID}
	}
	return page, nil
}

// Update changes the fields of user id named in paths to their values in c
// and reports the fields that changed (EventUpdated); an update that
// changes nothing writes and reports nothing.
func (s *Service) Update(ctx context.Context, id string, paths []string, c Changes) (User, error) {
	if err := CheckID(id); err != nil {
		return User{}, err
	}
	id = strings.ToLower(id)
	// Reject a bad mask or bad values before touching the store.
	if err := CheckUpdate(paths, c); err != nil {
		return User{}, err
	}
	return s.repo.Update(ctx, id, func(u *User) ([]Event, error) {
		changed, err := u.ApplyChanges(paths, c, s.now())
		if err != nil || len(changed) == 0 {
			return nil, err
		}
		return []Event{{Kind: EventUpdated, User: *u, Changed: changed}}, nil
	})
}
