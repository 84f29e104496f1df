package gateway

import (
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/genproto/googleapis/api/annotations"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	inventoryv1 "github.com/duetkit/duet/gen/duet/inventory/v1"
	notificationv1 "github.com/duetkit/duet/gen/duet/notification/v1"
	orderv1 "github.com/duetkit/duet/gen/duet/order/v1"
	paymentv1 "github.com/duetkit/duet/gen/duet/payment/v1"
	userv1 "github.com/duetkit/duet/gen/duet/user/v1"
	"github.com/duetkit/duet/internal/logbuffer"
	"github.com/duetkit/duet/kit/apierr"
)

// protocols are the ways a Connect client may call the gateway over
// HTTP/1.1: the Connect protocol, JSON and binary, and gRPC-Web.
var protocols = []struct {
	name string
	opts []connect.ClientOption
}{
	{"connect+json", []connect.ClientOption{connect.WithProtoJSON()}},
	{"connect+proto", nil},
	{"grpc-web+proto", []connect.ClientOption{connect.WithGRPCWeb()}},
	{"grpc-web+json", []connect.ClientOption{connect.WithGRPCWeb(), connect.WithProtoJSON()}},
}

// errorInfo returns the reason of err's ErrorInfo detail, "" without one.
func errorInfo(t *testing.T, err error) string {
	t.Helper()
	ce, ok := errors.AsType[*connect.Error](err)
	if !ok {
		t.Fatalf("%v is not a connect error", err)
	}
	for _, d := range ce.Details() {
		if v, err := d.Value(); err == nil {
			if info, ok := v.(*errdetails.ErrorInfo); ok {
				return info.GetReason()
			}
		}
	}
	return ""
}

// TestConnectUnary: each protocol reaches the service with the caller's
// token and the request id, and answers as the service did: the message,
// or its error with its code and ErrorInfo; an internal error masked.
func TestConnectUnary(t *testing.T) {
	e := newEnv(t)
	for _, p := range protocols {
		t.Run(p.name, func(t *testing.T) {
			getUser := getUserClient(e.srv, p.opts...)
			req := connect.NewRequest(&userv1.GetUserRequest{Id: knownUserID})
			req.Header().Set("Authorization", "Bearer a.b.c")
			req.Header().Set(requestIDHeader, "connect-request-1")
			res, err := getUser.CallUnary(t.Context(), req)
			if err != nil {
				t.Fatal(err)
			}
			if res.Msg.GetUser().GetEmail() != "ada@example.com" {
				t.Errorf("GetUser answered %v", res.Msg)
			}
			if got := res.Header().Get(requestIDHeader); got != "connect-request-1" {
				t.Errorf("X-Request-Id %q, want the caller's", got)
			}
			md := e.userCalls.lastMD(t)
			if got := md.Get("authorization"); !slices.Equal(got, []string{"Bearer a.b.c"}) {
				t.Errorf("the service got authorization %q", got)
			}
			if got := md.Get("x-request-id"); !slices.Equal(got, []string{"connect-request-1"}) {
				t.Errorf("the service got x-request-id %q", got)
			}

			_, err = getUser.CallUnary(t.Context(), connect.NewRequest(&userv1.GetUserRequest{Id: unknownID}))
			if connect.CodeOf(err) != connect.CodeNotFound || errorInfo(t, err) != "USER_NOT_FOUND" {
				t.Errorf("an unknown user: %v (reason %q), want not_found USER_NOT_FOUND", err, errorInfo(t, err))
			}

			createUser := connect.NewClient[userv1.CreateUserRequest, userv1.CreateUserResponse](e.srv.Client(),
				e.srv.URL+userv1.UserService_CreateUser_FullMethodName, p.opts...)
			_, err = createUser.CallUnary(t.Context(), connect.NewRequest(&userv1.CreateUserRequest{Email: "internal@example.com", Name: "X"}))
			if connect.CodeOf(err) != connect.CodeInternal || strings.Contains(err.Error(), "hunter2") {
				t.Errorf("an internal error: %v, want it masked", err)
			}
			_, err = createUser.CallUnary(t.Context(), connect.NewRequest(&userv1.CreateUserRequest{Email: "taken@example.com", Name: "X"}))
			if connect.CodeOf(err) != connect.CodeAlreadyExists || errorInfo(t, err) != "EMAIL_TAKEN" {
				t.Errorf("a taken email: %v, want already_exists EMAIL_TAKEN", err)
			}
		})
	}
}

