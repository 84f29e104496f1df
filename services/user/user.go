// Package user is the user service as a component: Open it with a database
// URL, Register it on a gRPC server, Close it on the way out. cmd/duet runs it
// embedded next to the other services or on its own; tests start it for real.
//
// The service keeps the shop's customers, each with an email address unique
// regardless of letter case. Its rules live in services/user/domain, its SQL
// and event outbox in services/user/store, its gRPC mapping in
// services/user/grpchandler and its proto conversions in services/user/wire.
//
// Sign-ups and changes are reported as events (user.created, user.updated
// with the changed fields), appended to the outbox in the change's own
// transaction and published by a relay to Config.Bus.
package user

import (
	"context"
	"errors"
	"log/slog"

	"google.golang.org/grpc"

	userv1 "github.com/duetkit/duet/gen/duet/user/v1"
	"github.com/duetkit/duet/kit/events"
	"github.com/duetkit/duet/kit/sqldb"
	"github.com/duetkit/duet/services/user/domain"
	"github.com/duetkit/duet/services/user/grpchandler"
	"github.com/duetkit/duet/services/user/store"
)

// Config configures the user service.
type Config struct {
	// DatabaseURL is the service's own database: "sqlite:PATH" or
	// "postgres://…" (see kit/sqldb.Open). Required.
	DatabaseURL string
	// Logger receives migration and error logs; nil means slog.Default().
	Logger *slog.Logger
	// Bus receives the service's events. Nil runs no relay: events still
	// go to the outbox, and a relay started later (with a Bus) publishes
	// them, so none is lost.
	Bus *events.Bus
}

// Service is a running user service: an open, migrated database and the
// gRPC handler over it.
type Service struct {
	db      *sqldb.DB
	handler *grpchandler.Handler
	// stopRelay stops and awaits the outbox relay; nil without a bus.
	stopRelay func() error
}

// Open connects to the database, applies pending migrations and builds the
// service. Close it when done.
func Open(ctx context.Context, cfg Config) (*Service, error) {
	if cfg.DatabaseURL == "" {
		return nil, errors.New("user: Config.DatabaseURL is required")
	}
	logger := cfg.Logger
	if logger == nil {
		logger = slog.Default()
	}
	logger = logger.With("service", "user")
	db, err := store.Open(ctx, cfg.DatabaseURL, sqldb.WithLogger(logger))
	if err != nil {
		return nil, err
	}
	st := store.New(db)
	s := &Service{db: db, handler: grpchandler.New(domain.NewService(st), logger)}
	if cfg.Bus != nil {
		relay := events.NewRelay(db, cfg.Bus, events.RelayConfig{Logger: logger, Name: "user"})
		st.OnAppend(relay.Notify)
		s.stopRelay = relay.Start(ctx)
	}
	return s, nil
}

// Register adds UserService to r, typically a *server.Server from kit/server.
func (s *Service) Register(r grpc.ServiceRegistrar) {
	userv1.RegisterUserServiceServer(r, s.handler)
}

// Close stops the relay and closes the database. Stop the gRPC server
// first so no call is still using it. Events not yet published stay in the
// outbox for the next Open.
func (s *Service) Close() error {
	var relayErr error
	if s.stopRelay != nil {
		relayErr = s.stopRelay()
	}
	return errors.Join(relayErr, s.db.Close())
}
