package system

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"slices"
	"strings"
	"time"

	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/nats-io/nats.go"
	"google.golang.org/grpc"

	"github.com/duetkit/duet/gateway"
	inventoryv1 "github.com/duetkit/duet/gen/duet/inventory/v1"
	userv1 "github.com/duetkit/duet/gen/duet/user/v1"
	"github.com/duetkit/duet/kit/access"
	"github.com/duetkit/duet/kit/authn"
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

// ServeConfig describes one component run on its own, as by `duet serve`.
type ServeConfig struct {
	// Listen is the component's address: gRPC for a service, HTTP for the
	// gateway. Required; ":port" listens on every interface.
	Listen string
	// DatabaseURL is the service's database: postgres://… or sqlite:PATH.
	// Empty means a SQLite file in DataDir.
	DatabaseURL string
	// DataDir holds the default SQLite file.
	DataDir string
	// UserTarget, OrderTarget, PaymentTarget, InventoryTarget and
	// NotificationTarget address the peers: "host:port", "dns:///name:port"
	// or another target CheckTarget accepts.
	UserTarget, OrderTarget, PaymentTarget, InventoryTarget, NotificationTarget string
	// NATSURL is the NATS server or cluster carrying events. Empty means no
	// bus: producers keep their events in their outbox (published once the
	// service runs with a NATS URL) and the notification service receives
	// nothing.
	NATSURL string
	// Bus names the JetStream stream and subject prefix; zero means defaults.
	Bus events.BusConfig
	// Saga tunes the order saga; zero means defaults.
	Saga order.SagaConfig
	// ImportRetention is how long the inventory service remembers stock
	// imports' ids; zero means its default, negative for
	// ever.
	ImportRetention time.Duration
	// TrustTraceContext makes the gateway continue its callers' traces
	// (gateway.Config.TrustTraceContext).
	TrustTraceContext bool
	// CORSOrigins are the origins whose browser pages may call the
	// gateway (gateway.Config.CORSOrigins).
	CORSOrigins []string
	// MetricsAddr, when set, serves /metrics, /healthz and /readyz over
	// HTTP on an address of its own: a service's from its gRPC health, the
	// gateway's as on its API port, which then no longer serves /metrics.
	// Empty: none for a service, /metrics beside the gateway's API.
	MetricsAddr string
	// DrainTimeout bounds graceful shutdown.
	DrainTimeout time.Duration
	// NotServingDelay is how long the component goes on serving once it
	// is told to stop, its readiness already reporting otherwise (a
	// service's grpc.health.v1 status NOT_SERVING and its /readyz 503,
	// the gateway's /readyz 503), before it drains: time for balancers
	// that poll readiness to take it out of rotation
	// (server.Config.NotServingDelay). Zero drains at once.
	NotServingDelay time.Duration
	// TLS names the certificate, key and CA files of mutual TLS between
	// components: the service asks every caller for a certificate the CA
	// signed, and connections to peers (and to NATS, for a NATSURL of
	// tls:// servers) present the component's own and check the peer's
	// against the CA and the address dialed. The files
	// are read again every TLS.Refresh, so certificates rotate without a
	// restart. Zero: plaintext gRPC. The gateway's HTTP API stays HTTP
	// (TLS for it ends at the load balancer or ingress in front).
	// (Its Use and Logger are set by Serve from the component.)
	TLS mtls.Config
	// AccessPolicy, for a service, names a gRPC authorization policy file
	// (kit/access): which callers' certificates may call which of its
	// methods, read again every TLS.Refresh. It needs TLS. Empty: any
	// caller the CA signed may call any method.
	AccessPolicy string
	// Auth checks end users' JSON Web Tokens (kit/authn) when its
	// KeysFile is set. A service: every call needs a good token but
	// health checks and, when they carry none, calls of
	// publicMethods[component] and of Auth.TrustedPeers (callers named by
	// their certificates, so with TLS), such as the order saga's; a token
	// sent is always checked, and the service's permissions (kit/authz)
	// decide whose data it reaches. The gateway: every call it passes on is
	// checked the same way before it leaves (its Authorization header),
	// so a bad token costs no service a hop; TrustedPeers is refused.
	// Serve sets its Public (replacing any given) and Logger. Zero: no
	// token is asked for.
	Auth authn.Config
	// Logger receives the component's logs.
	Logger *slog.Logger
	// Ready, when not nil, is called with the bound address once the
	// component accepts calls.
	Ready func(addr string)
}