// TestConnectBadBody: a body that does not decode is INVALID_ARGUMENT with
// an ErrorInfo and the field, as a REST body's is, and reaches no service.
func TestConnectBadBody(t *testing.T) {
	e := newEnv(t)
	tests := []struct {
		name, contentType, body string
		status                  int
		code, reason, field     string
	}{
		{"unknown field", "application/json", `{"id": "x", "nmae": "y"}`, 400, "invalid_argument", apierr.ReasonInvalidArgument, "nmae"},
		{"wrong type", "application/json", `{"id": 5}`, 400, "invalid_argument", apierr.ReasonInvalidArgument, "id"},
		{"not JSON", "application/json", `{"id":`, 400, "invalid_argument", apierr.ReasonInvalidArgument, ""},
		{"not binary", "application/proto", "\xff\xff\xff", 400, "invalid_argument", apierr.ReasonInvalidArgument, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := len(e.userCalls.md)
			r := e.do(t, "POST", userv1.UserService_GetUser_FullMethodName, tt.body, "Content-Type", tt.contentType)
			if r.status != tt.status {
				t.Fatalf("HTTP %d %s, want %d", r.status, r.body, tt.status)
			}
			body := r.json(t)
			if body["code"] != tt.code {
				t.Errorf("code %v, want %s: %s", body["code"], tt.code, r.body)
			}
			details, _ := body["details"].([]any)
			var reason, field string
			for _, d := range details {
				dm, _ := d.(map[string]any)
				v, _ := dm["debug"].(map[string]any)
				if r, ok := v["reason"].(string); ok {
					reason = r
				}
				if fvs, ok := v["fieldViolations"].([]any); ok && len(fvs) > 0 {
					field, _ = fvs[0].(map[string]any)["field"].(string)
				}
			}
			if reason != tt.reason || field != tt.field {
				t.Errorf("reason %q, field %q; want %q, %q: %s", reason, field, tt.reason, tt.field, r.body)
			}
			e.userCalls.mu.Lock()
			after := len(e.userCalls.md)
			e.userCalls.mu.Unlock()
			if after != before {
				t.Error("the service was called")
			}
		})
	}
}

