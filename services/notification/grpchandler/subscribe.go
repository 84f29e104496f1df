package grpchandler

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"

	notificationv1 "github.com/duetkit/duet/gen/duet/notification/v1"
	"github.com/duetkit/duet/kit/apierr"
)

// Subscription window sizes.
const (
	// DefaultMaxInFlight is the window when the subscription asks for 0.
	DefaultMaxInFlight = 10
	// MaxMaxInFlight is the largest window a subscription may ask for.
	MaxMaxInFlight = 100
)

// PollInterval is how often a subscription with room in its window reads
// the user's unacknowledged notifications without being woken. A
// replica's subscriptions are woken only by what that replica stores:
// another replica's notifications waited for a reconnect, or for the next
// one stored here, without this.
const PollInterval = 2 * time.Second

// Bounds on the subscriptions one server holds open. Each costs two
// goroutines, a timer, and a read of its user's unacknowledged
// notifications every PollInterval: without a bound, a client opening
// subscriptions in a loop (or a buggy one that never closes them) grows
// that cost, and the database's load, without end.
const (
	// MaxSubscriptionsPerUser bounds one user's (a browser tab or device
	// each, say).
	MaxSubscriptionsPerUser = 16
	// MaxSubscriptions bounds them all.
	MaxSubscriptions = 5000
)

// FirstMessageTimeout bounds how long Subscribe waits for the client's
// first message, the subscription: a stream opened and left silent held a
// goroutine for as long as its connection lived, counted by no bound.
const FirstMessageTimeout = 30 * time.Second

// ReadOutageLimit bounds how long a subscription stays open while every
// read of its user's notifications fails: past it (and up to a quarter
// more, drawn per session, so that sessions do not all end at once) the
// session ends with the last read's error, UNAVAILABLE with a retry delay
// for a database that is away, so that its client reconnects, to a
// replica that can read perhaps, and can tell its user, where the session
// used to stay open and silent for as long as the database was away.
const ReadOutageLimit = time.Minute

// readOutageLimit is ReadOutageLimit, a variable for tests.
var readOutageLimit = ReadOutageLimit

// ReasonSubscribeTimeout is the reason of the DEADLINE_EXCEEDED a Subscribe
// ends with when no subscription came within FirstMessageTimeout.
const ReasonSubscribeTimeout = "SUBSCRIBE_TIMEOUT"

// firstMessageTimeout is FirstMessageTimeout, a variable for tests.
var firstMessageTimeout = FirstMessageTimeout

// ReasonTooManySubscriptions is the reason of the RESOURCE_EXHAUSTED a
// Subscribe past MaxSubscriptionsPerUser or MaxSubscriptions ends with.
const ReasonTooManySubscriptions = "TOO_MANY_SUBSCRIPTIONS"

type subscribeStream = grpc.BidiStreamingServer[notificationv1.SubscribeRequest, notificationv1.SubscribeResponse]

