package events

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	neturl "net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
)

// ServerConfig configures an embedded NATS server.
type ServerConfig struct {
	// Dir holds the JetStream store; events survive restarts with the same Dir.
	Dir string
	// Listen is the client address, for example "127.0.0.1:4233", or
	// "127.0.0.1:0" for a free port. Empty means no listener at all:
	// only this process connects, in process (Server.Connect).
	Listen string
	// Logger receives the server's warnings and errors (its notices at
	// debug level); nil means slog.Default().
	Logger *slog.Logger
}

// readyTimeout bounds how long StartServer waits for the server to accept
// clients; a server that needs longer is broken.
const readyTimeout = 30 * time.Second

// Server is an embedded nats-server with JetStream.
type Server struct {
	ns        *server.Server
	listening bool
	// lock holds the store directory (lockStore) until Shutdown.
	lock *os.File
}

// StartServer starts an embedded nats-server with JetStream storing under
// cfg.Dir and returns once it accepts clients. A store directory in use by
// another process's server is refused.
func StartServer(cfg ServerConfig) (_ *Server, err error) {
	if cfg.Dir == "" {
		return nil, errors.New("events: embedded NATS needs a store directory")
	}
	lock, err := lockStore(cfg.Dir)
	if err != nil {
		return nil, err
	}
	defer func() {
		if err != nil && lock != nil {
			lock.Close()
		}
	}()
	opts := &server.Options{
		ServerName: "duet-embedded",
		JetStream:  true,
		StoreDir:   cfg.Dir,
		NoSigs:     true, // the process owns its signals, not the embedded server
		NoLog:      true,
		// No HTTP monitoring, cluster, gateway or leaf listeners either:
		// they are off unless configured.
	}
	if cfg.Listen == "" {
		opts.DontListen = true
	} else {
		host, portStr, err := net.SplitHostPort(cfg.Listen)
		if err != nil {
			return nil, fmt.Errorf("events: NATS listen address %q: %w", cfg.Listen, err)
		}
		port, err := strconv.Atoi(portStr)
		if err != nil || port < 0 || port > 65535 {
			return nil, fmt.Errorf("events: NATS listen address %q: bad port", cfg.Listen)
		}
		if port == 0 {
			// nats-server reads 0 as "the default port, 4222".
			port = server.RANDOM_PORT
		}
		opts.Host, opts.Port = host, port
	}
	ns, err := server.NewServer(opts)
	if err != nil {
		return nil, fmt.Errorf("events: embedded NATS: %w", err)
	}
	// NoLog above keeps nats-server's own logger off; this one takes its
	// place, so a JetStream error (a full disk, a damaged store) is in
	// the process's log rather than nowhere.
	logger := cfg.Logger
	if logger == nil {
		logger = slog.Default()
	}
	ns.SetLogger(natsLog{logger.With("component", "nats")}, false, false)
	ns.Start()
	if !ns.ReadyForConnections(readyTimeout) {
		ns.Shutdown()
		ns.WaitForShutdown()
		return nil, errors.New("events: embedded NATS did not become ready")
	}
	if !ns.JetStreamEnabled() {
		ns.Shutdown()
		ns.WaitForShutdown()
		return nil, errors.New("events: embedded NATS started without JetStream")
	}
	return &Server{ns: ns, listening: cfg.Listen != "", lock: lock}, nil
}

// natsLog writes an embedded nats-server's log lines to slog: notices at
// debug level (a start alone prints a dozen), warnings as warnings, errors
// and fatal errors as errors. Fatal does not exit: the process owns that.
type natsLog struct{ l *slog.Logger }

func (n natsLog) log(level slog.Level, format string, v []any) {
	ctx := context.Background() // nats-server's calls carry none
	if n.l.Enabled(ctx, level) {
		n.l.Log(ctx, level, "nats-server: "+fmt.Sprintf(format, v...))
	}
}