// Serve runs one component until ctx is done, then drains it. It returns
// nil after a clean drain.
func Serve(ctx context.Context, component string, cfg ServeConfig) error {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.DataDir == "" {
		cfg.DataDir = DefaultDataDir
	}
	if err := cfg.Check(component); err != nil {
		return err
	}
	if cfg.DatabaseURL == "" && component != Gateway {
		if err := os.MkdirAll(cfg.DataDir, 0o755); err != nil {
			return fmt.Errorf("data dir: %w", err)
		}
		cfg.DatabaseURL = SQLiteURL(cfg.DataDir, component)
	}
	// Services name themselves in their logs; the gateway and kit server
	// lines get the component name here.
	log := cfg.Logger
	s := &System{log: log}
	if !cfg.TLS.IsZero() {
		tlsCfg := cfg.TLS
		tlsCfg.Logger = log.With("component", component)
		switch component {
		case Order:
			tlsCfg.Use = mtls.Serve | mtls.Call
		case Gateway:
			tlsCfg.Use = mtls.Call
		default:
			tlsCfg.Use = mtls.Serve
		}
		if usesNATS(component) && natsOverTLS(cfg.NATSURL) {
			tlsCfg.Use |= mtls.Call // it is NATS's client
		}
		var err error
		if s.tls, err = mtls.Load(ctx, tlsCfg); err != nil {
			return err
		}
	}
	if cfg.AccessPolicy != "" {
		var err error
		if s.access, err = access.Load(ctx, access.Config{PolicyFile: cfg.AccessPolicy, Refresh: cfg.TLS.Refresh, Logger: log.With("component", component)}); err != nil {
			s.Shutdown(context.WithoutCancel(ctx))
			return err
		}
	}

	if cfg.Auth.KeysFile != "" {
		auth := cfg.Auth
		auth.Public = publicMethods[component]
		if component == Gateway {
			// It checks the calls it passes on to every service.
			auth.Public = everyPublicMethod()
		}
		auth.Logger = log.With("component", component)
		var err error
		if s.authn, err = authn.Load(ctx, auth); err != nil {
			s.Shutdown(context.WithoutCancel(ctx))
			return err
		}
		if component != Gateway {
			// Whose data a token reaches is the services' to decide,
			// where the data is.
			if err := s.permit(auth.Logger, component); err != nil {
				s.Shutdown(context.WithoutCancel(ctx))
				return err
			}
		}
	}

	var bus *events.Bus
	if cfg.NATSURL != "" && usesNATS(component) {
		var err error
		var opts []nats.Option
		if s.tls != nil && natsOverTLS(cfg.NATSURL) {
			// TLS 1.3 as between the components; Secure first, as
			// ClientTLSConfig keeps a configuration set before it.
			opts = append(opts, nats.Secure(&tls.Config{MinVersion: tls.VersionTLS13}),
				nats.ClientTLSConfig(s.tls.Certificate, s.tls.Roots))
		}
		if s.nc, err = events.Connect(cfg.NATSURL, "duet-"+component, opts...); err != nil {
			s.Shutdown(context.WithoutCancel(ctx))
			return fmt.Errorf("nats: %w", err)
		}
		if bus, err = events.OpenBus(ctx, s.nc, cfg.Bus); err != nil {
			s.Shutdown(context.WithoutCancel(ctx))
			return fmt.Errorf("event stream: %w", err)
		}
	} else if usesNATS(component) {
		log.Warn("no --nats-url: events stay in the outbox until the service runs with one", "component", component)
	}

	var svc service
	var err error
	switch component {
	case User:
		svc, err = user.Open(ctx, user.Config{DatabaseURL: cfg.DatabaseURL, Logger: log, Bus: bus})
	case Payment:
		svc, err = payment.Open(ctx, payment.Config{DatabaseURL: cfg.DatabaseURL, Logger: log, Bus: bus})
	case Inventory:
		svc, err = inventory.Open(ctx, inventory.Config{DatabaseURL: cfg.DatabaseURL, ImportRetention: cfg.ImportRetention, Logger: log})
	case Notification:
		svc, err = notification.Open(ctx, notification.Config{DatabaseURL: cfg.DatabaseURL, Logger: log, Bus: bus})
	case Order:
		var conns [3]*grpc.ClientConn
		for i, target := range []string{cfg.UserTarget, cfg.PaymentTarget, cfg.InventoryTarget} {
			if conns[i], err = s.dial(target); err != nil {
				s.Shutdown(context.WithoutCancel(ctx))
				return err
			}
		}
		svc, err = order.Open(ctx, order.Config{
			DatabaseURL: cfg.DatabaseURL, Logger: log,
			Users: conns[0], Payments: conns[1], Inventory: conns[2],
			Bus: bus, Saga: cfg.Saga,
		})
	case Gateway:
		s.edge = s.authn // checks the calls it passes on
		return serveGateway(ctx, s, cfg, log.With("service", Gateway))
	}
	if err != nil {
		s.Shutdown(context.WithoutCancel(ctx))
		return fmt.Errorf("%s: %w", component, err)
	}
	// The metrics listener first: once the service serves, its Shutdown
	// waits the NotServingDelay, which a process that failed to start
	// should not.
	var metricsLis net.Listener
	if cfg.MetricsAddr != "" {
		if metricsLis, err = net.Listen("tcp", cfg.MetricsAddr); err != nil {
			svc.Close()
			s.Shutdown(context.WithoutCancel(ctx))
			return fmt.Errorf("metrics listen: %w", err)
		}
	}
	addr, err := s.serve(component, Config{Logger: log, DrainTimeout: cfg.DrainTimeout, notServingDelay: cfg.NotServingDelay}, cfg.Listen, svc)
	if err != nil {
		if metricsLis != nil {
			metricsLis.Close()
		}
		s.Shutdown(context.WithoutCancel(ctx))
		return err
	}
	var metricsSrv *http.Server
	var metricsAddr string
	if metricsLis != nil {
		metricsSrv, metricsAddr = serveMetrics(metricsLis, healthProbes(s.services[0].srv))
	}
	log.Info("serving", "component", component, "grpc", addr, "metrics", metricsAddr, "mutual_tls", s.tls != nil, "access_policy", cfg.AccessPolicy,
		"end_user_tokens", s.authn != nil)
	if cfg.Ready != nil {
		cfg.Ready(addr)
	}
	<-ctx.Done()
	log.Info("draining", "not_serving_delay", cfg.NotServingDelay)
	stop, cancel := context.WithTimeout(context.WithoutCancel(ctx), cfg.NotServingDelay+drainBound(cfg.DrainTimeout))
	defer cancel()
	// The metrics listener last: its /readyz answers 503 through the
	// NotServingDelay, which balancers are polling for.
	err = s.Shutdown(stop)
	if metricsSrv != nil {
		metricsSrv.Shutdown(stop)
	}
	return err
}

