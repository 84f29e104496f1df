package domain_test

import (
	"cmp"
	"context"
	"errors"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/duetkit/duet/services/user/domain"
)

// memRepo is an in-memory domain.Repository, enough to test Service logic;
// the real store has its own tests against SQL.
type memRepo struct {
	mu     sync.Mutex
	users  map[string]domain.User
	events []domain.Event
}

func newMemRepo() *memRepo { return &memRepo{users: map[string]domain.User{}} }

func (r *memRepo) Create(_ context.Context, u domain.User, evs ...domain.Event) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, o := range r.users {
		if o.EmailKey() == u.EmailKey() {
			return domain.ErrEmailTaken
		}
	}
	r.users[u.ID] = u
	r.events = append(r.events, evs...)
	return nil
}

func (r *memRepo) Get(_ context.Context, id string) (domain.User, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	u, ok := r.users[id]
	if !ok {
		return domain.User{}, domain.ErrNotFound
	}
	return u, nil
}

func (r *memRepo) List(_ context.Context, after *domain.Position, limit int) ([]domain.User, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	var all []domain.User
	for _, u := range r.users {
		if after == nil || u.CreateTime.After(after.CreateTime) || (u.CreateTime.Equal(after.CreateTime) && u.ID > after.ID) {
			all = append(all, u)
		}
	}
	slices.SortFunc(all, func(a, b domain.User) int {
		return cmp.Or(a.CreateTime.Compare(b.CreateTime), cmp.Compare(a.ID, b.ID))
	})
	return all[:min(limit, len(all))], nil
}

func (r *memRepo) Update(_ context.Context, id string, fn func(*domain.User) ([]domain.Event, error)) (domain.User, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	u, ok := r.users[id]
	if !ok {
		return domain.User{}, domain.ErrNotFound
	}
	evs, err := fn(&u)
	if err != nil {
		return domain.User{}, err
	}
	if len(evs) > 0 {
		for _, o := range r.users {
			if o.ID != id && o.EmailKey() == u.EmailKey() {
				return domain.User{}, domain.ErrEmailTaken
			}
		}
		r.users[id] = u
		r.events = append(r.events, evs...)
	}
	return u, nil
}

// fakeClock ticks one millisecond per reading.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(time.Millisecond)
	return c.t
}

func newService() *domain.Service {
	clock := &fakeClock{t: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	return domain.NewService(newMemRepo(), domain.WithClock(clock.Now))
}

func TestServiceCreate(t *testing.T) {
	ctx := t.Context()
	s := newService()
	u, err := s.Create(ctx, "Ann@Example.com", "Ann")
	if err != nil {
		t.Fatal(err)
	}
	if domain.CheckID(u.ID) != nil {
		t.Errorf("id %q is not a UUID", u.ID)
	}
	if _, err := s.Create(ctx, "ann@EXAMPLE.com", "Other Ann"); !errors.Is(err, domain.ErrEmailTaken) {
		t.Errorf("duplicate email in other case: %v, want ErrEmailTaken", err)
	}
	if _, err := s.Create(ctx, "bad", "Ann"); field(err) != "email" {
		t.Errorf("bad email: %v", err)
	}
	got, err := s.Get(ctx, u.ID)
	if err != nil || got != u {
		t.Errorf("Get = %+v, %v; want %+v", got, err, u)
	}
}

func TestServiceGetAndUpdateChecks(t *testing.T) {
	ctx := t.Context()
	s := newService()
	missing := "0190b7a0-4c7e-7a39-9a39-3f0e7ad7f2f1"
	tests := []struct {
		name      string
		call      func() error
		wantField string
		wantErr   error
	}{
		{name: "get bad id", call: func() error { _, err := s.Get(ctx, "42"); return err }, wantField: "id"},
		{name: "get missing", call: func() error { _, err := s.Get(ctx, missing); return err }, wantErr: domain.ErrNotFound},
		{name: "update bad id", call: func() error {
			_, err := s.Update(ctx, "42", []string{"name"}, domain.Changes{Name: "x"})
			return err
		}, wantField: "id"},
		{name: "update bad mask on missing user", call: func() error {
			_, err := s.Update(ctx, missing, []string{"id"}, domain.Changes{})
			return err
		}, wantField: "update_mask"},
		{name: "update missing", call: func() error {
			_, err := s.Update(ctx, missing, []string{"name"}, domain.Changes{Name: "x"})
			return err
		}, wantErr: domain.ErrNotFound},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.call()
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) {
					t.Errorf("err = %v, want %v", err, tt.wantErr)
				}
				return
			}
			if field(err) != tt.wantField {
				t.Errorf("err = %v, want a validation error on %s", err, tt.wantField)
			}
		})
	}
}

