package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net/http"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
	"google.golang.org/genproto/googleapis/rpc/code"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	spb "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/duetkit/duet/kit/apierr"
)

// Reasons of errors the gateway raises itself, besides apierr's shared
// ones and ReasonRequestTooLarge.
const (
	// ReasonRouteNotFound: no route has this path (HTTP 404).
	ReasonRouteNotFound = "ROUTE_NOT_FOUND"
	// ReasonMethodNotAllowed: the path exists, not with this method (HTTP 405).
	ReasonMethodNotAllowed = "METHOD_NOT_ALLOWED"
)

// DefaultRetryAfter is the retry hint (RetryInfo and Retry-After) of a 503
// whose cause did not suggest one, such as a backend that is down: every
// 503 tells a client when to try again.
const DefaultRetryAfter = time.Second

// Reasons that turn an error into 402 Payment Required: the payment
// method was refused, which a client must handle differently from a bad
// request (400) even though both are FAILED_PRECONDITION in gRPC.
var paymentRequiredReasons = map[string]bool{
	"PAYMENT_DECLINED":   true,
	"INSUFFICIENT_FUNDS": true,
}

// apiError is an error ready to be written: a status whose details start
// with an ErrorInfo, and the HTTP status to answer with.
type apiError struct {
	status     *spb.Status
	httpStatus int
}

// newAPIError wraps e; httpStatus 0 means the status of e's gRPC code.
func newAPIError(e *apierr.Error, httpStatus int) apiError {
	if httpStatus == 0 {
		httpStatus = runtime.HTTPStatusFromCode(e.Code())
	}
	return apiError{status: e.GRPCStatus().Proto(), httpStatus: httpStatus}
}

// internalError is what a client sees of any INTERNAL, UNKNOWN or DATA_LOSS
// error, whatever its cause.
func internalError() apiError { return newAPIError(apierr.Internal(), 0) }

// errorBody is the JSON shape of every error response. It follows
// google.rpc.Status as Google's JSON APIs render it, with the code's name
// added so clients need no table.
type errorBody struct {
	// Code is the gRPC code number, for example 5.
	Code int32 `json:"code"`
	// Status is the gRPC code name, for example "NOT_FOUND".
	Status string `json:"status"`
	// Message is for humans; match on the ErrorInfo reason instead.
	Message string `json:"message"`
	// Details are google.protobuf.Any in proto3 JSON, ErrorInfo first.
	Details []json.RawMessage `json:"details"`
}

// handleError is grpc-gateway's error handler: it answers every failed
// call, whether the backend or the gateway itself produced the error.
func (g *Gateway) handleError(ctx context.Context, _ *runtime.ServeMux, _ runtime.Marshaler, w http.ResponseWriter, r *http.Request, err error) {
	if errors.Is(context.Cause(ctx), errDraining) {
		// A watch that Drain ended before its call to the backend began.
		writeError(w, newAPIError(errShuttingDown(), 0))
		return
	}
	httpStatus := 0
	if hs, ok := errors.AsType[*runtime.HTTPStatusError](err); ok {
		httpStatus, err = hs.HTTPStatus, hs.Err
	}
	st, ok := status.FromError(err)
	if !ok && httpStatus == http.StatusBadRequest {
		// A malformed path escape: the client's fault, not ours.
		st = status.New(codes.InvalidArgument, err.Error())
	}
	e := toAPIError(st, httpStatus, bodyRead(r.Body))
	if e.httpStatus >= 500 {
		g.logFailure(ctx, st, "method", r.Method, "path", r.URL.Path)
	}
	writeError(w, e)
}

// handleStreamError is grpc-gateway's error handler for server streams
// (WatchOrder): the error a stream ends with is masked and given an
// ErrorInfo as a unary call's is, and logged the same way. grpc-gateway
// writes it as the stream's last line, {"error": …}, with the matching
// HTTP status when no line went before it.
func (g *Gateway) handleStreamError(ctx context.Context, err error) *status.Status {
	if errors.Is(context.Cause(ctx), errDraining) {
		return errShuttingDown().GRPCStatus()
	}
	st := status.Convert(err)
	e := toAPIError(st, 0, nil)
	if e.httpStatus >= 500 {
		pattern, _ := runtime.HTTPPathPattern(ctx)
		g.logFailure(ctx, st, "stream", pattern)
	}
	if rec, ok := ctx.Value(watchResponseKey{}).(*responseRecorder); ok && !rec.wroteHeader {
		// No line went out: grpc-gateway answers with the error's HTTP
		// status next, which may take the retry hint (a watch refused
		// with RESOURCE_EXHAUSTED, TOO_MANY_WATCHES) as a unary error's
		// does, and a 401 its challenge.
		setRetryAfter(rec.Header(), e.status.GetDetails())
		if st.Code() == codes.Unauthenticated {
			setAuthenticate(rec.Header(), e.status.GetDetails())
		}
	}
	return status.FromProto(e.status)
}

