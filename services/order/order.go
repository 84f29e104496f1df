// Package order is Duet's order service as a component: Open builds it from
// a Config (database, logger, connections to the user and payment
// services), Register puts it on a gRPC server, Close releases it. The rules
// live in domain, the SQL in store, the peers' clients in peers, the wire
// mapping in grpchandler.
package order

import (
	"context"
	"errors"
	"log/slog"

	"google.golang.org/grpc"

	orderv1 "github.com/duetkit/duet/gen/duet/order/v1"
	"github.com/duetkit/duet/services/order/domain"
	"github.com/duetkit/duet/services/order/grpchandler"
	"github.com/duetkit/duet/services/order/peers"
	"github.com/duetkit/duet/services/order/store"
)

// Config configures the order service.
type Config struct {
	// DatabaseURL is the service's own database: "sqlite:PATH", a plain
	// path, or "postgres://…" (see kit/sqldb.Open).
	DatabaseURL string
	// Logger receives errors and the migration log; nil means slog.Default().
	Logger *slog.Logger
	// Users is the connection to the user service (kit/client.New). Required.
	Users grpc.ClientConnInterface
	// Payments is the connection to the payment service (kit/client.New). Required.
	Payments grpc.ClientConnInterface
}

// Service is an opened order service.
type Service struct {
	store   *store.Store
	handler *grpchandler.Handler
}

// Open opens the database, applies migrations and builds the service. The
// connections in cfg stay the caller's: Close does not close them.
func Open(ctx context.Context, cfg Config) (*Service, error) {
	if cfg.DatabaseURL == "" {
		return nil, errors.New("order: Config.DatabaseURL is required")
	}
	if cfg.Users == nil || cfg.Payments == nil {
		return nil, errors.New("order: Config.Users and Config.Payments are required")
	}
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	log = log.With("service", "order")
	st, err := store.Open(ctx, cfg.DatabaseURL, log)
	if err != nil {
		return nil, err
	}
	svc := domain.NewService(st, peers.NewUsers(cfg.Users), peers.NewPayments(cfg.Payments))
	return &Service{store: st, handler: grpchandler.New(svc, log)}, nil
}

// Register registers the OrderService on r.
func (s *Service) Register(r grpc.ServiceRegistrar) {
	orderv1.RegisterOrderServiceServer(r, s.handler)
}

// Close closes the database. Stop serving first.
func (s *Service) Close() error { return s.store.Close() }
