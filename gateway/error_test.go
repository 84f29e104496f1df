package gateway

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
	"testing/iotest"
	"time"

	"google.golang.org/genproto/googleapis/rpc/code"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	orderv1 "github.com/duetkit/duet/gen/duet/order/v1"
	userv1 "github.com/duetkit/duet/gen/duet/user/v1"
	"github.com/duetkit/duet/kit/apierr"
	"github.com/duetkit/duet/kit/authn"
)

const (
	errorInfoType  = "type.googleapis.com/google.rpc.ErrorInfo"
	badRequestType = "type.googleapis.com/google.rpc.BadRequest"
	retryInfoType  = "type.googleapis.com/google.rpc.RetryInfo"
)

// errorCase is one bad request and the error the client must see.
type errorCase struct {
	name, method, path string
	body               any // string, io.Reader (chunked) or nil
	header             []string
	httpStatus         int
	code               codes.Code
	reason             string
	field              string // the BadRequest field violation, when one is expected
	message            string // a substring of the message, when it matters
}

func checkError(t *testing.T, resp response, tt errorCase) {
	t.Helper()
	if resp.status != tt.httpStatus {
		t.Fatalf("HTTP status %d, want %d; body %s", resp.status, tt.httpStatus, resp.body)
	}
	if ct := resp.header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type %q, want application/json", ct)
	}
	if resp.header.Get(requestIDHeader) == "" {
		t.Error("error response without X-Request-ID")
	}
	m := resp.json(t)
	if got := get(m, "code"); got != float64(tt.code) {
		t.Errorf("code %v, want %d", got, tt.code)
	}
	if got, want := get(m, "status"), code.Code_name[int32(tt.code)]; got != want {
		t.Errorf("status %v, want %s", got, want)
	}
	msg, _ := get(m, "message").(string)
	if msg == "" {
		t.Error("empty message")
	}
	if !strings.Contains(msg, tt.message) {
		t.Errorf("message %q does not contain %q", msg, tt.message)
	}
	details, _ := get(m, "details").([]any)
	if len(details) == 0 || get(details[0], "@type") != errorInfoType {
		t.Fatalf("details %v do not start with an ErrorInfo", details)
	}
	if got := get(details[0], "reason"); got != tt.reason {
		t.Errorf("reason %v, want %s", got, tt.reason)
	}
	if got := get(details[0], "domain"); got != apierr.Domain {
		t.Errorf("domain %v, want %s", got, apierr.Domain)
	}
	var fields []string
	for _, d := range details {
		if get(d, "@type") != badRequestType {
			continue
		}
		vs, _ := get(d, "fieldViolations").([]any)
		for _, v := range vs {
			f, _ := get(v, "field").(string)
			fields = append(fields, f)
		}
	}
	if tt.field != "" && (len(fields) == 0 || fields[0] != tt.field) {
		t.Errorf("field violations %v, want %q first", fields, tt.field)
	}
}