// logFailure logs the cause of a server-side failure, which the client
// sees masked.
func (g *Gateway) logFailure(ctx context.Context, st *status.Status, attrs ...any) {
	level := slog.LevelError
	if c := st.Code(); c == codes.Unavailable || c == codes.DeadlineExceeded {
		level = slog.LevelWarn
	}
	g.log.Log(ctx, level, "gateway: call failed", append(attrs, "code", st.Code().String(), "error", st.Message())...)
}

// handleRoutingError is grpc-gateway's routing error handler: unknown
// paths, wrong methods and malformed paths get JSON errors too.
func (g *Gateway) handleRoutingError(_ context.Context, _ *runtime.ServeMux, _ runtime.Marshaler, w http.ResponseWriter, r *http.Request, httpStatus int) {
	var e *apierr.Error
	allow := ""
	if httpStatus == http.StatusMethodNotAllowed {
		// grpc-gateway says 405 when another method's route fits the
		// path, even one it would then answer 404 ("/v1/orders/:watch"):
		// a path no method is served on is not found.
		if allow = g.routes.allow(r.URL.Path); allow == "" {
			httpStatus = http.StatusNotFound
		}
	}
	switch httpStatus {
	case http.StatusNotFound:
		e = apierr.New(codes.NotFound, ReasonRouteNotFound, fmt.Sprintf("no route for %s %s", r.Method, r.URL.Path))
	case http.StatusMethodNotAllowed:
		e = apierr.New(codes.Unimplemented, ReasonMethodNotAllowed, fmt.Sprintf("method %s is not allowed on %s", r.Method, r.URL.Path))
		w.Header().Set("Allow", allow)
	case http.StatusBadRequest:
		e = apierr.New(codes.InvalidArgument, apierr.ReasonInvalidArgument, "malformed request path")
	default:
		writeError(w, internalError())
		return
	}
	writeError(w, newAPIError(e, httpStatus))
}

// toAPIError decides what a client sees of st. Errors from Duet services
// carry an ErrorInfo and pass through as they are, except that internal
// ones are masked. Errors without one come from the gateway (bad JSON, bad
// query parameters) or from the transport (a backend down, a deadline);
// they get an ErrorInfo, and transport messages, which name internal
// addresses, are replaced. body is the request body as read, when known:
// a JSON decode error's field is then given by its whole path.
func toAPIError(st *status.Status, httpStatus int, body []byte) apiError {
	c := st.Code()
	switch c {
	case codes.OK, codes.Internal, codes.Unknown, codes.DataLoss:
		return internalError()
	}
	p := st.Proto()
	if infoOf(p) != nil {
		// A service's error names fields by their proto names; a JSON
		// client knows them by their JSON names (google.rpc.BadRequest:
		// "in JSON, the same values are represented as" lowerCamelCase).
		p = withJSONFieldPaths(p)
	} else {
		var e *apierr.Error
		switch c {
		case codes.InvalidArgument:
			msg := plainParseError(p.GetMessage())
			var details []apierr.Detail
			if f := offendingField(msg); f != "" {
				if path := jsonPath(body, msg, f); path != "" {
					// Where the body has it, in the body's own spelling.
					f = path
				} else if isParameterError(msg) {
					// grpc-gateway names query and path parameters by
					// their proto names, whichever spelling came; the
					// message too.
					name := jsonFieldPath(f)
					msg = strings.Replace(msg, `"`+f+`"`, `"`+name+`"`, 1)
					f = name
				}
				details = append(details, apierr.Field(f, msg))
			}
			e = apierr.New(c, apierr.ReasonInvalidArgument, msg, details...)
		case codes.ResourceExhausted:
			// Not a rate limit (a service's would carry an ErrorInfo) but
			// grpc-go's message size limit: an answer too large to take,
			// which is the system's fault, not the client's to retry.
			return internalError()
		case codes.Unavailable:
			e = apierr.New(c, apierr.ReasonUnavailable, "service unavailable")
		case codes.DeadlineExceeded:
			e = apierr.New(c, apierr.ReasonDeadline, "deadline exceeded")
		case codes.Canceled:
			e = apierr.New(c, apierr.ReasonCanceled, "request canceled")
		default:
			e = apierr.New(c, code.Code_name[int32(c)], p.GetMessage())
		}
		q := e.GRPCStatus().Proto()
		q.Details = append(q.Details, p.GetDetails()...)
		p = q
	}
	if c == codes.Unavailable && !hasRetryInfo(p) {
		p.Details = append(p.Details, defaultRetryInfo)
	}
	if httpStatus == 0 {
		httpStatus = runtime.HTTPStatusFromCode(c)
		if paymentRequiredReasons[infoOf(p).GetReason()] {
			httpStatus = http.StatusPaymentRequired
		}
	}
	return apiError{status: p, httpStatus: httpStatus}
}