// TestConnectRefusedBeforeRouting: what the gateway refuses before it
// routes a request (a body over its limit, headers too large to forward,
// a URL that is not UTF-8) a Connect or gRPC-Web client reads as an error
// of its own protocol, with the code and reason a REST client gets, on
// unary calls and streams alike; no service is called.
func TestConnectRefusedBeforeRouting(t *testing.T) {
	e := newEnv(t)
	huge := strings.Repeat("x", testMaxBody)
	for _, p := range protocols {
		t.Run(p.name, func(t *testing.T) {
			getUser := getUserClient(e.srv, p.opts...)
			watch := connect.NewClient[orderv1.WatchOrderRequest, orderv1.WatchOrderResponse](e.srv.Client(),
				e.srv.URL+orderv1.OrderService_WatchOrder_FullMethodName, p.opts...)
			unary := func(id, token string) error {
				req := connect.NewRequest(&userv1.GetUserRequest{Id: id})
				if token != "" {
					req.Header().Set("Authorization", "Bearer "+token)
				}
				_, err := getUser.CallUnary(t.Context(), req)
				return err
			}
			stream := func(id, token string) error {
				req := connect.NewRequest(&orderv1.WatchOrderRequest{Id: id})
				if token != "" {
					req.Header().Set("Authorization", "Bearer "+token)
				}
				return watchToEnd(t.Context(), watch, req)
			}
			tests := []struct {
				name   string
				err    error
				reason string
			}{
				{"a body over the limit", unary(huge, ""), ReasonRequestTooLarge},
				{"a stream's body over the limit", stream(huge, ""), ReasonRequestTooLarge},
				{"headers too large", unary(knownUserID, strings.Repeat("t", maxForwardedMetadata)), ReasonHeadersTooLarge},
				{"a stream's headers too large", stream(knownUserID, strings.Repeat("t", maxForwardedMetadata)), ReasonHeadersTooLarge},
			}
			for _, tt := range tests {
				if connect.CodeOf(tt.err) != connect.CodeInvalidArgument || errorInfo(t, tt.err) != tt.reason {
					t.Errorf("%s: %v (reason %q), want invalid_argument %s", tt.name, tt.err, errorInfo(t, tt.err), tt.reason)
				}
			}
		})
	}
	// What connect-go would refuse before the refusal is given (a GET's
	// message in the URL, base64 it cannot decode, compression it does
	// not take, a timeout it cannot read) does not replace it.
	getUser := userv1.UserService_GetUser_FullMethodName
	huger := `{"id":"` + huge + `"}`
	for _, tt := range []struct {
		name, method, path, body string
		header                   []string
		reason                   string
	}{
		{"a GET's URL not UTF-8", "GET", getUser + "?encoding=json&message=%7B%22id%22%3A%22%FF%22%7D", "", nil, apierr.ReasonInvalidArgument},
		{"a GET's URL not UTF-8, nor base64", "GET", getUser + "?encoding=proto&base64=1&message=%FF", "", nil, apierr.ReasonInvalidArgument},
		{"a GET compressed", "GET", getUser + "?encoding=json&compression=gzip&message=%FF", "", nil, apierr.ReasonInvalidArgument},
		{"a body over the limit, compressed", "POST", getUser, huger, []string{"Content-Type", "application/json", "Content-Encoding", "gzip"}, ReasonRequestTooLarge},
		{"a body over the limit, a bad timeout", "POST", getUser, huger, []string{"Content-Type", "application/json", "Connect-Timeout-Ms", "soon"}, ReasonRequestTooLarge},
	} {
		r := e.do(t, tt.method, tt.path, tt.body, tt.header...)
		body := r.json(t)
		var reason string
		details, _ := body["details"].([]any)
		for _, d := range details {
			dm, _ := d.(map[string]any)
			v, _ := dm["debug"].(map[string]any)
			if got, ok := v["reason"].(string); ok {
				reason = got
			}
		}
		if r.status != http.StatusBadRequest || body["code"] != "invalid_argument" || reason != tt.reason {
			t.Errorf("%s: HTTP %d %s, want 400 invalid_argument %s", tt.name, r.status, r.body, tt.reason)
		}
	}
	for _, c := range []*calls{e.userCalls, e.orderCalls} {
		c.mu.Lock()
		n := len(c.md)
		c.mu.Unlock()
		if n != 0 {
			t.Errorf("a service was called %d times", n)
		}
	}
}

// TestConnectServesTheRESTMethods: the procedures served are the methods
// the REST routes map, no more (the saga's stay gRPC only), no fewer; a
// call of another method is a JSON 404, as an unknown route is.
func TestConnectServesTheRESTMethods(t *testing.T) {
	e := newEnv(t)
	var want []string
	for _, fd := range []protoreflect.FileDescriptor{
		userv1.File_duet_user_v1_user_proto, orderv1.File_duet_order_v1_order_proto, paymentv1.File_duet_payment_v1_payment_proto,
		inventoryv1.File_duet_inventory_v1_inventory_proto, notificationv1.File_duet_notification_v1_notification_proto,
	} {
		for i := range fd.Services().Len() {
			sd := fd.Services().Get(i)
			for j := range sd.Methods().Len() {
				md := sd.Methods().Get(j)
				if proto.HasExtension(md.Options(), annotations.E_Http) {
					want = append(want, "/"+string(sd.FullName())+"/"+string(md.Name()))
				}
			}
		}
	}
	var got []string
	for path := range e.gw.procedures {
		got = append(got, path)
	}
	slices.Sort(want)
	slices.Sort(got)
	if !slices.Equal(got, want) {
		t.Errorf("procedures served:\n%v\nwant the REST-mapped methods:\n%v", got, want)
	}
	r := e.do(t, "POST", inventoryv1.InventoryService_ReserveStock_FullMethodName, `{}`)
	if r.status != http.StatusNotFound || !strings.Contains(string(r.body), ReasonRouteNotFound) {
		t.Errorf("a gRPC-only method: HTTP %d %s, want a 404 %s", r.status, r.body, ReasonRouteNotFound)
	}
}