func TestErrors(t *testing.T) {
	e := newEnv(t)
	big := `{"email":"a@example.com","name":"` + strings.Repeat("x", testMaxBody) + `"}`
	tests := []errorCase{
		// From the backends: the gRPC code's HTTP status, details passed through.
		{name: "not found", method: "GET", path: "/v1/users/" + unknownID,
			httpStatus: 404, code: codes.NotFound, reason: "USER_NOT_FOUND", message: unknownID},
		{name: "order not found", method: "GET", path: "/v1/orders/" + unknownID,
			httpStatus: 404, code: codes.NotFound, reason: "ORDER_NOT_FOUND"},
		{name: "duplicate email", method: "POST", path: "/v1/users", body: `{"email":"taken@example.com","name":"A"}`,
			httpStatus: 409, code: codes.AlreadyExists, reason: "EMAIL_TAKEN", field: "email"},
		{name: "validation names the field", method: "POST", path: "/v1/users", body: `{"email":"nope","name":"A"}`,
			httpStatus: 400, code: codes.InvalidArgument, reason: "INVALID_ARGUMENT", field: "email"},
		// In JSON names, as the body has them; they were proto names
		// ("items[0].unit_price.currency_code").
		{name: "a service's nested field in JSON names", method: "POST", path: "/v1/orders",
			body:       `{"userId":"` + knownUserID + `","items":[{"sku":"A","quantity":1}],"paymentToken":"tok_approve","idempotencyKey":"bad-nested-field"}`,
			httpStatus: 400, code: codes.InvalidArgument, reason: "INVALID_ARGUMENT", field: "items[0].unitPrice.currencyCode"},
		{name: "declined payment is 402", method: "POST", path: "/v1/payments",
			body:       `{"amount":{"currencyCode":"USD","units":"100"},"paymentMethodToken":"tok_decline","idempotencyKey":"d1"}`,
			httpStatus: 402, code: codes.FailedPrecondition, reason: "PAYMENT_DECLINED"},
		{name: "insufficient funds is 402", method: "POST", path: "/v1/payments",
			body:       `{"amount":{"currencyCode":"USD","units":"100"},"paymentMethodToken":"tok_insufficient","idempotencyKey":"d2"}`,
			httpStatus: 402, code: codes.FailedPrecondition, reason: "INSUFFICIENT_FUNDS"},
		{name: "temporary failure", method: "POST", path: "/v1/payments",
			body:       `{"amount":{"currencyCode":"USD","units":"100"},"paymentMethodToken":"tok_unavailable","idempotencyKey":"d3"}`,
			httpStatus: 503, code: codes.Unavailable, reason: "PROVIDER_UNAVAILABLE"},
		{name: "refund of an unknown payment", method: "POST", path: "/v1/payments/" + unknownID + ":refund", body: `{}`,
			httpStatus: 404, code: codes.NotFound, reason: "PAYMENT_NOT_FOUND"},

		// Internal errors are masked whatever the backend said.
		{name: "internal", method: "POST", path: "/v1/users", body: `{"email":"internal@example.com","name":"A"}`,
			httpStatus: 500, code: codes.Internal, reason: "INTERNAL", message: "internal error"},
		{name: "unknown", method: "POST", path: "/v1/users", body: `{"email":"unknown@example.com","name":"A"}`,
			httpStatus: 500, code: codes.Internal, reason: "INTERNAL", message: "internal error"},
		// An answer over grpc-go's size limit is the system's fault, not
		// a rate limit (429) for the client to wait out.
		{name: "answer too large", method: "POST", path: "/v1/users", body: `{"email":"huge@example.com","name":"A"}`,
			httpStatus: 500, code: codes.Internal, reason: "INTERNAL", message: "internal error"},

		// Bad input caught by the gateway itself.
		{name: "malformed JSON", method: "POST", path: "/v1/users", body: `{"email":`,
			httpStatus: 400, code: codes.InvalidArgument, reason: "INVALID_ARGUMENT", message: "invalid JSON body"},
		{name: "not JSON at all", method: "POST", path: "/v1/users", body: `email=a@example.com`,
			httpStatus: 400, code: codes.InvalidArgument, reason: "INVALID_ARGUMENT", message: "invalid JSON body"},
		{name: "trailing data", method: "POST", path: "/v1/users", body: `{"email":"a@example.com","name":"A"} {}`,
			httpStatus: 400, code: codes.InvalidArgument, reason: "INVALID_ARGUMENT", message: "after the JSON value"},
		{name: "duplicate field", method: "POST", path: "/v1/users", body: `{"email":"a@example.com","name":"A","email":"b@example.com"}`,
			httpStatus: 400, code: codes.InvalidArgument, reason: "INVALID_ARGUMENT", field: "email"},
		{name: "JSON array instead of object", method: "POST", path: "/v1/users", body: `[1,2]`,
			httpStatus: 400, code: codes.InvalidArgument, reason: "INVALID_ARGUMENT", message: "invalid JSON body"},
		{name: "unknown field", method: "POST", path: "/v1/users", body: `{"email":"a@example.com","nmae":"A"}`,
			httpStatus: 400, code: codes.InvalidArgument, reason: "INVALID_ARGUMENT", field: "nmae", message: "unknown field"},
		{name: "unknown nested field", method: "POST", path: "/v1/orders",
			body:       `{"userId":"` + knownUserID + `","items":[{"sku":"A","quantity":1,"unitPrice":{"currency":"EUR","units":"1"}}],"paymentToken":"tok_approve","idempotencyKey":"k"}`,
			httpStatus: 400, code: codes.InvalidArgument, reason: "INVALID_ARGUMENT", field: "items[0].unitPrice.currency"},
		{name: "wrong type", method: "POST", path: "/v1/orders", body: `{"items":[{"quantity":"many"}]}`,
			httpStatus: 400, code: codes.InvalidArgument, reason: "INVALID_ARGUMENT", field: "items[0].quantity"},
		{name: "wrong type, second line, pretty", method: "POST", path: "/v1/orders",
			body:       "{\n  \"items\": [\n    {\"sku\": \"A\", \"quantity\": 1},\n    {\"sku\": \"B\", \"unitPrice\": {\"units\": \"lots\"}}\n  ]\n}",
			httpStatus: 400, code: codes.InvalidArgument, reason: "INVALID_ARGUMENT", field: "items[1].unitPrice.units"},
		{name: "wrong type, second line, chunked", method: "POST", path: "/v1/orders",
			body:       strings.NewReader("{\n  \"items\": [\n    {\"sku\": \"A\", \"quantity\": 1},\n    {\"sku\": \"B\", \"unitPrice\": {\"units\": \"lots\"}}\n  ]\n}"),
			httpStatus: 400, code: codes.InvalidArgument, reason: "INVALID_ARGUMENT", field: "items[1].unitPrice.units"},
		{name: "wrong type after white space and multi-byte text", method: "POST", path: "/v1/orders",
			body:       "\n  {\"idempotencyKey\":\"" + strings.Repeat("é", 30) + "\",\"items\":[{\"sku\":\"A\",\"quantity\":1},{\"sku\":\"B\",\"quantity\":\"x\"}]}",
			httpStatus: 400, code: codes.InvalidArgument, reason: "INVALID_ARGUMENT", field: "items[1].quantity"},
		{name: "unknown field on PATCH", method: "PATCH", path: "/v1/users/" + knownUserID, body: `{"nickname":"x"}`,
			httpStatus: 400, code: codes.InvalidArgument, reason: "INVALID_ARGUMENT", field: "nickname"},
		{name: "malformed JSON on PATCH", method: "PATCH", path: "/v1/users/" + knownUserID, body: `{"name":`,
			httpStatus: 400, code: codes.InvalidArgument, reason: "INVALID_ARGUMENT"},
		{name: "bad query parameter", method: "GET", path: "/v1/users?pageSize=lots",
			httpStatus: 400, code: codes.InvalidArgument, reason: "INVALID_ARGUMENT", field: "pageSize",
			message: `parsing field "pageSize": "lots" is not a valid value`},
		{name: "query parameter out of range", method: "GET", path: "/v1/users?pageSize=99999999999999999999",
			httpStatus: 400, code: codes.InvalidArgument, reason: "INVALID_ARGUMENT", field: "pageSize",
			message: `parsing field "pageSize": "99999999999999999999" is out of range`},
		// Decoded, these are not UTF-8: grpc-go failed to encode the
		// request they made, and the client got a 500.
		{name: "path not UTF-8", method: "GET", path: "/v1/users/%FF",
			httpStatus: 400, code: codes.InvalidArgument, reason: "INVALID_ARGUMENT", message: "URL path must be UTF-8"},
		{name: "path not UTF-8 on a watch", method: "GET", path: "/v1/orders/%FF:watch",
			httpStatus: 400, code: codes.InvalidArgument, reason: "INVALID_ARGUMENT", message: "URL path must be UTF-8"},
		{name: "query value not UTF-8", method: "GET", path: "/v1/users?pageToken=%FF",
			httpStatus: 400, code: codes.InvalidArgument, reason: "INVALID_ARGUMENT", field: "pageToken"},
		{name: "query name not UTF-8", method: "GET", path: "/v1/users?%FF=1",
			httpStatus: 400, code: codes.InvalidArgument, reason: "INVALID_ARGUMENT", message: "parameter names must be UTF-8"},

		// Over-large bodies, declared or streamed.
		{name: "Content-Length over the limit", method: "POST", path: "/v1/users", body: big,
			httpStatus: 413, code: codes.InvalidArgument, reason: ReasonRequestTooLarge},
		{name: "chunked body over the limit", method: "POST", path: "/v1/users", body: strings.NewReader(big),
			httpStatus: 413, code: codes.InvalidArgument, reason: ReasonRequestTooLarge},
		{name: "chunked valid JSON padded over the limit", method: "POST", path: "/v1/users",
			body:       strings.NewReader(`{"email":"a@example.com","name":"A"}` + strings.Repeat(" ", testMaxBody)),
			httpStatus: 413, code: codes.InvalidArgument, reason: ReasonRequestTooLarge},
		{name: "over-large PATCH", method: "PATCH", path: "/v1/users/" + knownUserID, body: strings.NewReader(big),
			httpStatus: 413, code: codes.InvalidArgument, reason: ReasonRequestTooLarge},

		// Routing.
		{name: "unknown path", method: "GET", path: "/v1/nothing",
			httpStatus: 404, code: codes.NotFound, reason: ReasonRouteNotFound},
		{name: "unknown nested path", method: "GET", path: "/v1/users/" + knownUserID + "/friends",
			httpStatus: 404, code: codes.NotFound, reason: ReasonRouteNotFound},
		// grpc-gateway said 405, though it answers GET there 404 too.
		{name: "only a verb, no id", method: "DELETE", path: "/v1/orders/:watch",
			httpStatus: 404, code: codes.NotFound, reason: ReasonRouteNotFound},
		{name: "wrong method", method: "DELETE", path: "/v1/users/" + knownUserID,
			httpStatus: 405, code: codes.Unimplemented, reason: ReasonMethodNotAllowed},
		{name: "wrong method on healthz", method: "POST", path: "/healthz", body: `{}`,
			httpStatus: 405, code: codes.Unimplemented, reason: ReasonMethodNotAllowed},
		{name: "method override is ignored", method: "POST", path: "/v1/users/" + knownUserID, body: `{}`,
			header:     []string{"X-HTTP-Method-Override", "GET"},
			httpStatus: 405, code: codes.Unimplemented, reason: ReasonMethodNotAllowed},
		{name: "form-encoded POST does not fall back to GET", method: "POST", path: "/v1/users/" + knownUserID, body: `{"name":"x"}`,
			header:     []string{"Content-Type", "application/x-www-form-urlencoded"},
			httpStatus: 405, code: codes.Unimplemented, reason: ReasonMethodNotAllowed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp := e.do(t, tt.method, tt.path, tt.body, tt.header...)
			checkError(t, resp, tt)
			if strings.Contains(string(resp.body), "hunter2") || strings.Contains(string(resp.body), "10.0.0.7") {
				t.Errorf("internals leaked: %s", resp.body)
			}
		})
	}

	t.Run("Retry-After from RetryInfo", func(t *testing.T) {
		resp := e.do(t, "POST", "/v1/payments", `{"amount":{"currencyCode":"USD","units":"1"},"paymentMethodToken":"tok_unavailable","idempotencyKey":"r"}`)
		if got := resp.header.Get("Retry-After"); got != "2" {
			t.Errorf("Retry-After %q, want 2 (1.5s rounded up)", got)
		}
		if n := strings.Count(string(resp.body), retryInfoType); n != 1 {
			t.Errorf("%d RetryInfo details in %s, want the service's one", n, resp.body)
		}
	})

	t.Run("internal errors carry no detail but the reason", func(t *testing.T) {
		resp := e.do(t, "POST", "/v1/users", `{"email":"internal@example.com","name":"A"}`)
		if details, _ := get(resp.json(t), "details").([]any); len(details) != 1 {
			t.Errorf("details %v, want only the ErrorInfo", details)
		}
	})

	t.Run("over-large bodies never reach the backend", func(t *testing.T) {
		e.userCalls.mu.Lock()
		defer e.userCalls.mu.Unlock()
		// Every 413 case above sends a@example.com; no other case that
		// reaches the backend does.
		for _, c := range e.userCalls.creates {
			if c.GetEmail() == "a@example.com" {
				t.Errorf("an over-large body reached the backend (name of %d bytes)", len(c.GetName()))
			}
		}
	})
}

