// Package payment is Duet's payment service as a component: Open builds it
// from a Config (database, logger, optionally a provider and an event bus),
// Register puts it on a gRPC server, Close releases it. The rules live in
// domain, the SQL and the event outbox in store, the gRPC mapping in
// grpchandler, the proto conversions in wire, the default provider in
// simulator.
//
// Every charge is reported as an event (payment.captured,
// payment.declined), and every refund once the provider confirmed it
// (payment.refunded), appended to the outbox in the transaction that
// records it and published by a relay to Config.Bus. A refund is recorded
// pending before the provider is asked; the service asks again for those
// it has not confirmed (Config.RefundRetryInterval) until it does, and
// likewise voids again a cancelled key whose void failed.
package payment

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"

	paymentv1 "github.com/duetkit/duet/gen/duet/payment/v1"
	"github.com/duetkit/duet/kit/events"
	"github.com/duetkit/duet/kit/metrics"
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
	// RefundRetryInterval is how often the service looks for refunds the
	// provider has not confirmed, and voids of cancelled keys it has not
	// made, that are due to be asked again (at Open, for those an earlier
	// process left, and then on every tick), and how long a new one waits
	// before it is first due: the wait then doubles with each attempt, up
	// to domain.MaxRefundRetry. Zero means domain.DefaultRefundRetry.
	RefundRetryInterval time.Duration
	// Metrics receives PendingOldestMetric; nil means metrics.Default().
	Metrics *metrics.Metrics
}

// PendingOldestMetric is how long the oldest refund the provider has not
// confirmed (kind "refund"), and the oldest void of a cancelled key it has
// not made (kind "void"), have waited, read from the database every
// RefundRetryInterval: 0 when none waits. Money owed back while the
// service looks healthy: this is what to alert on, well before a day (real
// providers keep an idempotency key about that long). Every replica reads
// the same database: alert on the max. One payment service per process
// (as duet runs them) owns the series.
const PendingOldestMetric = "duet_payment_oldest_pending_seconds"

// pendingGauge registers PendingOldestMetric on m, or finds it registered
// by another payment service of the process.
func pendingGauge(m *metrics.Metrics) (*prometheus.GaugeVec, error) {
	return metrics.Register(m.Registry, prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: PendingOldestMetric,
		Help: "Age of the oldest refund the provider has not confirmed, and of the oldest void it has not made, at the last read; 0 when none waits.",
	}, []string{"kind"}))
}

// pendingAlarm is how long a refund or a void may stay pending before its
// failures are logged as errors: real providers keep an idempotency key
// for about a day, and an operator should look well before then.
const pendingAlarm = time.Hour

// retryBatch bounds the refunds, and the voids, one retry asks for; the
// rest wait for the next round.
const retryBatch = 100

