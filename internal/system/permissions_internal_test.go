package system

import (
	"slices"
	"testing"

	"google.golang.org/protobuf/reflect/protoreflect"

	inventoryv1 "github.com/duetkit/duet/gen/duet/inventory/v1"
	notificationv1 "github.com/duetkit/duet/gen/duet/notification/v1"
	orderv1 "github.com/duetkit/duet/gen/duet/order/v1"
	paymentv1 "github.com/duetkit/duet/gen/duet/payment/v1"
	userv1 "github.com/duetkit/duet/gen/duet/user/v1"
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
