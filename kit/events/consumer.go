package events

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"
	"google.golang.org/protobuf/proto"

	"github.com/duetkit/duet/kit/requestid"
	"github.com/duetkit/duet/kit/tracing"
)

// Message is one delivered event.
//
// ID, Type, Subject, AggregateID and RequestID come from what any
// publisher can set; they always hold valid UTF-8 without NUL, so a consumer can store
// them in any SQL database (PostgreSQL refuses both, and a row it refuses
// would be redelivered forever).
type Message struct {
	// ID is the event id (Nats-Msg-Id); use it with Once. An event
	// published without one, or with one longer than MaxIDLen bytes or not
	// text, gets "<stream>:<sequence>", which is as stable across
	// redeliveries.
	ID string
	// Type is the protobuf full name of Data, for example
	// "duet.order.v1.OrderConfirmed".
	Type string
	// Subject is relative to the Bus prefix, for example "order.confirmed".
	Subject string
	// AggregateID is the id of the entity the event is about.
	AggregateID string
	// RequestID is the id of the request that caused the event, if any;
	// one kit/requestid would not take from a caller is dropped, since it
	// goes into every log line of the event's handling.
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
// Type. Bytes that do not decode are a Permanent error: no redelivery
// decodes them differently, so a handler that returns it has the event
// terminated. A Type other than dst's is not: during a rolling deploy, a
// consumer of the next version, which knows the new type, may take the
// event's redelivery.
func (m Message) Unmarshal(dst proto.Message) error {
	if got := string(dst.ProtoReflect().Descriptor().FullName()); m.Type != "" && got != m.Type {
		return fmt.Errorf("events: event %s is a %s, not a %s", m.ID, m.Type, got)
	}
	if err := proto.Unmarshal(m.Data, dst); err != nil {
		return Permanent(fmt.Errorf("events: decode event %s: %w", m.ID, err))
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
	// Servers before nats-server 2.10 take one filter per consumer; there
	// the consumer asks for one that covers all of Subjects and acks the
	// events none of them matches without handling them.
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
	// Linger, for ConsumeBatch only, is the least time between the starts
	// of two batches; default DefaultLinger, negative for none. Events that come at
	// most one per Linger are handled at once; under load they wait up to
	// Linger and are handled together.
	Linger time.Duration
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
	// pullExpiry bounds each pull request: one request per 5 s per idle
	// consumer.
	pullExpiry = 5 * time.Second
	// pullHeartbeat is how often the server reports an idle pull request,
	// and half of how long the iterator waits, with nothing arriving,
	// before it takes its requests for gone and pulls afresh. That wait is
	// also what ends a stall of nats.go's iterator (v1.55.0): it asks for
	// more only from Next, and skips asking while its previous request is
	// still being sent; when the reader has taken every buffered message
	// by the time that send finishes, nobody asks again and Next waits with
	// events on the server. Seen with the batch test on a loaded machine
	// (two CPU hogs; a traced nats-server 2.9.10 showed all 34 requested
	// events delivered and acked, 6 more stored, and no request for 5 s),
	// against the embedded 2.15 server as well: 5.4–5.6 s, two of nats.go's
	// default heartbeats (half the expiry); ~30 s before the expiry was
	// 5 s. At 1 s such a stall lasts ~2 s (2.3–2.6 s measured), for one
	// heartbeat per second per idle consumer.
	pullHeartbeat = time.Second
	// setupRetryMax caps the wait between attempts to create the consumer
	// while NATS is unreachable.
	setupRetryMax = 5 * time.Second
)

// Consume runs a durable pull consumer on bus until ctx ends, then returns
// nil. It calls handle for each event, one at a time, with ctx extended by
// Message.Context. A nil error acks the event; an error (or a panic) naks it
// for redelivery after a delay that grows with each attempt; an error
// marked Permanent terminates it. Delivery is at least once: make effects
// idempotent with Once.
//
// Consume returns an error only for an invalid cfg; NATS failures are
// logged and retried.
func Consume(ctx context.Context, bus *Bus, cfg ConsumerConfig, handle func(ctx context.Context, m Message) error) error {
	return consume(ctx, bus, cfg, handle, nil)
}

// MaxBatch bounds the events ConsumeBatch hands its batch handler at once.
const MaxBatch = pullBuffer

// ConsumeBatch is Consume for a handler that does better with several
// events at once, such as one that stores each in a transaction of its own
// and could store them all in one. Whenever more than one event is
// waiting, it calls handleAll with those already delivered (up to MaxBatch,
// in stream order, without waiting for more), and a nil error acks them
// all. When handleAll fails or panics, each event of the batch is handled
// again on its own with handle and acked or naked as Consume does, so one
// bad event holds up no other, and nothing is acked that was not handled.
// A single waiting event goes to handle directly. handleAll gets ctx
// without any event's request id or trace context; Message.Context gives
// each event's.
func ConsumeBatch(ctx context.Context, bus *Bus, cfg ConsumerConfig, handleAll func(ctx context.Context, ms []Message) error,
	handle func(ctx context.Context, m Message) error) error {
	if handleAll == nil {
		return errors.New("events: ConsumeBatch needs a batch handler")
	}
	return consume(ctx, bus, cfg, handle, handleAll)
}

func consume(ctx context.Context, bus *Bus, cfg ConsumerConfig, handle func(ctx context.Context, m Message) error,
	handleAll func(ctx context.Context, ms []Message) error) error {
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
	if cfg.Linger == 0 {
		cfg.Linger = DefaultLinger
	}
	c := &consumer{bus: bus, cfg: cfg, log: cfg.Logger.With("consumer", cfg.Durable), handle: handle, handleAll: handleAll,
		tracer: otel.Tracer(tracerName)}
	jcfg := jetstream.ConsumerConfig{
		Durable:       cfg.Durable,
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       cfg.AckWait,
		MaxDeliver:    cfg.MaxDeliver,
		DeliverPolicy: jetstream.DeliverAllPolicy,
	}
	switch {
	case len(filters) == 1:
		jcfg.FilterSubject = filters[0]
	case bus.Conn == nil || multiFilterSupported(bus.Conn.ConnectedServerVersion()):
		jcfg.FilterSubjects = filters
	default:
		// nats-server before 2.10: one filter that covers them all, and
		// the events none of them matches are acked unseen.
		jcfg.FilterSubject = covering(filters)
		c.only = filters
	}
	wait := time.Duration(0)
	for {
		pulledFor, err := c.run(ctx, jcfg)
		if ctx.Err() != nil {
			return nil
		}
		wait = restartWait(wait, pulledFor)
		c.log.WarnContext(ctx, "events: consumer interrupted; restarting", "err", err, "retry_in", wait)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(wait):
		}
	}
}

// restartWait is how long Consume waits before starting over, given the
// previous wait and how long the run that just ended pulled events (zero
// when it never got that far): doubling from nakDelayMin while runs keep
// failing, up to setupRetryMax, and from nakDelayMin again after a run
// that pulled for longer than that. Without the reset each interruption
// of a long-lived process, even after hours of healthy pulling, waited
// longer than the one before, until every restart took setupRetryMax.
func restartWait(prev, pulled time.Duration) time.Duration {
	if pulled > setupRetryMax {
		prev = 0
	}
	return min(max(2*prev, nakDelayMin), setupRetryMax)
}

// consumer is one Consume loop.
type consumer struct {
	bus       *Bus
	cfg       ConsumerConfig
	log       *slog.Logger
	handle    func(ctx context.Context, m Message) error
	handleAll func(ctx context.Context, ms []Message) error
	// only, when set, lists the filters an event's subject must match to
	// be handled: the consumer's server filters with a wider one.
	only []string
	// cons is the durable the current run pulls from.
	cons jetstream.Consumer
	// tracer starts the spans of handling, when spans are recorded.
	tracer trace.Tracer
}

// unwanted acks and reports true for an event that none of c.only matches.
func (c *consumer) unwanted(msg jetstream.Msg) bool {
	if c.only == nil {
		return false
	}
	for _, f := range c.only {
		if subjectMatches(f, msg.Subject()) {
			return false
		}
	}
	_ = msg.Ack()
	return true
}

// run creates (or updates) the consumer and handles messages until ctx ends
// or the message iterator fails for good; Consume then starts over.
// pulledFor is how long the iterator ran, zero when run failed before it.
func (c *consumer) run(ctx context.Context, jcfg jetstream.ConsumerConfig) (pulledFor time.Duration, err error) {
	cons, err := c.bus.JS.CreateOrUpdateConsumer(ctx, c.bus.Stream, jcfg)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		// The server lost the stream (restarted without its store, say):
		// create it as OpenBus did, rather than wait for a relay's
		// publish to, and try again.
		if c.bus.recreateStream(ctx, c.log) {
			cons, err = c.bus.JS.CreateOrUpdateConsumer(ctx, c.bus.Stream, jcfg)
		}
	}
	if err != nil {
		return 0, fmt.Errorf("create consumer: %w", err)
	}
	c.cons = cons
	// A small buffer: each buffered event's AckWait is already running, so
	// a slow handler must not fall behind a large one.
	it, err := cons.Messages(jetstream.PullMaxMessages(pullBuffer), jetstream.PullExpiry(pullExpiry),
		jetstream.PullHeartbeat(pullHeartbeat))
	if err != nil {
		return 0, fmt.Errorf("pull messages: %w", err)
	}
	defer it.Stop()
	start := time.Now()
	if c.handleAll != nil {
		err = c.runBatches(ctx, it)
	} else {
		err = c.runEach(ctx, it)
	}
	return time.Since(start), err
}

