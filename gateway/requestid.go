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

// incomingHeader decides which HTTP request headers reach the backends as
// gRPC metadata: only those a client addressed to them explicitly
// (Grpc-Metadata-Name, as grpc-gateway spells it), and never the request
// id, which only forwardRequestID may set after validating it. Unlike
// grpc-gateway's default, the ordinary HTTP headers (User-Agent, Accept,
// Cookie, ...) are not passed on as grpcgateway-*: no backend reads them,
// an edge should not hand a caller's cookies to every internal service,
// and each one costs encoding and decoding on both sides of every hop.
// Authorization is the exception: grpc-gateway passes it on as
// "authorization" whatever this says, which is where a service
// authenticates a call (TestHeadersReachingBackends).
func incomingHeader(key string) (string, bool) {
	name, ok := cutPrefixFold(key, runtime.MetadataHeaderPrefix)
	if !ok || name == "" || strings.EqualFold(name, requestid.Header) || notMetadata(name) {
		return "", false
	}
	return name, true
}

// notMetadata reports whether name may not travel as gRPC metadata from a
// caller: HTTP/2 connection headers, which make the backend reset the
// stream as malformed (so the call failed as INTERNAL, a 500), gRPC's own
// grpc-* headers, and the trace context, which the gateway sets itself.
func notMetadata(name string) bool {
	name = strings.ToLower(name)
	switch name {
	case "connection", "host", "keep-alive", "proxy-connection", "te", "transfer-encoding", "upgrade",
		"traceparent", "tracestate":
		return true
	}
	return strings.HasPrefix(name, "grpc-") || strings.HasPrefix(name, ":")
}

// cutPrefixFold is strings.CutPrefix with the prefix matched case-insensitively.
func cutPrefixFold(s, prefix string) (string, bool) {
	if len(s) < len(prefix) || !strings.EqualFold(s[:len(prefix)], prefix) {
		return s, false
	}
	return s[len(prefix):], true
}

// dropMetadata keeps backend response headers and trailers off HTTP
// responses: they are internal (content-type, the echoed request id, load
// reports) and the gateway sets what clients need itself.
func dropMetadata(string) (string, bool) { return "", false }
