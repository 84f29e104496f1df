package gateway

import (
	"context"
	"fmt"
	"net/http"
	"strconv"
	"strings"

	"github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"

	"github.com/duetkit/duet/kit/apierr"
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

// ReasonHeadersTooLarge is the ErrorInfo reason of a request whose
// headers would reach the backends as more metadata than they take
// (HTTP 431).
const ReasonHeadersTooLarge = "HEADERS_TOO_LARGE"

// maxForwardedMetadata bounds the metadata a request's headers become,
// counted as HTTP/2 counts a header list (name, value and 32 bytes a
// field): under kit/server's 64 KiB, with room for what the gateway adds
// itself. MaxHeaderBytes alone does not keep under it, since HTTP/1.1
// counts a field at its length: 1,500 "Authorization: x" lines are 27 KB
// of headers and 69 KB of metadata, which the backend refused, a 500.
const maxForwardedMetadata = 48 << 10

// checkForwardedSize refuses a request whose headers forwardable as
// metadata exceed maxForwardedMetadata: incomingHeader's, and those
// grpc-gateway always passes on, Authorization, X-Forwarded-For (every
// value, joined by ", ", with the client's address) and X-Forwarded-Host
// (the header's first value, or the request's host when that value is
// not printable ASCII: the longer of the two is counted). A call of a
// Connect procedure (procedure true) forwards Authorization alone
// (outgoing), so of those only it is counted. With trustTrace
// (Config.TrustTraceContext) the caller's trace context goes on too, on
// either path: its traceparent, the first tracestate (up to 32 entries
// of 513 bytes, W3C's and OpenTelemetry's limit) and its baggage (which
// goes on when traces are exported; counted either way).
func checkForwardedSize(r *http.Request, procedure, trustTrace bool) *apierr.Error {
	h := r.Header
	size := 0
	if trustTrace {
		size += len("traceparent") + len(h.Get("Traceparent")) + 32
		size += len("tracestate") + len(h.Get("Tracestate")) + 32
		if b := h.Values("Baggage"); len(b) > 0 {
			size += len("baggage") + 32
			for _, v := range b {
				size += len(v) + len(",")
			}
		}
	}
	if !procedure {
		const addrRoom = len(", [ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff]")
		size += len("x-forwarded-for") + addrRoom + 32
		for _, v := range h.Values("X-Forwarded-For") {
			size += len(v) + len(", ")
		}
		size += len("x-forwarded-host") + max(len(h.Get("X-Forwarded-Host")), len(r.Host)) + 32
	}
	for key, values := range h {
		var name string
		if key == "Authorization" {
			name = "authorization"
		} else if n, ok := incomingHeader(key); ok && !procedure {
			name = n
		} else {
			continue
		}
		for _, v := range values {
			size += len(name) + len(v) + 32
		}
	}
	if size <= maxForwardedMetadata {
		return nil
	}
	what := "Authorization and Grpc-Metadata-* headers exceed"
	if procedure {
		what = "Authorization headers exceed"
	}
	if trustTrace {
		what = strings.Replace(what, " headers", " and trace context headers", 1)
	}
	return apierr.New(codes.InvalidArgument, ReasonHeadersTooLarge,
		fmt.Sprintf("the request's %s %d bytes as gRPC metadata (32 bytes more a header)", what, maxForwardedMetadata),
		apierr.Metadata("limit", strconv.Itoa(maxForwardedMetadata)))
}

// notMetadata reports whether name may not travel as gRPC metadata from a
// caller: HTTP/2 connection headers, which make the backend reset the
// stream as malformed (so the call failed as INTERNAL, a 500), gRPC's own
// grpc-* headers, and the trace context and baggage, which the gateway
// sets itself (from the traceparent and baggage headers, when it trusts
// them: Config.TrustTraceContext); Grpc-Metadata-Baggage carried a public
// caller's key-value pairs to every service past that. Authorization too:
// it comes from the Authorization header alone, so a proxy that filters
// or logs that header sees every token (Grpc-Metadata-Authorization was
// a second way in).
func notMetadata(name string) bool {
	name = strings.ToLower(name)
	switch name {
	case "connection", "host", "keep-alive", "proxy-connection", "te", "transfer-encoding", "upgrade",
		"traceparent", "tracestate", "baggage", "authorization":
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
