// Package system assembles Duet's components — the user, payment,
// inventory, order and notification services, the REST gateway and the
// event bus — and runs them, all in one process (Start) or one per process
// (Serve). Both paths build each component the same way: a kit/server on
// its own listener, kit/client connections to its peers, so an embedded run
// exercises the same gRPC hops as a distributed one.
package system

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"google.golang.org/grpc"
	"google.golang.org/grpc/test/bufconn"

	"github.com/duetkit/duet/gateway"
	"github.com/duetkit/duet/kit/access"
	"github.com/duetkit/duet/kit/authn"
	"github.com/duetkit/duet/kit/authz"
	"github.com/duetkit/duet/kit/client"
	"github.com/duetkit/duet/kit/events"
	"github.com/duetkit/duet/kit/metrics"
	"github.com/duetkit/duet/kit/mtls"
	"github.com/duetkit/duet/kit/server"
	"github.com/duetkit/duet/services/inventory"
	"github.com/duetkit/duet/services/notification"
	"github.com/duetkit/duet/services/order"
	"github.com/duetkit/duet/services/payment"
	"github.com/duetkit/duet/services/user"
)

// Component names, as used by `duet serve`.
const (
	User         = "user"
	Order        = "order"
	Payment      = "payment"
	Inventory    = "inventory"
	Notification = "notification"
	Gateway      = "gateway"
)

// Components lists what `duet serve` accepts.
var Components = []string{User, Order, Payment, Inventory, Notification, Gateway}

// Config describes an embedded system. Zero fields take defaults; an
// address of "127.0.0.1:0" picks a free port.
type Config struct {
	// DataDir holds each service's SQLite file and the embedded NATS
	// server's JetStream store; default ".duet".
	DataDir string
	// HTTPAddr is the gateway's listen address; default 127.0.0.1:8080.
	HTTPAddr string
	// UserAddr, OrderAddr, PaymentAddr, InventoryAddr and NotificationAddr
	// are the services' gRPC listen addresses; defaults 127.0.0.1:9091 to :9095.
	UserAddr, OrderAddr, PaymentAddr, InventoryAddr, NotificationAddr string
	// UserDB, OrderDB, PaymentDB, InventoryDB and NotificationDB override the
	// database URLs, for example with postgres:// URLs; default a SQLite
	// file per service in DataDir.
	UserDB, OrderDB, PaymentDB, InventoryDB, NotificationDB string
	// NATSURL names an external NATS server or cluster; empty runs one
	// embedded in the process, with its store under DataDir.
	NATSURL string
	// Bus names the JetStream stream and subject prefix; zero means
	// events.BusConfig's defaults. Tests sharing a NATS server set their own.
	Bus events.BusConfig
	// Saga tunes the order saga (retry bound, backoff); zero means defaults.
	Saga order.SagaConfig
	// ImportRetention is how long the inventory service remembers stock
	// imports' ids (inventory.Config.ImportRetention); zero means its
	// default, negative for ever.
	ImportRetention time.Duration
	// TrustTraceContext makes the gateway continue its callers' traces
	// (gateway.Config.TrustTraceContext).
	TrustTraceContext bool
	// CORSOrigins are the origins whose browser pages may call the
	// gateway (gateway.Config.CORSOrigins).
	CORSOrigins []string
	// Auth checks end users' JSON Web Tokens (kit/authn) when its
	// KeysFile is set, as ServeConfig.Auth does for `duet serve`: every
	// service asks every call for a good token but health checks and,
	// without one, the public methods (signing up, the catalogue), its
	// permissions (kit/authz) decide whose data a token reaches, and the
	// gateway checks tokens before its calls leave. The order saga's
	// calls, over in-memory connections that name it (inprocCreds), need
	// none. Start sets Public, TrustedPeers, PeerNames and Logger.
	Auth authn.Config
	// DrainTimeout bounds graceful shutdown of each component.
	DrainTimeout time.Duration
	// Logger receives every component's logs; nil means slog.Default().
	Logger *slog.Logger

	// notServingDelay is ServeConfig.NotServingDelay, for Serve's one
	// service: Start's services stop one after another, and would each
	// wait it.
	notServingDelay time.Duration
}

