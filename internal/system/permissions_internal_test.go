package system

import (
	"context"
	"slices"
	"strings"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	inventoryv1 "github.com/duetkit/duet/gen/duet/inventory/v1"
	notificationv1 "github.com/duetkit/duet/gen/duet/notification/v1"
	orderv1 "github.com/duetkit/duet/gen/duet/order/v1"
	paymentv1 "github.com/duetkit/duet/gen/duet/payment/v1"
	userv1 "github.com/duetkit/duet/gen/duet/user/v1"
	"github.com/duetkit/duet/kit/apierr"
	"github.com/duetkit/duet/kit/authn"
	"github.com/duetkit/duet/kit/authz"
)

// With tokens checked, every method of every service is either public or
// has a rule, never both, and the rules compile: a method added to the
// contract without one fails here, not in production, where it would
// answer any token holder about anyone.
func TestEveryMethodIsPublicOrRuled(t *testing.T) {
	files := map[string]protoreflect.FileDescriptor{
		User:         userv1.File_duet_user_v1_user_proto,
		Order:        orderv1.File_duet_order_v1_order_proto,
		Payment:      paymentv1.File_duet_payment_v1_payment_proto,
		Inventory:    inventoryv1.File_duet_inventory_v1_inventory_proto,
		Notification: notificationv1.File_duet_notification_v1_notification_proto,
	}
	methods := map[string]string{} // full name: component
	for component, file := range files {
		services := file.Services()
		if services.Len() == 0 {
			t.Fatalf("%s: no service in %s", component, file.Path())
		}
		for i := range services.Len() {
			sd := services.Get(i)
			for j := range sd.Methods().Len() {
				full := "/" + string(sd.FullName()) + "/" + string(sd.Methods().Get(j).Name())
				methods[full] = component
				public := slices.Contains(publicMethods[component], full)
				_, ruled := permissions[component][full]
				switch {
				case public && ruled:
					t.Errorf("%s is public and has a rule", full)
				case !public && !ruled:
					t.Errorf("%s is neither public nor ruled", full)
				}
			}
		}
		if _, err := authz.New(authz.Config{Rules: permissions[component]}); err != nil {
			t.Errorf("%s's rules: %v", component, err)
		}
	}
	for component, rules := range permissions {
		for full := range rules {
			if methods[full] != component {
				t.Errorf("%s's rule for %s, a method of %q", component, full, methods[full])
			}
		}
	}
	for component, public := range publicMethods {
		for _, full := range public {
			if methods[full] != component {
				t.Errorf("%s's public method %s, a method of %q", component, full, methods[full])
			}
		}
	}
}

