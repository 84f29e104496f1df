package authz_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/types/known/fieldmaskpb"

	inventoryv1 "github.com/duetkit/duet/gen/duet/inventory/v1"
	notificationv1 "github.com/duetkit/duet/gen/duet/notification/v1"
	orderv1 "github.com/duetkit/duet/gen/duet/order/v1"
	userv1 "github.com/duetkit/duet/gen/duet/user/v1"
	"github.com/duetkit/duet/internal/logbuffer"
	"github.com/duetkit/duet/kit/apierr"
	"github.com/duetkit/duet/kit/authn"
	"github.com/duetkit/duet/kit/authn/devissuer"
	"github.com/duetkit/duet/kit/authz"
	"github.com/duetkit/duet/kit/server"
	"github.com/duetkit/duet/kit/server/servertest"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

const (
	alice = "0b0d5c4e-5d35-4c6a-9a0e-1f6f3f6b1a01"
	bob   = "0b0d5c4e-5d35-4c6a-9a0e-1f6f3f6b1a02"
	// aliceOrder and bobOrder are orders of theirs; missingOrder none.
	aliceOrder   = "7c1e2a3b-1111-4c6a-9a0e-1f6f3f6b1a01"
	bobOrder     = "7c1e2a3b-2222-4c6a-9a0e-1f6f3f6b1a02"
	missingOrder = "7c1e2a3b-3333-4c6a-9a0e-1f6f3f6b1a03"
	// vanishingOrder is alice's until WatchOrder has sent it once.
	vanishingOrder = "7c1e2a3b-4444-4c6a-9a0e-1f6f3f6b1a04"
)

// rules are the test server's: its own records for a user, all of them
// for the "admin" scope.
var rules = map[string]authz.Rule{
	userv1.UserService_GetUser_FullMethodName: {
		Request: `request.id == caller.subject || "admin" in caller.scopes`,
		Why:     "a user reads their own record only",
	},
	userv1.UserService_UpdateUser_FullMethodName: {
		Request: `request.user.id == caller.subject`,
	},
	userv1.UserService_ListUsers_FullMethodName: {
		Request: `"admin" in caller.scopes`,
	},
	orderv1.OrderService_GetOrder_FullMethodName: {
		Response: `response.order.user_id == caller.subject || "admin" in caller.scopes`,
		Why:      "an order is read by the user who placed it",
	},
	orderv1.OrderService_WatchOrder_FullMethodName: {
		Response: `response.order.user_id == caller.subject`,
		Why:      "an order is watched by the user who placed it",
	},
	notificationv1.NotificationService_Subscribe_FullMethodName: {
		Request: `!has(request.subscribe) || request.subscribe.user_id == caller.subject`,
	},
	inventoryv1.InventoryService_ImportStock_FullMethodName: {
		Request: `"admin" in caller.scopes`,
		Why:     "importing stock takes the admin scope",
	},
}

// shop is the test server's handlers; ran counts the calls that reached
// them.
type shop struct {
	userv1.UnimplementedUserServiceServer
	orderv1.UnimplementedOrderServiceServer
	notificationv1.UnimplementedNotificationServiceServer
	inventoryv1.UnimplementedInventoryServiceServer
	ran atomic.Int32
}

func (s *shop) GetUser(_ context.Context, req *userv1.GetUserRequest) (*userv1.GetUserResponse, error) {
	s.ran.Add(1)
	return &userv1.GetUserResponse{User: &userv1.User{Id: req.GetId()}}, nil
}

func (s *shop) UpdateUser(_ context.Context, req *userv1.UpdateUserRequest) (*userv1.UpdateUserResponse, error) {
	s.ran.Add(1)
	return &userv1.UpdateUserResponse{User: req.GetUser()}, nil
}

func (s *shop) ListUsers(context.Context, *userv1.ListUsersRequest) (*userv1.ListUsersResponse, error) {
	s.ran.Add(1)
	return &userv1.ListUsersResponse{}, nil
}