// runEach handles the iterator's messages one at a time until ctx ends
// (nil) or the iterator fails for good.
func (c *consumer) runEach(ctx context.Context, it jetstream.MessagesContext) error {
	for {
		msg, err := it.Next(jetstream.NextContext(ctx))
		if ctx.Err() != nil {
			if err == nil {
				_ = msg.Nak()
			}
			release(ctx, it)
			return nil
		}
		if err != nil {
			if err := c.pullFailed(ctx, err); err != nil {
				return err
			}
			continue
		}
		if c.unwanted(msg) {
			continue
		}
		c.process(ctx, msg)
	}
}

// releaseWait bounds how long a stopping consumer spends handing back the
// events it fetched ahead.
const releaseWait = time.Second

// release naks the events the iterator fetched ahead and no handler took,
// as the consumer stops, so another process on the same durable gets them
// now rather than once their AckWait has run out (30 s by default, on
// every event of up to a buffer and a batch, at every deploy).
func release(ctx context.Context, it jetstream.MessagesContext) {
	it.Drain()
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), releaseWait)
	defer cancel()
	for {
		msg, err := it.Next(jetstream.NextContext(ctx))
		if err != nil {
			return
		}
		_ = msg.Nak()
	}
}

// endsIterator reports whether err, from the message iterator, means
// that it will deliver nothing more.
func endsIterator(err error) bool {
	return errors.Is(err, jetstream.ErrMsgIteratorClosed) ||
		errors.Is(err, jetstream.ErrConsumerDeleted) ||
		errors.Is(err, jetstream.ErrConsumerNotFound)
}