// TestShopPermissions: what the shop's rules let each kind of caller do,
// method by method: an end user their own data, staff (AdminScope) and
// the system's own components anyone's, nobody without a token anything.
func TestShopPermissions(t *testing.T) {
	const (
		ann = "0b0d5c4e-5d35-4c6a-9a0e-1f6f3f6b1a01"
		bob = "0b0d5c4e-5d35-4c6a-9a0e-1f6f3f6b1a02"
	)
	user := authn.Identity{Subject: ann, Scopes: []string{"profile"}}
	admin := authn.Identity{Subject: bob, Scopes: []string{AdminScope}}
	saga := authn.Identity{Peer: "order"}
	notFound := apierr.NotFound("X_NOT_FOUND", "x", "y")
	type call struct {
		name      string
		component string
		method    string
		request   proto.Message
		response  proto.Message // what the handler answers; nil: notFound
		// allowed lists who may make the call, of user, admin, saga and
		// nobody (no identity).
		allowed []string
	}
	order := func(owner string) *orderv1.GetOrderResponse {
		return &orderv1.GetOrderResponse{Order: &orderv1.Order{UserId: owner}}
	}
	subscription := func(user string) *notificationv1.SubscribeRequest {
		return &notificationv1.SubscribeRequest{Action: &notificationv1.SubscribeRequest_Subscribe{Subscribe: &notificationv1.Subscription{UserId: user}}}
	}
	everyone := []string{"user", "admin", "saga"}
	staffOnly := []string{"admin", "saga"}
	calls := []call{
		{"own record", User, userv1.UserService_GetUser_FullMethodName, &userv1.GetUserRequest{Id: ann}, &userv1.GetUserResponse{}, everyone},
		{"another's record", User, userv1.UserService_GetUser_FullMethodName, &userv1.GetUserRequest{Id: bob}, &userv1.GetUserResponse{}, staffOnly},
		{"own update, upper case", User, userv1.UserService_UpdateUser_FullMethodName, &userv1.UpdateUserRequest{User: &userv1.User{Id: strings.ToUpper(ann)}}, &userv1.UpdateUserResponse{}, everyone},
		{"another's update", User, userv1.UserService_UpdateUser_FullMethodName, &userv1.UpdateUserRequest{User: &userv1.User{Id: bob}}, &userv1.UpdateUserResponse{}, staffOnly},
		{"all users", User, userv1.UserService_ListUsers_FullMethodName, &userv1.ListUsersRequest{}, &userv1.ListUsersResponse{}, staffOnly},
		{"own order placed", Order, orderv1.OrderService_CreateOrder_FullMethodName, &orderv1.CreateOrderRequest{UserId: ann}, &orderv1.CreateOrderResponse{}, everyone},
		{"another's order placed", Order, orderv1.OrderService_CreateOrder_FullMethodName, &orderv1.CreateOrderRequest{UserId: bob}, &orderv1.CreateOrderResponse{}, staffOnly},
		{"own order read", Order, orderv1.OrderService_GetOrder_FullMethodName, &orderv1.GetOrderRequest{}, order(ann), everyone},
		{"another's order read", Order, orderv1.OrderService_GetOrder_FullMethodName, &orderv1.GetOrderRequest{}, order(bob), staffOnly},
		{"a missing order read", Order, orderv1.OrderService_GetOrder_FullMethodName, &orderv1.GetOrderRequest{}, nil, staffOnly},
		{"own orders", Order, orderv1.OrderService_ListOrders_FullMethodName, &orderv1.ListOrdersRequest{UserId: ann}, &orderv1.ListOrdersResponse{}, everyone},
		{"another's orders", Order, orderv1.OrderService_ListOrders_FullMethodName, &orderv1.ListOrdersRequest{UserId: bob}, &orderv1.ListOrdersResponse{}, staffOnly},
		{"a charge", Payment, paymentv1.PaymentService_Charge_FullMethodName, &paymentv1.ChargeRequest{UserId: ann}, &paymentv1.ChargeResponse{}, staffOnly},
		{"a cancelled charge", Payment, paymentv1.PaymentService_CancelCharge_FullMethodName, &paymentv1.CancelChargeRequest{}, &paymentv1.CancelChargeResponse{}, staffOnly},
		{"a refund", Payment, paymentv1.PaymentService_Refund_FullMethodName, &paymentv1.RefundRequest{}, &paymentv1.RefundResponse{}, staffOnly},
		{"own payment", Payment, paymentv1.PaymentService_GetPayment_FullMethodName, &paymentv1.GetPaymentRequest{}, &paymentv1.GetPaymentResponse{Payment: &paymentv1.Payment{UserId: ann}}, everyone},
		{"another's payment", Payment, paymentv1.PaymentService_GetPayment_FullMethodName, &paymentv1.GetPaymentRequest{}, &paymentv1.GetPaymentResponse{Payment: &paymentv1.Payment{UserId: bob}}, staffOnly},
		{"a payment of no user", Payment, paymentv1.PaymentService_GetPayment_FullMethodName, &paymentv1.GetPaymentRequest{}, &paymentv1.GetPaymentResponse{Payment: &paymentv1.Payment{}}, staffOnly},
		{"a product added", Inventory, inventoryv1.InventoryService_CreateProduct_FullMethodName, &inventoryv1.CreateProductRequest{}, &inventoryv1.CreateProductResponse{}, staffOnly},
		{"stock reserved", Inventory, inventoryv1.InventoryService_ReserveStock_FullMethodName, &inventoryv1.ReserveStockRequest{}, &inventoryv1.ReserveStockResponse{}, staffOnly},
		{"stock committed", Inventory, inventoryv1.InventoryService_CommitStock_FullMethodName, &inventoryv1.CommitStockRequest{}, &inventoryv1.CommitStockResponse{}, staffOnly},
		{"stock released", Inventory, inventoryv1.InventoryService_ReleaseStock_FullMethodName, &inventoryv1.ReleaseStockRequest{}, &inventoryv1.ReleaseStockResponse{}, staffOnly},
		{"products by sku", Inventory, inventoryv1.InventoryService_BatchGetProducts_FullMethodName, &inventoryv1.BatchGetProductsRequest{}, &inventoryv1.BatchGetProductsResponse{}, append([]string{"nobody"}, everyone...)},
		{"own notifications", Notification, notificationv1.NotificationService_ListNotifications_FullMethodName, &notificationv1.ListNotificationsRequest{UserId: ann}, &notificationv1.ListNotificationsResponse{}, everyone},
		{"another's notifications", Notification, notificationv1.NotificationService_ListNotifications_FullMethodName, &notificationv1.ListNotificationsRequest{UserId: bob}, &notificationv1.ListNotificationsResponse{}, staffOnly},
		// A stream's messages, checked as a unary request would be: one
		// that fails validation reaches the rule with its id as sent.
		{"own subscription, upper case", Notification, notificationv1.NotificationService_Subscribe_FullMethodName,
			subscription(strings.ToUpper(ann)), &notificationv1.SubscribeResponse{Notification: &notificationv1.Notification{UserId: ann}}, everyone},
		{"another's subscription", Notification, notificationv1.NotificationService_Subscribe_FullMethodName,
			subscription(bob), &notificationv1.SubscribeResponse{Notification: &notificationv1.Notification{UserId: ann}}, staffOnly},
		{"another's notification sent", Notification, notificationv1.NotificationService_Subscribe_FullMethodName,
			subscription(ann), &notificationv1.SubscribeResponse{Notification: &notificationv1.Notification{UserId: bob}}, staffOnly},
		{"the audit log", Notification, notificationv1.NotificationService_ListAuditEvents_FullMethodName, &notificationv1.ListAuditEventsRequest{}, &notificationv1.ListAuditEventsResponse{}, staffOnly},
	}
	perms := map[string]*authz.Permissions{}
	for component, rules := range permissions {
		p, err := authz.New(authz.Config{Rules: rules})
		if err != nil {
			t.Fatal(err)
		}
		perms[component] = p
	}
	callers := map[string]context.Context{
		"user":   authn.NewContext(t.Context(), user),
		"admin":  authn.NewContext(t.Context(), admin),
		"saga":   authn.NewContext(t.Context(), saga),
		"nobody": t.Context(),
	}
	for _, c := range calls {
		for who, ctx := range callers {
			t.Run(c.name+"/"+who, func(t *testing.T) {
				handler := func(context.Context, any) (any, error) {
					if c.response == nil {
						return nil, notFound
					}
					return c.response, nil
				}
				_, err := perms[c.component].UnaryInterceptor()(ctx, c.request, &grpc.UnaryServerInfo{FullMethod: c.method}, handler)
				refused := apierr.Reason(err) == authz.ReasonNotPermitted
				if want := !slices.Contains(c.allowed, who); refused != want {
					t.Errorf("%s by %s: %v, want refused %v", c.method, who, err, want)
				}
			})
		}
	}
}
