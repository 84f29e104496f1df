package events_test

import (
	"context"
	"database/sql"
	"fmt"
	"log"
	"os"
	"time"

	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/duetkit/duet/kit/events"
	"github.com/duetkit/duet/kit/requestid"
	"github.com/duetkit/duet/kit/sqldb"
)

// Example appends an event in the same transaction as a state change,
// relays it through an embedded NATS server, and consumes it once.
func Example() {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	dir, err := os.MkdirTemp("", "events-example")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)

	// NATS in process, JetStream files under dir.
	srv, err := events.StartServer(events.ServerConfig{Dir: dir})
	if err != nil {
		log.Fatal(err)
	}
	defer srv.Shutdown()
	nc, err := srv.Connect("example")
	if err != nil {
		log.Fatal(err)
	}
	defer nc.Close()
	bus, err := events.OpenBus(ctx, nc, events.BusConfig{})
	if err != nil {
		log.Fatal(err)
	}

	// The service's database, with the outbox and inbox tables.
	db, err := sqldb.Open(ctx, "sqlite::memory:", nil)
	if err != nil {
		log.Fatal(err)
	}
	defer db.Close()
	if err := events.Migrate(ctx, db); err != nil {
		log.Fatal(err)
	}
	if _, err := db.ExecContext(ctx, "CREATE TABLE greetings (name TEXT)"); err != nil {
		log.Fatal(err)
	}

	// Producer: the change and its event commit together.
	relay := events.NewRelay(db, bus, events.RelayConfig{})
	relayDone := make(chan error, 1)
	relayCtx, stopRelay := context.WithCancel(ctx)
	go func() { relayDone <- relay.Run(relayCtx) }()

	reqCtx := requestid.NewContext(ctx, "req-1")
	err = db.InTx(reqCtx, func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(reqCtx, "INSERT INTO greetings (name) VALUES (?)", "Ada"); err != nil {
			return err
		}
		_, err := events.Append(reqCtx, tx, db.Dialect, events.Event{
			Subject: "greeting.created", AggregateID: "Ada", Message: wrapperspb.String("hello, Ada"),
		})
		return err
	})
	if err != nil {
		log.Fatal(err)
	}
	relay.Notify()

	// Consumer: the effect and the inbox record commit together, so a
	// redelivery is skipped. The purge forgets inbox records once
	// JetStream can no longer deliver their events (8 days by default).
	stopPurge := events.StartInboxPurge(ctx, db, events.InboxConfig{})
	defer stopPurge()
	got := make(chan string, 1)
	consumeCtx, stopConsumer := context.WithCancel(ctx)
	consumeDone := make(chan error, 1)
	go func() {
		consumeDone <- events.Consume(consumeCtx, bus, events.ConsumerConfig{Durable: "printer", Subjects: []string{"greeting.*"}},
			func(ctx context.Context, m events.Message) error {
				var text wrapperspb.StringValue
				if err := m.Unmarshal(&text); err != nil {
					return err
				}
				return db.InTx(ctx, func(tx *sql.Tx) error {
					first, err := events.Once(ctx, tx, db.Dialect, "printer", m.ID)
					if err != nil || !first {
						return err
					}
					got <- fmt.Sprintf("%s %s %q (request %s)", m.Subject, m.AggregateID, text.GetValue(), requestid.FromContext(ctx))
					return nil
				})
			})
	}()
	select {
	case line := <-got:
		fmt.Println(line)
	case <-ctx.Done():
		log.Fatal("no event")
	}

	stopConsumer()
	stopRelay()
	<-consumeDone
	<-relayDone
	// Output: greeting.created Ada "hello, Ada" (request req-1)
}