// defaultRetryInfo is the RetryInfo detail of DefaultRetryAfter, built
// once: answers only read it.
var defaultRetryInfo = func() *anypb.Any {
	a, err := anypb.New(&errdetails.RetryInfo{RetryDelay: durationpb.New(DefaultRetryAfter)})
	if err != nil {
		panic(err) // a well-known message always marshals
	}
	return a
}()

// hasRetryInfo reports whether p carries a RetryInfo.
func hasRetryInfo(p *spb.Status) bool {
	for _, a := range p.GetDetails() {
		if _, ok := retryDelay(a); ok {
			return true
		}
	}
	return false
}

// errShuttingDown ends a watch that Drain cut off.
func errShuttingDown() *apierr.Error {
	return apierr.Unavailable(apierr.ReasonShuttingDown, "the gateway is shutting down; watch again", DefaultRetryAfter)
}

// infoOf returns the ErrorInfo among p's details, or nil.
func infoOf(p *spb.Status) *errdetails.ErrorInfo {
	for _, a := range p.GetDetails() {
		info := new(errdetails.ErrorInfo)
		if a.MessageIs(info) && a.UnmarshalTo(info) == nil {
			return info
		}
	}
	return nil
}

// Field names in the gateway's own INVALID_ARGUMENT messages: protojson's
// decode errors, grpc-gateway's query and path parameter errors.
var fieldPatterns = []*regexp.Regexp{
	regexp.MustCompile(`unknown field "([^"]+)"`),
	regexp.MustCompile(`duplicate field "([^"]+)"`),
	regexp.MustCompile(`invalid value for \w+ field ([\w.]+):`),
	regexp.MustCompile(`parsing field "([^"]+)"`),
	regexp.MustCompile(`parameter: ([\w.]+),`),
}

// strconvError is grpc-gateway's message for a query or path parameter
// that does not parse as its field's number or bool: strconv's own
// wording, which names Go functions.
var strconvError = regexp.MustCompile(`^parsing field "([^"]+)": strconv\.\w+: parsing ("(?:[^"\\]|\\.)*"): (invalid syntax|value out of range)$`)

// plainParseError rewrites a strconvError message for the client, keeping
// the field and the value; other messages are returned as they are.
func plainParseError(msg string) string {
	m := strconvError.FindStringSubmatch(msg)
	if m == nil {
		return msg
	}
	what := "is not a valid value"
	if m[3] == "value out of range" {
		what = "is out of range"
	}
	return fmt.Sprintf("parsing field %q: %s %s", m[1], m[2], what)
}

// isParameterError reports whether msg is grpc-gateway's error for a
// query or path parameter, which names the field by its proto name.
func isParameterError(msg string) bool {
	return strings.HasPrefix(msg, "parsing field ") || strings.Contains(msg, "parameter: ")
}

// withJSONFieldPaths returns p with the field paths of its BadRequest
// details in JSON names, or p itself when none changes. p is not changed.
func withJSONFieldPaths(p *spb.Status) *spb.Status {
	var out *spb.Status
	for i, a := range p.GetDetails() {
		br := new(errdetails.BadRequest)
		if !a.MessageIs(br) || a.UnmarshalTo(br) != nil {
			continue
		}
		changed := false
		for _, v := range br.GetFieldViolations() {
			if f := jsonFieldPath(v.GetField()); f != v.GetField() {
				v.Field, changed = f, true
			}
		}
		if !changed {
			continue
		}
		b, err := anypb.New(br)
		if err != nil {
			continue
		}
		if out == nil {
			out = &spb.Status{Code: p.GetCode(), Message: p.GetMessage(), Details: slices.Clone(p.GetDetails())}
		}
		out.Details[i] = b
	}
	if out == nil {
		return p
	}
	return out
}