// publicMethods are the methods of each service that a call may reach
// without an end user's token when tokens are checked (ServeConfig.Auth):
// signing up and reading the catalogue.
var publicMethods = map[string][]string{
	User:      {userv1.UserService_CreateUser_FullMethodName},
	Inventory: {inventoryv1.InventoryService_GetProduct_FullMethodName, inventoryv1.InventoryService_ListProducts_FullMethodName},
}

// everyPublicMethod is publicMethods of every service, for the gateway,
// which passes calls on to them all.
func everyPublicMethod() []string {
	var all []string
	for _, methods := range publicMethods {
		all = append(all, methods...)
	}
	slices.Sort(all)
	return all
}

// OpenAPI returns the REST API's OpenAPI document as the gateway of every
// service serves it (`duet up`, or a `duet serve gateway` given every
// target), validation rules included; tokens: as it serves it when it
// checks end users' tokens, which every call but the public methods'
// needs.
func OpenAPI(tokens bool) ([]byte, error) {
	var t *gateway.Tokens
	if tokens {
		t = &gateway.Tokens{Public: everyPublicMethod()}
	}
	return gateway.Document(gateway.Services(), t)
}

// usesNATS reports whether component publishes or consumes events.
func usesNATS(component string) bool {
	return component != Gateway && component != Inventory
}