// TestConnectWatch: a server stream passes every message on, in each
// protocol, past the call deadline and past the server's write timeout,
// as a REST watch does.
func TestConnectWatch(t *testing.T) {
	gw := quietGateway(t, nil, watchingOrders{pause: 300 * time.Millisecond}, func(c *Config) {
		c.RequestTimeout, c.WriteTimeout = 100*time.Millisecond, 200*time.Millisecond
	})
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := gw.Server(lis.Addr().String())
	go func() { _ = srv.Serve(lis) }()
	defer srv.Close()
	client := &http.Client{Transport: &http.Transport{}}
	defer client.CloseIdleConnections()
	for _, p := range protocols {
		t.Run(p.name, func(t *testing.T) {
			watch := connect.NewClient[orderv1.WatchOrderRequest, orderv1.WatchOrderResponse](client,
				"http://"+lis.Addr().String()+orderv1.OrderService_WatchOrder_FullMethodName, p.opts...)
			stream, err := watch.CallServerStream(t.Context(), connect.NewRequest(&orderv1.WatchOrderRequest{Id: knownUserID}))
			if err != nil {
				t.Fatal(err)
			}
			defer stream.Close()
			var got []orderv1.OrderStatus
			for stream.Receive() {
				got = append(got, stream.Msg().GetOrder().GetStatus())
			}
			if err := stream.Err(); err != nil {
				t.Fatal(err)
			}
			want := []orderv1.OrderStatus{orderv1.OrderStatus_ORDER_STATUS_PENDING, orderv1.OrderStatus_ORDER_STATUS_PENDING, orderv1.OrderStatus_ORDER_STATUS_CONFIRMED}
			if !slices.Equal(got, want) {
				t.Errorf("watched %v, want %v", got, want)
			}
		})
	}
}

// TestConnectWatchDrained: Drain ends an open stream with UNAVAILABLE,
// reason SHUTTING_DOWN, as it ends a REST watch.
func TestConnectWatchDrained(t *testing.T) {
	w := endlessWatch{started: make(chan struct{}, 1)}
	logs := &logbuffer.Buffer{}
	gw := quietGateway(t, nil, w, logTo(logs))
	srv := httptest.NewServer(gw)
	defer srv.Close()
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	watch := connect.NewClient[orderv1.WatchOrderRequest, orderv1.WatchOrderResponse](srv.Client(),
		srv.URL+orderv1.OrderService_WatchOrder_FullMethodName, connect.WithProtoJSON())
	stream, err := watch.CallServerStream(ctx, connect.NewRequest(&orderv1.WatchOrderRequest{Id: knownUserID}))
	if err != nil {
		t.Fatal(err)
	}
	defer stream.Close()
	if !stream.Receive() {
		t.Fatalf("no first message: %v", stream.Err())
	}
	gw.Drain()
	for stream.Receive() {
	}
	err = stream.Err()
	if connect.CodeOf(err) != connect.CodeUnavailable || errorInfo(t, err) != apierr.ReasonShuttingDown {
		t.Errorf("the stream ended with %v, want unavailable %s", err, apierr.ReasonShuttingDown)
	}
	// As a REST watch drained, no failure of the server's: INFO.
	logs.WaitFor(t, `"msg":"http request"`, 10*time.Second)
	for _, rec := range logs.Lines(t) {
		if rec["msg"] == "http request" && (rec["code"] != "unavailable" || rec["level"] != "INFO") {
			t.Errorf("access line %v, want code unavailable at INFO", rec)
		}
	}
}

