// Package pagetoken turns a keyset-pagination cursor into an opaque page
// token and back.
//
// A list RPC ordered by (create_time, id) returns, with each page, a token
// holding the position of the page's last row. The next request sends it
// back and the store resumes with WHERE (create_time, id) > (cursor). The
// client never sees or sends an offset, so pages stay stable while rows are
// inserted, and every page costs one index range scan.
//
// Tokens are base64url of a small versioned binary encoding with a CRC-32
// checksum. They are not signed: a client that reverse-engineers one can only
// move its own cursor within a listing it may read anyway. Decode rejects
// anything that is not a token this package produced for the same scope,
// and a cursor whose id no store could hold (a NUL, broken UTF-8).
package pagetoken

import (
	"bytes"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"strings"
	"time"
	"unicode/utf8"
)

// ErrInvalid is wrapped by every error Decode returns. Handlers turn it into
// INVALID_ARGUMENT on the page_token field.
var ErrInvalid = errors.New("invalid page token")

// MaxLen is the longest token Decode accepts, in characters.
const MaxLen = 1024

// maxField bounds Scope and ID so a token always fits in MaxLen.
const maxField = 300

// version is the first byte of every encoded token; bump it when the layout
// changes so old tokens fail cleanly instead of decoding into garbage.
const version byte = 1

// Cursor is a position in a listing ordered by (Time, ID).
type Cursor struct {
	// Scope names the listing the cursor belongs to, including whatever
	// filters it ("users", "orders:"+userID). Decode refuses a token issued
	// for another scope, so a token from one user's orders cannot page
	// through another's.
	Scope string
	// Time is the sort time of the last row returned; it is kept to the
	// microsecond, the precision stores keep timestamps in.
	Time time.Time
	// ID is the id of the last row returned, breaking ties on Time.
	ID string
}

// Encode returns the opaque token for c. Scope and ID longer than 300 bytes
// are a programming error and make Encode panic.
func Encode(c Cursor) string {
	if len(c.Scope) > maxField || len(c.ID) > maxField {
		panic(fmt.Sprintf("pagetoken: scope or id longer than %d bytes", maxField))
	}
	return base64.RawURLEncoding.EncodeToString(encode(c))
}

// encode lays out version, scope, time and id, then the checksum of it all.
func encode(c Cursor) []byte {
	b := make([]byte, 0, 1+2*binary.MaxVarintLen64+binary.MaxVarintLen64+len(c.Scope)+len(c.ID)+crc32.Size)
	b = append(b, version)
	b = binary.AppendUvarint(b, uint64(len(c.Scope)))
	b = append(b, c.Scope...)
	b = binary.AppendVarint(b, c.Time.UnixMicro())
	b = binary.AppendUvarint(b, uint64(len(c.ID)))
	b = append(b, c.ID...)
	return binary.BigEndian.AppendUint32(b, crc32.ChecksumIEEE(b))
}

// Decode parses tok and checks that it was issued for scope and that its id
// is text a store can hold. The empty token means "first page" to callers
// and is not a token: check for it before calling Decode. Every error wraps
// ErrInvalid.
func Decode(tok, scope string) (Cursor, error) {
	if tok == "" {
		return Cursor{}, fmt.Errorf("%w: empty", ErrInvalid)
	}
	if len(tok) > MaxLen {
		return Cursor{}, fmt.Errorf("%w: too long", ErrInvalid)
	}
	raw, err := base64.RawURLEncoding.Strict().DecodeString(tok)
	// Go's decoder skips CR and LF even in strict mode, which would give
	// one cursor many tokens.
	if err != nil || strings.ContainsAny(tok, "\r\n") {
		return Cursor{}, fmt.Errorf("%w: not base64url", ErrInvalid)
	}
	c, err := decode(raw)
	if err != nil {
		return Cursor{}, fmt.Errorf("%w: %s", ErrInvalid, err)
	}
	// Only the canonical encoding is accepted, so each cursor has exactly
	// one token (overlong varints and the like are rejected here).
	if !bytes.Equal(encode(c), raw) {
		return Cursor{}, fmt.Errorf("%w: malformed", ErrInvalid)
	}
	if c.Scope != scope {
		return Cursor{}, fmt.Errorf("%w: issued for another listing", ErrInvalid)
	}
	// No store keeps an id with a NUL or broken UTF-8 (PostgreSQL refuses
	// both), so no issued token holds one; a forged one would reach the
	// query and fail there as an internal error instead of a bad token.
	if !utf8.ValidString(c.ID) || strings.IndexByte(c.ID, 0) >= 0 {
		return Cursor{}, fmt.Errorf("%w: id is not text", ErrInvalid)
	}
	return c, nil
}

// decode is the inverse of encode; its errors are descriptions for Decode.
func decode(raw []byte) (Cursor, error) {
	if len(raw) < 1+crc32.Size {
		return Cursor{}, errors.New("truncated")
	}
	if raw[0] != version {
		return Cursor{}, errors.New("unknown version")
	}
	body, sum := raw[:len(raw)-crc32.Size], raw[len(raw)-crc32.Size:]
	if crc32.ChecksumIEEE(body) != binary.BigEndian.Uint32(sum) {
		return Cursor{}, errors.New("checksum mismatch")
	}
	r := body[1:]
	scope, r, ok := readString(r)
	if !ok {
		return Cursor{}, errors.New("bad scope")
	}
	micros, n := binary.Varint(r)
	if n <= 0 {
		return Cursor{}, errors.New("bad time")
	}
	r = r[n:]
	id, r, ok := readString(r)
	if !ok {
		return Cursor{}, errors.New("bad id")
	}
	if len(r) != 0 {
		return Cursor{}, errors.New("trailing bytes")
	}
	return Cursor{Scope: scope, Time: time.UnixMicro(micros).UTC(), ID: id}, nil
}

// readString reads a uvarint length and that many bytes from r.
func readString(r []byte) (string, []byte, bool) {
	l, n := binary.Uvarint(r)
	if n <= 0 || l > maxField || uint64(len(r)-n) < l {
		return "", nil, false
	}
	r = r[n:]
	return string(r[:l]), r[l:], true
}