// pullFailed handles an error of the message iterator: it returns the
// errors that end the iterator, and logs the others (missed heartbeats and
// the like), after which the iterator re-issues its pull requests by
// itself.
func (c *consumer) pullFailed(ctx context.Context, err error) error {
	if endsIterator(err) {
		return err
	}
	if errors.Is(err, jetstream.ErrNoHeartbeat) && c.cons != nil {
		// The server may have lost the durable while this client was
		// away (restarted without its store, the consumer deleted): the
		// iterator never says so, its pulls going unanswered, and the
		// consumer stopped for good without a word. Asked, the server
		// says.
		ictx, cancel := context.WithTimeout(ctx, pullExpiry)
		_, ierr := c.cons.Info(ictx)
		cancel()
		if errors.Is(ierr, jetstream.ErrConsumerNotFound) || errors.Is(ierr, jetstream.ErrStreamNotFound) {
			return fmt.Errorf("pull: heartbeats missed and the consumer is gone: %w", ierr)
		}
	}
	c.log.DebugContext(ctx, "events: pull", "err", err)
	return nil
}

// pulled is what one call of the message iterator's Next returned.
type pulled struct {
	msg jetstream.Msg
	err error
}

// runBatches is run's loop for ConsumeBatch. A goroutine pulls messages
// into a channel that holds one batch less one, so the loop can take
// every message already delivered without waiting for one more.
func (c *consumer) runBatches(ctx context.Context, it jetstream.MessagesContext) error {
	parent := ctx
	ctx, cancel := context.WithCancel(ctx)
	in := make(chan pulled, MaxBatch-1)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			msg, err := it.Next(jetstream.NextContext(ctx))
			if ctx.Err() != nil {
				if err == nil {
					_ = msg.Nak()
				}
				return
			}
			if err == nil && c.unwanted(msg) {
				continue
			}
			select {
			case in <- pulled{msg, err}:
			case <-ctx.Done():
				if err == nil {
					_ = msg.Nak()
				}
				return
			}
			if err != nil && endsIterator(err) {
				return
			}
		}
	}()
	batch := make([]jetstream.Msg, 0, MaxBatch)
	defer func() {
		cancel()
		<-done
		// Stopping: what was pulled and not handled goes back at once.
		close(in)
		for p := range in {
			if p.err == nil {
				_ = p.msg.Nak()
			}
		}
		release(parent, it)
	}()
	var lastStart time.Time
	linger := time.NewTimer(0)
	defer linger.Stop()
	for {
		var p pulled
		select {
		case <-ctx.Done():
			return nil
		case p = <-in:
		}
		if p.err != nil {
			if err := c.pullFailed(ctx, p.err); err != nil {
				return err
			}
			continue
		}
		batch = append(batch[:0], p.msg)
		// Busy: let more events gather, up to a full batch.
		var wait <-chan time.Time
		if d := c.cfg.Linger - time.Since(lastStart); d > 0 {
			resetTimer(linger, d)
			wait = linger.C
		}
		var failed error
	more:
		for len(batch) < MaxBatch {
			var q pulled
			select {
			case q = <-in:
			default:
				if wait == nil {
					break more
				}
				select {
				case q = <-in:
				case <-wait:
					wait = nil
					continue
				case <-ctx.Done():
					for _, msg := range batch {
						_ = msg.Nak()
					}
					return nil
				}
			}
			if q.err != nil {
				failed = q.err
				break
			}
			batch = append(batch, q.msg)
		}
		lastStart = time.Now()
		// Handlers get the caller's context, which ends only when the
		// consumer stops, as with Consume.
		if len(batch) == 1 {
			c.process(parent, batch[0])
		} else {
			c.processAll(parent, batch)
		}
		if failed != nil {
			if err := c.pullFailed(ctx, failed); err != nil {
				return err
			}
		}
	}
}