// TestConnectCORS: a page of an allowed origin may send a Connect call's
// headers and read its answer's.
func TestConnectCORS(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.CORSOrigins = []string{"https://shop.example"} })
	r := e.do(t, "OPTIONS", userv1.UserService_GetUser_FullMethodName, nil,
		"Origin", "https://shop.example", "Access-Control-Request-Method", "POST",
		"Access-Control-Request-Headers", "authorization,connect-protocol-version,connect-timeout-ms,content-type,x-grpc-web,x-user-agent") // sorted, as browsers send them
	if r.status != http.StatusNoContent || r.header.Get("Access-Control-Allow-Origin") != "https://shop.example" {
		t.Fatalf("preflight: HTTP %d, headers %v", r.status, r.header)
	}
	r = e.do(t, "POST", userv1.UserService_GetUser_FullMethodName, `{"id": "`+knownUserID+`"}`, "Origin", "https://shop.example")
	exposed := strings.ToLower(r.header.Get("Access-Control-Expose-Headers"))
	for _, h := range []string{"grpc-status", "grpc-message", "x-request-id"} {
		if !strings.Contains(exposed, h) {
			t.Errorf("Access-Control-Expose-Headers %q lacks %s", exposed, h)
		}
	}
}

// refusingUsers refuses GetUser as an edge's token check, or a busy
// service, would.
type refusingUsers struct {
	userv1.UnimplementedUserServiceServer
}

func (refusingUsers) GetUser(_ context.Context, req *userv1.GetUserRequest) (*userv1.GetUserResponse, error) {
	switch req.GetId() {
	case "expired":
		return nil, apierr.New(codes.Unauthenticated, "TOKEN_EXPIRED", "the bearer token has expired")
	case "busy":
		return nil, apierr.Unavailable("OVERLOADED", "too busy", 7*time.Second)
	}
	return &userv1.GetUserResponse{User: &userv1.User{Id: req.GetId()}}, nil
}

// TestConnectHTTP: what the Connect protocol looks like on the wire: JSON
// with a charset as browsers' libraries send it, GET for a method free of
// side effects but not for others, no compressed bodies, and a refusal's
// headers as REST sends them.
func TestConnectHTTP(t *testing.T) {
	gw := quietGateway(t, refusingUsers{}, nil)
	srv := httptest.NewServer(gw)
	defer srv.Close()
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	_, _ = zw.Write([]byte(`{"id": "zipped"}`))
	_ = zw.Close()
	getUser := userv1.UserService_GetUser_FullMethodName
	tests := []struct {
		name, method, path, body string
		header                   []string
		status                   int
		want                     []string // in the body, or "Header: value"
	}{
		{"JSON with a charset", "POST", getUser, `{"id": "ada"}`, []string{"Content-Type", "application/json; charset=utf-8"}, 200, []string{`"id":"ada"`}},
		{"GET, free of side effects", "GET", getUser + "?encoding=json&message=" + url.QueryEscape(`{"id":"ada"}`), "", nil, 200, []string{`"id":"ada"`}},
		{"GET, with side effects", "GET", userv1.UserService_CreateUser_FullMethodName + "?encoding=json&message=%7B%7D", "", nil, 405, []string{"Allow: POST"}},
		{"a compressed body", "POST", getUser, gz.String(), []string{"Content-Type", "application/json", "Content-Encoding", "gzip"}, 501, []string{`"code":"unimplemented"`}},
		{"a token refused", "POST", getUser, `{"id": "expired"}`, []string{"Content-Type", "application/json"}, 401,
			[]string{`"code":"unauthenticated"`, "TOKEN_EXPIRED", `Www-Authenticate: Bearer error="invalid_token"`}},
		{"busy", "POST", getUser, `{"id": "busy"}`, []string{"Content-Type", "application/json"}, 503, []string{`"code":"unavailable"`, "Retry-After: 7"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req, err := http.NewRequestWithContext(t.Context(), tt.method, srv.URL+tt.path, strings.NewReader(tt.body))
			if err != nil {
				t.Fatal(err)
			}
			for i := 0; i+1 < len(tt.header); i += 2 {
				req.Header.Set(tt.header[i], tt.header[i+1])
			}
			resp, err := srv.Client().Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			body, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != tt.status {
				t.Errorf("HTTP %d %s, want %d", resp.StatusCode, body, tt.status)
			}
			for _, w := range tt.want {
				if name, value, ok := strings.Cut(w, ": "); ok {
					if got := resp.Header.Get(name); got != value {
						t.Errorf("%s: %q, want %q", name, got, value)
					}
				} else if !strings.Contains(string(body), w) {
					t.Errorf("body %s lacks %s", body, w)
				}
			}
		})
	}
}

