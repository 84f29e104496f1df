// Package payment is Duet's payment service as a component: Open builds it
// from a Config (database, logger, optionally a provider), Register puts it
// on a gRPC server, Close releases it. The rules live in domain, the SQL in
// store, the wire mapping in grpchandler, the default provider in simulator.
package payment

import (
	"context"
	"errors"
	"log/slog"

	"google.golang.org/grpc"

	paymentv1 "github.com/duetkit/duet/gen/duet/payment/v1"
	"github.com/duetkit/duet/services/payment/domain"
	"github.com/duetkit/duet/services/payment/grpchandler"
	"github.com/duetkit/duet/services/payment/simulator"
	"github.com/duetkit/duet/services/payment/store"
)

// Config configures the payment service.
type Config struct {
	// DatabaseURL is the service's own database: "sqlite:PATH", a plain
	// path, or "postgres://…" (see kit/sqldb.Open).
	DatabaseURL string
	// Logger receives errors and the migration log; nil means slog.Default().
	Logger *slog.Logger
	// Provider moves the money; nil means the deterministic simulator whose
	// test tokens are documented on duet.payment.v1.PaymentService. Tests
	// plug in providers that fail on cue or inspect the context.
	Provider domain.Provider
}

// Service is an opened payment service.
type Service struct {
	store   *store.Store
	handler *grpchandler.Handler
}

// Open opens the database, applies migrations and builds the service.
func Open(ctx context.Context, cfg Config) (*Service, error) {
	if cfg.DatabaseURL == "" {
		return nil, errors.New("payment: Config.DatabaseURL is required")
	}
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	log = log.With("service", "payment")
	provider := cfg.Provider
	if provider == nil {
		provider = simulator.Provider{}
	}
	st, err := store.Open(ctx, cfg.DatabaseURL, log)
	if err != nil {
		return nil, err
	}
	svc := domain.NewService(st, provider)
	return &Service{store: st, handler: grpchandler.New(svc, log)}, nil
}

// Register registers the PaymentService on r.
func (s *Service) Register(r grpc.ServiceRegistrar) {
	paymentv1.RegisterPaymentServiceServer(r, s.handler)
}

// Close closes the database. Stop serving first.
func (s *Service) Close() error { return s.store.Close() }
