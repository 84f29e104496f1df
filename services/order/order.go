// Package order is Duet's order service as a component: Open builds it from
// a Config (database, logger, connections to the user, inventory and
// payment services, optionally an event bus), Register puts it on a gRPC
// server, Close releases it. The rules and the saga's steps live in domain,
// the SQL and the outbox in store, the peers' clients in peers, the
// background runner and the change feed in saga, the wire mapping in
// grpchandler.
//
// # The saga
//
// CreateOrder stores the order PENDING and a runner inside this service
// takes it through CHECK_USER, PRICE, RESERVE, CHARGE and COMMIT to
// CONFIRMED, or ends it REJECTED (unknown user or product, changed price,
// out of stock: nothing was charged; a refused reservation is released
// first, so that a late one for the order cannot hold stock) or CANCELLED
// (declined payment, or a peer down for too long: stock released, any
// charge refunded). Every step
// is idempotent on the order id (reservations are keyed by it, and the
// charge's idempotency key is "order-" + id + a secret of the order's),
// and the saga's state is
// stored after every step, in the same transaction as the outbox event of
// a terminal transition (order.confirmed, order.cancelled, order.rejected).
// Open resumes every unfinished order, so a crash at any moment only
// delays sagas.
//
// Retry bound: a forward step that fails temporarily is retried with
// exponential backoff and jitter (SagaConfig.InitialBackoff doubling up to
// MaxBackoff) until SagaConfig.StepTimeout (30s by default) has passed
// since its first failed attempt — time an order waits in the runner's queue
// does not count; the last attempt is made at that bound, and one attempt
// takes at most CallTimeout (10s by default), so a step whose peer stays
// down is given up at most StepTimeout + CallTimeout after it first failed.
// Before anything was reserved the order then ends CANCELLED; after, it is
// compensated: a charge whose outcome is unknown is cancelled
// (payment CancelCharge, which also blocks a late charge) and the stock
// released. Compensation steps retry, with the same capped backoff, until
// they succeed.
package order

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"go.opentelemetry.io/otel/propagation"
	"google.golang.org/grpc"

	orderv1 "github.com/duetkit/duet/gen/duet/order/v1"
	"github.com/duetkit/duet/kit/events"
	"github.com/duetkit/duet/kit/requestid"
	"github.com/duetkit/duet/kit/sqldb"
	"github.com/duetkit/duet/kit/tracing"
	"github.com/duetkit/duet/services/order/domain"
	"github.com/duetkit/duet/services/order/grpchandler"
	"github.com/duetkit/duet/services/order/peers"
	"github.com/duetkit/duet/services/order/saga"
	"github.com/duetkit/duet/services/order/store"
)

// RelayLinger is the outbox relay's RelayConfig.Linger: under load,
// committed events wait up to this long to be read and marked published
// together. Nobody waits on an event leaving the outbox the way a caller
// waits on an order; one read and one commit per batch instead of per event
// or two was 3.5 % less CPU per order at 800 orders/s than kit/events'
// 2 ms default (bench/README.md). An event that comes alone still goes
// out at once.
const RelayLinger = 10 * time.Millisecond

// Config configures the order service.
type Config struct {
	// DatabaseURL is the service's own database: "sqlite:PATH", a plain
	// path, or "postgres://…" (see kit/sqldb.Open).
	DatabaseURL string
	// Logger receives errors, saga failures and the migration log; nil
	// means slog.Default().
	Logger *slog.Logger
	// Users is the connection to the user service (kit/client.New). Required.
	Users grpc.ClientConnInterface
	// Payments is the connection to the payment service (kit/client.New). Required.
	Payments grpc.ClientConnInterface
	// Inventory is the connection to the inventory service (kit/client.New). Required.
	Inventory grpc.ClientConnInterface
	// Bus is where the outbox's events are published. Events are always
	// written to the outbox; with a nil Bus no relay runs and they stay there.
	Bus *events.Bus
	// Saga tunes the saga's retries and runner.
	Saga SagaConfig
}

