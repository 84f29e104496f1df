package pagetoken_test

import (
	"encoding/base64"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/duetkit/duet/kit/pagetoken"
)

func TestRoundTrip(t *testing.T) {
	tests := []struct {
		name string
		c    pagetoken.Cursor
	}{
		{name: "users", c: pagetoken.Cursor{Scope: "users", Time: time.Date(2026, 1, 2, 3, 4, 5, 6000, time.UTC), ID: "0b7d6bd4-6c5e-4c7e-9a39-3f0e7ad7f2f1"}},
		{name: "orders of a user", c: pagetoken.Cursor{Scope: "orders:0b7d6bd4-6c5e-4c7e-9a39-3f0e7ad7f2f1", Time: time.UnixMicro(1).UTC(), ID: "x"}},
		{name: "before epoch", c: pagetoken.Cursor{Scope: "s", Time: time.UnixMicro(-123456789).UTC(), ID: "id"}},
		{name: "empty id and scope", c: pagetoken.Cursor{Time: time.UnixMicro(0).UTC()}},
		{name: "unicode", c: pagetoken.Cursor{Scope: "ünïcode", Time: time.UnixMicro(42).UTC(), ID: "日本"}},
		{name: "longest fields", c: pagetoken.Cursor{Scope: strings.Repeat("s", 300), Time: time.UnixMicro(42).UTC(), ID: strings.Repeat("i", 300)}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tok := pagetoken.Encode(tt.c)
			if len(tok) > pagetoken.MaxLen {
				t.Fatalf("token length %d exceeds MaxLen", len(tok))
			}
			if strings.ContainsAny(tok, "+/=") {
				t.Errorf("token %q is not unpadded base64url", tok)
			}
			got, err := pagetoken.Decode(tok, tt.c.Scope)
			if err != nil {
				t.Fatalf("Decode: %v", err)
			}
			if got.Scope != tt.c.Scope || got.ID != tt.c.ID || !got.Time.Equal(tt.c.Time) {
				t.Errorf("Decode = %+v, want %+v", got, tt.c)
			}
		})
	}
}

func TestTimeKeptToMicroseconds(t *testing.T) {
	in := time.Date(2026, 5, 6, 7, 8, 9, 123456789, time.FixedZone("X", 3600))
	got, err := pagetoken.Decode(pagetoken.Encode(pagetoken.Cursor{Scope: "s", Time: in, ID: "a"}), "s")
	if err != nil {
		t.Fatal(err)
	}
	if want := in.Truncate(time.Microsecond); !got.Time.Equal(want) || got.Time.Location() != time.UTC {
		t.Errorf("Time = %v, want %v in UTC", got.Time, want)
	}
}

func TestDecodeRejects(t *testing.T) {
	valid := pagetoken.Encode(pagetoken.Cursor{Scope: "users", Time: time.UnixMicro(1700000000000000), ID: "abc"})
	raw, err := base64.RawURLEncoding.DecodeString(valid)
	if err != nil {
		t.Fatal(err)
	}
	mutate := func(f func([]byte) []byte) string {
		b := f(append([]byte(nil), raw...))
		return base64.RawURLEncoding.EncodeToString(b)
	}
	tests := []struct {
		name  string
		tok   string
		scope string
	}{
		{name: "empty", tok: "", scope: "users"},
		{name: "garbage", tok: "not a token!", scope: "users"},
		{name: "padded base64", tok: base64.URLEncoding.EncodeToString(raw), scope: "users"},
		{name: "std base64 alphabet", tok: strings.NewReplacer("-", "+", "_", "/").Replace(valid) + "+/", scope: "users"},
		{name: "valid base64 of junk", tok: base64.RawURLEncoding.EncodeToString([]byte("hello world, this is junk")), scope: "users"},
		{name: "too short", tok: base64.RawURLEncoding.EncodeToString([]byte{1, 2}), scope: "users"},
		{name: "too long", tok: strings.Repeat("A", pagetoken.MaxLen+1), scope: "users"},
		{name: "truncated", tok: valid[:len(valid)-3], scope: "users"},
		{name: "extended", tok: valid + "AA", scope: "users"},
		// base64's decoder skips line breaks, even in strict mode.
		{name: "line feed inside", tok: valid[:5] + "\n" + valid[5:], scope: "users"},
		{name: "carriage return at the end", tok: valid + "\r", scope: "users"},
		{name: "flipped id byte", tok: mutate(func(b []byte) []byte { b[len(b)-6] ^= 1; return b }), scope: "users"},
		{name: "flipped time byte", tok: mutate(func(b []byte) []byte { b[8] ^= 0x10; return b }), scope: "users"},
		{name: "flipped checksum", tok: mutate(func(b []byte) []byte { b[len(b)-1] ^= 0xff; return b }), scope: "users"},
		{name: "unknown version", tok: mutate(func(b []byte) []byte { b[0] = 9; return b }), scope: "users"},
		{name: "other scope", tok: valid, scope: "orders:abc"},
		{name: "scope prefix", tok: pagetoken.Encode(pagetoken.Cursor{Scope: "orders:ab", ID: "x"}), scope: "orders:abc"},
		// Well-formed and checksummed, so only a forger makes them: no
		// store keeps such an id, and PostgreSQL fails a query given one.
		{name: "id with NUL", tok: pagetoken.Encode(pagetoken.Cursor{Scope: "users", ID: "a\x00"}), scope: "users"},
		{name: "id not UTF-8", tok: pagetoken.Encode(pagetoken.Cursor{Scope: "users", ID: "a\xff"}), scope: "users"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := pagetoken.Decode(tt.tok, tt.scope)
			if err == nil {
				t.Fatalf("Decode(%q) = %+v, want error", tt.tok, c)
			}
			if !errors.Is(err, pagetoken.ErrInvalid) {
				t.Errorf("error %v does not wrap ErrInvalid", err)
			}
			if c != (pagetoken.Cursor{}) {
				t.Errorf("Decode returned a non-zero cursor %+v with its error", c)
			}
		})
	}
}

func TestEncodePanicsOnOversizedFields(t *testing.T) {
	defer func() {
		if recover() == nil {
			t.Error("Encode with a 301-byte id did not panic")
		}
	}()
	pagetoken.Encode(pagetoken.Cursor{Scope: "s", ID: strings.Repeat("x", 301)})
}

func FuzzDecode(f *testing.F) {
	f.Add(pagetoken.Encode(pagetoken.Cursor{Scope: "users", Time: time.UnixMicro(5), ID: "a"}), "users")
	f.Add("AQ", "users")
	f.Add("AQ\nAA", "users")
	f.Fuzz(func(t *testing.T, tok, scope string) {
		c, err := pagetoken.Decode(tok, scope)
		if err != nil {
			return
		}
		// Anything accepted must be exactly what Encode produces for it.
		if again := pagetoken.Encode(c); again != tok {
			t.Errorf("Decode accepted %q, which re-encodes as %q", tok, again)
		}
	})
}
