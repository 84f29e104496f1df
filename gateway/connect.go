package gateway

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"

	"connectrpc.com/connect"
	"github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/descriptorpb"

	inventoryv1 "github.com/duetkit/duet/gen/duet/inventory/v1"
	notificationv1 "github.com/duetkit/duet/gen/duet/notification/v1"
	orderv1 "github.com/duetkit/duet/gen/duet/order/v1"
	paymentv1 "github.com/duetkit/duet/gen/duet/payment/v1"
	userv1 "github.com/duetkit/duet/gen/duet/user/v1"
	"github.com/duetkit/duet/kit/apierr"
)

// Connect and gRPC-Web. A browser, or any Connect client, calls the
// methods the REST routes map at their gRPC paths (POST
// /duet.user.v1.UserService/GetUser; GET too for those the contract marks
// free of side effects) on the gateway's port, in the Connect protocol
// (JSON or binary; unary calls and server streams) or in gRPC-Web, and a
// gRPC client in gRPC over HTTP/2 (Server).
// connect-go's handlers speak the protocols; each call then goes on
// over the same gRPC connection a REST call takes, with the caller's
// token, the request id and the trace, so the services cannot tell the
// two apart. The gRPC-only methods (the saga's, ImportStock, Subscribe)
// are not served: a browser cannot stream its requests.

// procedures maps each served procedure's path to its handler.
type procedures map[string]http.Handler

// connectProcedures returns the handlers of the methods the REST routes
// map, of the services g has connections to.
func (g *Gateway) connectProcedures() procedures {
	users := userv1.NewUserServiceClient(g.cfg.Users)
	orders := orderv1.NewOrderServiceClient(g.cfg.Orders)
	payments := paymentv1.NewPaymentServiceClient(g.cfg.Payments)
	p := procedures{}
	unary(p, g, userv1.UserService_CreateUser_FullMethodName, users.CreateUser)
	unary(p, g, userv1.UserService_GetUser_FullMethodName, users.GetUser)
	unary(p, g, userv1.UserService_ListUsers_FullMethodName, users.ListUsers)
	unary(p, g, userv1.UserService_UpdateUser_FullMethodName, users.UpdateUser)
	unary(p, g, orderv1.OrderService_CreateOrder_FullMethodName, orders.CreateOrder)
	unary(p, g, orderv1.OrderService_GetOrder_FullMethodName, orders.GetOrder)
	unary(p, g, orderv1.OrderService_ListOrders_FullMethodName, orders.ListOrders)
	watch(p, g, orderv1.OrderService_WatchOrder_FullMethodName, orders.WatchOrder)
	unary(p, g, paymentv1.PaymentService_Charge_FullMethodName, payments.Charge)
	unary(p, g, paymentv1.PaymentService_GetPayment_FullMethodName, payments.GetPayment)
	unary(p, g, paymentv1.PaymentService_Refund_FullMethodName, payments.Refund)
	if g.cfg.Inventory != nil {
		inventory := inventoryv1.NewInventoryServiceClient(g.cfg.Inventory)
		unary(p, g, inventoryv1.InventoryService_CreateProduct_FullMethodName, inventory.CreateProduct)
		unary(p, g, inventoryv1.InventoryService_GetProduct_FullMethodName, inventory.GetProduct)
		unary(p, g, inventoryv1.InventoryService_ListProducts_FullMethodName, inventory.ListProducts)
	}
	if g.cfg.Notifications != nil {
		notifications := notificationv1.NewNotificationServiceClient(g.cfg.Notifications)
		unary(p, g, notificationv1.NotificationService_ListNotifications_FullMethodName, notifications.ListNotifications)
		unary(p, g, notificationv1.NotificationService_ListAuditEvents_FullMethodName, notifications.ListAuditEvents)
	}
	return p
}

// handlerOptions are procedure's: the gateway's codecs, under each name
// connect-go registers its own for; the gateway's body limit; no request
// compression, which browsers do not use and which would let a small
// body cost inflating a large one (connect-go reads an over-long message
// to its end to say how long it was); and GET for the methods the
// contract marks free of side effects, which Connect clients may send as
// GET (connect-es's useHttpGet), cacheable.
func (g *Gateway) handlerOptions(procedure string) []connect.HandlerOption {
	return []connect.HandlerOption{
		connect.WithCodec(codec{name: "json", json: true}),
		connect.WithCodec(codec{name: "json; charset=utf-8", json: true}),
		connect.WithCodec(codec{name: "proto"}),
		connect.WithReadMaxBytes(int(g.cfg.MaxBodyBytes)),
		connect.WithCompression("gzip", nil, nil),
		connect.WithIdempotency(idempotency(procedure)),
		// Outermost, so that it notes what WithRecover answers.
		connect.WithInterceptors(outcome{}),
		connect.WithRecover(g.recoverCall),
	}
}