// natsOverTLS reports whether nats.go connects to url over TLS: when any
// server of the comma-separated list is tls:// or wss://, it takes TLS
// for all of them, and Serve connects with the component's certificate
// and CA when it has them. (A nats:// server that demands TLS gets it
// too, without them: give such servers as tls://.)
func natsOverTLS(url string) bool {
	for _, u := range strings.Split(url, ",") {
		u = strings.ToLower(strings.TrimSpace(u))
		if strings.HasPrefix(u, "tls://") || strings.HasPrefix(u, "wss://") {
			return true
		}
	}
	return false
}

// Check refuses what Serve cannot run component with, before anything is
// created or opened (Serve calls it first; a deployment's test may too):
// an unknown component, no address to listen on (""
// would listen on every interface, on a port chosen at random), an
// access policy or trusted certificate names where no caller has a
// certificate to be known by, trusted names the gateway's certificate
// carries, and peers missing or given as targets nothing could dial.
func (cfg ServeConfig) Check(component string) error {
	if !slices.Contains(Components, component) {
		return fmt.Errorf("unknown component %q (want one of %v)", component, Components)
	}
	if cfg.Listen == "" {
		return errors.New("--listen: an address is required (host:port; \":port\" for every interface)")
	}
	switch {
	case cfg.AccessPolicy != "" && component == Gateway:
		return errors.New("--access-policy is for services: the gateway serves HTTP")
	case cfg.AccessPolicy != "" && cfg.TLS.IsZero():
		return errors.New("--access-policy needs mutual TLS (--tls-cert, --tls-key, --tls-ca): callers are known by their certificates")
	case len(cfg.Auth.TrustedPeers) > 0 && component == Gateway:
		return errors.New("--auth-trusted is for services: the gateway's callers are REST clients, known by their tokens alone")
	case cfg.Auth.KeysFile == "" && (cfg.Auth.Issuer != "" || len(cfg.Auth.TrustedPeers) > 0):
		return errors.New("--auth-issuer and --auth-trusted need --auth-keys, the issuer's key set")
	}
	for _, name := range cfg.Auth.TrustedPeers {
		// Names every certificate of duet certs carries, or the
		// gateway's: its calls without a token would pass as trusted.
		// (A name of the gateway's own certificate under another
		// spelling, a SPIFFE id or a DNS name, only the operator knows.)
		if strings.EqualFold(name, Gateway) || strings.EqualFold(name, "localhost") || name == "127.0.0.1" || name == "::1" {
			return fmt.Errorf("--auth-trusted must not name %q: the gateway's certificate carries it, and its calls without a token would pass as trusted", name)
		}
	}
	if len(cfg.Auth.TrustedPeers) > 0 && cfg.TLS.IsZero() {
		return errors.New("--auth-trusted needs mutual TLS (--tls-cert, --tls-key, --tls-ca): callers are known by their certificates")
	}
	type peer struct{ flag, target string }
	peers := []peer{{"user-target", cfg.UserTarget}, {"payment-target", cfg.PaymentTarget}, {"inventory-target", cfg.InventoryTarget}}
	switch component {
	case Order:
		if cfg.UserTarget == "" || cfg.PaymentTarget == "" || cfg.InventoryTarget == "" {
			return errors.New("order needs --user-target, --payment-target and --inventory-target")
		}
	case Gateway:
		if cfg.UserTarget == "" || cfg.OrderTarget == "" || cfg.PaymentTarget == "" {
			return errors.New("gateway needs --user-target, --order-target and --payment-target")
		}
		peers = append(peers, peer{"order-target", cfg.OrderTarget}, peer{"notification-target", cfg.NotificationTarget})
	default:
		return nil // dials no peer
	}
	for _, p := range peers {
		if p.target == "" {
			continue // an optional peer (the gateway's inventory and notifications)
		}
		if err := CheckTarget(p.flag, p.target); err != nil {
			return err
		}
	}
	return nil
}

// drainBound is how long a whole shutdown may take: the server's own drain
// bound plus time to close stores and connections.
func drainBound(d time.Duration) time.Duration {
	if d <= 0 {
		d = server.DefaultDrain
	}
	return d + 5*time.Second
}

