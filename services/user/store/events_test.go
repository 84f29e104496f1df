package store_test

import (
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/duetkit/duet/kit/sqldb/sqldbtest"
	"github.com/duetkit/duet/services/user/domain"
	"github.com/duetkit/duet/services/user/store"
)

// outboxSubjects lists the subjects of the events in the outbox, oldest first.
func outboxSubjects(t *testing.T, url string) []string {
	t.Helper()
	db, err := store.Open(t.Context(), url)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	rows, err := db.QueryContext(t.Context(), "SELECT subject FROM events_outbox ORDER BY seq")
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var subject string
		if err := rows.Scan(&subject); err != nil {
			t.Fatal(err)
		}
		out = append(out, subject)
	}
	return out
}

// TestEventsCommitWithTheirChange: changes append their events in their own
// transaction; a refused change leaves none.
func TestEventsCommitWithTheirChange(t *testing.T) {
	sqldbtest.Run(t, func(t *testing.T, url string) {
		s := openStore(t, url)
		var notified atomic.Int32
		s.OnAppend(func() { notified.Add(1) })
		ctx := t.Context()
		ann := newUser(t, "ann@example.com", base)
		bob := newUser(t, "bob@example.com", base)
		created := func(u domain.User) domain.Event { return domain.Event{Kind: domain.EventCreated, User: u} }
		rename := func(name string, err error) func(u *domain.User) ([]domain.Event, error) {
			return func(u *domain.User) ([]domain.Event, error) {
				changed, aerr := u.ApplyChanges([]string{"name"}, domain.Changes{Name: name}, base.Add(time.Hour))
				if aerr != nil || len(changed) == 0 {
					return nil, aerr
				}
				return []domain.Event{{Kind: domain.EventUpdated, User: *u, Changed: changed}}, err
			}
		}
		errBoom := errors.New("boom")
		steps := []struct {
			name     string
			do       func() error
			wantErr  error
			wantRows int
		}{
			{"create ann", func() error { return s.Create(ctx, ann, created(ann)) }, nil, 1},
			{"create bob", func() error { return s.Create(ctx, bob, created(bob)) }, nil, 2},
			{"email taken", func() error {
				dup := newUser(t, "ANN@example.com", base)
				return s.Create(ctx, dup, created(dup))
			}, domain.ErrEmailTaken, 2},
			{"rename", func() error { _, err := s.Update(ctx, ann.ID, rename("Annie", nil)); return err }, nil, 3},
			{"rename to the same", func() error { _, err := s.Update(ctx, ann.ID, rename("Annie", nil)); return err }, nil, 3},
			{"rename fails", func() error { _, err := s.Update(ctx, ann.ID, rename("Anna", errBoom)); return err }, errBoom, 3},
			{"rename to bob's email", func() error {
				_, err := s.Update(ctx, ann.ID, func(u *domain.User) ([]domain.Event, error) {
					u.Email = "bob@example.com"
					return []domain.Event{{Kind: domain.EventUpdated, User: *u, Changed: []string{"email"}}}, nil
				})
				return err
			}, domain.ErrEmailTaken, 3},
		}
		for _, st := range steps {
			if err := st.do(); !errors.Is(err, st.wantErr) {
				t.Fatalf("%s: %v, want %v", st.name, err, st.wantErr)
			}
			if got := outboxSubjects(t, url); len(got) != st.wantRows {
				t.Fatalf("%s: outbox %v, want %d rows", st.name, got, st.wantRows)
			}
		}
		if got := outboxSubjects(t, url); got[0] != "user.created" || got[2] != "user.updated" {
			t.Errorf("outbox %v", got)
		}
		if notified.Load() != 3 {
			t.Errorf("OnAppend called %d times, want 3", notified.Load())
		}
	})
}