// TestServiceIDCase: UUIDs are case-insensitive on input (RFC 9562). An
// upper-case id found nobody on Update (kit/server lowers only the ids a
// request's rules mark, and UpdateUserRequest's is inside a User).
func TestServiceIDCase(t *testing.T) {
	ctx := t.Context()
	s := newService()
	u, err := s.Create(ctx, "ada@example.com", "Ada")
	if err != nil {
		t.Fatal(err)
	}
	upper := strings.ToUpper(u.ID)
	if got, err := s.Get(ctx, upper); err != nil || got.ID != u.ID {
		t.Errorf("Get(%s) = %+v, %v", upper, got, err)
	}
	if got, err := s.Update(ctx, upper, []string{"name"}, domain.Changes{Name: "Ada L."}); err != nil || got.ID != u.ID || got.Name != "Ada L." {
		t.Errorf("Update(%s) = %+v, %v", upper, got, err)
	}
}

// TestCheckPathsEcho: an unknown path is the client's, of any length; the
// error (and so the log line) echoed a 1 MiB path whole.
func TestCheckPathsEcho(t *testing.T) {
	err := domain.CheckPaths([]string{strings.Repeat("A", 1<<20)})
	if field(err) != "update_mask" || len(err.Error()) > 200 {
		t.Errorf("error on update_mask of %d bytes, want under 200: %.120s…", len(err.Error()), err)
	}
}

func TestServiceList(t *testing.T) {
	ctx := t.Context()
	s := newService()
	var want []string
	for i := range 45 {
		u, err := s.Create(ctx, "user"+string(rune('a'+i%26))+string(rune('a'+i/26))+"@example.com", "U")
		if err != nil {
			t.Fatal(err)
		}
		want = append(want, u.ID)
	}
	for _, tt := range []struct {
		pageSize  int
		wantPages []int
	}{
		{pageSize: 0, wantPages: []int{20, 20, 5}},
		{pageSize: 15, wantPages: []int{15, 15, 15}},
		{pageSize: 44, wantPages: []int{44, 1}},
		{pageSize: 45, wantPages: []int{45}},
		{pageSize: 100, wantPages: []int{45}},
	} {
		var got []string
		var sizes []int
		var after *domain.Position
		for {
			page, err := s.List(ctx, tt.pageSize, after)
			if err != nil {
				t.Fatal(err)
			}
			sizes = append(sizes, len(page.Users))
			for _, u := range page.Users {
				got = append(got, u.ID)
			}
			if page.Next == nil {
				break
			}
			after = page.Next
		}
		if !slices.Equal(got, want) || !slices.Equal(sizes, tt.wantPages) {
			t.Errorf("page size %d: pages %v, ids in order = %v; want pages %v", tt.pageSize, sizes, slices.Equal(got, want), tt.wantPages)
		}
	}
	for _, bad := range []int{-1, 101} {
		if _, err := s.List(ctx, bad, nil); field(err) != "page_size" {
			t.Errorf("List(page size %d) = %v, want a validation error on page_size", bad, err)
		}
	}
}

// TestServiceEvents: every change is reported with the fields it changed,
// and nothing else is.
func TestServiceEvents(t *testing.T) {
	ctx := t.Context()
	repo := newMemRepo()
	s := domain.NewService(repo)
	ann, err := s.Create(ctx, "ann@example.com", "Ann")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Create(ctx, "bob@example.com", "Bob"); err != nil {
		t.Fatal(err)
	}
	steps := []struct {
		name    string
		paths   []string
		changes domain.Changes
		// wantChanged is the event's Changed; nil for no event.
		wantChanged []string
	}{
		{"rename", []string{"name"}, domain.Changes{Name: "Annie"}, []string{"name"}},
		{"same name", []string{"name"}, domain.Changes{Name: "Annie"}, nil},
		{"email and name, only email differs", []string{"name", "email"}, domain.Changes{Name: "Annie", Email: "annie@example.com"}, []string{"email"}},
		{"both, listed twice", []string{"email", "name", "email"}, domain.Changes{Name: "Ann", Email: "ann@example.com"}, []string{"email", "name"}},
		{"email taken", []string{"email"}, domain.Changes{Email: "BOB@example.com"}, nil},
		{"invalid", []string{"email"}, domain.Changes{Email: "nope"}, nil},
	}
	for _, st := range steps {
		before := len(repo.events)
		_, _ = s.Update(ctx, ann.ID, st.paths, st.changes)
		evs := repo.events[before:]
		switch {
		case st.wantChanged == nil && len(evs) != 0:
			t.Errorf("%s: events %+v, want none", st.name, evs)
		case st.wantChanged != nil && (len(evs) != 1 || evs[0].Kind != domain.EventUpdated || !slices.Equal(evs[0].Changed, st.wantChanged) || evs[0].User.ID != ann.ID):
			t.Errorf("%s: events %+v, want one update of %v", st.name, evs, st.wantChanged)
		}
	}
	if len(repo.events) < 2 || repo.events[0].Kind != domain.EventCreated || repo.events[0].User != ann {
		t.Errorf("first event %+v, want the creation of %+v", repo.events[0], ann)
	}
}
