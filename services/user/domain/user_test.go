package domain_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/duetkit/duet/services/user/domain"
)

// field returns the field of a *domain.ValidationError, or "" for nil and
// "<not validation>" for other errors.
func field(err error) string {
	if err == nil {
		return ""
	}
	var v *domain.ValidationError
	if !errors.As(err, &v) {
		return "<not validation: " + err.Error() + ">"
	}
	return v.Field
}

func TestNormalizeEmail(t *testing.T) {
	tests := []struct {
		in      string
		want    string
		invalid bool
	}{
		{in: "ann@example.com", want: "ann@example.com"},
		{in: "Ann.Lee@Example.COM", want: "Ann.Lee@Example.COM"},
		{in: "  ann@example.com\t", want: "ann@example.com"},
		{in: "a+tag@sub.example.co.uk", want: "a+tag@sub.example.co.uk"},
		{in: "o'brien@example.com", want: "o'brien@example.com"},
		{in: "root@localhost", want: "root@localhost"},
		{in: strings.Repeat("a", 64) + "@" + strings.Repeat("b", 63) + ".com", want: strings.Repeat("a", 64) + "@" + strings.Repeat("b", 63) + ".com"},
		{in: "", invalid: true},
		{in: "   ", invalid: true},
		{in: "ann", invalid: true},
		{in: "ann@", invalid: true},
		{in: "@example.com", invalid: true},
		{in: "ann@@example.com", invalid: true},
		{in: "ann@exa mple.com", invalid: true},
		{in: "Ann <ann@example.com>", invalid: true},
		{in: "ann@-example.com", invalid: true},
		{in: "ann@example-.com", invalid: true},
		{in: "ann@example..com", invalid: true},
		{in: "ann@example.com.", invalid: true},
		{in: "ann@" + strings.Repeat("b", 64) + ".com", invalid: true},
		{in: "ännë@example.com", invalid: true},
		{in: "ann@exämple.com", invalid: true},
		{in: "ann\n@example.com", invalid: true},
		{in: strings.Repeat("a", 250) + "@b.co", invalid: true}, // 255 characters
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := domain.NormalizeEmail(tt.in)
			if tt.invalid {
				if field(err) != "email" {
					t.Fatalf("NormalizeEmail(%q) = %q, %v; want a validation error on email", tt.in, got, err)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("NormalizeEmail(%q) = %q, %v; want %q", tt.in, got, err, tt.want)
			}
		})
	}
}

func TestEmailKey(t *testing.T) {
	tests := []struct{ a, b string }{
		{"ann@example.com", "ANN@EXAMPLE.COM"},
		{"Ann.Lee@Example.com", "ann.lee@example.COM"},
	}
	for _, tt := range tests {
		if domain.EmailKey(tt.a) != domain.EmailKey(tt.b) {
			t.Errorf("EmailKey(%q) != EmailKey(%q)", tt.a, tt.b)
		}
	}
	if domain.EmailKey("ann@example.com") == domain.EmailKey("anne@example.com") {
		t.Error("different addresses share a key")
	}
	if got := (domain.User{Email: "Ann@X.io"}).EmailKey(); got != "ann@x.io" {
		t.Errorf("User.EmailKey() = %q, want %q", got, "ann@x.io")
	}
}

func TestNormalizeName(t *testing.T) {
	tests := []struct {
		in      string
		want    string
		invalid bool
	}{
		{in: "Ann", want: "Ann"},
		{in: "  Ann Lee  ", want: "Ann Lee"},
		{in: "Zoë 李", want: "Zoë 李"},
		{in: strings.Repeat("é", 100), want: strings.Repeat("é", 100)},
		{in: "", invalid: true},
		{in: " \t ", invalid: true},
		{in: strings.Repeat("é", 101), invalid: true},
		{in: "Ann\nLee", invalid: true},
		{in: "Ann\x00", invalid: true},
		{in: "bad \xff utf8", invalid: true},
		{in: "\u200b", invalid: true},             // zero-width space: looks empty
		{in: "\u200b\ufeff\u2060", invalid: true}, // nothing but format characters
		{in: "Ann\u202e has paid", invalid: true}, // right-to-left override
		{in: "Ann\u2067Lee", invalid: true},       // right-to-left isolate
		{in: "Ann\u2028Lee", invalid: true},       // line separator
		{in: "Ann\u2029Lee", invalid: true},       // paragraph separator
		{in: "\u0645\u06cc\u200c\u0631\u0648\u062f", want: "\u0645\u06cc\u200c\u0631\u0648\u062f"}, // Persian, with a zero-width non-joiner
		{in: "Ann \U0001F469\u200d\U0001F4BB", want: "Ann \U0001F469\u200d\U0001F4BB"},             // an emoji sequence's joiner
		{in: "\u200fSara", want: "\u200fSara"},                                                     // a right-to-left mark
		{in: "-", want: "-"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := domain.NormalizeName(tt.in)
			if tt.invalid {
				if field(err) != "name" {
					t.Fatalf("NormalizeName(%q) = %q, %v; want a validation error on name", tt.in, got, err)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("NormalizeName(%q) = %q, %v; want %q", tt.in, got, err, tt.want)
			}
		})
	}
}