// SagaConfig tunes the order saga. Zero values take the defaults.
type SagaConfig struct {
	// StepTimeout is how long a forward step whose peer keeps failing
	// temporarily is retried before the saga gives it up and compensates.
	// Default 30s (domain.DefaultStepTimeout).
	StepTimeout time.Duration
	// CallTimeout bounds one call to a peer. Default 10s.
	CallTimeout time.Duration
	// InitialBackoff is the delay before the first retry of a step; it
	// doubles with every failure, with jitter. Default 100ms.
	InitialBackoff time.Duration
	// MaxBackoff caps the delay between retries (a peer's RetryInfo too).
	// Default 5s.
	MaxBackoff time.Duration
	// Workers bounds how many sagas run a step at the same time. Default
	// 64 on SQLite (SQLiteSagaWorkers), 8 on PostgreSQL
	// (saga.DefaultWorkers).
	Workers int
	// SweepInterval is how often the service looks for unfinished orders
	// that no runner is running (another replica died, say). Default 30s.
	SweepInterval time.Duration
	// MaxBacklog is the number of orders in progress in this process
	// (queued, running, or waiting to retry a peer) past which CreateOrder
	// answers UNAVAILABLE, reason ORDERS_OVERLOADED, with a retry delay,
	// storing nothing, instead of queueing new orders in memory without
	// end. A soft bound: creates already past the check when it fills
	// still go in, and the unfinished orders a sweep resumes are taken
	// whatever the backlog (a batch at a time). Default 10,000
	// (saga.DefaultMaxBacklog); negative means no bound.
	MaxBacklog int
	// AfterStep, for tests, is called after a step moved an order to step
	// and the change was stored. An error stops running that saga in this
	// process, as if it had crashed there; the next Open resumes it. It
	// must not call Close.
	AfterStep func(ctx context.Context, orderID string, step orderv1.OrderStep) error
}

// SQLiteSagaWorkers is SagaConfig.Workers' default on SQLite.
//
// A worker spends most of a step waiting for a peer or the store, so on
// SQLite 8 workers, not CPU, capped the order benchmark (~1,150 orders/s at
// C=32 with CPU to spare on two cores); with 64 it reached ~1,500 at C=32
// and ~1,650 at C=64, with less CPU per order, because more steps stored
// at once share commits (kit/sqldb.DB.InTx). On PostgreSQL each step
// commits on its own, and in the same benchmark more than 8 concurrent
// sagas made its transactions wait on each other (WAL flushes, the rows of
// popular products): 300 orders/s at C=32 fell to 230, so it keeps 8.
const SQLiteSagaWorkers = 64

func (c SagaConfig) validate() error {
	for name, d := range map[string]time.Duration{
		"StepTimeout": c.StepTimeout, "CallTimeout": c.CallTimeout, "InitialBackoff": c.InitialBackoff,
		"MaxBackoff": c.MaxBackoff, "SweepInterval": c.SweepInterval,
	} {
		if d < 0 {
			return fmt.Errorf("order: Config.Saga.%s must not be negative", name)
		}
	}
	if c.Workers < 0 {
		return errors.New("order: Config.Saga.Workers must not be negative")
	}
	return nil
}

// Service is an opened order service.
type Service struct {
	store   *store.Store
	handler *grpchandler.Handler
	runner  *saga.Runner
	cancel  context.CancelFunc
	wg      sync.WaitGroup
	once    sync.Once
}