// TestChunkedBodyUnderLimit checks that a body of unknown length within the
// limit is buffered and forwarded intact.
func TestChunkedBodyUnderLimit(t *testing.T) {
	e := newEnv(t)
	resp := e.do(t, "POST", "/v1/users", strings.NewReader(`{"email":"chunk@example.com","name":"Chunk"}`+"\n\t "))
	if resp.status != http.StatusOK {
		t.Fatalf("status %d: %s", resp.status, resp.body)
	}
	if got := get(resp.json(t), "user.email"); got != "chunk@example.com" {
		t.Errorf("email %v", got)
	}
}

// TestUnknownEnumValue checks that an enum name the contract does not know
// is a 400 naming the field. No request message of the API has an enum
// field yet, so this drives the gateway's marshaler and error handler the
// way the generated handlers do.
func TestUnknownEnumValue(t *testing.T) {
	e := newEnv(t)
	tests := []struct{ name, body, field string }{
		{"unknown name", `{"status":"ORDER_STATUS_SHIPPED"}`, "status"},
		{"bool instead of a name", `{"status":true}`, "status"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var o orderv1.Order
			err := newJSONMarshaler().NewDecoder(strings.NewReader(tt.body)).Decode(&o)
			if err == nil {
				t.Fatal("decode succeeded")
			}
			// What the generated request_* functions do with a decode error.
			err = status.Errorf(codes.InvalidArgument, "%v", err)
			rec := httptest.NewRecorder()
			req := httptest.NewRequestWithContext(t.Context(), "POST", "/v1/orders", nil)
			rec.Header().Set(requestIDHeader, "enum-test")
			e.gw.handleError(t.Context(), e.gw.mux, nil, rec, req, err)
			resp := response{status: rec.Code, header: rec.Header(), body: rec.Body.Bytes()}
			checkError(t, resp, errorCase{httpStatus: 400, code: codes.InvalidArgument, reason: "INVALID_ARGUMENT", field: tt.field, message: "invalid JSON body"})
		})
	}
}