func (n natsLog) Noticef(format string, v ...any) { n.log(slog.LevelDebug, format, v) }
func (n natsLog) Warnf(format string, v ...any)   { n.log(slog.LevelWarn, format, v) }
func (n natsLog) Fatalf(format string, v ...any)  { n.log(slog.LevelError, format, v) }
func (n natsLog) Errorf(format string, v ...any)  { n.log(slog.LevelError, format, v) }
func (n natsLog) Debugf(format string, v ...any)  { n.log(slog.LevelDebug, format, v) }
func (n natsLog) Tracef(format string, v ...any)  { n.log(slog.LevelDebug, format, v) }

// ClientURL is the URL clients in other processes connect to, or "" when
// the server does not listen.
func (s *Server) ClientURL() string {
	if !s.listening {
		return ""
	}
	return s.ns.ClientURL()
}

// Connect opens a client connection named name: in process when the server
// does not listen, else through ClientURL; either way with Connect's
// reconnect policy.
func (s *Server) Connect(name string) (*nats.Conn, error) {
	if !s.listening {
		// Reconnecting as Connect does: the server can close a connection
		// it still serves (a client too slow to read, missed pings, an
		// operator's kick), and nats.go reconnects in process. Without
		// it, that one close cut every service of the process off the
		// bus for good, outboxes filling and health still SERVING.
		nc, err := nats.Connect("", append(reconnectPolicy(), nats.Name(name), nats.InProcessServer(s.ns))...)
		if err != nil {
			return nil, fmt.Errorf("events: connect in process: %w", err)
		}
		return nc, nil
	}
	return Connect(s.ClientURL(), name)
}

// Shutdown stops the server and waits until it has; clients see a
// disconnect. The store stays in Dir for the next StartServer.
func (s *Server) Shutdown() {
	s.ns.Shutdown()
	s.ns.WaitForShutdown()
	if s.lock != nil {
		s.lock.Close()
		s.lock = nil
	}
}

// Reconnect backoff for Connect.
const (
	reconnectMin = 100 * time.Millisecond
	reconnectMax = 5 * time.Second
)

// Connect connects to the NATS server or cluster at url (comma-separated
// for several), naming the connection name. Once connected it reconnects
// forever, with exponential backoff up to five seconds, so a NATS restart
// never leaves a service disconnected; the first connection attempt fails
// fast. opts come after Connect's own (TLS, credentials).
func Connect(url, name string, opts ...nats.Option) (*nats.Conn, error) {
	nc, err := nats.Connect(url, append(append(reconnectPolicy(), nats.Name(name)), opts...)...)
	if err != nil {
		return nil, fmt.Errorf("events: connect to NATS at %s: %w", RedactURL(url), err)
	}
	return nc, nil
}

// reconnectPolicy is how a connection from Connect or Server.Connect
// comes back: for ever, after 100 ms doubling up to five seconds.
func reconnectPolicy() []nats.Option {
	return []nats.Option{
		nats.MaxReconnects(-1),
		nats.CustomReconnectDelay(func(attempts int) time.Duration {
			d := reconnectMin
			for i := 1; i < attempts && d < reconnectMax; i++ {
				d *= 2
			}
			return min(d, reconnectMax)
		}),
	}
}

// RedactURL returns url (comma-separated for several servers) fit for a
// log or a banner: a password becomes "xxxxx", and so does a user name
// given without one, which NATS takes as a token.
func RedactURL(url string) string {
	parts := strings.Split(url, ",")
	for i, p := range parts {
		p = strings.TrimSpace(p)
		if !strings.Contains(p, "://") {
			// nats.go takes "user:pass@host:port" and adds the scheme;
			// url.Parse would read "user" as the scheme.
			p = "nats://" + p
		}
		u, err := neturl.Parse(p)
		switch {
		case err != nil:
			// Unparsable: keep the scheme and host only if they can be
			// found, never what may be credentials.
			if at := strings.LastIndexByte(p, '@'); at >= 0 {
				parts[i] = "xxxxx" + p[at:]
			}
		case u.User == nil:
		case hasPassword(u.User):
			parts[i] = u.Redacted()
		default:
			u.User = neturl.User("xxxxx")
			parts[i] = u.String()
		}
	}
	return strings.Join(parts, ",")
}

func hasPassword(u *neturl.Userinfo) bool {
	_, ok := u.Password()
	return ok
}
