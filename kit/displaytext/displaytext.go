// Package displaytext checks text that people read inside other text — a
// user's name in a greeting, a product's name in a list or a receipt, any
// of them in a log line — for what would show as nothing or change how
// the text around it reads.
package displaytext

import (
	"errors"
	"fmt"
	"strings"
	"unicode"
	"unicode/utf8"
)

// Errors Check returns, each worded to follow the field's name ("name
// must not be empty").
var (
	ErrEmpty     = errors.New("must not be empty")
	ErrNotUTF8   = errors.New("must be valid UTF-8")
	ErrControl   = errors.New("must not contain control characters")
	ErrBreaks    = errors.New("must not contain line separators or bidirectional overrides")
	ErrInvisible = errors.New("must contain a visible character")
)

// TooLongError is Check's error for text of more than Max characters.
type TooLongError struct{ Max int }

func (e *TooLongError) Error() string { return fmt.Sprintf("must be at most %d characters", e.Max) }

// Check reports what makes s unfit to show, nil when nothing does: s must
// be 1 to maxRunes characters of valid UTF-8, at least one of them a
// letter, digit, symbol or punctuation mark (not only spaces, zero-width
// or format characters, which show as nothing), with no control
// characters, line or paragraph separators, and no bidirectional
// embeddings, overrides or isolates, which would reorder the text after
// it ("Trojan Source"). Joiners and the left-to-right and right-to-left
// marks are allowed: names in several scripts, and emoji sequences, need
// them. Check does not trim s; callers that store trimmed text trim it
// first.
func Check(s string, maxRunes int) error {
	switch {
	case s == "":
		return ErrEmpty
	case !utf8.ValidString(s):
		return ErrNotUTF8
	case utf8.RuneCountInString(s) > maxRunes:
		return &TooLongError{Max: maxRunes}
	case strings.IndexFunc(s, unicode.IsControl) >= 0:
		return ErrControl
	case strings.IndexFunc(s, breaksText) >= 0:
		return ErrBreaks
	case strings.IndexFunc(s, visible) < 0:
		return ErrInvisible
	}
	return nil
}

// breaksText reports whether r is a line or paragraph separator, or a
// bidirectional embedding, override or isolate (U+202A-U+202E,
// U+2066-U+2069).
func breaksText(r rune) bool {
	return unicode.In(r, unicode.Zl, unicode.Zp) || (r >= 0x202A && r <= 0x202E) || (r >= 0x2066 && r <= 0x2069)
}

// visible reports whether r shows as something: a letter, digit, symbol
// or punctuation mark.
func visible(r rune) bool {
	return unicode.In(r, unicode.L, unicode.N, unicode.S, unicode.P)
}
