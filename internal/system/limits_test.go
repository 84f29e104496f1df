package system_test

import (
	"net/http"
	"strings"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	orderv1 "github.com/duetkit/duet/gen/duet/order/v1"
	"github.com/duetkit/duet/internal/system"
)

// TestRequestSizeBound: a service takes messages up to
// system.MaxRequestSize. Larger ones are refused before they are decoded
// (with grpc-go's 4 MiB, 4 MiB of empty line items decoded into some
// 200 MB); what the gateway's bounded bodies become still reaches the
// service's rules.
func TestRequestSizeBound(t *testing.T) {
	sys := start(t, system.Config{})
	conn, err := grpc.NewClient(sys.OrderAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	orders := orderv1.NewOrderServiceClient(conn)
	const userID = "00000000-0000-4000-8000-000000000000"
	tests := []struct {
		name  string
		items int // empty line items: two bytes each on the wire
		want  codes.Code
	}{
		{"just under the bound", system.MaxRequestSize/2 - 100, codes.InvalidArgument},
		{"over the bound", system.MaxRequestSize/2 + 100, codes.ResourceExhausted},
		{"4 MiB", 2 << 20, codes.ResourceExhausted},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req := &orderv1.CreateOrderRequest{UserId: userID, PaymentToken: "tok_visa", IdempotencyKey: "k"}
			for range tt.items {
				req.Items = append(req.Items, &orderv1.LineItem{})
			}
			_, err := orders.CreateOrder(t.Context(), req)
			if status.Code(err) != tt.want {
				t.Fatalf("CreateOrder with %d empty items: %v, want %v", tt.items, err, tt.want)
			}
		})
	}

	// The largest body the gateway takes, a 120,000-character payment
	// token, is answered by the order service's rule on that field.
	body := `{"userId":"` + userID + `","items":[{"sku":"a","quantity":1}],"idempotencyKey":"k","paymentToken":"` +
		strings.Repeat("t", 120_000) + `"}`
	r := do(t, "POST", "http://"+sys.HTTPAddr+"/v1/orders", body)
	if _, field := reason(r.body); r.status != http.StatusBadRequest || field != "paymentToken" {
		t.Errorf("POST /v1/orders with a 120 KB token: HTTP %d, field %q, want 400 on paymentToken: %.300s", r.status, field, r.raw)
	}
}