// Defaults for Config.
const (
	DefaultDataDir          = ".duet"
	DefaultHTTPAddr         = "127.0.0.1:8080"
	DefaultUserAddr         = "127.0.0.1:9091"
	DefaultOrderAddr        = "127.0.0.1:9092"
	DefaultPaymentAddr      = "127.0.0.1:9093"
	DefaultInventoryAddr    = "127.0.0.1:9094"
	DefaultNotificationAddr = "127.0.0.1:9095"
)

func (c Config) withDefaults() Config {
	def := func(v *string, d string) {
		if *v == "" {
			*v = d
		}
	}
	def(&c.DataDir, DefaultDataDir)
	def(&c.HTTPAddr, DefaultHTTPAddr)
	def(&c.UserAddr, DefaultUserAddr)
	def(&c.OrderAddr, DefaultOrderAddr)
	def(&c.PaymentAddr, DefaultPaymentAddr)
	def(&c.InventoryAddr, DefaultInventoryAddr)
	def(&c.NotificationAddr, DefaultNotificationAddr)
	def(&c.UserDB, SQLiteURL(c.DataDir, User))
	def(&c.OrderDB, SQLiteURL(c.DataDir, Order))
	def(&c.PaymentDB, SQLiteURL(c.DataDir, Payment))
	def(&c.InventoryDB, SQLiteURL(c.DataDir, Inventory))
	def(&c.NotificationDB, SQLiteURL(c.DataDir, Notification))
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return c
}

// SQLiteURL is the default database of service under dataDir.
func SQLiteURL(dataDir, service string) string {
	return "sqlite:" + filepath.Join(dataDir, service+".db")
}

// System is a running embedded system.
type System struct {
	// HTTPAddr and the *Addr fields are the bound addresses.
	HTTPAddr, UserAddr, OrderAddr, PaymentAddr, InventoryAddr, NotificationAddr string
	// NATSURL is the URL of the embedded NATS server when it listens, or
	// the external server's with its credentials redacted (it is shown).
	NATSURL string

	log      *slog.Logger
	http     *http.Server
	httpDone chan error
	// services in start order; stopped in reverse so callers drain first.
	services []*running
	conns    []*grpc.ClientConn
	nc       *nats.Conn
	nats     *events.Server
	// tls, when not nil, is Serve's mutual TLS: its server asks callers
	// for certificates and its connections to peers present one.
	tls *mtls.Credentials
	// access, when not nil, is Serve's policy of who may call what.
	access *access.Policy
	// authn, when not nil, checks end users' tokens on Serve's service,
	// or on every service of Start's.
	authn *authn.Verifier
	// permissions, when authn is set, are each service's rules: whose
	// data the tokens authn checked reach.
	permissions map[string]*authz.Permissions
	// inprocCreds, when set (Start with Auth), are the in-memory
	// connections' credentials, which name their callers.
	inprocCreds bool
	// edge, when not nil, is authn on the gateway (Serve's, or Start's):
	// dial and dialInproc give its connections to the services the
	// client interceptors that check the tokens the gateway passes on.
	// Shutdown closes it as authn.
	edge *authn.Verifier
	// notServingDelay is the longest of the services' NotServingDelay
	// (Serve's one service's), which Shutdown waits before they drain.
	notServingDelay time.Duration
}

// running is one gRPC component being served.
type running struct {
	name   string
	srv    *server.Server
	closer interface{ Close() error }
	// served receives the result of Serve on each listener.
	served []chan error
	// inproc is the in-memory listener the other components of this
	// process reach the service on, made by their first dialInproc.
	inproc *bufconn.Listener
}

