package gateway

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"net"
	"regexp"
	"strconv"
	"strings"
	"unicode/utf8"
)

// capturedBody keeps what has been read of a request body, so that a
// decode error can name the offending field by its whole path
// ("items[1].unitPrice.units") rather than by protojson's last name alone.
type capturedBody struct {
	io.ReadCloser
	read []byte
}

// Read keeps what it reads. A failure of the connection itself (a client
// stalled past the read timeout) becomes errBodyRead: its text names the
// server's and the client's addresses, and some generated handlers (those
// reading a body whole for a field mask) put the text in the answer as it
// is.
func (b *capturedBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	b.read = append(b.read, p[:n]...)
	if _, ok := errors.AsType[net.Error](err); ok {
		err = errBodyRead
	}
	return n, err
}

// errBodyRead is what a handler sees when reading the body fails.
var errBodyRead = errors.New("could not read the request body")

// bodyRead returns what was read of r's body, if limitBody kept it.
func bodyRead(body io.ReadCloser) []byte {
	switch b := body.(type) {
	case *capturedBody:
		return b.read
	case *keptBody:
		return b.all
	}
	return nil
}

// errorPosition finds protojson's "(line L:C)" in a decode error.
var errorPosition = regexp.MustCompile(`\(line (\d+):(\d+)\)`)

// jsonPath returns the path, in body's own spelling, of the JSON key or
// value at the position msg names, provided the path ends in leaf (the
// field protojson named); otherwise "".
func jsonPath(body []byte, msg, leaf string) string {
	m := errorPosition.FindStringSubmatch(msg)
	if m == nil {
		return ""
	}
	// protojson counts from the JSON value, which grpc-gateway has cut
	// out of the body without the white space before it, and counts
	// columns in runes.
	body = bytes.TrimLeft(body, " \t\r\n")
	line, _ := strconv.Atoi(m[1])
	col, _ := strconv.Atoi(m[2])
	offset := 0
	for ; line > 1; line-- {
		i := bytes.IndexByte(body[offset:], '\n')
		if i < 0 {
			return ""
		}
		offset += i + 1
	}
	for ; col > 1; col-- {
		r, size := utf8.DecodeRune(body[offset:])
		if size == 0 || r == '\n' {
			return ""
		}
		offset += size
	}
	if col < 1 || offset >= len(body) {
		return ""
	}
	path := pathAt(body, int64(offset))
	// The field named ends the path, but for the indices of a repeated
	// field's element ("skus[1]" for skus).
	named := path
	for strings.HasSuffix(named, "]") {
		i := strings.LastIndexByte(named, '[')
		if i < 0 {
			return ""
		}
		named = named[:i]
	}
	if named == leaf || strings.HasSuffix(named, "."+leaf) {
		return path
	}
	return ""
}

// frame is one open object or array on the way to a position.
type frame struct {
	array   bool
	index   int    // array: the element being read
	key     string // object: the member being read
	wantKey bool   // object: the next string is a key
}

// pathAt returns the path of the key or value that starts at offset in
// the JSON text body, or "" if none does or body is not JSON.
func pathAt(body []byte, offset int64) string {
	dec := json.NewDecoder(bytes.NewReader(body))
	var stack []frame
	for {
		before := dec.InputOffset()
		tok, err := dec.Token()
		if err != nil {
			return ""
		}
		after := dec.InputOffset()
		delim, isDelim := tok.(json.Delim)
		closing := isDelim && (delim == '}' || delim == ']')
		top := len(stack) - 1
		if !closing && top >= 0 && !stack[top].array && stack[top].wantKey {
			// A member's key.
			key, _ := tok.(string)
			stack[top].key, stack[top].wantKey = key, false
			if offset >= before && offset < after {
				return joinPath(stack)
			}
			continue
		}
		if !closing && offset >= before && offset < after {
			return joinPath(stack)
		}
		switch {
		case isDelim && delim == '{':
			stack = append(stack, frame{wantKey: true})
			continue
		case isDelim && delim == '[':
			stack = append(stack, frame{array: true})
			continue
		case closing:
			stack = stack[:top]
		}
		// A value has ended: its container moves on.
		if n := len(stack) - 1; n >= 0 {
			if stack[n].array {
				stack[n].index++
			} else {
				stack[n].wantKey = true
			}
		}
	}
}

// joinPath spells the position each frame is at.
func joinPath(stack []frame) string {
	var b []byte
	for _, f := range stack {
		if f.array {
			b = append(b, '[')
			b = strconv.AppendInt(b, int64(f.index), 10)
			b = append(b, ']')
			continue
		}
		if len(b) > 0 {
			b = append(b, '.')
		}
		b = append(b, f.key...)
	}
	return string(b)
}