// Service is an opened payment service.
type Service struct {
	store   *store.Store
	handler *grpchandler.Handler
	// stopRelay stops and awaits the outbox relay; nil without a bus.
	stopRelay func() error
	// stopRetries stops and awaits the retries of provider calls.
	stopRetries func()
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
	svc.RefundRetry = cfg.RefundRetryInterval
	svc.RefundFailed = func(ctx context.Context, r domain.Refund, err error) {
		level := slog.LevelWarn
		if !r.CreateTime.IsZero() && svc.Now().Sub(r.CreateTime) > pendingAlarm {
			level = slog.LevelError
		}
		log.Log(ctx, level, "refund not completed; it stays pending and the provider is asked again",
			"payment_id", r.PaymentID, "refund_id", r.ID, "attempts", r.Attempts, "pending_since", r.CreateTime, "error", err)
	}
	svc.VoidFailed = func(ctx context.Context, v domain.PendingVoid, err error) {
		level := slog.LevelWarn
		if !v.Since.IsZero() && svc.Now().Sub(v.Since) > pendingAlarm {
			level = slog.LevelError
		}
		log.Log(ctx, level, "void of a cancelled key not completed; it stays due and the provider is asked again",
			"idempotency_key", v.Key, "attempts", v.Attempts, "pending_since", v.Since, "error", err)
	}
	s := &Service{store: st, handler: grpchandler.New(svc, log)}
	if cfg.Bus != nil {
		relay := events.NewRelay(st.DB(), cfg.Bus, events.RelayConfig{Logger: log, Linger: RelayLinger, Name: "payment"})
		st.OnAppend(relay.Notify)
		s.stopRelay = relay.Start(ctx)
	}
	// Last: completing a refund appends its event, so the store's
	// OnAppend hook must be in place first.
	interval := cfg.RefundRetryInterval
	if interval <= 0 {
		interval = domain.DefaultRefundRetry
	}
	m := cfg.Metrics
	if m == nil {
		m = metrics.Default()
	}
	gauge, err := pendingGauge(m)
	if err != nil {
		log.Warn("payment: pending metric not registered", "error", err)
	}
	observe := func(ctx context.Context) {
		refund, void, err := st.OldestPending(ctx)
		if err != nil {
			if ctx.Err() == nil {
				log.WarnContext(ctx, "reading the oldest pending refund and void failed", "error", err)
			}
			return
		}
		now := svc.Now()
		for kind, since := range map[string]time.Time{"refund": refund, "void": void} {
			age := 0.0
			if !since.IsZero() {
				age = max(0, now.Sub(since).Seconds())
			}
			gauge.WithLabelValues(kind).Set(age)
		}
	}
	s.stopRetries = retryProvider(ctx, svc, interval, observe, log)
	return s, nil
}

// Register registers the PaymentService on r.
func (s *Service) Register(r grpc.ServiceRegistrar) {
	paymentv1.RegisterPaymentServiceServer(r, s.handler)
}

// Close stops the relay and closes the database. Stop serving first.
// Events not yet published stay in the outbox for the next Open.
func (s *Service) Close() error {
	s.stopRetries()
	var relayErr error
	if s.stopRelay != nil {
		relayErr = s.stopRelay()
	}
	return errors.Join(relayErr, s.store.Close())
}

// retryProvider resumes the refunds and the voids that are due
// (domain.ResumeRefunds, ResumeVoids), at once and then every interval,
// at once again while batches come full and without error, until the
// returned stop is called (which waits for both its goroutines to
// return). It outlives ctx's cancellation, as the relay does: only Close
// stops it.
//
// On a goroutine of its own, at once and then every interval, it calls
// observe, which sets the metric of what still waits: a round of retries
// against a provider that hangs can take many minutes, which must not
// hold the metric back.
func retryProvider(ctx context.Context, svc *domain.Service, interval time.Duration, observe func(context.Context), log *slog.Logger) (stop func()) {
	ctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	var wg sync.WaitGroup
	wg.Go(func() {
		t := time.NewTicker(interval)
		defer t.Stop()
		for {
			observe(ctx)
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
		}
	})
	wg.Go(func() {
		t := time.NewTicker(interval)
		defer t.Stop()
		for {
			again := report(ctx, log, "refunds confirmed by the provider")(svc.ResumeRefunds(ctx, retryBatch))
			again = report(ctx, log, "cancelled keys voided by the provider")(svc.ResumeVoids(ctx, retryBatch)) || again
			if ctx.Err() != nil {
				return
			}
			if again {
				continue
			}
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
		}
	})
	return func() {
		cancel()
		wg.Wait()
	}
}

// report returns what logs one retry's outcome, n of what done, and says
// whether to go again at once: when a batch came full without error.
func report(ctx context.Context, log *slog.Logger, what string) func(n int, more bool, err error) bool {
	return func(n int, more bool, err error) bool {
		switch {
		case ctx.Err() != nil:
			return false
		case err != nil:
			log.WarnContext(ctx, "retrying provider calls failed", "error", err)
		case n > 0:
			log.InfoContext(ctx, what, "count", n)
		}
		return more && err == nil
	}
}