// Start runs every component in this process and returns once all of them
// accept calls. On error, whatever had started is stopped again.
func Start(ctx context.Context, cfg Config) (_ *System, err error) {
	cfg = cfg.withDefaults()
	s := &System{log: cfg.Logger}
	defer func() {
		if err != nil {
			s.Shutdown(context.WithoutCancel(ctx))
		}
	}()
	// The key set first: a file missing is an error before anything
	// is made.
	if cfg.Auth.KeysFile != "" {
		// One verifier for every service and the gateway: the public
		// methods are named in full, so their union is each one's.
		auth := cfg.Auth
		auth.Public = everyPublicMethod()
		auth.TrustedPeers = []string{Order}
		auth.PeerNames = inprocPeerNames
		auth.Logger = cfg.Logger
		if s.authn, err = authn.Load(ctx, auth); err != nil {
			return nil, err
		}
		s.edge = s.authn
		s.inprocCreds = true
		if err := s.permit(cfg.Logger, User, Payment, Inventory, Notification, Order); err != nil {
			return nil, err
		}
	}
	if err := os.MkdirAll(cfg.DataDir, 0o755); err != nil {
		return nil, fmt.Errorf("data dir: %w", err)
	}

	bus, err := s.openBus(ctx, cfg.NATSURL, filepath.Join(cfg.DataDir, "nats"), cfg.Bus)
	if err != nil {
		return nil, err
	}
	users, err := user.Open(ctx, user.Config{DatabaseURL: cfg.UserDB, Logger: cfg.Logger, Bus: bus})
	if err != nil {
		return nil, fmt.Errorf("user: %w", err)
	}
	if s.UserAddr, err = s.serve(User, cfg, cfg.UserAddr, users); err != nil {
		return nil, err
	}
	payments, err := payment.Open(ctx, payment.Config{DatabaseURL: cfg.PaymentDB, Logger: cfg.Logger, Bus: bus})
	if err != nil {
		return nil, fmt.Errorf("payment: %w", err)
	}
	if s.PaymentAddr, err = s.serve(Payment, cfg, cfg.PaymentAddr, payments); err != nil {
		return nil, err
	}
	stock, err := inventory.Open(ctx, inventory.Config{DatabaseURL: cfg.InventoryDB, ImportRetention: cfg.ImportRetention, Logger: cfg.Logger})
	if err != nil {
		return nil, fmt.Errorf("inventory: %w", err)
	}
	if s.InventoryAddr, err = s.serve(Inventory, cfg, cfg.InventoryAddr, stock); err != nil {
		return nil, err
	}
	notes, err := notification.Open(ctx, notification.Config{DatabaseURL: cfg.NotificationDB, Logger: cfg.Logger, Bus: bus})
	if err != nil {
		return nil, fmt.Errorf("notification: %w", err)
	}
	if s.NotificationAddr, err = s.serve(Notification, cfg, cfg.NotificationAddr, notes); err != nil {
		return nil, err
	}

	// The gateway's connections, and without tokens the saga's too; with
	// them the saga has its own, which name it, and the gateway's check
	// the tokens they pass on (dialInproc).
	userConn, err := s.dialInproc(User, "")
	if err != nil {
		return nil, err
	}
	paymentConn, err := s.dialInproc(Payment, "")
	if err != nil {
		return nil, err
	}
	inventoryConn, err := s.dialInproc(Inventory, "")
	if err != nil {
		return nil, err
	}
	notificationConn, err := s.dialInproc(Notification, "")
	if err != nil {
		return nil, err
	}
	sagaUsers, sagaPayments, sagaInventory := userConn, paymentConn, inventoryConn
	if s.inprocCreds {
		if sagaUsers, err = s.dialInproc(User, Order); err != nil {
			return nil, err
		}
		if sagaPayments, err = s.dialInproc(Payment, Order); err != nil {
			return nil, err
		}
		if sagaInventory, err = s.dialInproc(Inventory, Order); err != nil {
			return nil, err
		}
	}
	orders, err := order.Open(ctx, order.Config{
		DatabaseURL: cfg.OrderDB,
		Logger:      cfg.Logger,
		Users:       sagaUsers,
		Payments:    sagaPayments,
		Inventory:   sagaInventory,
		Bus:         bus,
		Saga:        cfg.Saga,
	})
	if err != nil {
		return nil, fmt.Errorf("order: %w", err)
	}
	if s.OrderAddr, err = s.serve(Order, cfg, cfg.OrderAddr, orders); err != nil {
		return nil, err
	}
	orderConn, err := s.dialInproc(Order, "")
	if err != nil {
		return nil, err
	}

	gcfg := gateway.Config{
		Users: userConn, Orders: orderConn, Payments: paymentConn,
		Inventory: inventoryConn, Notifications: notificationConn,
		Logger:            cfg.Logger.With("service", Gateway),
		TrustTraceContext: cfg.TrustTraceContext,
		CORSOrigins:       cfg.CORSOrigins,
	}
	if s.edge != nil {
		gcfg.Tokens = &gateway.Tokens{Public: everyPublicMethod()}
	}
	gw, err := gateway.New(ctx, gcfg)
	if err != nil {
		return nil, err
	}
	lis, err := net.Listen("tcp", cfg.HTTPAddr)
	if err != nil {
		return nil, fmt.Errorf("gateway listen: %w", err)
	}
	s.HTTPAddr = lis.Addr().String()
	s.http = HTTPServer(gw, s.HTTPAddr, metrics.Default().Handler())
	s.httpDone = make(chan error, 1)
	go func() { s.httpDone <- s.http.Serve(lis) }()
	return s, nil
}