// jsonFieldPath turns a field path in proto names,
// "items[0].unit_price.currency_code", into protojson's JSON names,
// "items[0].unitPrice.currencyCode" (protoc's rule: drop each underscore,
// upper-case the letter after it). What is between brackets, an index or
// a quoted map key, is kept as it is.
func jsonFieldPath(path string) string {
	if !strings.Contains(path, "_") {
		return path
	}
	var b strings.Builder
	b.Grow(len(path))
	var bracket, quoted, escaped, upper bool
	for i := 0; i < len(path); i++ {
		c := path[i]
		switch {
		case quoted:
			switch {
			case escaped:
				escaped = false
			case c == '\\':
				escaped = true
			case c == '"':
				quoted = false
			}
		case bracket:
			switch c {
			case '"':
				quoted = true
			case ']':
				bracket = false
			}
		case c == '[':
			bracket, upper = true, false
		case c == '_':
			upper = true
			continue
		case upper:
			if 'a' <= c && c <= 'z' {
				c -= 'a' - 'A'
			}
			upper = false
		}
		b.WriteByte(c)
	}
	return b.String()
}

// offendingField returns the field named by a gateway error message, or "".
func offendingField(msg string) string {
	for _, re := range fieldPatterns {
		if m := re.FindStringSubmatch(msg); m != nil {
			return m[1]
		}
	}
	return ""
}

// writeError writes e as the JSON error body, with Retry-After when the
// error carries RetryInfo. The X-Request-ID header is already set.
func writeError(w http.ResponseWriter, e apiError) {
	body := errorBody{
		Code:    e.status.GetCode(),
		Status:  code.Code_name[e.status.GetCode()],
		Message: e.status.GetMessage(),
		Details: make([]json.RawMessage, 0, len(e.status.GetDetails())),
	}
	for _, a := range e.status.GetDetails() {
		b, err := protojson.Marshal(a)
		if err != nil {
			// A detail type this binary does not know: leave it out
			// rather than fail the whole answer.
			continue
		}
		body.Details = append(body.Details, b)
	}
	setRetryAfter(w.Header(), e.status.GetDetails())
	if e.httpStatus == http.StatusUnauthorized {
		setAuthenticate(w.Header(), e.status.GetDetails())
	}
	buf, err := json.Marshal(body)
	if err != nil {
		buf = []byte(`{"code":13,"status":"INTERNAL","message":"internal error","details":[]}`)
		e.httpStatus = http.StatusInternalServerError
	}
	h := w.Header()
	// Left over from a response that failed half-way through.
	h.Del("Trailer")
	h.Del("Transfer-Encoding")
	h.Set("Content-Type", "application/json")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Content-Length", strconv.Itoa(len(buf)))
	w.WriteHeader(e.httpStatus)
	_, _ = w.Write(buf)
}

// setRetryAfter sets h's Retry-After from the RetryInfo among details, in
// whole seconds rounded up, when there is one.
func setRetryAfter(h http.Header, details []*anypb.Any) {
	for _, a := range details {
		if d, ok := retryDelay(a); ok {
			h.Set("Retry-After", strconv.FormatInt(int64(math.Ceil(d)), 10))
		}
	}
}

// retryDelay returns the delay in seconds of a RetryInfo detail.
// tokenRefused are kit/authn's reasons for a bearer token it refused (as
// opposed to none sent): RFC 6750's "invalid_token".
var tokenRefused = map[string]bool{"TOKEN_INVALID": true, "TOKEN_EXPIRED": true}

// setAuthenticate gives a 401 the challenge RFC 6750 asks of it: Bearer,
// with error="invalid_token" when the token sent was refused, so a
// client knows to get a new one rather than to sign in.
func setAuthenticate(h http.Header, details []*anypb.Any) {
	challenge := "Bearer"
	for _, a := range details {
		info := new(errdetails.ErrorInfo)
		if a.MessageIs(info) && a.UnmarshalTo(info) == nil && tokenRefused[info.GetReason()] {
			challenge = `Bearer error="invalid_token"`
		}
	}
	h.Set("WWW-Authenticate", challenge)
}

func retryDelay(a *anypb.Any) (float64, bool) {
	ri := new(errdetails.RetryInfo)
	if !a.MessageIs(ri) || a.UnmarshalTo(ri) != nil {
		return 0, false
	}
	return max(ri.GetRetryDelay().AsDuration().Seconds(), 0), true
}