// TestMarshalerDecodes checks the marshaler's input rules: proto3 JSON
// names and the original proto names are both accepted, int64 as string or
// number, and an empty body is no error (the handlers treat it as {}).
// TestBodyReadError: a body the server could not read (the client stalled
// past the read timeout) was answered with the read error's text, which
// names the gateway's own address.
func TestBodyReadError(t *testing.T) {
	m := newJSONMarshaler()
	stalled := &net.OpError{Op: "read", Net: "tcp", Source: &net.TCPAddr{IP: net.IPv4(10, 0, 0, 5), Port: 8080}, Err: os.ErrDeadlineExceeded}
	var u userv1.CreateUserRequest
	err := m.NewDecoder(io.MultiReader(strings.NewReader(`{"e`), iotest.ErrReader(stalled))).Decode(&u)
	if err == nil || strings.Contains(err.Error(), "10.0.0.5") || !strings.Contains(err.Error(), "could not read the request body") {
		t.Errorf("error = %v", err)
	}
}

func TestMarshalerDecodes(t *testing.T) {
	m := newJSONMarshaler()
	var u userv1.CreateUserRequest
	if err := m.NewDecoder(strings.NewReader(`{"email":"a@example.com","name":"A"}`)).Decode(&u); err != nil {
		t.Fatal(err)
	}
	var o orderv1.CreateOrderRequest
	if err := m.NewDecoder(strings.NewReader(`{"user_id":"u","items":[{"unitPrice":{"units":12}},{"unit_price":{"units":"13"}}]}`)).Decode(&o); err != nil {
		t.Fatal(err)
	}
	if o.GetUserId() != "u" || o.GetItems()[0].GetUnitPrice().GetUnits() != 12 || o.GetItems()[1].GetUnitPrice().GetUnits() != 13 {
		t.Errorf("decoded %v", &o)
	}
	if err := m.NewDecoder(strings.NewReader("")).Decode(&o); err != io.EOF {
		t.Errorf("empty body: %v, want io.EOF", err)
	}
}