// permit compiles the permissions of components (kit/authz).
func (s *System) permit(log *slog.Logger, components ...string) error {
	if s.permissions == nil {
		s.permissions = map[string]*authz.Permissions{}
	}
	for _, c := range components {
		p, err := authz.New(authz.Config{Rules: permissions[c], Logger: log})
		if err != nil {
			return err
		}
		s.permissions[c] = p
	}
	return nil
}

// openBus connects to the NATS server at url, or starts one embedded in
// the process (in-process connections only, store under dir) when url is
// empty, and opens the event stream.
func (s *System) openBus(ctx context.Context, url, dir string, cfg events.BusConfig) (*events.Bus, error) {
	var err error
	if url == "" {
		if s.nats, err = events.StartServer(events.ServerConfig{Dir: dir, Logger: s.log}); err != nil {
			return nil, fmt.Errorf("embedded nats: %w", err)
		}
		s.nc, err = s.nats.Connect("duet")
	} else {
		s.NATSURL = events.RedactURL(url)
		s.nc, err = events.Connect(url, "duet")
	}
	if err != nil {
		return nil, fmt.Errorf("nats: %w", err)
	}
	bus, err := events.OpenBus(ctx, s.nc, cfg)
	if err != nil {
		return nil, fmt.Errorf("event stream: %w", err)
	}
	return bus, nil
}

// HTTPServer returns the gateway's server with GET /metrics served by prom
// beside the API (nil: the gateway's 404). Every other request goes to the
// gateway as sent: an http.ServeMux in front would answer a path it cleans
// (/v1//users, /v1/users/./x) with a redirect, not the gateway's JSON
// error.
func HTTPServer(gw *gateway.Gateway, addr string, prom http.Handler) *http.Server {
	srv := gw.Server(addr)
	if prom == nil {
		return srv
	}
	srv.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/metrics" && (r.Method == http.MethodGet || r.Method == http.MethodHead) {
			prom.ServeHTTP(w, r)
			return
		}
		gw.ServeHTTP(w, r)
	})
	return srv
}

// service is what every service package's Open returns.
type service interface {
	Register(grpc.ServiceRegistrar)
	Close() error
}

// MaxRequestSize bounds one message a service receives, in bytes. The
// largest valid request is a few kilobytes (an order's 100 lines), but
// a message is decoded whole before its rules are checked, and decoding
// allocates up to fifty times its size (a line item of two bytes on the
// wire is a struct and a pointer): grpc-go's default of 4 MiB let one
// call hold some 200 MB. Twice the gateway's body bound (256 KiB), so
// what a REST body becomes (no larger than its JSON but for a few bytes)
// still reaches the service's own rules, and an answer with the field at
// fault (a bound under the gateway's made such a body a 500).
const MaxRequestSize = 2 * gateway.DefaultMaxBodyBytes

