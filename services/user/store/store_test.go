package store_test

import (
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/duetkit/duet/kit/sqldb/sqldbtest"
	"github.com/duetkit/duet/services/user/domain"
	"github.com/duetkit/duet/services/user/store"
)

func openStore(t *testing.T, url string) *store.Store {
	t.Helper()
	db, err := store.Open(t.Context(), url)
	if err != nil {
		t.Fatalf("store.Open: %v", err)
	}
	t.Cleanup(func() { _ = db.Close() })
	return store.New(db)
}

var base = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

func newUser(t *testing.T, email string, at time.Time) domain.User {
	t.Helper()
	u, err := domain.NewUser(uuid.Must(uuid.NewV7()).String(), email, "Name of "+email, at)
	if err != nil {
		t.Fatal(err)
	}
	return u
}

func TestCreateGet(t *testing.T) {
	sqldbtest.Run(t, func(t *testing.T, url string) {
		s := openStore(t, url)
		ctx := t.Context()
		u := newUser(t, "Ann@Example.com", base.Add(1234567*time.Microsecond))
		if err := s.Create(ctx, u); err != nil {
			t.Fatal(err)
		}
		got, err := s.Get(ctx, u.ID)
		if err != nil {
			t.Fatal(err)
		}
		if got != u {
			t.Errorf("Get = %+v, want %+v", got, u)
		}
		if _, err := s.Get(ctx, uuid.NewString()); !errors.Is(err, domain.ErrNotFound) {
			t.Errorf("Get(missing) = %v, want ErrNotFound", err)
		}
	})
}

func TestEmailUniqueIgnoringCase(t *testing.T) {
	sqldbtest.Run(t, func(t *testing.T, url string) {
		s := openStore(t, url)
		ctx := t.Context()
		if err := s.Create(ctx, newUser(t, "ann@example.com", base)); err != nil {
			t.Fatal(err)
		}
		for _, email := range []string{"ann@example.com", "ANN@example.com", "Ann@Example.Com"} {
			if err := s.Create(ctx, newUser(t, email, base)); !errors.Is(err, domain.ErrEmailTaken) {
				t.Errorf("Create(%q) = %v, want ErrEmailTaken", email, err)
			}
		}
		if err := s.Create(ctx, newUser(t, "anne@example.com", base)); err != nil {
			t.Errorf("Create(other email) = %v", err)
		}
	})
}

// TestConcurrentCreateSameEmail: racing sign-ups with one address (in
// different letter cases) end with exactly one user; the rest see
// ErrEmailTaken, not an internal error.
func TestConcurrentCreateSameEmail(t *testing.T) {
	sqldbtest.Run(t, func(t *testing.T, url string) {
		s := openStore(t, url)
		const n = 16
		errs := make([]error, n)
		var wg sync.WaitGroup
		start := make(chan struct{})
		for i := range n {
			email := "race@example.com"
			if i%2 == 1 {
				email = "RACE@example.com"
			}
			u := newUser(t, email, base)
			wg.Go(func() {
				<-start
				errs[i] = s.Create(t.Context(), u)
			})
		}
		close(start)
		wg.Wait()
		wins := 0
		for _, err := range errs {
			switch {
			case err == nil:
				wins++
			case !errors.Is(err, domain.ErrEmailTaken):
				t.Errorf("loser got %v, want ErrEmailTaken", err)
			}
		}
		if wins != 1 {
			t.Errorf("%d creates succeeded, want exactly 1", wins)
		}
	})
}

func TestListKeyset(t *testing.T) {
	sqldbtest.Run(t, func(t *testing.T, url string) {
		s := openStore(t, url)
		ctx := t.Context()
		// Groups of three users share a create time, so ties on time must be
		// broken by id.
		var want []domain.User
		for i := range 10 {
			u := newUser(t, fmt.Sprintf("u%02d@example.com", i), base.Add(time.Duration(i/3)*time.Second))
			if err := s.Create(ctx, u); err != nil {
				t.Fatal(err)
			}
			want = append(want, u)
		}
		slices.SortFunc(want, func(a, b domain.User) int {
			if c := a.CreateTime.Compare(b.CreateTime); c != 0 {
				return c
			}
			if a.ID < b.ID {
				return -1
			}
			return 1
		})
		for _, limit := range []int{1, 2, 3, 4, 10, 11} {
			var got []domain.User
			var after *domain.Position
			for range 20 {
				page, err := s.List(ctx, after, limit)
				if err != nil {
					t.Fatal(err)
				}
				got = append(got, page...)
				if len(page) < limit {
					break
				}
				last := page[len(page)-1]
				after = &domain.Position{CreateTime: last.CreateTime, ID: last.ID}
			}
			if !slices.Equal(got, want) {
				t.Errorf("limit %d: listed %d users out of order or with gaps", limit, len(got))
			}
		}
		page, err := s.List(ctx, &domain.Position{CreateTime: base.Add(time.Hour)}, 10)
		if err != nil || len(page) != 0 {
			t.Errorf("List after the end = %d users, %v; want none", len(page), err)
		}
	})
}