// TestConnectWatchSilentPastTheWriteTimeout: a stream whose order has
// not changed for longer than the server's write timeout is still open,
// over HTTP/1.1 and HTTP/2 (whose server resets a stream once its write
// deadline passes, writing or not), and ends as Drain says, not cut off
// by the deadline of its start.
func TestConnectWatchSilentPastTheWriteTimeout(t *testing.T) {
	const writeTimeout = 200 * time.Millisecond
	for _, http2 := range []bool{false, true} {
		name := map[bool]string{false: "HTTP/1.1", true: "HTTP/2"}[http2]
		t.Run(name, func(t *testing.T) {
			w := endlessWatch{silent: true, started: make(chan struct{}, 1)}
			gw := quietGateway(t, nil, w, func(c *Config) { c.WriteTimeout = writeTimeout })
			ts := httptest.NewUnstartedServer(nil)
			ts.Config = gw.Server("")
			ts.EnableHTTP2 = http2
			ts.StartTLS()
			defer ts.Close()
			ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
			defer cancel()
			watch := connect.NewClient[orderv1.WatchOrderRequest, orderv1.WatchOrderResponse](ts.Client(),
				ts.URL+orderv1.OrderService_WatchOrder_FullMethodName, connect.WithProtoJSON())
			ended := make(chan error, 1)
			go func() {
				// The call returns once the answer's headers have
				// come, which a silent watch sends only at its end.
				stream, err := watch.CallServerStream(ctx, connect.NewRequest(&orderv1.WatchOrderRequest{Id: knownUserID}))
				if err != nil {
					ended <- err
					return
				}
				defer stream.Close()
				for stream.Receive() {
				}
				ended <- stream.Err()
			}()
			select {
			case <-w.started:
			case <-ctx.Done():
				t.Fatal("the watch never reached the backend")
			}
			time.Sleep(3 * writeTimeout) // the scenario: silence past the timeout, not a wait for an event
			gw.Drain()
			if err := <-ended; connect.CodeOf(err) != connect.CodeUnavailable || errorInfo(t, err) != apierr.ReasonShuttingDown {
				t.Errorf("the stream ended with %v, want unavailable %s", err, apierr.ReasonShuttingDown)
			}
		})
	}
}