func (s *System) serve(name string, cfg Config, addr string, svc service) (string, error) {
	scfg := server.Config{
		Name: name, Logger: cfg.Logger.With("service", name), DrainTimeout: cfg.DrainTimeout,
		NotServingDelay: cfg.notServingDelay, MaxRecvMsgSize: MaxRequestSize,
	}
	if s.tls != nil {
		scfg.Creds = s.tls.Server()
	}
	if s.access != nil {
		scfg.Authorizer = s.access
	}
	if s.authn != nil {
		scfg.Authenticator = s.authn
	}
	if p := s.permissions[name]; p != nil {
		scfg.Permissions = p
	}
	if s.inprocCreds {
		scfg.Creds = inprocCreds{} // reads the names of in-memory callers; TCP stays plaintext
	}
	srv, err := server.New(scfg)
	if err != nil {
		svc.Close()
		return "", err
	}
	svc.Register(srv)
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		svc.Close()
		return "", fmt.Errorf("%s listen: %w", name, err)
	}
	r := &running{name: name, srv: srv, closer: svc}
	r.serve(lis)
	s.services = append(s.services, r)
	s.notServingDelay = max(s.notServingDelay, cfg.notServingDelay)
	return lis.Addr().String(), nil
}

// serve serves r on lis until Shutdown.
func (r *running) serve(lis net.Listener) {
	done := make(chan error, 1)
	r.served = append(r.served, done)
	go func() { done <- r.srv.Serve(lis) }()
}

// inprocBuffer is the size of each direction's buffer of an in-process
// connection: room for HTTP/2's initial windows, as a socket's buffer.
const inprocBuffer = 256 << 10

// peerConfig is how the gateway and the order saga call the services. Both
// give every call its deadline (the gateway its RequestTimeout, 15 s by
// default, the saga its CallTimeout), so the connections add none: kit/
// client's default of 10 s in the service config cut a REST call waiting
// for its order at 10 s, whatever the gateway's timeout said.
var peerConfig = client.Config{Timeout: -1}

// dial connects to target over the network (`duet serve`'s components
// reach each other this way), checking end users' tokens on the way out
// when s.edge is set (the gateway's).
func (s *System) dial(target string) (*grpc.ClientConn, error) {
	cfg := peerConfig
	if s.tls != nil {
		cfg.Creds = s.tls.Client()
	}
	if s.edge != nil {
		cfg.UnaryInterceptors = append(slices.Clone(cfg.UnaryInterceptors), s.edge.UnaryClientInterceptor())
		cfg.StreamInterceptors = append(slices.Clone(cfg.StreamInterceptors), s.edge.StreamClientInterceptor())
	}
	conn, err := client.New(target, cfg)
	if err != nil {
		return nil, err
	}
	s.conns = append(s.conns, conn)
	return conn, nil
}

// dialInproc connects to the component served as name, in this process.
//
// The gateway and the order saga reach the services over in-memory
// connections (grpc-go's bufconn) rather than loopback TCP: the same gRPC,
// HTTP/2 framing, interceptors, deadlines and retries, without the system
// calls and the kernel's TCP path: back to back on the bench, 5–12 % more
// orders/s and a lower latency at low load, no change for a small call
// through the gateway at C=64 (bench/README.md). The TCP listeners stay, for
// grpcurl and every client outside the process; `duet serve`, one
// component per process, uses TCP throughout.
//
// With tokens checked (Start's Config.Auth) the connection names its
// caller as (inprocCreds): the order saga's are "order", which the
// services trust to call without a token; a nameless one (the
// gateway's) checks the tokens it passes on before they leave, as
// `duet serve`'s gateway does.
func (s *System) dialInproc(name, as string) (*grpc.ClientConn, error) {
	var r *running
	for _, c := range s.services {
		if c.name == name {
			r = c
		}
	}
	if r == nil {
		return nil, fmt.Errorf("dial %s: not started", name)
	}
	if r.inproc == nil {
		r.inproc = bufconn.Listen(inprocBuffer)
		r.serve(inprocListener{r.inproc})
	}
	cfg := peerConfig
	cfg.Options = []grpc.DialOption{
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return r.inproc.DialContext(ctx) }),
	}
	if s.inprocCreds {
		cfg.Creds = inprocCreds{name: as}
		if as == "" && s.edge != nil {
			cfg.UnaryInterceptors = append(slices.Clone(cfg.UnaryInterceptors), s.edge.UnaryClientInterceptor())
			cfg.StreamInterceptors = append(slices.Clone(cfg.StreamInterceptors), s.edge.StreamClientInterceptor())
		}
	}
	conn, err := client.New("passthrough:///"+name, cfg)
	if err != nil {
		return nil, err
	}
	s.conns = append(s.conns, conn)
	return conn, nil
}

