package gateway

import (
	"context"
	"net/http"
	"strings"

	"github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
	"google.golang.org/grpc/metadata"

	"github.com/duetkit/duet/kit/requestid"
)

// requestIDHeader is the HTTP header carrying the request id, in and out.
var requestIDHeader = http.CanonicalHeaderKey(requestid.Header)

// withRequestID returns ctx carrying the caller's request id when it is
// valid, or a new one: an invalid id is replaced, never echoed, so callers
// cannot inject text into logs or headers.
func withRequestID(ctx context.Context, fromCaller string) context.Context {
	id := fromCaller
	if !requestid.Valid(id) {
		id = requestid.New()
	}
	return requestid.NewContext(ctx, id)
}

// requestIDFrom returns the request id ServeHTTP put in ctx.
func requestIDFrom(ctx context.Context) string { return requestid.FromContext(ctx) }

// forwardRequestID is the grpc-gateway metadata annotator that sends the
// request id to the backend as x-request-id.
func forwardRequestID(ctx context.Context, _ *http.Request) metadata.MD {
	id := requestid.FromContext(ctx)
	if id == "" {
		return nil
	}
	return metadata.Pairs(requestid.Header, id)
}

// incomingHeader is grpc-gateway's default header matcher minus the request
// id: only the validated id set by forwardRequestID may reach a backend, not
// a raw Grpc-Metadata-X-Request-Id from the caller.
func incomingHeader(key string) (string, bool) {
	md, ok := runtime.DefaultHeaderMatcher(key)
	if !ok || strings.EqualFold(md, requestid.Header) {
		return "", false
	}
	return md, true
}

// dropMetadata keeps backend response headers and trailers off HTTP
// responses: they are internal (content-type, the echoed request id, load
// reports) and the gateway sets what clients need itself.
func dropMetadata(string) (string, bool) { return "", false }