// Open opens the database, applies migrations, builds the service and
// starts its saga runner, which resumes every unfinished order, and its
// outbox relay when cfg.Bus is set. The connections and the bus in cfg
// stay the caller's: Close does not close them.
func Open(ctx context.Context, cfg Config) (*Service, error) {
	if cfg.DatabaseURL == "" {
		return nil, errors.New("order: Config.DatabaseURL is required")
	}
	if cfg.Users == nil || cfg.Payments == nil || cfg.Inventory == nil {
		return nil, errors.New("order: Config.Users, Config.Payments and Config.Inventory are required")
	}
	if err := cfg.Saga.validate(); err != nil {
		return nil, err
	}
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	log = log.With("service", "order")
	st, err := store.Open(ctx, cfg.DatabaseURL, store.Options{Logger: log, Event: event})
	if err != nil {
		return nil, err
	}

	svc := domain.NewService(domain.Deps{
		Repo:      st,
		Users:     peers.NewUsers(cfg.Users),
		Inventory: peers.NewInventory(cfg.Inventory),
		Payments:  peers.NewPayments(cfg.Payments),
		Logger:    log,
	}, domain.SagaPolicy{
		StepTimeout:    cfg.Saga.StepTimeout,
		CallTimeout:    cfg.Saga.CallTimeout,
		InitialBackoff: cfg.Saga.InitialBackoff,
		MaxBackoff:     cfg.Saga.MaxBackoff,
	})
	svc.StepContext = func(ctx context.Context, o *domain.Order) context.Context {
		if o.RequestID != "" {
			ctx = requestid.NewContext(ctx, o.RequestID)
		}
		if o.TraceParent != "" {
			// The saga's calls belong to the trace of the call that
			// created the order, as its request id says they do.
			ctx = tracing.Continue(ctx, propagation.MapCarrier{"traceparent": o.TraceParent})
		}
		return ctx
	}
	feed := saga.NewFeed()
	svc.Notifier = feed
	workers := cfg.Saga.Workers
	if workers == 0 && st.DB().Dialect == sqldb.SQLite {
		workers = SQLiteSagaWorkers
	}
	runCfg := saga.Config{Workers: workers, SweepInterval: cfg.Saga.SweepInterval, RetryDelay: cfg.Saga.MaxBackoff,
		MaxBacklog: cfg.Saga.MaxBacklog, Logger: log}
	if hook := cfg.Saga.AfterStep; hook != nil {
		runCfg.AfterStep = func(ctx context.Context, id string, step domain.Step) error {
			return hook(ctx, id, grpchandler.StepToProto(step))
		}
	}
	runner := saga.New(svc, runCfg)
	svc.Scheduler = runner

	s := &Service{store: st, handler: grpchandler.New(svc, feed, log), runner: runner}
	// The runner and the relay live until Close, not until Open's caller
	// is done: they keep ctx's values but not its cancellation.
	bg, cancel := context.WithCancel(context.WithoutCancel(ctx))
	s.cancel = cancel
	if cfg.Bus != nil {
		relay := events.NewRelay(st.DB(), cfg.Bus, events.RelayConfig{Logger: log, Linger: RelayLinger, Name: "order"})
		st.OnAppend(relay.Notify)
		s.wg.Go(func() {
			if err := relay.Run(bg); err != nil {
				log.ErrorContext(bg, "order outbox relay stopped", "error", err)
			}
		})
	}
	runner.Start(bg)
	return s, nil
}

// event is the outbox event announcing a terminal order.
func event(o *domain.Order) events.Event {
	p := grpchandler.ToProto(o)
	ev := events.Event{AggregateID: o.ID}
	switch o.Status {
	case domain.StatusConfirmed:
		ev.Subject, ev.Message = "order.confirmed", &orderv1.OrderConfirmed{Order: p}
	case domain.StatusCancelled:
		ev.Subject, ev.Message = "order.cancelled", &orderv1.OrderCancelled{Order: p}
	default:
		ev.Subject, ev.Message = "order.rejected", &orderv1.OrderRejected{Order: p}
	}
	return ev
}

// Drain answers every CreateOrder waiting for its order at once, with the
// order as it is; see grpchandler.Handler.Drain. Call it when shutdown
// starts, before the server's graceful stop.
func (s *Service) Drain() { s.handler.Drain() }

// Register registers the OrderService on r.
func (s *Service) Register(r grpc.ServiceRegistrar) {
	orderv1.RegisterOrderServiceServer(r, s.handler)
}

// Close stops the saga runner (steps in flight are abandoned unstored and
// run again when the orders are resumed) and the relay, and closes the
// database. Stop serving first. Close is safe to call more than once.
func (s *Service) Close() error {
	var err error
	s.once.Do(func() {
		s.runner.Stop()
		s.cancel()
		s.wg.Wait()
		err = s.store.Close()
	})
	return err
}