// TestConnectAccessLog: a Connect or gRPC-Web call that failed says so in
// its access log line, with the code, at ERROR for a server's failure,
// though gRPC-Web (and a Connect stream once begun) answers HTTP 200; a
// call that succeeded has no code.
func TestConnectAccessLog(t *testing.T) {
	logs := &logbuffer.Buffer{}
	gw := quietGateway(t, refusingUsers{}, failingWatch{sendFirst: true, err: status.Error(codes.DataLoss, "disk on fire")}, logTo(logs))
	srv := httptest.NewServer(gw)
	defer srv.Close()
	for _, p := range protocols {
		t.Run(p.name, func(t *testing.T) {
			getUser := getUserClient(srv, p.opts...)
			watch := connect.NewClient[orderv1.WatchOrderRequest, orderv1.WatchOrderResponse](srv.Client(),
				srv.URL+orderv1.OrderService_WatchOrder_FullMethodName, p.opts...)
			call := func(id string, do func(requestID string) error) map[string]any {
				t.Helper()
				_ = do(id)
				logs.WaitFor(t, `"request_id":"`+id+`"`, 10*time.Second)
				for _, rec := range logs.Lines(t) {
					if rec["msg"] == "http request" && rec["request_id"] == id {
						return rec
					}
				}
				t.Fatalf("no access log line for %s", id)
				return nil
			}
			unary := func(userID string) func(string) error {
				return func(requestID string) error {
					req := connect.NewRequest(&userv1.GetUserRequest{Id: userID})
					req.Header().Set(requestIDHeader, requestID)
					_, err := getUser.CallUnary(t.Context(), req)
					return err
				}
			}
			stream := func(requestID string) error {
				req := connect.NewRequest(&orderv1.WatchOrderRequest{Id: "o1"})
				req.Header().Set(requestIDHeader, requestID)
				return watchToEnd(t.Context(), watch, req)
			}
			tests := []struct {
				name, code, level string
				do                func(requestID string) error
			}{
				{"answered", "", "INFO", unary("ada")},
				{"refused", "unauthenticated", "INFO", unary("expired")},
				{"busy", "unavailable", "ERROR", unary("busy")},
				{"a stream that failed", "internal", "ERROR", stream}, // DATA_LOSS, masked
			}
			for _, tt := range tests {
				rec := call(strings.NewReplacer("+", "-", " ", "-").Replace("access-"+p.name+"-"+tt.name), tt.do)
				code, _ := rec["code"].(string)
				if code != tt.code || rec["level"] != tt.level {
					t.Errorf("%s: access line %v, want code %q at %s", tt.name, rec, tt.code, tt.level)
				}
			}
		})
	}
	// A gRPC-Web call connect-go refuses itself, before the interceptor:
	// its status is in the headers of a trailers-only answer.
	req, err := http.NewRequestWithContext(t.Context(), "POST", srv.URL+userv1.UserService_GetUser_FullMethodName, strings.NewReader("\x00\x00\x00"))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/grpc-web+proto")
	req.Header.Set(requestIDHeader, "access-grpc-web-malformed")
	resp, err := srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	logs.WaitFor(t, `"request_id":"access-grpc-web-malformed"`, 10*time.Second)
	for _, rec := range logs.Lines(t) {
		if rec["request_id"] == "access-grpc-web-malformed" && (rec["code"] == nil || rec["code"] == "") {
			t.Errorf("a malformed gRPC-Web call: access line %v, want its code (grpc-status %q)", rec, resp.Header.Get("Grpc-Status"))
		}
	}
}

// watchToEnd calls WatchOrder with req and reads the stream to its end:
// how it ended.
func watchToEnd(ctx context.Context, c *connect.Client[orderv1.WatchOrderRequest, orderv1.WatchOrderResponse], req *connect.Request[orderv1.WatchOrderRequest]) error {
	s, err := c.CallServerStream(ctx, req)
	if err != nil {
		return err
	}
	defer s.Close()
	for s.Receive() {
	}
	return s.Err()
}

// TestConnectPanic: a panic while serving a Connect or gRPC-Web call is
// answered in the caller's protocol, as an internal error that reveals
// nothing, and logged with the access line's code.
func TestConnectPanic(t *testing.T) {
	logs := &logbuffer.Buffer{}
	b := startBackend(t, "", func(r grpc.ServiceRegistrar) { userv1.RegisterUserServiceServer(r, refusingUsers{}) })
	panicking, err := grpc.NewClient(b.addr, grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithUnaryInterceptor(func(context.Context, string, any, any, *grpc.ClientConn, grpc.UnaryInvoker, ...grpc.CallOption) error {
			panic("hunter2")
		}))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = panicking.Close() })
	gw := quietGateway(t, nil, nil, logTo(logs), func(c *Config) { c.Users = panicking })
	srv := httptest.NewServer(gw)
	defer srv.Close()
	for _, p := range protocols {
		t.Run(p.name, func(t *testing.T) {
			getUser := getUserClient(srv, p.opts...)
			id := strings.ReplaceAll("panic-"+p.name, "+", "-")
			req := connect.NewRequest(&userv1.GetUserRequest{Id: "ada"})
			req.Header().Set(requestIDHeader, id)
			_, err := getUser.CallUnary(t.Context(), req)
			if connect.CodeOf(err) != connect.CodeInternal || strings.Contains(err.Error(), "hunter2") {
				t.Errorf("a panic: %v, want internal, masked", err)
			}
			logs.WaitFor(t, `"request_id":"`+id+`"`, 10*time.Second)
			var logged bool
			for _, rec := range logs.Lines(t) {
				if rec["request_id"] != id {
					continue
				}
				logged = logged || rec["panic"] == "hunter2"
				if rec["msg"] == "http request" && (rec["code"] != "internal" || rec["level"] != "ERROR") {
					t.Errorf("access line %v, want code internal at ERROR", rec)
				}
			}
			if !logged {
				t.Error("the panic was not logged")
			}
		})
	}
}

