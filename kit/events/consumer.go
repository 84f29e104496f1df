package events

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/protobuf/proto"

	"github.com/duetkit/duet/kit/requestid"
)

// Message is one delivered event.
type Message struct {
	// ID is the event id (Nats-Msg-Id); use it with Once.
	ID string
	// Type is the protobuf full name of Data, for example
	// "duet.order.v1.OrderConfirmed".
	Type string
	// Subject is relative to the Bus prefix, for example "order.confirmed".
	Subject string
	// AggregateID is the id of the entity the event is about.
	AggregateID string
	// RequestID is the id of the request that caused the event, if any.
	RequestID string
	// OccurTime is when the event was appended.
	OccurTime time.Time
	// Data is the protobuf-encoded event; see Unmarshal.
	Data []byte
	// Header holds every header the event was published with.
	Header nats.Header
	// NumDelivered counts deliveries of this event to this consumer,
	// 1 the first time.
	NumDelivered uint64
}

// Context returns ctx carrying the event's request id (kit/requestid) and
// the remote trace context of the request that caused it, so work done for
// the event logs and traces under the original request.
func (m Message) Context(ctx context.Context) context.Context {
	if m.RequestID != "" {
		ctx = requestid.NewContext(ctx, m.RequestID)
	}
	return traceContext.Extract(ctx, headerCarrier(m.Header))
}

// Unmarshal decodes Data into dst, which must be the message type named by
// Type.
func (m Message) Unmarshal(dst proto.Message) error {
	if got := string(dst.ProtoReflect().Descriptor().FullName()); m.Type != "" && got != m.Type {
		return fmt.Errorf("events: event %s is a %s, not a %s", m.ID, m.Type, got)
	}
	if err := proto.Unmarshal(m.Data, dst); err != nil {
		return fmt.Errorf("events: decode event %s: %w", m.ID, err)
	}
	return nil
}

// headerCarrier lets the otel propagator read NATS headers, whose keys are
// case-sensitive.
type headerCarrier nats.Header

func (h headerCarrier) Get(key string) string { return nats.Header(h).Get(key) }
func (h headerCarrier) Set(key, value string) { nats.Header(h).Set(key, value) }
func (h headerCarrier) Keys() []string {
	keys := make([]string, 0, len(h))
	for k := range h {
		keys = append(keys, k)
	}
	return keys
}

// ConsumerConfig describes a durable consumer; zero values take defaults.
type ConsumerConfig struct {
	// Durable names the consumer: its position survives restarts, and
	// processes using the same name share its work. Required.
	Durable string
	// Subjects are relative and may use wildcards ("order.*"). Required.
	Subjects []string
	// AckWait is how long a delivery may stay unacknowledged before
	// JetStream redelivers it; default 30s.
	AckWait time.Duration
	// MaxDeliver bounds deliveries of one event; after that it is dropped
	// for this consumer. Default 0 means unlimited: a failing event is
	// retried (with backoff) until the handler accepts it.
	MaxDeliver int
	// Logger receives handler failures; nil means slog.Default().
	Logger *slog.Logger
}

// Consumer defaults and retry delays.
const (
	DefaultAckWait = 30 * time.Second
	// nakDelayMin and nakDelayMax bound the redelivery delay after a
	// handler error; it doubles with each delivery.
	nakDelayMin = 100 * time.Millisecond
	nakDelayMax = 30 * time.Second
	// pullBuffer is how many events the consumer fetches ahead.
	pullBuffer = 16
	// setupRetryMax caps the wait between attempts to create the consumer
	// while NATS is unreachable.
	setupRetryMax = 5 * time.Second
)

// Consume runs a durable pull consumer on bus until ctx ends, then returns
// nil. It calls handle for each event, one at a time, with ctx extended by
// Message.Context. A nil error acks the event; an error (or a panic) naks it
// for redelivery after a delay that grows with each attempt. Delivery is at
// least once: make effects idempotent with Once.
//
// Consume returns an error only for an invalid cfg; NATS failures are
// logged and retried.
func Consume(ctx context.Context, bus *Bus, cfg ConsumerConfig, handle func(ctx context.Context, m Message) error) error {
	if bus == nil || handle == nil {
		return errors.New("events: Consume needs a bus and a handler")
	}
	if cfg.Durable == "" {
		return errors.New("events: consumer needs a durable name")
	}
	if len(cfg.Subjects) == 0 {
		return errors.New("events: consumer needs subjects")
	}
	filters := make([]string, len(cfg.Subjects))
	for i, s := range cfg.Subjects {
		if !validSubject(s, true) {
			return fmt.Errorf("events: invalid subject %q", s)
		}
		filters[i] = bus.Subject(s)
	}
	if cfg.AckWait <= 0 {
		cfg.AckWait = DefaultAckWait
	}
	if cfg.MaxDeliver <= 0 {
		cfg.MaxDeliver = -1
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	c := &consumer{bus: bus, cfg: cfg, log: cfg.Logger.With("consumer", cfg.Durable), handle: handle}
	jcfg := jetstream.ConsumerConfig{
		Durable:       cfg.Durable,
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       cfg.AckWait,
		MaxDeliver:    cfg.MaxDeliver,
		DeliverPolicy: jetstream.DeliverAllPolicy,
	}
	if len(filters) == 1 {
		jcfg.FilterSubject = filters[0]
	} else {
		jcfg.FilterSubjects = filters
	}
	wait := time.Duration(0)
	for {
		err := c.run(ctx, jcfg)
		if ctx.Err() != nil {
			return nil
		}
		wait = min(max(2*wait, nakDelayMin), setupRetryMax)
		c.log.WarnContext(ctx, "events: consumer interrupted; restarting", "err", err, "retry_in", wait)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(wait):
		}
	}
}

