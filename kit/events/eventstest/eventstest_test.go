package eventstest_test

import (
	"context"
	"errors"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/goleak"

	"github.com/duetkit/duet/kit/events"
	"github.com/duetkit/duet/kit/events/eventstest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestBuses(t *testing.T) {
	var external *events.Bus
	t.Run("inner", func(t *testing.T) {
		buses := eventstest.Buses(t)
		if _, ok := buses["embedded"]; !ok {
			t.Fatal("no embedded bus")
		}
		ext, ok := buses["external"]
		if ok != (os.Getenv(eventstest.NATSEnv) != "") {
			t.Fatalf("external bus present = %v, want it exactly when %s is set", ok, eventstest.NATSEnv)
		}
		for name, bus := range buses {
			if _, err := bus.JS.Stream(t.Context(), bus.Stream); err != nil {
				t.Errorf("%s: stream %s: %v", name, bus.Stream, err)
			}
		}
		if ok {
			if ext.Stream == events.DefaultStream || !strings.HasPrefix(ext.Prefix, "test") {
				t.Errorf("external bus %s/%s is not unique to the test", ext.Stream, ext.Prefix)
			}
			external = ext
		}
	})
	if external == nil {
		return
	}
	// The external stream is deleted when the test ends.
	nc, err := events.Connect(os.Getenv(eventstest.NATSEnv), t.Name())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := js.Stream(ctx, external.Stream); !errors.Is(err, jetstream.ErrStreamNotFound) {
		t.Errorf("stream %s after the test: %v, want not found", external.Stream, err)
	}
}

func TestMatrix(t *testing.T) {
	seen := map[string]bool{}
	eventstest.Matrix(t, func(t *testing.T, url string, bus *events.Bus) {
		if url == "" || bus == nil {
			t.Fatalf("url %q, bus %v", url, bus)
		}
		seen[t.Name()] = true
	})
	want := 1
	if os.Getenv(eventstest.NATSEnv) != "" {
		want *= 2
	}
	if os.Getenv("DUET_TEST_POSTGRES_URL") != "" {
		want *= 2
	}
	if len(seen) != want || !seen["TestMatrix/sqlite/embedded"] {
		t.Errorf("subtests %v, want %d including sqlite/embedded", seen, want)
	}
}

func TestCollect(t *testing.T) {
	eventstest.Run(t, func(t *testing.T, bus *events.Bus) {
		publish := func(subject, id string) {
			t.Helper()
			msg := &nats.Msg{Subject: bus.Subject(subject), Header: nats.Header{}}
			msg.Header.Set(events.HeaderMsgID, id)
			msg.Header.Set(events.HeaderAggregateID, id)
			if _, err := bus.JS.PublishMsg(t.Context(), msg); err != nil {
				t.Fatalf("publish %s: %v", subject, err)
			}
		}
		// Published before the collector starts: it reads from the start.
		publish("thing.made", "1")
		got := eventstest.Collect(t, bus, "thing.*")
		publish("other.made", "2") // not collected
		publish("thing.sold", "3")
		msgs := got.Wait(t, 2)
		var seen []string
		for _, m := range msgs {
			seen = append(seen, m.Subject+"/"+m.AggregateID)
		}
		if want := []string{"thing.made/1", "thing.sold/3"}; !slices.Equal(seen, want) {
			t.Errorf("collected %v, want %v", seen, want)
		}
	})
}