// TestBackendDown checks that a transport failure is a 503 that does not
// name the backend's address and, like every 503, says when to retry.
func TestBackendDown(t *testing.T) {
	e := newEnv(t)
	e.users.srv.Stop()
	resp := e.do(t, "GET", "/v1/users/"+knownUserID, nil)
	checkError(t, resp, errorCase{httpStatus: 503, code: codes.Unavailable, reason: apierr.ReasonUnavailable, message: "service unavailable"})
	if strings.Contains(string(resp.body), "127.0.0.1") {
		t.Errorf("backend address leaked: %s", resp.body)
	}
	if got := resp.header.Get("Retry-After"); got != "1" {
		t.Errorf("Retry-After %q, want 1 (DefaultRetryAfter)", got)
	}
	if n := strings.Count(string(resp.body), retryInfoType); n != 1 {
		t.Errorf("%d RetryInfo details in %s, want 1", n, resp.body)
	}
}

// TestRequestTimeout checks that the gateway's deadline reaches the
// backend and that running out of it is a 504, on every unary route: one
// whose id ends in ":watch" too, which is no watch.
func TestRequestTimeout(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.RequestTimeout = 1 })
	for _, path := range []string{"/v1/users/" + knownUserID, "/v1/users/" + knownUserID + ":watch"} {
		t.Run(path, func(t *testing.T) {
			resp := e.do(t, "GET", path, nil)
			checkError(t, resp, errorCase{httpStatus: 504, code: codes.DeadlineExceeded, reason: apierr.ReasonDeadline})
		})
	}
}