// TestConnectGRPCAccessLog: a gRPC call (HTTP/2) that connect-go refuses
// itself, before the gateway's interceptor, has its code in the access
// log: gRPC carries it in HTTP trailers.
func TestConnectGRPCAccessLog(t *testing.T) {
	logs := &logbuffer.Buffer{}
	gw := quietGateway(t, refusingUsers{}, nil, logTo(logs))
	ts := httptest.NewUnstartedServer(gw)
	ts.EnableHTTP2 = true
	ts.StartTLS()
	defer ts.Close()
	getUser := getUserClient(ts, connect.WithGRPC(), connect.WithSendGzip())
	req := connect.NewRequest(&userv1.GetUserRequest{Id: "ada"})
	req.Header().Set(requestIDHeader, "grpc-compressed")
	_, err := getUser.CallUnary(t.Context(), req)
	if connect.CodeOf(err) != connect.CodeUnimplemented {
		t.Fatalf("a compressed gRPC call: %v, want unimplemented", err)
	}
	logs.WaitFor(t, `"request_id":"grpc-compressed"`, 10*time.Second)
	for _, rec := range logs.Lines(t) {
		if rec["msg"] == "http request" && rec["code"] != "unimplemented" {
			t.Errorf("access line %v, want code unimplemented", rec)
		}
	}
}

// logTo has a gateway log to b, in JSON.
func logTo(b *logbuffer.Buffer) func(*Config) {
	return func(c *Config) { c.Logger = slog.New(slog.NewJSONHandler(b, nil)) }
}

// getUserClient is a Connect client of GetUser at srv's gateway.
func getUserClient(srv *httptest.Server, opts ...connect.ClientOption) *connect.Client[userv1.GetUserRequest, userv1.GetUserResponse] {
	return connect.NewClient[userv1.GetUserRequest, userv1.GetUserResponse](srv.Client(), srv.URL+userv1.UserService_GetUser_FullMethodName, opts...)
}

// TestConnectForwardsAuthorizationOnly: a Connect call passes on the
// caller's Authorization and nothing else of its headers, neither the
// Grpc-Metadata-* nor the X-Forwarded-* ones REST passes on:
// checkForwardedSize counts Authorization alone for it, on that ground.
func TestConnectForwardsAuthorizationOnly(t *testing.T) {
	e := newEnv(t)
	r := e.do(t, "POST", userv1.UserService_GetUser_FullMethodName, `{"id":"`+knownUserID+`"}`,
		"Content-Type", "application/json", "Authorization", "Bearer t0ken",
		"Grpc-Metadata-Blob", "b", "X-Forwarded-For", "10.0.0.1", "X-Forwarded-Host", "shop.example", "X-Custom", "c")
	if r.status != http.StatusOK {
		t.Fatalf("HTTP %d %s", r.status, r.body)
	}
	md := e.userCalls.lastMD(t)
	if got := md.Get("authorization"); len(got) != 1 || got[0] != "Bearer t0ken" {
		t.Errorf("authorization reached the service as %q", got)
	}
	for _, key := range []string{"blob", "grpc-metadata-blob", "x-forwarded-for", "x-forwarded-host", "x-custom"} {
		if v := md.Get(key); len(v) > 0 {
			t.Errorf("%s reached the service (%q): checkForwardedSize does not count it for Connect", key, v)
		}
	}
}
