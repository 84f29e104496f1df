package gateway

import (
	"bufio"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"google.golang.org/grpc"

	orderv1 "github.com/duetkit/duet/gen/duet/order/v1"
	paymentv1 "github.com/duetkit/duet/gen/duet/payment/v1"
	userv1 "github.com/duetkit/duet/gen/duet/user/v1"
)

// watchingOrders streams three states of an order, pausing between them
// longer than the gateway's call deadline.
type watchingOrders struct {
	orderv1.UnimplementedOrderServiceServer
	pause time.Duration
}

func (w watchingOrders) WatchOrder(req *orderv1.WatchOrderRequest, stream grpc.ServerStreamingServer[orderv1.WatchOrderResponse]) error {
	for _, st := range []orderv1.OrderStatus{orderv1.OrderStatus_ORDER_STATUS_PENDING, orderv1.OrderStatus_ORDER_STATUS_PENDING, orderv1.OrderStatus_ORDER_STATUS_CONFIRMED} {
		if err := stream.Send(&orderv1.WatchOrderResponse{Order: &orderv1.Order{Id: req.GetId(), Status: st}}); err != nil {
			return err
		}
		select {
		case <-time.After(w.pause):
		case <-stream.Context().Done():
			return stream.Context().Err()
		}
	}
	return nil
}

func TestWatchStreamsNewlineDelimitedJSONPastTheCallDeadline(t *testing.T) {
	orders := startBackend(t, orderv1.OrderService_ServiceDesc.ServiceName, func(r grpc.ServiceRegistrar) {
		orderv1.RegisterOrderServiceServer(r, watchingOrders{pause: 60 * time.Millisecond})
	})
	users := startBackend(t, userv1.UserService_ServiceDesc.ServiceName, func(r grpc.ServiceRegistrar) {
		userv1.RegisterUserServiceServer(r, userv1.UnimplementedUserServiceServer{})
	})
	payments := startBackend(t, paymentv1.PaymentService_ServiceDesc.ServiceName, func(r grpc.ServiceRegistrar) {
		paymentv1.RegisterPaymentServiceServer(r, paymentv1.UnimplementedPaymentServiceServer{})
	})
	gw, err := New(t.Context(), Config{Users: users.conn, Orders: orders.conn, Payments: payments.conn, RequestTimeout: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(gw)
	defer srv.Close()

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", srv.URL+"/v1/orders/"+knownUserID+":watch", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("status = %d", resp.StatusCode)
	}
	var statuses []string
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		var line struct {
			Result struct {
				Order struct{ Status string } `json:"order"`
			} `json:"result"`
			Error json.RawMessage `json:"error"`
		}
		if err := json.Unmarshal(sc.Bytes(), &line); err != nil {
			t.Fatalf("line %q: %v", sc.Text(), err)
		}
		if line.Error != nil {
			t.Fatalf("stream error: %s", line.Error)
		}
		statuses = append(statuses, line.Result.Order.Status)
	}
	want := []string{"ORDER_STATUS_PENDING", "ORDER_STATUS_PENDING", "ORDER_STATUS_CONFIRMED"}
	if len(statuses) != len(want) || statuses[2] != want[2] {
		t.Fatalf("statuses = %v, want %v (the stream outlived the 50ms call deadline)", statuses, want)
	}
}