// Shutdown drains the system from the edge inwards: the gateway stops taking
// requests and finishes those in flight, then each service drains in the
// reverse of start order, so no caller outlives its callee; the event bus
// closes last, after every relay and consumer has stopped. CreateOrder
// calls waiting for their orders get half the time to ctx's deadline while
// the gateway drains (Start's system), or wait as ever through the
// services' NotServingDelay (Serve's), then are answered with the order as
// it is. It returns the errors met.
func (s *System) Shutdown(ctx context.Context) error {
	var errs []error
	// Long polls (the order service's waiting CreateOrder) never end on
	// their own, and are unary calls, which every graceful stop waits for:
	// the gateway's for a REST call waiting on one, a service's for its
	// own. Waiting its turn, a service's drain came after the gateway had
	// waited such a call out, for its whole request timeout and past
	// ctx's deadline. So the waits get half the time left to end as they
	// would (an order is usually decided in milliseconds, and its caller
	// then gets the outcome), and are then answered with the order as it
	// is. (Services end streams, subscriptions and watches themselves.)
	services := s.services // endWaits may run as the loop below clears s.services
	endWaits := sync.OnceFunc(func() {
		for _, r := range services {
			if d, ok := r.closer.(interface{ Drain() }); ok {
				d.Drain()
			}
		}
	})
	if s.http != nil {
		if deadline, ok := ctx.Deadline(); ok {
			t := time.AfterFunc(time.Until(deadline)/2, endWaits)
			defer t.Stop()
		}
		if err := s.http.Shutdown(ctx); err != nil {
			errs = append(errs, fmt.Errorf("gateway: %w", err))
			s.http.Close()
		}
		if err := <-s.httpDone; err != nil && !errors.Is(err, http.ErrServerClosed) {
			errs = append(errs, fmt.Errorf("gateway: %w", err))
		}
		s.http = nil
	}
	// With no gateway in front, or once it has stopped, the waits end as
	// the services' drain begins: after the NotServingDelay (Serve's),
	// through which they are served as ever.
	if s.notServingDelay > 0 {
		t := time.AfterFunc(s.notServingDelay, endWaits)
		defer t.Stop()
	} else {
		endWaits()
	}
	for i := len(s.services) - 1; i >= 0; i-- {
		r := s.services[i]
		r.srv.Shutdown(ctx)
		for _, done := range r.served {
			if err := <-done; err != nil {
				errs = append(errs, fmt.Errorf("%s: %w", r.name, err))
			}
		}
		if err := r.closer.Close(); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", r.name, err))
		}
	}
	s.services = nil
	for _, c := range s.conns {
		c.Close()
	}
	s.conns = nil
	if s.nc != nil {
		s.nc.Close()
		s.nc = nil
	}
	if s.nats != nil {
		s.nats.Shutdown()
		s.nats = nil
	}
	if s.tls != nil {
		s.tls.Close()
		s.tls = nil
	}
	if s.access != nil {
		s.access.Close()
		s.access = nil
	}
	if s.authn != nil {
		s.authn.Close()
		s.authn, s.edge = nil, nil
	}
	return errors.Join(errs...)
}