func TestUpdate(t *testing.T) {
	sqldbtest.Run(t, func(t *testing.T, url string) {
		s := openStore(t, url)
		ctx := t.Context()
		ann := newUser(t, "ann@example.com", base)
		bob := newUser(t, "bob@example.com", base)
		for _, u := range []domain.User{ann, bob} {
			if err := s.Create(ctx, u); err != nil {
				t.Fatal(err)
			}
		}
		errBoom := errors.New("boom")
		later := base.Add(time.Minute)
		tests := []struct {
			name    string
			id      string
			paths   []string
			changes domain.Changes
			fnErr   error
			wantErr error
			want    domain.User // the stored user afterwards
		}{
			{name: "rename", id: ann.ID, paths: []string{"name"}, changes: domain.Changes{Name: "Annie"},
				want: domain.User{ID: ann.ID, Email: ann.Email, Name: "Annie", CreateTime: base, UpdateTime: later}},
			{name: "email taken by bob in other case", id: ann.ID, paths: []string{"email"}, changes: domain.Changes{Email: "BOB@example.com"},
				wantErr: domain.ErrEmailTaken, want: domain.User{ID: ann.ID, Email: ann.Email, Name: "Annie", CreateTime: base, UpdateTime: later}},
			{name: "own email in other case", id: ann.ID, paths: []string{"email"}, changes: domain.Changes{Email: "ANN@example.com"},
				want: domain.User{ID: ann.ID, Email: "ANN@example.com", Name: "Annie", CreateTime: base, UpdateTime: later}},
			{name: "fn error writes nothing", id: bob.ID, paths: []string{"name"}, changes: domain.Changes{Name: "Robert"}, fnErr: errBoom,
				wantErr: errBoom, want: bob},
			{name: "missing user", id: uuid.NewString(), paths: []string{"name"}, changes: domain.Changes{Name: "x"}, wantErr: domain.ErrNotFound},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				got, err := s.Update(ctx, tt.id, func(u *domain.User) ([]domain.Event, error) {
					changed, err := u.ApplyChanges(tt.paths, tt.changes, later)
					if err == nil && tt.fnErr != nil {
						err = tt.fnErr
					}
					if len(changed) == 0 {
						return nil, err
					}
					return []domain.Event{{Kind: domain.EventUpdated, User: *u, Changed: changed}}, err
				})
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("Update err = %v, want %v", err, tt.wantErr)
				}
				if err == nil && got != tt.want {
					t.Errorf("Update = %+v, want %+v", got, tt.want)
				}
				if tt.want.ID == "" {
					return
				}
				stored, err := s.Get(ctx, tt.id)
				if err != nil {
					t.Fatal(err)
				}
				if stored != tt.want {
					t.Errorf("stored = %+v, want %+v", stored, tt.want)
				}
			})
		}
	})
}

// TestConcurrentUpdates: concurrent read-modify-write updates of one user
// through the repository's transaction all apply; none is lost.
func TestConcurrentUpdates(t *testing.T) {
	sqldbtest.Run(t, func(t *testing.T, url string) {
		s := openStore(t, url)
		u := newUser(t, "counter@example.com", base)
		u.Name = "0"
		if err := s.Create(t.Context(), u); err != nil {
			t.Fatal(err)
		}
		const n = 10
		var wg sync.WaitGroup
		for range n {
			wg.Go(func() {
				_, err := s.Update(t.Context(), u.ID, func(u *domain.User) ([]domain.Event, error) {
					var k int
					fmt.Sscan(u.Name, &k)
					u.Name = fmt.Sprint(k + 1)
					return []domain.Event{{Kind: domain.EventUpdated, User: *u, Changed: []string{domain.PathName}}}, nil
				})
				if err != nil {
					t.Errorf("Update: %v", err)
				}
			})
		}
		wg.Wait()
		got, err := s.Get(t.Context(), u.ID)
		if err != nil {
			t.Fatal(err)
		}
		if got.Name != fmt.Sprint(n) {
			t.Errorf("name = %q after %d increments, want %d", got.Name, n, n)
		}
	})
}
