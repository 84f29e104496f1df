package displaytext_test

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/duetkit/duet/kit/displaytext"
)

func TestCheck(t *testing.T) {
	tests := []struct {
		in   string
		want error // nil: accepted
	}{
		{"Ann", nil},
		{"Zoë 李", nil},
		{strings.Repeat("é", 20), nil},
		{"-", nil},
		{"\u0645\u06cc\u200c\u0631\u0648\u062f", nil}, // Persian, with a zero-width non-joiner
		{"Ann \U0001F469\u200d\U0001F4BB", nil},       // an emoji sequence's joiner
		{"\u200fSara", nil},                           // a right-to-left mark
		{"", displaytext.ErrEmpty},
		{"bad \xff utf8", displaytext.ErrNotUTF8},
		{strings.Repeat("é", 21), &displaytext.TooLongError{Max: 20}},
		{"Ann\nLee", displaytext.ErrControl},
		{"Ann\x00", displaytext.ErrControl},
		{"Ann\u202e has paid", displaytext.ErrBreaks}, // right-to-left override
		{"Ann\u202aLee", displaytext.ErrBreaks},       // left-to-right embedding
		{"Ann\u2067Lee", displaytext.ErrBreaks},       // right-to-left isolate
		{"Ann\u2069", displaytext.ErrBreaks},          // pop directional isolate
		{"Ann\u2028Lee", displaytext.ErrBreaks},       // line separator
		{"Ann\u2029Lee", displaytext.ErrBreaks},       // paragraph separator
		{" \t", displaytext.ErrControl},               // a tab is a control character
		{"   ", displaytext.ErrInvisible},
		{"\u200b", displaytext.ErrInvisible},             // zero-width space: looks empty
		{"\u200b\ufeff\u2060", displaytext.ErrInvisible}, // nothing but format characters
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("%q", tt.in), func(t *testing.T) {
			err := displaytext.Check(tt.in, 20)
			var long *displaytext.TooLongError
			switch want := tt.want.(type) {
			case nil:
				if err != nil {
					t.Errorf("Check(%q) = %v, want nil", tt.in, err)
				}
			case *displaytext.TooLongError:
				if !errors.As(err, &long) || long.Max != want.Max || err.Error() != "must be at most 20 characters" {
					t.Errorf("Check(%q) = %v, want %v", tt.in, err, want)
				}
			default:
				if !errors.Is(err, want) {
					t.Errorf("Check(%q) = %v, want %v", tt.in, err, want)
				}
			}
		})
	}
}

func ExampleCheck() {
	for _, name := range []string{"Ann Lee", "Ann\u202e has paid", "\u200b"} {
		if err := displaytext.Check(name, 100); err != nil {
			fmt.Printf("%q: name %v\n", name, err)
			continue
		}
		fmt.Printf("%q: ok\n", name)
	}
	// Output:
	// "Ann Lee": ok
	// "Ann\u202e has paid": name must not contain line separators or bidirectional overrides
	// "\u200b": name must contain a visible character
}