func TestToAPIErrorPassesBackendDetails(t *testing.T) {
	err := apierr.New(codes.FailedPrecondition, "REFUND_EXCEEDS_CHARGE", "too much",
		apierr.Precondition("PAYMENT", "payments/1", "refund exceeds charge"))
	e := toAPIError(status.Convert(err), 0, nil)
	if e.httpStatus != 400 || len(e.status.GetDetails()) != 2 {
		t.Errorf("got %d with %d details", e.httpStatus, len(e.status.GetDetails()))
	}
	if e.status.GetMessage() != "too much" {
		t.Errorf("message %q changed", e.status.GetMessage())
	}
}

// TestUnauthorizedChallenges: a 401 says how to authenticate (RFC 6750),
// and whether the token sent was refused.
func TestUnauthorizedChallenges(t *testing.T) {
	tests := []struct {
		reason, want string
	}{
		{authn.ReasonTokenMissing, "Bearer"},
		{authn.ReasonTokenInvalid, `Bearer error="invalid_token"`},
		{authn.ReasonTokenExpired, `Bearer error="invalid_token"`},
	}
	for _, tt := range tests {
		rec := httptest.NewRecorder()
		writeError(rec, toAPIError(status.Convert(apierr.New(codes.Unauthenticated, tt.reason, "no")), 0, nil))
		if rec.Code != http.StatusUnauthorized || rec.Header().Get("WWW-Authenticate") != tt.want {
			t.Errorf("%s: HTTP %d, WWW-Authenticate %q; want 401, %q", tt.reason, rec.Code, rec.Header().Get("WWW-Authenticate"), tt.want)
		}
	}
	rec := httptest.NewRecorder()
	writeError(rec, toAPIError(status.Convert(apierr.New(codes.PermissionDenied, "CALLER_NOT_ALLOWED", "no")), 0, nil))
	if got := rec.Header().Get("WWW-Authenticate"); got != "" {
		t.Errorf("a 403 says WWW-Authenticate %q", got)
	}
}