// owners of the orders WatchOrder sends.
var owners = map[string]string{aliceOrder: alice, bobOrder: bob, vanishingOrder: alice}

func (s *shop) GetOrder(_ context.Context, req *orderv1.GetOrderRequest) (*orderv1.GetOrderResponse, error) {
	s.ran.Add(1)
	if owners[req.GetId()] == "" {
		return nil, apierr.NotFound("ORDER_NOT_FOUND", "order", req.GetId())
	}
	return &orderv1.GetOrderResponse{Order: &orderv1.Order{Id: req.GetId(), UserId: owners[req.GetId()]}}, nil
}

// WatchOrder ignores its sends' errors, as a handler may: the refusal
// must still end the call.
func (s *shop) WatchOrder(req *orderv1.WatchOrderRequest, stream grpc.ServerStreamingServer[orderv1.WatchOrderResponse]) error {
	s.ran.Add(1)
	if owners[req.GetId()] == "" {
		return apierr.NotFound("ORDER_NOT_FOUND", "order", req.GetId())
	}
	for range 2 {
		_ = stream.Send(&orderv1.WatchOrderResponse{Order: &orderv1.Order{Id: req.GetId(), UserId: owners[req.GetId()]}})
		if req.GetId() == vanishingOrder {
			return apierr.NotFound("ORDER_NOT_FOUND", "order", req.GetId())
		}
	}
	return nil
}

// Subscribe skips the messages that fail validation, as a handler may (an
// import rejecting one record): the rule must still see them.
func (s *shop) Subscribe(stream grpc.BidiStreamingServer[notificationv1.SubscribeRequest, notificationv1.SubscribeResponse]) error {
	s.ran.Add(1)
	for {
		req, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if apierr.Code(err) == codes.InvalidArgument {
			continue
		}
		if err != nil {
			return err
		}
		if sub := req.GetSubscribe(); sub != nil {
			if err := stream.Send(&notificationv1.SubscribeResponse{Notification: &notificationv1.Notification{UserId: sub.GetUserId()}}); err != nil {
				return err
			}
		}
	}
}

func (s *shop) ImportStock(stream grpc.ClientStreamingServer[inventoryv1.ImportStockRequest, inventoryv1.ImportStockResponse]) error {
	s.ran.Add(1)
	var received int64
	for {
		_, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return stream.SendAndClose(&inventoryv1.ImportStockResponse{Received: received})
		}
		if err != nil {
			return err
		}
		received++
	}
}

// fixture is a server checking tokens and rules, and a client of it.
type fixture struct {
	conn   *grpc.ClientConn
	issuer *devissuer.Issuer
	shop   *shop
	logs   *logbuffer.Buffer
}

func start(t *testing.T, rules map[string]authz.Rule) *fixture {
	t.Helper()
	shop := &shop{}
	f := startWith(t, rules, func(r grpc.ServiceRegistrar) {
		userv1.RegisterUserServiceServer(r, shop)
		orderv1.RegisterOrderServiceServer(r, shop)
		notificationv1.RegisterNotificationServiceServer(r, shop)
		inventoryv1.RegisterInventoryServiceServer(r, shop)
	})
	f.shop = shop
	return f
}