// outcome is the Connect handlers' interceptor. It answers a call serve
// refused before routing with its refusal, and notes the code of a call
// that failed on the request's responseRecorder, for the access log:
// gRPC-Web answers every call with HTTP 200 (its status goes in the
// trailers), and so do Connect streams once they have begun, so the HTTP
// status alone would log a failed call as a success.
type outcome struct{}

// WrapUnary implements connect.Interceptor.
func (o outcome) WrapUnary(next connect.UnaryFunc) connect.UnaryFunc {
	return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
		rec, _ := ctx.Value(connectKey{}).(*responseRecorder)
		if rec != nil && rec.refusal != nil {
			return nil, o.note(rec, rec.refusal)
		}
		res, err := next(ctx, req)
		return res, o.note(rec, err)
	}
}

// WrapStreamingClient implements connect.Interceptor; the gateway is no
// Connect client.
func (outcome) WrapStreamingClient(next connect.StreamingClientFunc) connect.StreamingClientFunc {
	return next
}

// WrapStreamingHandler implements connect.Interceptor.
func (o outcome) WrapStreamingHandler(next connect.StreamingHandlerFunc) connect.StreamingHandlerFunc {
	return func(ctx context.Context, conn connect.StreamingHandlerConn) error {
		rec, _ := ctx.Value(connectKey{}).(*responseRecorder)
		if rec != nil && rec.refusal != nil {
			return o.note(rec, rec.refusal)
		}
		return o.note(rec, next(ctx, conn))
	}
}

// note records the code of err, a call's failure, on rec for the access
// log, and returns err. connect-go answers a bare context error as the
// context's code (canceled, deadline_exceeded), which CodeOf would call
// unknown. The UNAVAILABLE a drain ends a call with (connectError marks
// rec drained) is no failure of the server's, as the drain of a REST watch
// is not.
func (outcome) note(rec *responseRecorder, err error) error {
	if rec == nil || err == nil {
		return err
	}
	code := connect.CodeOf(err)
	if _, ok := errors.AsType[*connect.Error](err); !ok {
		switch {
		case errors.Is(err, context.Canceled):
			code = connect.CodeCanceled
		case errors.Is(err, context.DeadlineExceeded), errors.Is(err, os.ErrDeadlineExceeded):
			code = connect.CodeDeadlineExceeded
		}
	}
	rec.rpcCode = code
	rec.rpcFailed = serverFailure(code) && !rec.drained
	return err
}

// serverFailure reports whether a call that failed with code failed by
// the server's fault: what REST answers with a 5xx.
func serverFailure(code connect.Code) bool {
	return runtime.HTTPStatusFromCode(codes.Code(code)) >= 500
}

// connectKey is the context key under which serve hands a Connect call its
// responseRecorder.
type connectKey struct{}

// refuse answers a request serve refuses before routing (a body over the
// limit or unreadable, a URL that is not UTF-8, forwarded headers too
// large) with e: as a REST error, or, on a procedure's path (h not nil),
// as the procedure's answer to the same error, in the caller's protocol,
// which a Connect or gRPC-Web client can read (REST's JSON error is
// neither). connect-go's handler writes it: it is handed the empty message
// in place of the request's (the body's, or a GET's in its URL), without
// the headers connect-go would refuse first (compression, timeouts), and
// the outcome interceptor answers with e before the call is made.
func (g *Gateway) refuse(rec *responseRecorder, r *http.Request, h http.Handler, e apiError) {
	if h == nil {
		writeError(rec, e)
		return
	}
	rec.refusal = connectErrorOf(e)
	r.Header = r.Header.Clone()
	for _, name := range []string{"Content-Encoding", "Connect-Content-Encoding", "Grpc-Encoding", "Connect-Timeout-Ms", "Grpc-Timeout"} {
		r.Header.Del(name)
	}
	r.Body, r.ContentLength = http.NoBody, 0
	if r.Method == http.MethodGet {
		// Only the parameters a Connect GET needs, the message empty.
		q := r.URL.Query()
		u := *r.URL
		v := url.Values{"encoding": {q.Get("encoding")}, "message": {""}}
		if q.Get("connect") == "v1" {
			v.Set("connect", "v1")
		}
		u.RawQuery = v.Encode()
		r.URL = &u
	} else if ct := strings.ToLower(r.Header.Get("Content-Type")); strings.HasPrefix(ct, "application/grpc") || strings.HasPrefix(ct, "application/connect+") {
		// An enveloped protocol: one envelope, uncompressed, of no bytes
		// (connect-go answers a unary call without a message itself).
		r.Body, r.ContentLength = io.NopCloser(bytes.NewReader(make([]byte, 5))), 5
	}
	h.ServeHTTP(rec, r)
}