func TestCheckID(t *testing.T) {
	tests := []struct {
		id    string
		valid bool
	}{
		{id: "0190b7a0-4c7e-7a39-9a39-3f0e7ad7f2f1", valid: true},
		{id: "0190B7A0-4C7E-7A39-9A39-3F0E7AD7F2F1", valid: true},
		{id: ""},
		{id: "42"},
		{id: "0190b7a04c7e7a399a393f0e7ad7f2f1"},
		{id: "{0190b7a0-4c7e-7a39-9a39-3f0e7ad7f2f1}"},
		{id: "urn:uuid:0190b7a0-4c7e-7a39-9a39-3f0e7ad7f2f1"},
		{id: "0190b7a0-4c7e-7a39-9a39-3f0e7ad7f2fz"},
	}
	for _, tt := range tests {
		t.Run(tt.id, func(t *testing.T) {
			err := domain.CheckID(tt.id)
			if tt.valid && err != nil {
				t.Errorf("CheckID(%q) = %v, want nil", tt.id, err)
			}
			if !tt.valid && field(err) != "id" {
				t.Errorf("CheckID(%q) = %v, want a validation error on id", tt.id, err)
			}
		})
	}
}

func TestNewUser(t *testing.T) {
	now := time.Date(2026, 1, 2, 3, 4, 5, 6789, time.FixedZone("X", 3600))
	u, err := domain.NewUser("id", " Ann@Example.com ", " Ann ", now)
	if err != nil {
		t.Fatal(err)
	}
	want := domain.Timestamp(now)
	if u.Email != "Ann@Example.com" || u.Name != "Ann" || !u.CreateTime.Equal(want) || !u.UpdateTime.Equal(want) {
		t.Errorf("NewUser = %+v", u)
	}
	if u.CreateTime.Location() != time.UTC || u.CreateTime.Nanosecond()%1000 != 0 {
		t.Errorf("CreateTime %v is not UTC microseconds", u.CreateTime)
	}
	if _, err := domain.NewUser("id", "nope", "Ann", now); field(err) != "email" {
		t.Errorf("bad email: %v", err)
	}
	if _, err := domain.NewUser("id", "a@b.c", "", now); field(err) != "name" {
		t.Errorf("bad name: %v", err)
	}
}

func TestApply(t *testing.T) {
	created := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	later := created.Add(time.Hour)
	base := domain.User{ID: "id", Email: "ann@example.com", Name: "Ann", CreateTime: created, UpdateTime: created}
	tests := []struct {
		name        string
		paths       []string
		changes     domain.Changes
		now         time.Time
		wantField   string
		wantChanged bool
		want        domain.User
	}{
		{name: "name", paths: []string{"name"}, changes: domain.Changes{Name: " Annie ", Email: "ignored"}, now: later,
			wantChanged: true, want: domain.User{ID: "id", Email: "ann@example.com", Name: "Annie", CreateTime: created, UpdateTime: later}},
		{name: "email", paths: []string{"email"}, changes: domain.Changes{Email: "Ann@New.example"}, now: later,
			wantChanged: true, want: domain.User{ID: "id", Email: "Ann@New.example", Name: "Ann", CreateTime: created, UpdateTime: later}},
		{name: "both", paths: []string{"email", "name"}, changes: domain.Changes{Email: "b@c.d", Name: "B"}, now: later,
			wantChanged: true, want: domain.User{ID: "id", Email: "b@c.d", Name: "B", CreateTime: created, UpdateTime: later}},
		{name: "email case only counts", paths: []string{"email"}, changes: domain.Changes{Email: "ANN@example.com"}, now: later,
			wantChanged: true, want: domain.User{ID: "id", Email: "ANN@example.com", Name: "Ann", CreateTime: created, UpdateTime: later}},
		{name: "same values are a no-op", paths: []string{"name", "email"}, changes: domain.Changes{Email: "ann@example.com", Name: "Ann"}, now: later,
			want: base},
		{name: "clock went back", paths: []string{"name"}, changes: domain.Changes{Name: "X"}, now: created.Add(-time.Hour),
			wantChanged: true, want: domain.User{ID: "id", Email: "ann@example.com", Name: "X", CreateTime: created, UpdateTime: created}},
		{name: "empty mask", paths: nil, now: later, wantField: "update_mask", want: base},
		{name: "unknown path", paths: []string{"name", "nickname"}, changes: domain.Changes{Name: "X"}, now: later, wantField: "update_mask", want: base},
		{name: "output only path", paths: []string{"create_time"}, now: later, wantField: "update_mask", want: base},
		{name: "id path", paths: []string{"id"}, now: later, wantField: "update_mask", want: base},
		{name: "id and output-only paths beside name are ignored", paths: []string{"id", "email", "name", "create_time", "update_time"},
			changes: domain.Changes{Email: "ann@example.com", Name: "Ann B"}, now: later,
			wantChanged: true, want: domain.User{ID: "id", Email: "ann@example.com", Name: "Ann B", CreateTime: created, UpdateTime: later}},
		{name: "wildcard", paths: []string{"*"}, now: later, wantField: "update_mask", want: base},
		{name: "bad email", paths: []string{"name", "email"}, changes: domain.Changes{Name: "X", Email: "nope"}, now: later, wantField: "email", want: base},
		{name: "empty name", paths: []string{"name"}, changes: domain.Changes{Name: " "}, now: later, wantField: "name", want: base},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			u := base
			changed, err := u.Apply(tt.paths, tt.changes, tt.now)
			if got := field(err); got != tt.wantField {
				t.Fatalf("error field = %q (%v), want %q", got, err, tt.wantField)
			}
			if err := domain.CheckUpdate(tt.paths, tt.changes); field(err) != tt.wantField {
				t.Errorf("CheckUpdate disagrees with Apply: %v", err)
			}
			if changed != tt.wantChanged {
				t.Errorf("changed = %v, want %v", changed, tt.wantChanged)
			}
			if u != tt.want {
				t.Errorf("user = %+v, want %+v", u, tt.want)
			}
		})
	}
}