// startWith starts a server checking tokens and rules with the services
// register registers and grpc-go's options opts.
func startWith(t *testing.T, rules map[string]authz.Rule, register func(grpc.ServiceRegistrar), opts ...grpc.ServerOption) *fixture {
	t.Helper()
	ctx := t.Context()
	f := &fixture{logs: &logbuffer.Buffer{}}
	var err error
	if f.issuer, err = devissuer.New("https://id.test", "k1"); err != nil {
		t.Fatal(err)
	}
	keysFile := filepath.Join(t.TempDir(), "keys.json")
	if err := f.issuer.WriteKeySet(keysFile); err != nil {
		t.Fatal(err)
	}
	verifier, err := authn.Load(ctx, authn.Config{KeysFile: keysFile, Issuer: "https://id.test", Audience: "shop"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(verifier.Close)
	perms, err := authz.New(authz.Config{Rules: rules, Logger: slog.New(slog.NewJSONHandler(f.logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	f.conn = servertest.Start(t, server.Config{Name: "test", Authenticator: verifier, Permissions: perms, DisableAccessLog: true,
		Options: opts}, register)
	return f
}

// as is ctx carrying a token for subject with scopes.
func (f *fixture) as(t *testing.T, subject string, scopes ...string) context.Context {
	t.Helper()
	token, err := f.issuer.Sign(devissuer.Claims{Subject: subject, Audience: []string{"shop"}, Scopes: scopes})
	if err != nil {
		t.Fatal(err)
	}
	return metadata.AppendToOutgoingContext(t.Context(), "authorization", "Bearer "+token)
}

// wantRefused checks err is a rule's refusal saying why.
func wantRefused(t *testing.T, err error, why string) {
	t.Helper()
	if apierr.Code(err) != codes.PermissionDenied || apierr.Reason(err) != authz.ReasonNotPermitted {
		t.Fatalf("got %v, want PERMISSION_DENIED %s", err, authz.ReasonNotPermitted)
	}
	if !strings.Contains(err.Error(), why) {
		t.Errorf("the refusal %q does not say %q", err, why)
	}
}

func TestUnaryRules(t *testing.T) {
	f := start(t, rules)
	users := userv1.NewUserServiceClient(f.conn)
	update := func(ctx context.Context, id string) error {
		_, err := users.UpdateUser(ctx, &userv1.UpdateUserRequest{
			User:       &userv1.User{Id: id, Name: "Ann"},
			UpdateMask: &fieldmaskpb.FieldMask{Paths: []string{"name"}},
		})
		return err
	}
	get := func(ctx context.Context, id string) error {
		_, err := users.GetUser(ctx, &userv1.GetUserRequest{Id: id})
		return err
	}
	list := func(ctx context.Context, _ string) error {
		_, err := users.ListUsers(ctx, &userv1.ListUsersRequest{})
		return err
	}
	getOrder := func(ctx context.Context, id string) error {
		resp, err := orderv1.NewOrderServiceClient(f.conn).GetOrder(ctx, &orderv1.GetOrderRequest{Id: id})
		if err == nil && resp.GetOrder().GetId() != id {
			t.Errorf("GetOrder answered %v", resp)
		}
		return err
	}
	for _, tc := range []struct {
		name    string
		subject string
		scopes  []string
		call    func(context.Context, string) error
		id      string
		allowed bool
		why     string
		// ran is whether the handler runs when the call is refused: a
		// Response rule lets it.
		ran bool
	}{
		{name: "own record", subject: alice, call: get, id: alice, allowed: true},
		{name: "another's record", subject: alice, call: get, id: bob, why: "a user reads their own record only"},
		{name: "another's record with the admin scope", subject: alice, scopes: []string{"read", "admin"}, call: get, id: bob, allowed: true},
		{name: "own update", subject: alice, call: update, id: alice, allowed: true},
		{name: "another's update, no Why", subject: alice, call: update, id: bob, why: "the caller may not make this call"},
		{name: "list without the scope", subject: alice, scopes: []string{"adm"}, call: list},
		{name: "list with the scope", subject: alice, scopes: []string{"admin"}, call: list, allowed: true},
		{name: "own order", subject: alice, call: getOrder, id: aliceOrder, allowed: true},
		{name: "another's order", subject: alice, call: getOrder, id: bobOrder, why: "an order is read by the user who placed it", ran: true},
		// A missing id is refused as another's would be (AIP-211).
		{name: "a missing order", subject: alice, call: getOrder, id: missingOrder, why: "an order is read by the user who placed it", ran: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := f.shop.ran.Load()
			err := tc.call(f.as(t, tc.subject, tc.scopes...), tc.id)
			ran := f.shop.ran.Load() - before
			if tc.allowed {
				if err != nil || ran != 1 {
					t.Fatalf("got %v with the handler run %d times, want it allowed", err, ran)
				}
				return
			}
			wantRefused(t, err, tc.why)
			if want := map[bool]int32{false: 0, true: 1}[tc.ran]; ran != want {
				t.Errorf("the handler ran %d times for a refused call, want %d", ran, want)
			}
		})
	}
}

// A rule reads a request after validation: a malformed one is refused by
// its own rules, naming the field, not by the rule.
func TestValidationFirst(t *testing.T) {
	f := start(t, rules)
	_, err := userv1.NewUserServiceClient(f.conn).GetUser(f.as(t, alice), &userv1.GetUserRequest{Id: "not-a-uuid"})
	if apierr.Code(err) != codes.InvalidArgument {
		t.Fatalf("got %v, want INVALID_ARGUMENT", err)
	}
}

// A caller the Response expression lets through whatever the response
// learns that an id is missing.
func TestMissingForTheAllowed(t *testing.T) {
	f := start(t, rules)
	_, err := orderv1.NewOrderServiceClient(f.conn).GetOrder(f.as(t, alice, "admin"), &orderv1.GetOrderRequest{Id: missingOrder})
	if apierr.Code(err) != codes.NotFound {
		t.Fatalf("got %v, want NOT_FOUND", err)
	}
}

func TestResponseRuleOnAStream(t *testing.T) {
	f := start(t, rules)
	orders := orderv1.NewOrderServiceClient(f.conn)
	for _, tc := range []struct {
		name  string
		order string
		want  int // messages received; -1: refused before any
		end   codes.Code
	}{
		{name: "own order", order: aliceOrder, want: 2},
		{name: "another's order", order: bobOrder, want: -1},
		{name: "a missing order", order: missingOrder, want: -1},
		// NOT_FOUND after a message the caller was sent is theirs to see.
		{name: "own order, then gone", order: vanishingOrder, want: 1, end: codes.NotFound},
	} {
		t.Run(tc.name, func(t *testing.T) {
			stream, err := orders.WatchOrder(f.as(t, alice), &orderv1.WatchOrderRequest{Id: tc.order})
			if err != nil {
				t.Fatal(err)
			}
			got := 0
			for {
				resp, err := stream.Recv()
				if errors.Is(err, io.EOF) {
					break
				}
				if err != nil && tc.end != codes.OK && got == tc.want {
					if apierr.Code(err) != tc.end {
						t.Fatalf("after %d messages: %v, want %v", got, err, tc.end)
					}
					return
				}
				if err != nil {
					if tc.want >= 0 {
						t.Fatalf("after %d messages: %v", got, err)
					}
					if got != 0 {
						t.Fatalf("%d messages before the refusal", got)
					}
					wantRefused(t, err, "an order is watched by the user who placed it")
					return
				}
				if resp.GetOrder().GetUserId() != alice {
					t.Fatalf("got another user's order: %v", resp)
				}
				got++
			}
			if got != tc.want || tc.end != codes.OK {
				t.Fatalf("got %d messages and the end, want %d and %v", got, tc.want, tc.end)
			}
		})
	}
}

func TestRequestRuleOnEachStreamMessage(t *testing.T) {
	f := start(t, rules)
	notifications := notificationv1.NewNotificationServiceClient(f.conn)
	subscribe := func(user string) *notificationv1.SubscribeRequest {
		return &notificationv1.SubscribeRequest{Action: &notificationv1.SubscribeRequest_Subscribe{Subscribe: &notificationv1.Subscription{UserId: user}}}
	}
	ack := &notificationv1.SubscribeRequest{Action: &notificationv1.SubscribeRequest_Ack{Ack: &notificationv1.Ack{NotificationId: aliceOrder}}}
	invalid := func(user string) *notificationv1.SubscribeRequest {
		m := subscribe(user)
		m.GetSubscribe().MaxInFlight = 1000 // over its bound of 100
		return m
	}
	for _, tc := range []struct {
		name    string
		send    []*notificationv1.SubscribeRequest
		refused bool
	}{
		{name: "own, then an ack", send: []*notificationv1.SubscribeRequest{subscribe(alice), ack}},
		{name: "another's first", send: []*notificationv1.SubscribeRequest{subscribe(bob)}, refused: true},
		{name: "an ack, then another's", send: []*notificationv1.SubscribeRequest{ack, subscribe(bob)}, refused: true},
		// The handler skips a message that fails validation; the rule
		// refuses it first.
		{name: "another's, invalid, then own", send: []*notificationv1.SubscribeRequest{invalid(bob), subscribe(alice)}, refused: true},
		{name: "own, invalid, then own", send: []*notificationv1.SubscribeRequest{invalid(alice), subscribe(alice)}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			stream, err := notifications.Subscribe(f.as(t, alice))
			if err != nil {
				t.Fatal(err)
			}
			for _, m := range tc.send {
				if err := stream.Send(m); err != nil && !errors.Is(err, io.EOF) {
					t.Fatal(err)
				}
			}
			if err := stream.CloseSend(); err != nil {
				t.Fatal(err)
			}
			var got []*notificationv1.SubscribeResponse
			for {
				resp, err := stream.Recv()
				if errors.Is(err, io.EOF) {
					break
				}
				if err != nil {
					if !tc.refused {
						t.Fatal(err)
					}
					wantRefused(t, err, "the caller may not make this call")
					for _, r := range got {
						if r.GetNotification().GetUserId() != alice {
							t.Fatalf("sent another user's notification before the refusal: %v", r)
						}
					}
					return
				}
				got = append(got, resp)
			}
			if tc.refused {
				t.Fatal("the stream ended without the refusal")
			}
			if len(got) != 1 || got[0].GetNotification().GetUserId() != alice {
				t.Fatalf("got %v, want alice's one notification", got)
			}
		})
	}
}

// A refusal on a stream's send side ends a receive that was already
// waiting on the other: the message it then gets is not handed to the
// handler, though the request rule would pass it.
func TestRefusalEndsAWaitingReceive(t *testing.T) {
	rules := map[string]authz.Rule{
		notificationv1.NotificationService_Subscribe_FullMethodName: {
			Request:  `!has(request.subscribe) || request.subscribe.user_id == caller.subject`,
			Response: `response.notification.user_id == caller.subject`,
			Why:      "notifications go to their user only",
		},
	}
	waiting := make(chan struct{}, 1) // the handler's receive is past the rules' first look
	refused := make(chan struct{})    // the handler's send was refused
	received := make(chan error, 1)   // what the handler's receive returned
	// Outermost (grpc.StreamInterceptor), so that the stream it wraps is
	// the one the rules' stream receives from.
	signal := grpc.StreamInterceptor(func(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		return handler(srv, &signalStream{ServerStream: ss, waiting: waiting})
	})
	subscriber := &refusingSubscriber{refused: refused, received: received, waiting: waiting}
	f := startWith(t, rules, func(r grpc.ServiceRegistrar) { notificationv1.RegisterNotificationServiceServer(r, subscriber) }, signal)

	stream, err := notificationv1.NewNotificationServiceClient(f.conn).Subscribe(f.as(t, alice))
	if err != nil {
		t.Fatal(err)
	}
	select {
	case <-refused:
	case <-time.After(10 * time.Second):
		t.Fatal("the handler's send was not refused")
	}
	// Sent after the refusal, to the receive that waited through it.
	_ = stream.Send(&notificationv1.SubscribeRequest{Action: &notificationv1.SubscribeRequest_Subscribe{Subscribe: &notificationv1.Subscription{UserId: alice}}})
	select {
	case err := <-received:
		wantRefused(t, err, "notifications go to their user only")
	case <-time.After(10 * time.Second):
		t.Fatal("the waiting receive did not return")
	}
	_, err = stream.Recv()
	wantRefused(t, err, "notifications go to their user only")
}

// refusingSubscriber receives on one goroutine and, once that receive
// waits, sends another user's notification on its own; it returns once
// the receive did, which it reports on received.
type refusingSubscriber struct {
	notificationv1.UnimplementedNotificationServiceServer
	waiting  chan struct{}
	refused  chan struct{}
	received chan error
}

func (s *refusingSubscriber) Subscribe(stream grpc.BidiStreamingServer[notificationv1.SubscribeRequest, notificationv1.SubscribeResponse]) error {
	done := make(chan struct{})
	go func() {
		defer close(done)
		_, err := stream.Recv()
		s.received <- err
	}()
	<-s.waiting
	err := stream.Send(&notificationv1.SubscribeResponse{Notification: &notificationv1.Notification{UserId: bob}})
	if apierr.Code(err) != codes.PermissionDenied {
		return apierr.Internal() // the test sees no refusal
	}
	close(s.refused)
	<-done
	return nil
}

// signalStream says, as each receive starts to wait, that it does.
type signalStream struct {
	grpc.ServerStream
	waiting chan struct{}
}

func (s *signalStream) RecvMsg(m any) error {
	select {
	case s.waiting <- struct{}{}:
	default:
	}
	return s.ServerStream.RecvMsg(m)
}

// An expression that reads only the caller is checked before a client
// stream's handler starts: a stream that sends nothing is refused too.
func TestCallerOnlyRuleBeforeTheStream(t *testing.T) {
	f := start(t, rules)
	inventory := inventoryv1.NewInventoryServiceClient(f.conn)
	for _, tc := range []struct {
		name    string
		scopes  []string
		records int
		allowed bool
	}{
		{name: "no records, no scope", records: 0},
		{name: "records, no scope", records: 2},
		{name: "records, the scope", scopes: []string{"admin"}, records: 2, allowed: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := f.shop.ran.Load()
			stream, err := inventory.ImportStock(f.as(t, alice, tc.scopes...))
			if err != nil {
				t.Fatal(err)
			}
			for range tc.records {
				if err := stream.Send(&inventoryv1.ImportStockRequest{Sku: "A", StockDelta: 1}); err != nil && !errors.Is(err, io.EOF) {
					t.Fatal(err)
				}
			}
			resp, err := stream.CloseAndRecv()
			ran := f.shop.ran.Load() - before
			if tc.allowed {
				if err != nil || resp.GetReceived() != int64(tc.records) || ran != 1 {
					t.Fatalf("got %v, %v with the handler run %d times", resp, err, ran)
				}
				return
			}
			wantRefused(t, err, "importing stock takes the admin scope")
			if ran != 0 {
				t.Errorf("the handler ran %d times for a refused caller", ran)
			}
		})
	}
}

// The interceptors read the caller kit/authn put in the context: a
// trusted component's name, or nobody's on a public method.
func TestCallers(t *testing.T) {
	perms, err := authz.New(authz.Config{Rules: map[string]authz.Rule{
		userv1.UserService_GetUser_FullMethodName: {Request: `caller.peer == "order" || caller.subject == "" && size(caller.scopes) == 0 && request.id == "anyone"`},
	}})
	if err != nil {
		t.Fatal(err)
	}
	intercept := perms.UnaryInterceptor()
	info := &grpc.UnaryServerInfo{FullMethod: userv1.UserService_GetUser_FullMethodName}
	handler := func(context.Context, any) (any, error) { return &userv1.GetUserResponse{}, nil }
	for _, tc := range []struct {
		name    string
		ctx     context.Context
		id      string
		allowed bool
	}{
		{name: "trusted peer", ctx: authn.NewContext(t.Context(), authn.Identity{Peer: "order"}), id: alice, allowed: true},
		{name: "another peer", ctx: authn.NewContext(t.Context(), authn.Identity{Peer: "gateway"}), id: alice},
		{name: "nobody", ctx: t.Context(), id: "anyone", allowed: true},
		{name: "nobody, another id", ctx: t.Context(), id: alice},
		{name: "a user", ctx: authn.NewContext(t.Context(), authn.Identity{Subject: alice}), id: "anyone"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := intercept(tc.ctx, &userv1.GetUserRequest{Id: tc.id}, info, handler)
			if tc.allowed != (err == nil) {
				t.Fatalf("got %v, want allowed %v", err, tc.allowed)
			}
			if err != nil {
				wantRefused(t, err, "")
			}
		})
	}
	// A method without a rule is not checked.
	if _, err := intercept(t.Context(), &userv1.ListUsersRequest{}, &grpc.UnaryServerInfo{FullMethod: userv1.UserService_ListUsers_FullMethodName}, handler); err != nil {
		t.Fatalf("a method without a rule: %v", err)
	}
}

// An expression that fails at a call refuses it and says so in the log.
func TestEvaluationFailureRefuses(t *testing.T) {
	f := start(t, map[string]authz.Rule{
		userv1.UserService_GetUser_FullMethodName: {Request: `caller.scopes[0] == "admin"`},
	})
	users := userv1.NewUserServiceClient(f.conn)
	if _, err := users.GetUser(f.as(t, alice, "admin"), &userv1.GetUserRequest{Id: bob}); err != nil {
		t.Fatalf("with the scope: %v", err)
	}
	for range 3 {
		_, err := users.GetUser(f.as(t, alice), &userv1.GetUserRequest{Id: bob})
		wantRefused(t, err, "")
	}
	lines := f.logs.Lines(t) // the first failure's line, not one a call
	if len(lines) != 1 || lines[0]["method"] != userv1.UserService_GetUser_FullMethodName || lines[0]["error"] == nil {
		t.Fatalf("logged %v, want one line naming the method and the error", lines)
	}
}

func TestNewRefuses(t *testing.T) {
	for _, tc := range []struct {
		name   string
		method string
		rule   authz.Rule
		want   string
	}{
		{name: "no expression", method: userv1.UserService_GetUser_FullMethodName, want: "neither"},
		{name: "not a full name", method: "duet.user.v1.UserService/GetUser", rule: authz.Rule{Request: "true"}, want: "full method name"},
		{name: "extra part", method: "/duet.user.v1.UserService/GetUser/x", rule: authz.Rule{Request: "true"}, want: "full method name"},
		{name: "unknown service", method: "/duet.user.v1.NoService/GetUser", rule: authz.Rule{Request: "true"}, want: "no service"},
		{name: "a message, not a service", method: "/duet.user.v1.User/GetUser", rule: authz.Rule{Request: "true"}, want: "not a service"},
		{name: "unknown method", method: "/duet.user.v1.UserService/GetUsers", rule: authz.Rule{Request: "true"}, want: "no method"},
		{name: "misspelt field", method: userv1.UserService_GetUser_FullMethodName, rule: authz.Rule{Request: "request.idd == caller.subject"}, want: "undefined field 'idd'"},
		{name: "misspelt caller field", method: userv1.UserService_GetUser_FullMethodName, rule: authz.Rule{Request: "request.id == caller.sub"}, want: "undefined field 'sub'"},
		{name: "response in a request rule", method: userv1.UserService_GetUser_FullMethodName, rule: authz.Rule{Request: "response.user.id == caller.subject"}, want: "undeclared reference to 'response'"},
		{name: "request in a response rule", method: userv1.UserService_GetUser_FullMethodName, rule: authz.Rule{Response: "request.id == caller.subject"}, want: "undeclared reference to 'request'"},
		{name: "not a bool", method: userv1.UserService_GetUser_FullMethodName, rule: authz.Rule{Response: "response.user.id"}, want: "not a bool"},
		{name: "does not parse", method: userv1.UserService_GetUser_FullMethodName, rule: authz.Rule{Request: "request.id =="}, want: "the Request expression"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := authz.New(authz.Config{Rules: map[string]authz.Rule{tc.method: tc.rule}})
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want an error saying %q", err, tc.want)
			}
		})
	}
}
