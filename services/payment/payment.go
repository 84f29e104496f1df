// Package payment is Duet's payment service as a component: Open builds it
// from a Config (database, logger, optionally a provider and an event bus),
// Register puts it on a gRPC server, Close releases it. The rules live in
// domain, the SQL and the event outbox in store, the gRPC mapping in
// grpchandler, the proto conversions in wire, the default provider in
// simulator.
//
// Every change to a payment is reported as an event (payment.captured,
// payment.declined, payment.refunded), appended to the outbox in the
// change's own transaction and published by a relay to Config.Bus.
package payment

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"google.golang.org/grpc"

	paymentv1 "github.com/duetkit/duet/gen/duet/payment/v1"
	"github.com/duetkit/duet/kit/events"
	"github.com/duetkit/duet/services/payment/domain"
	"github.com/duetkit/duet/services/payment/grpchandler"
	"github.com/duetkit/duet/services/payment/simulator"
	"github.com/duetkit/duet/services/payment/store"
)

// RelayLinger is the outbox relay's RelayConfig.Linger: under load,
// committed events wait up to this long to be read and marked published
// together. Nobody waits on an event leaving the outbox the way a caller
// waits on a charge; one read and one commit per batch instead of per event
// or two was 3.5 % less CPU per order at 800 orders/s than kit/events'
// 2 ms default (bench/README.md). An event that comes alone still goes
// out at once.
const RelayLinger = 10 * time.Millisecond

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
	// Bus receives the service's events. Nil runs no relay: events still
	// go to the outbox, and a relay started later (with a Bus) publishes
	// them, so none is lost.
	Bus *events.Bus
}

// Service is an opened payment service.
type Service struct {
	store   *store.Store
	handler *grpchandler.Handler
	// stopRelay stops and awaits the outbox relay; nil without a bus.
	stopRelay func() error
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
	s := &Service{store: st, handler: grpchandler.New(domain.NewService(st, provider), log)}
	if cfg.Bus != nil {
		relay := events.NewRelay(st.DB(), cfg.Bus, events.RelayConfig{Logger: log, Linger: RelayLinger, Name: "payment"})
		st.OnAppend(relay.Notify)
		s.stopRelay = relay.Start(ctx)
	}
	return s, nil
}

// Register registers the PaymentService on r.
func (s *Service) Register(r grpc.ServiceRegistrar) {
	paymentv1.RegisterPaymentServiceServer(r, s.handler)
}

// Close stops the relay and closes the database. Stop serving first.
// Events not yet published stay in the outbox for the next Open.
func (s *Service) Close() error {
	var relayErr error
	if s.stopRelay != nil {
		relayErr = s.stopRelay()
	}
	return errors.Join(relayErr, s.store.Close())
}
