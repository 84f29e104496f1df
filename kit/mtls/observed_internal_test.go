package mtls

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"golang.org/x/time/rate"
	"google.golang.org/grpc/credentials"

	"github.com/duetkit/duet/internal/logbuffer"
)

// value reads a counter.
func value(t *testing.T, c prometheus.Counter) float64 {
	t.Helper()
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		t.Fatal(err)
	}
	return m.GetCounter().GetValue()
}

// failing is credentials whose handshakes fail with err.
type failing struct {
	credentials.TransportCredentials
	err error
}

func (f failing) ServerHandshake(net.Conn) (net.Conn, credentials.AuthInfo, error) {
	return nil, nil, f.err
}

func (f failing) ClientHandshake(context.Context, string, net.Conn) (net.Conn, credentials.AuthInfo, error) {
	return nil, nil, f.err
}

func (f failing) Clone() credentials.TransportCredentials { return f }

// handshakeLines counts the failed-handshake lines of log.
func handshakeLines(log *logbuffer.Buffer) int {
	return strings.Count(log.String(), "handshake failed")
}

// TestObserved: every failed handshake is counted and the first three
// logged; a caller's silent close (a server's io.EOF) and a client's
// attempt given up are neither; a clone counts with its original.
func TestObserved(t *testing.T) {
	newObserved := func(side string, err error) (*observed, prometheus.Counter, *logbuffer.Buffer) {
		counter := prometheus.NewCounter(prometheus.CounterOpts{Name: "test"})
		log := &logbuffer.Buffer{}
		return &observed{TransportCredentials: failing{err: err}, side: side, failures: counter,
			log: slog.New(slog.NewTextHandler(log, nil)), sometimes: &rate.Sometimes{First: 3, Interval: time.Hour}}, counter, log
	}
	conn, peer := net.Pipe()
	defer conn.Close()
	defer peer.Close()
	refused := errors.New("tls: bad certificate")

	server, counter, log := newObserved("server", refused)
	for range 5 {
		server.ServerHandshake(conn)
	}
	server.Clone().ServerHandshake(conn)
	if n := value(t, counter); n != 6 || handshakeLines(log) != 3 {
		t.Errorf("six refusals: counted %v, logged %d; want 6 and 3", n, handshakeLines(log))
	}

	silent, counter, log := newObserved("server", io.EOF)
	silent.ServerHandshake(conn)
	if n := value(t, counter); n != 0 || handshakeLines(log) != 0 {
		t.Errorf("a silent close: counted %v, logged %d; want neither", n, handshakeLines(log))
	}

	client, counter, _ := newObserved("client", refused)
	gone, cancel := context.WithCancel(t.Context())
	cancel()
	client.ClientHandshake(gone, "user:9091", conn)
	client.ClientHandshake(t.Context(), "user:9091", conn)
	if n := value(t, counter); n != 1 {
		t.Errorf("a client's refusal and an attempt given up: counted %v, want 1", n)
	}
}
