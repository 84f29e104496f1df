package gateway

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"

	"google.golang.org/grpc/codes"

	"github.com/duetkit/duet/kit/apierr"
)

// ReasonRequestTooLarge is the ErrorInfo reason of a request whose body
// exceeds Config.MaxBodyBytes (HTTP 413).
const ReasonRequestTooLarge = "REQUEST_TOO_LARGE"

// limitBody enforces Config.MaxBodyBytes before any handler sees the body:
// it reports whether the request may go on, and if not, the error to
// answer it with (413, or 400 for a body it could not read). The body is
// kept as it is read (capturedBody, or keptBody when read here whole), so
// a decode error can name its field's whole path.
//
// A declared Content-Length over the limit is refused without reading. A
// body of unknown length (chunked) is read up to the limit into memory
// right here: the generated handlers decode the first JSON value and then
// discard the rest ignoring errors, so a limit hit while they read would
// either be lost (the call proceeds on a truncated body) or surface as a
// generic decode error. Buffering costs nothing extra, since the decoders
// hold the whole body in memory anyway, and the buffer is what is kept.
func (g *Gateway) limitBody(w http.ResponseWriter, r *http.Request) (apiError, bool) {
	if r.Body == nil || r.Body == http.NoBody {
		return apiError{}, true
	}
	limit := g.cfg.MaxBodyBytes
	if r.ContentLength > limit {
		return tooLarge(limit), false
	}
	if r.ContentLength >= 0 {
		// net/http never reads past a declared Content-Length.
		// Room for a typical body only: a client that declares the
		// largest and sends nothing must not cost that much at once.
		r.Body = &capturedBody{ReadCloser: r.Body, read: make([]byte, 0, min(r.ContentLength, 4<<10))}
		return apiError{}, true
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, limit))
	if err != nil {
		if _, ok := errors.AsType[*http.MaxBytesError](err); ok {
			return tooLarge(limit), false
		}
		return newAPIError(apierr.New(codes.InvalidArgument, apierr.ReasonInvalidArgument, errBodyRead.Error()), 0), false
	}
	r.Body = &keptBody{Reader: bytes.NewReader(body), all: body}
	r.ContentLength = int64(len(body))
	return apiError{}, true
}

// keptBody is a body read whole by limitBody: bodyRead returns all, the
// bytes themselves, where a capturedBody would have copied them again.
type keptBody struct {
	*bytes.Reader
	all []byte
}

func (*keptBody) Close() error { return nil }

// tooLarge is the 413 answer to an over-large body.
func tooLarge(limit int64) apiError {
	return newAPIError(apierr.New(codes.InvalidArgument, ReasonRequestTooLarge,
		fmt.Sprintf("request body exceeds %d bytes", limit),
		apierr.Metadata("limit", strconv.FormatInt(limit, 10))), http.StatusRequestEntityTooLarge)
}