// idempotency is the idempotency_level the contract gives the method
// named by procedure ("/pkg.Service/Method").
func idempotency(procedure string) connect.IdempotencyLevel {
	name := protoreflect.FullName(strings.ReplaceAll(strings.TrimPrefix(procedure, "/"), "/", "."))
	d, err := protoregistry.GlobalFiles.FindDescriptorByName(name)
	if err != nil {
		return connect.IdempotencyUnknown
	}
	md, ok := d.(protoreflect.MethodDescriptor)
	if !ok {
		return connect.IdempotencyUnknown
	}
	opts, _ := md.Options().(*descriptorpb.MethodOptions)
	return connect.IdempotencyLevel(opts.GetIdempotencyLevel())
}

// unary serves the unary procedure (a method's full name) by calling
// call, the gRPC client's method, with RequestTimeout.
func unary[Req, Res any, PReq interface {
	*Req
	proto.Message
}](p procedures, g *Gateway, procedure string, call func(context.Context, PReq, ...grpc.CallOption) (*Res, error)) {
	p[procedure] = connect.NewUnaryHandler(procedure, func(ctx context.Context, r *connect.Request[inbound[Req, PReq]]) (*connect.Response[Res], error) {
		if r.Msg.err != nil {
			return nil, r.Msg.err
		}
		ctx, cancel := context.WithTimeout(ctx, g.cfg.RequestTimeout)
		defer cancel()
		res, err := call(outgoing(ctx, r.Header()), r.Msg.message())
		if err != nil {
			return nil, g.connectError(ctx, procedure, err)
		}
		return connect.NewResponse(res), nil
	}, g.handlerOptions(procedure)...)
}

// watch serves the server-streaming procedure by calling call and passing
// every message on, until the backend ends the stream, the client goes,
// or Drain ends it with UNAVAILABLE (reason SHUTTING_DOWN, RetryInfo) as
// it ends a REST watch. Like a REST watch, it has no deadline: the saga
// bounds it.
func watch[Req, Res any, PReq interface {
	*Req
	proto.Message
}](p procedures, g *Gateway, procedure string, call func(context.Context, PReq, ...grpc.CallOption) (grpc.ServerStreamingClient[Res], error)) {
	handler := connect.NewServerStreamHandler(procedure, func(ctx context.Context, r *connect.Request[inbound[Req, PReq]], out *connect.ServerStream[Res]) error {
		if r.Msg.err != nil {
			return r.Msg.err
		}
		ctx, stop := g.untilDrained(ctx)
		defer stop()
		in, err := call(outgoing(ctx, r.Header()), r.Msg.message())
		for err == nil {
			var msg *Res
			if msg, err = in.Recv(); err != nil {
				break
			}
			if err := out.Send(msg); err != nil {
				// The client went, or stopped reading: nothing to
				// tell it, nor to log as the system's failure
				// (connect-go would call a write past its deadline
				// deadline_exceeded).
				return connect.NewError(connect.CodeCanceled, err)
			}
		}
		if errors.Is(err, io.EOF) {
			return nil
		}
		return g.connectError(ctx, procedure, err)
	}, g.handlerOptions(procedure)...)
	p[procedure] = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rec, ok := w.(*responseRecorder)
		if !ok {
			handler.ServeHTTP(w, r)
			return
		}
		// The server's write timeout would cut the stream off; each
		// message instead has its window to go out, as a REST watch's
		// lines have (bound).
		handler.ServeHTTP(g.watchWriter(rec), r)
	})
}

// outgoing is ctx with the metadata a call passes on to the service: the
// caller's Authorization, which the services check, and the request id.
// Its trace goes with ctx (kit/client's interceptors, or otelgrpc's).
func outgoing(ctx context.Context, h http.Header) context.Context {
	md := forwardRequestID(ctx, nil)
	if auth := h.Values("Authorization"); len(auth) > 0 {
		if md == nil {
			md = metadata.MD{}
		}
		md["authorization"] = auth
	}
	if md == nil {
		return ctx
	}
	return metadata.NewOutgoingContext(ctx, md)
}