// TestStalledBodyHidesAddresses: a client that stops sending its body is
// answered 400 when the read timeout passes, without the connection's
// addresses in the message, on every route: UpdateUser reads its body
// whole (for the field mask) instead of through the gateway's decoder.
func TestStalledBodyHidesAddresses(t *testing.T) {
	e := newEnv(t)
	for _, tt := range []struct{ method, path string }{
		{"PATCH", "/v1/users/" + knownUserID},
		{"POST", "/v1/users"},
	} {
		t.Run(tt.method, func(t *testing.T) {
			lis, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			s := e.gw.Server(lis.Addr().String())
			s.ReadTimeout = 200 * time.Millisecond
			go s.Serve(lis)
			defer s.Close()
			c, err := net.Dial("tcp", lis.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			fmt.Fprintf(c, "%s %s HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"name\":", tt.method, tt.path)
			if err := c.SetReadDeadline(time.Now().Add(10 * time.Second)); err != nil {
				t.Fatal(err)
			}
			resp, err := http.ReadResponse(bufio.NewReader(c), nil)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != http.StatusBadRequest || !strings.Contains(string(body), "could not read the request body") {
				t.Errorf("status %d: %s", resp.StatusCode, body)
			}
			if strings.Contains(string(body), "127.0.0.1") || strings.Contains(string(body), "timeout") {
				t.Errorf("the answer names the connection: %s", body)
			}
		})
	}
}

func TestJSONFieldPath(t *testing.T) {
	tests := []struct{ in, want string }{
		{"email", "email"},
		{"page_size", "pageSize"},
		{"items[0].unit_price.currency_code", "items[0].unitPrice.currencyCode"},
		{"subscribe.max_in_flight", "subscribe.maxInFlight"},
		{`labels["snake_key"].max_in_flight`, `labels["snake_key"].maxInFlight`},
		{`labels["a\"]_b"].x_y`, `labels["a\"]_b"].xY`},
		{"user.id", "user.id"},
		{"v_2", "v2"},
	}
	for _, tt := range tests {
		if got := jsonFieldPath(tt.in); got != tt.want {
			t.Errorf("jsonFieldPath(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

// TestMethodNotAllowedSaysAllow: a 405 names the methods the path takes
// (RFC 9110 requires the Allow header); it had none.
func TestMethodNotAllowedSaysAllow(t *testing.T) {
	e := newEnv(t)
	tests := []struct {
		method, path, want string
	}{
		{"DELETE", "/v1/users/" + knownUserID, "GET, HEAD, PATCH"},
		{"PUT", "/v1/users", "GET, HEAD, POST"},
		{"POST", "/healthz", "GET, HEAD"},
		{"PATCH", "/v1/payments/" + unknownID + ":refund", "GET, HEAD, POST"}, // GET takes "x:refund" as an id, as grpc-gateway does
		{"HEAD", "/v1/orders/" + unknownID + ":watch", "GET"},
		{"DELETE", "/v1/users/" + knownUserID + "/orders", "GET, HEAD"},
		{"POST", "/v1/users/", "GET, HEAD, PATCH"},
		{"DELETE", "/v1/users//orders", "GET, HEAD"},
	}
	for _, tt := range tests {
		t.Run(tt.method+" "+tt.path, func(t *testing.T) {
			req, err := http.NewRequestWithContext(t.Context(), tt.method, e.srv.URL+tt.path, nil)
			if err != nil {
				t.Fatal(err)
			}
			resp, err := e.srv.Client().Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusMethodNotAllowed || resp.Header.Get("Allow") != tt.want {
				t.Errorf("%d with Allow %q, want 405 with %q", resp.StatusCode, resp.Header.Get("Allow"), tt.want)
			}
		})
	}
}

func TestRouteTableAllow(t *testing.T) {
	table, err := newRouteTable(openAPIDocument, []string{"/healthz"})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct{ path, want string }{
		{"/v1/users/abc", "GET, HEAD, PATCH"},
		{"/v1/users", "GET, HEAD, POST"},
		{"/v1/users/abc/orders", "GET, HEAD"},
		{"/v1/orders/abc:watch", "GET"},
		{"/v1/payments/abc:refund", "GET, HEAD, POST"},
		{"/v1/payments/abc", "GET, HEAD"},
		{"/v1/payments/:refund", "GET, HEAD"}, // POST finds ":refund" 404; GET takes it as an id
		{"/v1/users//orders", "GET, HEAD"},    // grpc-gateway: {userId} is ""
		{"/v1/users/", "GET, HEAD, PATCH"},    // {id} is ""
		{"/v1/orders/:watch", ""},             // a segment that is only a verb: grpc-gateway answers GET 404
		{"/v1/nothing", ""},
		{"/healthz", "GET, HEAD"},
	}
	for _, tt := range tests {
		if got := table.allow(tt.path); got != tt.want {
			t.Errorf("allow(%q) = %q, want %q", tt.path, got, tt.want)
		}
	}
}

// TestServiceFieldPathsInJSON: every field a service names, not only the
// first, reaches a REST client in JSON names, map keys kept as they are.
func TestServiceFieldPathsInJSON(t *testing.T) {
	e := newEnv(t)
	resp := e.do(t, "POST", "/v1/orders", `{"userId":"`+knownUserID+`","items":[{"sku":"A","quantity":1}],"paymentToken":"tok_approve","idempotencyKey":"bad-nested-field"}`)
	body := resp.json(t)
	for i, want := range []string{"items[0].unitPrice.currencyCode", `labels["snake_key"].maxInFlight`} {
		if got := get(body, fmt.Sprintf("details.1.fieldViolations.%d.field", i)); got != want {
			t.Errorf("field %d = %v, want %q (%s)", i, got, want, resp.body)
		}
	}
}