// tracerName names the spans of event handling. The tracer is looked up
// as a consumer starts, not at package init: otel's global hands the first
// provider set to a tracer taken before it for good, so a provider
// Installed later (a test's, say) would never see the spans.
const tracerName = "github.com/duetkit/duet/kit/events"

// process runs the handler on one message and acks or naks it.
func (c *consumer) process(ctx context.Context, msg jetstream.Msg) {
	m := c.message(msg)
	hctx, span := c.span(ctx, msg, m)
	defer span.End()
	c.settle(ctx, hctx, span, msg, m, c.call(hctx, m))
}

// processAll runs the batch handler on msgs and acks them all, or falls
// back to process for each when it fails.
func (c *consumer) processAll(ctx context.Context, msgs []jetstream.Msg) {
	ms := make([]Message, len(msgs))
	for i, msg := range msgs {
		ms[i] = c.message(msg)
	}
	err := c.callAll(ctx, ms)
	if err != nil {
		if ctx.Err() != nil {
			for _, msg := range msgs {
				_ = msg.Nak()
			}
			return
		}
		c.log.DebugContext(ctx, "events: batch handler failed; handling the events one by one", "events", len(msgs), "err", err)
		for _, msg := range msgs {
			c.process(ctx, msg)
		}
		return
	}
	for i, msg := range msgs {
		hctx, span := c.span(ctx, msg, ms[i])
		c.settle(ctx, hctx, span, msg, ms[i], nil)
		span.End()
	}
}

