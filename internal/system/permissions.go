package system

import (
	inventoryv1 "github.com/duetkit/duet/gen/duet/inventory/v1"
	notificationv1 "github.com/duetkit/duet/gen/duet/notification/v1"
	orderv1 "github.com/duetkit/duet/gen/duet/order/v1"
	paymentv1 "github.com/duetkit/duet/gen/duet/payment/v1"
	userv1 "github.com/duetkit/duet/gen/duet/user/v1"
	"github.com/duetkit/duet/kit/authz"
)

// AdminScope is the token scope of the shop's staff: a token that grants
// it may act on any user's data and call the methods kept for the
// system's own components (adding products, refunds).
const AdminScope = "duet:admin"

// staff lets through the callers every rule trusts: the system's own
// components calling on their own behalf (the order saga, operators'
// commands: authn's TrustedPeers, so with mutual TLS) and tokens with
// AdminScope.
const staff = `caller.peer != "" || "` + AdminScope + `" in caller.scopes`

// own is a rule that staff pass, and an end user when expr holds: that
// the data is theirs. A token's subject is the user's id, as
// user.CreateUser gives it, in lower case (validation lowers the UUIDs
// of a unary request's fields with a uuid rule; the rules lower the
// others, and those of stream messages, which the rules also see when
// they fail validation).
// A caller without a subject owns nothing, not even a payment charged
// to no user.
func own(expr string) string { return staff + ` || caller.subject != "" && (` + expr + ")" }

// permissions are the rules (kit/authz) of each service's methods when
// tokens are checked (ServeConfig.Auth): whose data an end user's token
// reaches. Every method is here or in publicMethods; a test holds that.
var permissions = map[string]map[string]authz.Rule{
	User: {
		userv1.UserService_GetUser_FullMethodName: {
			Request: own(`request.id == caller.subject`),
			Why:     "a user reads their own record only",
		},
		userv1.UserService_UpdateUser_FullMethodName: {
			Request: own(`request.user.id.lowerAscii() == caller.subject`),
			Why:     "a user changes their own record only",
		},
		userv1.UserService_ListUsers_FullMethodName: {
			Request: staff,
			Why:     "listing users takes the " + AdminScope + " scope",
		},
	},
	Order: {
		orderv1.OrderService_CreateOrder_FullMethodName: {
			Request: own(`request.user_id == caller.subject`),
			Why:     "an order is placed by the user it is for",
		},
		orderv1.OrderService_GetOrder_FullMethodName: {
			Response: own(`response.order.user_id == caller.subject`),
			Why:      "an order is read by the user who placed it",
		},
		orderv1.OrderService_WatchOrder_FullMethodName: {
			Response: own(`response.order.user_id == caller.subject`),
			Why:      "an order is watched by the user who placed it",
		},
		orderv1.OrderService_ListOrders_FullMethodName: {
			Request: own(`request.user_id == caller.subject`),
			Why:     "a user lists their own orders only",
		},
	},
	Payment: {
		paymentv1.PaymentService_Charge_FullMethodName: {
			Request: staff,
			Why:     "payments are charged by the order saga",
		},
		paymentv1.PaymentService_CancelCharge_FullMethodName: {
			Request: staff,
			Why:     "charges are cancelled by the order saga",
		},
		paymentv1.PaymentService_Refund_FullMethodName: {
			Request: staff,
			Why:     "refunds take the " + AdminScope + " scope",
		},
		paymentv1.PaymentService_GetPayment_FullMethodName: {
			Response: own(`response.payment.user_id == caller.subject`),
			Why:      "a payment is read by the user it charged",
		},
	},
	Inventory: {
		inventoryv1.InventoryService_CreateProduct_FullMethodName: {
			Request: staff,
			Why:     "adding products takes the " + AdminScope + " scope",
		},
		inventoryv1.InventoryService_ImportStock_FullMethodName: {
			Request: staff,
			Why:     "importing stock takes the " + AdminScope + " scope",
		},
		inventoryv1.InventoryService_ReserveStock_FullMethodName: {
			Request: staff,
			Why:     "stock is reserved by the order saga",
		},
		inventoryv1.InventoryService_CommitStock_FullMethodName: {
			Request: staff,
			Why:     "stock is committed by the order saga",
		},
		inventoryv1.InventoryService_ReleaseStock_FullMethodName: {
			Request: staff,
			Why:     "stock is released by the order saga",
		},
		// The catalogue is public (publicMethods); a page of it by ids
		// is for anyone signed in.
		inventoryv1.InventoryService_BatchGetProducts_FullMethodName: {
			Request: "true",
		},
	},
	Notification: {
		notificationv1.NotificationService_Subscribe_FullMethodName: {
			// Acks name no user: the handler acks a notification only
			// among the subscriber's own. Response keeps another user's
			// notifications from being sent, should one ever reach the
			// stream.
			Request:  own(`!has(request.subscribe) || request.subscribe.user_id.lowerAscii() == caller.subject`),
			Response: own(`response.notification.user_id == caller.subject`),
			Why:      "a user subscribes to their own notifications only",
		},
		notificationv1.NotificationService_ListNotifications_FullMethodName: {
			Request: own(`request.user_id == caller.subject`),
			Why:     "a user lists their own notifications only",
		},
		notificationv1.NotificationService_ListAuditEvents_FullMethodName: {
			Request: staff,
			Why:     "the audit log takes the " + AdminScope + " scope",
		},
	},
}