// Subscribe runs one subscription session.
//
// The client's first message must be a Subscription (INVALID_ARGUMENT
// otherwise, and for a second one later), sent within FirstMessageTimeout
// (DEADLINE_EXCEEDED, reason ReasonSubscribeTimeout, otherwise). A user with
// MaxSubscriptionsPerUser subscriptions open on this server, or a server
// with MaxSubscriptions, gets RESOURCE_EXHAUSTED, reason
// ReasonTooManySubscriptions (with a retry delay for the latter). The
// server then sends the user's unacknowledged notifications oldest first,
// and new ones as the consumer stores them (within PollInterval when
// another replica's consumer stored them), with at most max_in_flight
// sent and not yet acked: the rest
// stay in the database until acks free the window, so a slow client costs
// the server a bounded amount of memory, never a growing queue. What was
// sent and not acked is sent again on the next subscription. A session
// whose reads fail waits for the next poll to read again (its first read
// failing ends it), and ends with UNAVAILABLE once they have failed for
// ReadOutageLimit.
//
// An ack marks the notification acknowledged in the database before it
// frees its slot. Acks of unknown ids, of other users' notifications and
// repeated acks are ignored (see domain.Service.Ack). A client may half-close
// its side: it then receives what fits in the window and no more.
//
// Two goroutines serve a session: this one, which alone sends, and a
// receiver, which alone receives. Both end when the client cancels or
// disconnects, and when the server shuts down (kit/server ends the stream
// with UNAVAILABLE SHUTTING_DOWN, so the client subscribes again and gets
// its unacknowledged notifications there).
func (h *Handler) Subscribe(stream subscribeStream) error {
	ctx := stream.Context()
	first, err := firstMessage(ctx, stream)
	if errors.Is(err, io.EOF) {
		return errFirstMessage
	}
	if err != nil {
		return h.streamError(ctx, err)
	}
	sub := first.GetSubscribe()
	if sub == nil {
		return errFirstMessage
	}
	userID := sub.GetUserId()
	window := int(sub.GetMaxInFlight())
	switch {
	case window == 0:
		window = DefaultMaxInFlight
	case window < 0 || window > MaxMaxInFlight:
		// protovalidate already refuses these; this guards servers
		// running without it.
		return apierr.InvalidField("subscribe.max_in_flight", "must be between 0 and 100")
	}

	if err := h.subs.Take(userID); err != nil {
		return h.subs.Status(err, ReasonTooManySubscriptions, "subscriptions", "user")
	}
	defer h.subs.Release(userID)

	// Watch before the first query, so a notification stored in between
	// wakes the loop instead of being missed.
	wake, stopWatch := h.svc.Watch(userID)
	defer stopWatch()

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	// acks is unbuffered: the receiver hands over one ack at a time, and
	// waits (so stops reading, so HTTP/2 flow control slows the client)
	// while this goroutine is busy sending.
	acks := make(chan string)
	// received carries the receiver's single final result.
	received := make(chan error, 1)
	go h.receive(ctx, stream, userID, acks, received)

	var (
		inFlight = make(map[string]struct{}, window)
		dirty    = true  // the database may hold something to send
		more     = false // the last query filled the window: more may wait behind it
		// read: a read of the user's notifications has succeeded in
		// this session; failing: the last one failed, and every one
		// since failingSince.
		read, failing = false, false
		failingSince  time.Time
	)
	// Each session's own bound, up to a quarter over readOutageLimit:
	// sessions whose reads began failing together would otherwise end,
	// and their clients reconnect, together.
	outageLimit := readOutageLimit + rand.N(max(readOutageLimit/4, 0)+1)
	poll := time.NewTicker(PollInterval)
	defer poll.Stop()
	for {
		if dirty && len(inFlight) < window {
			dirty = false
			// The window's worth of oldest unacked: those in flight are
			// among them or older ones are, so whatever is not in flight
			// is next to send.
			pending, err := h.svc.Unacked(ctx, userID, window)
			switch {
			case err != nil && read:
				// The database down a moment: the next poll reads
				// again, whether a poll, a store or an ack woke this
				// read. Ending every subscription within a poll of an
				// outage would have their clients all reconnect at
				// once; only a session's first read failing ends it.
				// The first failure of a run is logged: the session
				// itself goes quiet until reads work again, for
				// readOutageLimit at most.
				if !failing {
					h.log.WarnContext(ctx, "notification subscription: reading unacknowledged notifications failed; reading again at the next poll",
						"user_id", userID, "error", err)
					failingSince = time.Now()
				} else if time.Since(failingSince) >= outageLimit {
					// Ended as the error it is (logged, and UNAVAILABLE
					// with a retry delay for a database that is away,
					// INTERNAL otherwise), never with its text.
					return h.streamError(ctx, err)
				}
				failing, pending = true, nil
			case err != nil:
				return h.streamError(ctx, err)
			default:
				read, failing = true, false
			}
			more = len(pending) == window
			for _, n := range pending {
				if len(inFlight) == window {
					break
				}
				if _, ok := inFlight[n.ID]; ok {
					continue
				}
				if err := stream.Send(&notificationv1.SubscribeResponse{Notification: toProto(n)}); err != nil {
					return h.streamError(ctx, err)
				}
				inFlight[n.ID] = struct{}{}
			}
		}
		select {
		case <-ctx.Done():
			return h.streamError(ctx, ctx.Err())
		case <-wake:
			dirty = true
		case <-poll.C:
			dirty = true
		case id := <-acks:
			if _, ok := inFlight[id]; ok {
				delete(inFlight, id)
				if more {
					dirty = true
				}
			}
		case err := <-received:
			if err != nil {
				return err
			}
			received = nil // half-closed: keep sending into the window
		}
	}
}

// firstMessage receives the stream's first message, waiting at most
// firstMessageTimeout. On a timeout the receive goroutine is left blocked
// until Subscribe returns, which ends the stream and with it the receive.
func firstMessage(ctx context.Context, stream subscribeStream) (*notificationv1.SubscribeRequest, error) {
	type result struct {
		msg *notificationv1.SubscribeRequest
		err error
	}
	got := make(chan result, 1)
	go func() {
		msg, err := stream.Recv()
		got <- result{msg, err}
	}()
	wait := firstMessageTimeout
	timer := time.NewTimer(wait)
	defer timer.Stop()
	select {
	case r := <-got:
		return r.msg, r.err
	case <-timer.C:
		return nil, apierr.New(codes.DeadlineExceeded, ReasonSubscribeTimeout,
			fmt.Sprintf("no subscription within %v of opening the stream", wait))
	case <-ctx.Done():
		r := <-got // ends with the stream's context, with its status
		return r.msg, r.err
	}
}

var errFirstMessage = apierr.InvalidField("subscribe", "the first message of a Subscribe stream must be a subscription")

// receive reads the client's messages until the stream ends, records each
// ack and hands its id to the sending loop. It reports io.EOF as nil and
// anything else as a status error on received, exactly once.
func (h *Handler) receive(ctx context.Context, stream subscribeStream, userID string, acks chan<- string, received chan<- error) {
	for {
		req, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			received <- nil
			return
		}
		if err != nil {
			received <- h.streamError(ctx, err)
			return
		}
		ack := req.GetAck()
		if ack == nil {
			received <- apierr.InvalidField("subscribe", "a stream subscribes once, with its first message")
			return
		}
		if err := h.svc.Ack(ctx, userID, ack.GetNotificationId()); err != nil {
			received <- h.streamError(ctx, err)
			return
		}
		select {
		case acks <- ack.GetNotificationId():
		case <-ctx.Done():
			received <- nil // the sending loop is ending for its own reason
			return
		}
	}
}

// streamError maps err for a stream: status errors (from validation, or the
// transport) pass through, the rest go through error.
func (h *Handler) streamError(ctx context.Context, err error) error {
	if _, ok := apierr.As(err); ok {
		return err
	}
	if code := apierr.Code(err); code != codes.Unknown && code != codes.OK {
		return err
	}
	return h.error(ctx, err)
}