// span starts the span of handling m. Without an exporter it starts none,
// as kit/server records none (a span recorded to be dropped costs CPU for
// nothing), and returns a span of no one's to end: the handler's context
// carries the event's trace (or the consumer's context's), or a new one so
// that its log lines name a trace.
func (c *consumer) span(ctx context.Context, msg jetstream.Msg, m Message) (context.Context, trace.Span) {
	ctx = m.Context(ctx)
	if !tracing.Exporting() {
		return tracing.NewTrace(ctx), noop.Span{}
	}
	return c.tracer.Start(ctx, "process "+m.Subject,
		trace.WithSpanKind(trace.SpanKindConsumer),
		trace.WithAttributes(
			attribute.String("messaging.system", "nats"),
			attribute.String("messaging.destination.name", msg.Subject()),
			attribute.String("messaging.message.id", m.ID),
			attribute.String("messaging.consumer.group.name", c.cfg.Durable),
		))
}

// settle acks msg when err is nil, and naks it for a delayed redelivery
// otherwise.
func (c *consumer) settle(ctx, hctx context.Context, span trace.Span, msg jetstream.Msg, m Message, err error) {
	if err == nil {
		if aerr := msg.Ack(); aerr != nil {
			// Redelivered after AckWait; Once keeps the effect single.
			c.log.WarnContext(hctx, "events: ack", "event_id", m.ID, "err", aerr)
		}
		return
	}
	span.RecordError(err)
	span.SetStatus(codes.Error, "handler failed")
	if IsPermanent(err) {
		c.log.ErrorContext(hctx, "events: handler rejected the event for good; terminating it",
			"event_id", m.ID, "subject", m.Subject, "delivery", m.NumDelivered, "err", err)
		// Term, not TermWithReason: servers before 2.10.4 ignore the
		// latter, and the reason is in the log line above.
		if terr := msg.Term(); terr != nil {
			// Redelivered after AckWait, to be rejected again.
			c.log.WarnContext(hctx, "events: term", "event_id", m.ID, "err", terr)
		}
		return
	}
	if c.cfg.MaxDeliver > 0 && m.NumDelivered >= uint64(c.cfg.MaxDeliver) {
		// Whatever the cause, a stop included: JetStream delivers it
		// no more.
		c.log.ErrorContext(hctx, "events: handler failed on the last delivery; the event is dropped for this consumer",
			"event_id", m.ID, "subject", m.Subject, "delivery", m.NumDelivered, "err", err)
		_ = msg.Nak()
		return
	}
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

// callAll runs the batch handler, turning a panic into an error.
func (c *consumer) callAll(ctx context.Context, ms []Message) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("batch handler panicked: %v", p)
		}
	}()
	return c.handleAll(ctx, ms)
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

// MaxIDLen is the longest Nats-Msg-Id a Message keeps as its ID: ids are
// stored and echoed (in page tokens, say), and a Relay's are 36 bytes.
const MaxIDLen = 128

// text makes a header value storable text: broken UTF-8 becomes U+FFFD
// and NULs are dropped.
func text(s string) string {
	return strings.ReplaceAll(strings.ToValidUTF8(s, "\uFFFD"), "\x00", "")
}

// message converts a JetStream delivery into a Message.
func (c *consumer) message(msg jetstream.Msg) Message {
	h := msg.Headers()
	m := Message{
		Type:        text(h.Get(HeaderEventType)),
		Subject:     text(c.bus.relative(msg.Subject())),
		AggregateID: text(h.Get(HeaderAggregateID)),
		Data:        msg.Data(),
		Header:      h,
	}
	if id := h.Get(HeaderMsgID); len(id) <= MaxIDLen && text(id) == id {
		m.ID = id
	}
	if rid := h.Get(HeaderRequestID); requestid.Valid(rid) {
		m.RequestID = rid
	}
	if t, err := time.Parse(time.RFC3339Nano, h.Get(HeaderOccurTime)); err == nil {
		m.OccurTime = t
	}
	if md, err := msg.Metadata(); err == nil {
		m.NumDelivered = md.NumDelivered
		if m.ID == "" {
			// Published without a usable id (not by a Relay): the
			// stream sequence still identifies it uniquely.
			m.ID = fmt.Sprintf("%s:%d", c.bus.Stream, md.Sequence.Stream)
		}
	}
	return m
}