// consumer is one Consume loop.
type consumer struct {
	bus    *Bus
	cfg    ConsumerConfig
	log    *slog.Logger
	handle func(ctx context.Context, m Message) error
}

// run creates (or updates) the consumer and handles messages until ctx ends
// or the message iterator fails for good; Consume then starts over.
func (c *consumer) run(ctx context.Context, jcfg jetstream.ConsumerConfig) error {
	cons, err := c.bus.JS.CreateOrUpdateConsumer(ctx, c.bus.Stream, jcfg)
	if err != nil {
		return fmt.Errorf("create consumer: %w", err)
	}
	// A small buffer: each buffered event's AckWait is already running, so
	// a slow handler must not fall behind a large one.
	it, err := cons.Messages(jetstream.PullMaxMessages(pullBuffer))
	if err != nil {
		return fmt.Errorf("pull messages: %w", err)
	}
	defer it.Stop()
	for {
		msg, err := it.Next(jetstream.NextContext(ctx))
		switch {
		case ctx.Err() != nil:
			return nil
		case errors.Is(err, jetstream.ErrMsgIteratorClosed),
			errors.Is(err, jetstream.ErrConsumerDeleted),
			errors.Is(err, jetstream.ErrConsumerNotFound):
			return err
		case err != nil:
			// Missed heartbeats and the like: the iterator re-issues
			// its pull requests by itself.
			c.log.DebugContext(ctx, "events: pull", "err", err)
			continue
		}
		c.process(ctx, msg)
	}
}

// tracer names the spans of event handling.
var tracer = otel.Tracer("github.com/duetkit/duet/kit/events")

// process runs the handler on one message and acks or naks it.
func (c *consumer) process(ctx context.Context, msg jetstream.Msg) {
	m := c.message(msg)
	hctx, span := tracer.Start(m.Context(ctx), "process "+m.Subject,
		trace.WithSpanKind(trace.SpanKindConsumer),
		trace.WithAttributes(
			attribute.String("messaging.system", "nats"),
			attribute.String("messaging.destination.name", msg.Subject()),
			attribute.String("messaging.message.id", m.ID),
			attribute.String("messaging.consumer.group.name", c.cfg.Durable),
		))
	defer span.End()
	err := c.call(hctx, m)
	if err == nil {
		if aerr := msg.Ack(); aerr != nil {
			// Redelivered after AckWait; Once keeps the effect single.
			c.log.WarnContext(hctx, "events: ack", "event_id", m.ID, "err", aerr)
		}
		return
	}
	span.RecordError(err)
	span.SetStatus(codes.Error, "handler failed")
	if ctx.Err() != nil {
		// Shutting down: leave the event for redelivery without a delay.
		_ = msg.Nak()
		return
	}
	delay := nakDelayMin
	for i := uint64(1); i < m.NumDelivered && delay < nakDelayMax; i++ {
		delay *= 2
	}
	delay = min(delay, nakDelayMax)
	c.log.WarnContext(hctx, "events: handler failed; redelivering",
		"event_id", m.ID, "subject", m.Subject, "delivery", m.NumDelivered, "retry_in", delay, "err", err)
	if nerr := msg.NakWithDelay(delay); nerr != nil {
		c.log.WarnContext(hctx, "events: nak", "event_id", m.ID, "err", nerr)
	}
}

// call runs the handler, turning a panic into an error so one bad event
// cannot take the process down.
func (c *consumer) call(ctx context.Context, m Message) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("handler panicked: %v", p)
		}
	}()
	return c.handle(ctx, m)
}

// message converts a JetStream delivery into a Message.
func (c *consumer) message(msg jetstream.Msg) Message {
	h := msg.Headers()
	m := Message{
		ID:          h.Get(HeaderMsgID),
		Type:        h.Get(HeaderEventType),
		Subject:     c.bus.relative(msg.Subject()),
		AggregateID: h.Get(HeaderAggregateID),
		RequestID:   h.Get(HeaderRequestID),
		Data:        msg.Data(),
		Header:      h,
	}
	if t, err := time.Parse(time.RFC3339Nano, h.Get(HeaderOccurTime)); err == nil {
		m.OccurTime = t
	}
	if md, err := msg.Metadata(); err == nil {
		m.NumDelivered = md.NumDelivered
		if m.ID == "" {
			// Published without an id (not by a Relay): the stream
			// sequence still identifies it uniquely.
			m.ID = fmt.Sprintf("%s:%d", c.bus.Stream, md.Sequence.Stream)
		}
	}
	return m
}
