// Package notification is the notification service as a component: Open it
// with a database URL (and an event bus), Register it on a gRPC server,
// Close it on the way out. cmd/duet runs it embedded next to the other
// services or on its own; tests start it for real.
//
// The service consumes every user, order and payment event with a durable
// JetStream consumer. Each event is appended to an audit log, and those
// that concern a customer (a welcome, an account change, a confirmed,
// cancelled or rejected order, a refund) become a notification, in one
// transaction with an inbox row, so a redelivered event changes nothing.
// Clients list notifications and audit entries, and Subscribe to have them
// pushed, acknowledging what they have shown.
//
// Its rules live in services/notification/domain, its SQL in
// services/notification/store, the event decoding in
// services/notification/consumer and the gRPC mapping in
// services/notification/grpchandler.
package notification

import (
	"context"
	"errors"
	"log/slog"

	"google.golang.org/grpc"

	notificationv1 "github.com/duetkit/duet/gen/duet/notification/v1"
	"github.com/duetkit/duet/kit/events"
	"github.com/duetkit/duet/kit/sqldb"
	"github.com/duetkit/duet/services/notification/consumer"
	"github.com/duetkit/duet/services/notification/domain"
	"github.com/duetkit/duet/services/notification/grpchandler"
	"github.com/duetkit/duet/services/notification/store"
)

// Config configures the notification service.
type Config struct {
	// DatabaseURL is the service's own database: "sqlite:PATH" or
	// "postgres://…" (see kit/sqldb.Open). Required.
	DatabaseURL string
	// Logger receives consumer and error logs; nil means
	// slog.Default().
	Logger *slog.Logger
	// Bus is the event bus to consume. Nil runs the service without a
	// consumer: it serves what the database holds and nothing new arrives
	// (tests of the RPCs alone).
	Bus *events.Bus
}

// Service is a running notification service: an open, migrated database,
// the gRPC handler over it and, with a Bus, the event consumer.
type Service struct {
	db      *sqldb.DB
	handler *grpchandler.Handler

	stop     context.CancelFunc
	consumed chan struct{} // closed when the consumer has returned
	// stopPurge ends the inbox purge; nil without a consumer.
	stopPurge func()
}

// Open connects to the database, applies pending migrations, builds the
// service and, when cfg.Bus is set, starts consuming events. Close it when
// done.
func Open(ctx context.Context, cfg Config) (*Service, error) {
	if cfg.DatabaseURL == "" {
		return nil, errors.New("notification: Config.DatabaseURL is required")
	}
	logger := cfg.Logger
	if logger == nil {
		logger = slog.Default()
	}
	logger = logger.With("service", "notification")
	db, err := store.Open(ctx, cfg.DatabaseURL, sqldb.WithLogger(logger))
	if err != nil {
		return nil, err
	}
	svc := domain.NewService(store.New(db))
	s := &Service{db: db, handler: grpchandler.New(svc, logger), consumed: make(chan struct{})}

	// The consumer lives until Close, not until ctx (often a start-up
	// deadline) ends; it keeps ctx's values.
	runCtx, stop := context.WithCancel(context.WithoutCancel(ctx))
	s.stop = stop
	if cfg.Bus == nil {
		close(s.consumed)
		return s, nil
	}
	c := consumer.New(svc, cfg.Bus, logger)
	// The inbox gains a row per event consumed; without a purge it
	// would remember every event ever seen.
	s.stopPurge = events.StartInboxPurge(ctx, db, events.InboxConfig{Logger: logger})
	go func() {
		defer close(s.consumed)
		if err := c.Run(runCtx); err != nil {
			// Only a bad configuration gets here, which is a bug.
			logger.ErrorContext(runCtx, "notification: event consumer stopped", "err", err)
		}
	}()
	return s, nil
}

// Register adds NotificationService to r, typically a *server.Server from
// kit/server.
func (s *Service) Register(r grpc.ServiceRegistrar) {
	notificationv1.RegisterNotificationServiceServer(r, s.handler)
}

// Close stops the event consumer and the inbox purge, waits for them (an
// event being handled is finished or left for redelivery) and closes the
// database. Stop the gRPC server first so no call is still using it.
func (s *Service) Close() error {
	s.stop()
	<-s.consumed
	if s.stopPurge != nil {
		s.stopPurge()
	}
	return s.db.Close()
}
