package gateway_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log"
	"log/slog"
	"net/http"
	"os"

	"google.golang.org/grpc"

	"github.com/duetkit/duet/gateway"
	"github.com/duetkit/duet/kit/client"
	"github.com/duetkit/duet/kit/logger"
)

// ExampleNew puts the gateway in front of services listening on loopback
// ports. The connections come from kit/client, so REST calls get its
// retries, timeouts and request id propagation.
func ExampleNew() {
	ctx := context.Background()
	conn := func(target string) *grpc.ClientConn {
		c, err := client.New(target, client.Config{})
		if err != nil {
			log.Fatal(err)
		}
		return c
	}
	users, orders, payments := conn("127.0.0.1:9091"), conn("127.0.0.1:9092"), conn("127.0.0.1:9093")
	defer func() { _ = users.Close(); _ = orders.Close(); _ = payments.Close() }()

	gw, err := gateway.New(ctx, gateway.Config{
		Users: users, Orders: orders, Payments: payments,
		Logger: logger.New(os.Stderr, slog.LevelInfo, "gateway"),
	})
	if err != nil {
		log.Fatal(err)
	}
	// Timeouts and the header limit are already set. Call srv.Shutdown on
	// SIGTERM to drain.
	srv := gw.Server("127.0.0.1:8080")
	if err := srv.ListenAndServe(); !errors.Is(err, http.ErrServerClosed) {
		log.Fatal(err)
	}
}

// ExampleDocument gets the REST API's OpenAPI document, as a gateway of
// every service serves it, to generate a client from it; here, it reads
// what the document says of a new user.
func ExampleDocument() {
	doc, err := gateway.Document(gateway.Services(), nil)
	if err != nil {
		log.Fatal(err)
	}
	var spec struct {
		Definitions map[string]struct {
			Properties map[string]struct {
				MinLength, MaxLength int
			}
			Required []string
		}
	}
	if err := json.Unmarshal(doc, &spec); err != nil {
		log.Fatal(err)
	}
	create := spec.Definitions["v1CreateUserRequest"]
	fmt.Println(create.Required, create.Properties["name"].MinLength, create.Properties["name"].MaxLength)
	// Output: [email name] 1 100
}