// connectError is what a Connect client sees of err, a call's: what a
// REST client sees (toAPIError: the services' errors as they are, but
// internal ones masked, transport errors given an ErrorInfo), with the
// same details, logged the same way.
func (g *Gateway) connectError(ctx context.Context, procedure string, err error) error {
	if errors.Is(context.Cause(ctx), errDraining) {
		if rec, ok := ctx.Value(connectKey{}).(*responseRecorder); ok {
			rec.drained = true
		}
		return connectErrorOf(newAPIError(errShuttingDown(), 0))
	}
	st := status.Convert(err)
	e := toAPIError(st, 0, nil)
	if e.httpStatus >= 500 {
		g.logFailure(ctx, st, "procedure", procedure)
	}
	return connectErrorOf(e)
}

// connectErrorOf turns e into connect-go's error, with the headers a REST
// answer of it has: Retry-After from its RetryInfo, and a 401's
// WWW-Authenticate challenge (connect-go sends an error's Meta as
// headers, or in gRPC-Web as trailers).
func connectErrorOf(e apiError) *connect.Error {
	ce := connect.NewError(connect.Code(e.status.GetCode()), errors.New(e.status.GetMessage()))
	details := e.status.GetDetails()
	for _, a := range details {
		if d, err := connect.NewErrorDetail(a); err == nil {
			ce.AddDetail(d)
		}
	}
	setRetryAfter(ce.Meta(), details)
	if ce.Code() == connect.CodeUnauthenticated {
		setAuthenticate(ce.Meta(), details)
	}
	return ce
}

// recoverCall is the Connect handlers' answer to a panic: logged as
// serve's recoverPanic logs one, and answered as an internal error that
// reveals nothing, in the caller's protocol (which a REST 500's JSON is
// not).
func (g *Gateway) recoverCall(ctx context.Context, spec connect.Spec, _ http.Header, p any) error {
	g.log.ErrorContext(ctx, "gateway: panic serving request", "panic", fmt.Sprint(p), "procedure", spec.Procedure)
	return connectErrorOf(internalError())
}

// inbound is a request message as the gateway's codec decodes it: the
// message, or the error a client sees of a body that does not decode
// (INVALID_ARGUMENT with an ErrorInfo, and the field, as a REST body
// gets), which connect-go would otherwise answer with its own wording.
type inbound[M any, P interface {
	*M
	proto.Message
}] struct {
	msg M
	err error
}

func (in *inbound[M, P]) message() P { return P(&in.msg) }

// decode implements decoder.
func (in *inbound[M, P]) decode(data []byte, json bool) {
	m := in.message()
	if !json {
		if err := proto.Unmarshal(data, m); err != nil {
			in.err = connectErrorOf(newAPIError(apierr.New(codes.InvalidArgument, apierr.ReasonInvalidArgument,
				"the request body is not a binary "+string(m.ProtoReflect().Descriptor().FullName())), 0))
		}
		return
	}
	if len(data) == 0 {
		return // an empty body is the empty message
	}
	if err := protojson.Unmarshal(data, m); err != nil {
		st := status.New(codes.InvalidArgument, bodyError(err).Error())
		in.err = connectErrorOf(toAPIError(st, 0, data))
	}
}

// decoder is a request message codec decodes into.
type decoder interface {
	decode(data []byte, json bool)
}

// codec is the gateway's Connect codec, JSON or binary, under name: it
// encodes answers as connect-go's own would, and decodes requests into
// inbound messages, which keep a decoding error for the handler to answer.
type codec struct {
	name string
	json bool
}

// Name implements connect.Codec.
func (c codec) Name() string { return c.name }

// Marshal implements connect.Codec.
func (c codec) Marshal(v any) ([]byte, error) {
	m, ok := v.(proto.Message)
	if !ok {
		return nil, fmt.Errorf("gateway: cannot encode %T", v)
	}
	if c.json {
		return protojson.Marshal(m)
	}
	return proto.Marshal(m)
}

// Unmarshal implements connect.Codec.
func (c codec) Unmarshal(data []byte, v any) error {
	switch m := v.(type) {
	case decoder:
		m.decode(data, c.json)
		return nil
	case proto.Message:
		if c.json {
			return protojson.Unmarshal(data, m)
		}
		return proto.Unmarshal(data, m)
	}
	return fmt.Errorf("gateway: cannot decode into %T", v)
}