func serveGateway(ctx context.Context, s *System, cfg ServeConfig, log *slog.Logger) error {
	defer s.Shutdown(context.WithoutCancel(ctx))
	// With a metrics address, /metrics leaves the public API's port.
	var metricsLis net.Listener
	if cfg.MetricsAddr != "" {
		var err error
		if metricsLis, err = net.Listen("tcp", cfg.MetricsAddr); err != nil {
			return fmt.Errorf("metrics listen: %w", err)
		}
		defer metricsLis.Close() // until serveMetrics takes it
	}
	userConn, err := s.dial(cfg.UserTarget)
	if err != nil {
		return err
	}
	orderConn, err := s.dial(cfg.OrderTarget)
	if err != nil {
		return err
	}
	paymentConn, err := s.dial(cfg.PaymentTarget)
	if err != nil {
		return err
	}
	gcfg := gateway.Config{Users: userConn, Orders: orderConn, Payments: paymentConn, Logger: log,
		TrustTraceContext: cfg.TrustTraceContext, CORSOrigins: cfg.CORSOrigins}
	if s.edge != nil {
		gcfg.Tokens = &gateway.Tokens{Public: everyPublicMethod()}
	}
	if cfg.InventoryTarget != "" {
		if gcfg.Inventory, err = s.dial(cfg.InventoryTarget); err != nil {
			return err
		}
	}
	if cfg.NotificationTarget != "" {
		if gcfg.Notifications, err = s.dial(cfg.NotificationTarget); err != nil {
			return err
		}
	}
	gw, err := gateway.New(ctx, gcfg)
	if err != nil {
		return err
	}
	lis, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return fmt.Errorf("gateway listen: %w", err)
	}
	s.HTTPAddr = lis.Addr().String()
	prom := metrics.Default().Handler()
	var metricsSrv *http.Server
	var metricsAddr string
	if metricsLis != nil {
		prom = nil
		metricsSrv, metricsAddr = serveMetrics(metricsLis, gw)
	}
	s.http = HTTPServer(gw, s.HTTPAddr, prom)
	s.httpDone = make(chan error, 1)
	go func() { s.httpDone <- s.http.Serve(lis) }()
	log.Info("serving", "component", Gateway, "http", s.HTTPAddr, "metrics", metricsAddr, "mutual_tls", s.tls != nil, "end_user_tokens", s.edge != nil)
	if cfg.Ready != nil {
		cfg.Ready(s.HTTPAddr)
	}
	<-ctx.Done()
	log.Info("draining", "not_serving_delay", cfg.NotServingDelay)
	// Not ready from now on, delay or not: with --metrics-addr, /readyz
	// there outlives the API's listener.
	gw.MarkNotReady()
	time.Sleep(cfg.NotServingDelay) // serving all the while
	stop, cancel := context.WithTimeout(context.WithoutCancel(ctx), drainBound(cfg.DrainTimeout))
	defer cancel()
	err = s.Shutdown(stop)
	if metricsSrv != nil {
		metricsSrv.Shutdown(stop)
	}
	return err
}

// serveMetrics exposes the process's Prometheus metrics over plain HTTP on
// lis, for scrapers, and /healthz and /readyz through probes, for
// orchestrators that do not speak gRPC.
func serveMetrics(lis net.Listener, probes http.Handler) (*http.Server, string) {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", metrics.Default().Handler())
	mux.Handle("GET /healthz", probes)
	mux.Handle("GET /readyz", probes)
	h := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second, ReadTimeout: 10 * time.Second, WriteTimeout: 30 * time.Second, IdleTimeout: time.Minute}
	go h.Serve(lis)
	return h, lis.Addr().String()
}

// healthProbes answers /healthz while the process serves HTTP and /readyz
// from srv's gRPC health status.
func healthProbes(srv *server.Server) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("ok\n")) })
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		resp, err := srv.Health().Check(r.Context(), &healthpb.HealthCheckRequest{})
		if err != nil || resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
			http.Error(w, "not serving", http.StatusServiceUnavailable)
			return
		}
		w.Write([]byte("ok\n"))
	})
	return mux
}
