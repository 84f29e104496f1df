// Package gateway is Duet's REST + JSON edge. It translates HTTP requests
// into gRPC calls on the user, order, payment, inventory and notification
// services (those it is given connections to) through grpc-gateway, over real client connections, so every REST call crosses the
// same server interceptors as a service-to-service call.
//
// Besides the generated routes it serves:
//
//	GET /openapi.json  the OpenAPI (Swagger 2.0) document of the REST API
//	GET /docs          a small self-contained page listing the operations
//	GET /healthz       200 while the process is alive
//	GET /readyz        200 only when every backend's grpc.health.v1 reports SERVING
//
// Browsers, and any Connect client, may call the same methods as the REST
// routes at their gRPC paths instead (POST /duet.user.v1.UserService/GetUser),
// in the Connect protocol or gRPC-Web (connect.go), and gRPC clients in
// gRPC, over HTTP/2 (h2c without TLS; Server).
//
// HEAD is answered on every GET route but the watches, as GET without the
// body. A 405 names the methods the path takes in its Allow header.
//
// Every response carries an X-Request-ID header (the caller's, when valid,
// or a new one), which is also sent to the backends as x-request-id
// metadata and written on every log line.
//
// Errors are JSON: {"code": 5, "status": "NOT_FOUND", "message": "...",
// "details": [...]}, with the HTTP status of the gRPC code, except that a
// declined payment (reason PAYMENT_DECLINED or INSUFFICIENT_FUNDS) is 402
// Payment Required, a known route's wrong method 405 (with Allow), an
// over-large body 413 and headers too large to forward as metadata 431.
package gateway

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"connectrpc.com/connect"
	connectcors "connectrpc.com/cors"
	"github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
	"github.com/rs/cors"
	"go.opentelemetry.io/contrib/instrumentation/net/http/otelhttp"
	"go.opentelemetry.io/otel/propagation"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"

	inventoryv1 "github.com/duetkit/duet/gen/duet/inventory/v1"
	notificationv1 "github.com/duetkit/duet/gen/duet/notification/v1"
	orderv1 "github.com/duetkit/duet/gen/duet/order/v1"
	paymentv1 "github.com/duetkit/duet/gen/duet/payment/v1"
	userv1 "github.com/duetkit/duet/gen/duet/user/v1"
	"github.com/duetkit/duet/kit/apierr"
	"github.com/duetkit/duet/kit/logger"
	"github.com/duetkit/duet/kit/tracing"
)

// Defaults used for zero fields of Config.
const (
	// DefaultMaxBodyBytes bounds request bodies. The largest valid request,
	// an order of 100 lines, is about 10 KB, and 57 KB with every
	// character \u-escaped and a price on every line. More is refused
	// before decoding: a JSON list of empty objects costs ~90 bytes of
	// allocation per byte of body on its way to the order service (decoded
	// at the gateway, encoded, decoded again) before any rule sees it is
	// too long: 94 MB for 1 MiB, the bound before; 11.5 MB for 128 KiB.
	DefaultMaxBodyBytes = 128 << 10
	// DefaultRequestTimeout is the deadline given to each API call; it
	// travels to the backends as the gRPC deadline.
	DefaultRequestTimeout = 15 * time.Second
	// DefaultReadyTimeout bounds a /readyz probe, so a hung backend makes
	// the gateway unready quickly instead of hanging the prober.
	DefaultReadyTimeout = time.Second
	// DefaultReadHeaderTimeout bounds reading request headers (Slowloris).
	DefaultReadHeaderTimeout = 5 * time.Second
	// DefaultReadTimeout bounds reading a whole request, body included.
	DefaultReadTimeout = 10 * time.Second
	// DefaultWriteTimeout bounds a request from the end of its headers to
	// the end of its response; it exceeds DefaultReadTimeout plus
	// DefaultRequestTimeout so a slow but legal call is never cut off, and
	// an unset WriteTimeout grows with longer ones (ReadTimeout plus
	// RequestTimeout plus 5 s).
	DefaultWriteTimeout = 30 * time.Second
	// DefaultIdleTimeout bounds how long a keep-alive connection waits for
	// its next request.
	DefaultIdleTimeout = 2 * time.Minute
	// DefaultMaxConnectionAge is how long a connection takes new requests
	// (Config.MaxConnectionAge), as kit/server's DefaultMaxConnectionAge
	// is a service's.
	DefaultMaxConnectionAge = 5 * time.Minute
	// DefaultMaxHeaderBytes bounds request headers; room for a bearer token
	// and tracing headers, far less than net/http's 1 MiB, and well under
	// what kit/server lets a call's metadata be (64 KiB, counting 32 bytes
	// a field): headers the gateway took must not make the backend refuse
	// the call, which the client would see as a 500. net/http reads 4 KiB
	// more than this before it answers 431 over HTTP/1.1; over HTTP/2 it
	// advertises this plus 320 bytes as the header list's limit, which
	// the client keeps to before it sends.
	DefaultMaxHeaderBytes = 32 << 10
	// MaxConcurrentStreams bounds the calls one HTTP/2 connection to the
	// gateway has open at once (net/http's default is 250; a service's
	// clients are the system's own, and kit/server allows them 10,000).
	// It also bounds the handlers a client that resets its streams keeps
	// running; a gRPC client queues its calls past it.
	MaxConcurrentStreams = 100
)

// Config configures a Gateway. Users, Orders and Payments are required;
// every other zero field takes its default.
type Config struct {
	// Users, Orders and Payments are the client connections to the
	// services, typically made by kit/client. The gateway does not close them.
	Users, Orders, Payments *grpc.ClientConn
	// Inventory and Notifications are optional connections: when set, their
	// routes are served and /readyz checks them too.
	Inventory, Notifications *grpc.ClientConn
	// Logger receives the access log and errors; nil means slog.Default().
	// Its handler is wrapped with kit/logger's unless it already is one, so
	// every line names its request id.
	Logger *slog.Logger
	// MaxBodyBytes bounds request bodies; larger ones get 413.
	MaxBodyBytes int64
	// RequestTimeout is the deadline of each API call.
	RequestTimeout time.Duration
	// ReadyTimeout bounds the backend health checks of /readyz.
	ReadyTimeout time.Duration
	// ReadHeaderTimeout, ReadTimeout, WriteTimeout, IdleTimeout and
	// MaxHeaderBytes set the fields of the same name of the http.Server
	// returned by Server.
	ReadHeaderTimeout, ReadTimeout, WriteTimeout, IdleTimeout time.Duration
	MaxHeaderBytes                                            int
	// MaxConnectionAge is how long a connection to the server from Server
	// takes new requests: past it (±10 %, so that connections made
	// together do not end together) the gateway's next answer on it
	// closes it: over HTTP/1.1 with Connection: close; over HTTP/2 with a
	// GOAWAY sent at once, the connection closed once its open calls (a
	// watch, say) end. Keep-alive and gRPC clients behind a load balancer
	// then reach replicas added since they connected, as a service's
	// clients do. An idle connection goes at IdleTimeout instead.
	// Default DefaultMaxConnectionAge; negative means for ever.
	MaxConnectionAge time.Duration
	// TrustTraceContext continues the trace a request's traceparent
	// names, with its baggage, for a gateway behind a proxy of one's own
	// that starts the traces. Off, the gateway is a public endpoint, with
	// or without an exporter: a request starts a trace of its own (linked
	// to the caller's when spans are recorded), and its baggage is
	// dropped, so a client can neither choose the trace ids the
	// services log under, nor mark its requests sampled, which a
	// parent-based sampler obeys, to have every span of every call
	// exported, nor send key-value pairs along to every service.
	TrustTraceContext bool
	// CORSOrigins are the origins whose browser pages may call the API
	// from another origin: "https://shop.example", a "*" as the host's
	// first label ("https://*.shop.example"), or "*" alone for any
	// origin. The gateway answers preflight requests (204, with the CORS
	// headers for these origins, Connect's and gRPC-Web's included) and
	// marks its answers, errors included, readable by them (with
	// X-Request-Id, Retry-After, Allow, WWW-Authenticate, and gRPC-Web's
	// Grpc-Status, Grpc-Message and Grpc-Status-Details-Bin), without
	// credentials: no cookies, which the API does not use. Empty, none: a
	// browser then lets only the gateway's own origin read its answers.
	CORSOrigins []string
	// Tokens, when not nil, says that calls need an end user's bearer
	// token (the services check them, and the gateway's connections
	// when given kit/authn's client interceptors): /openapi.json then
	// declares the Authorization header, required by every operation but
	// those of Tokens.Public, and the 401 and 403 answers, and /docs says
	// so. It documents; it checks nothing.
	Tokens *Tokens
}

// Tokens documents the end users' tokens calls need.
type Tokens struct {
	// Public lists the methods, by full name ("/pkg.Service/Method"),
	// that a call may reach without a token.
	Public []string
}

// corsMaxAge is how long, in seconds, a browser may keep a preflight's
// answer: fewer preflights, and a change of CORSOrigins reaches browsers
// within ten minutes.
const corsMaxAge = 600

// newCORS returns the CORS handling for origins, nil for none, or an
// error naming an origin no browser sends (it would never match): an
// origin is a scheme, http or https, and a host in ASCII, lower case or
// not, with a port only when not the scheme's default, nothing after;
// a wildcard only as the host's first label ("https://*.shop.example"),
// or "*" alone, for any origin, not mixed with others.
func newCORS(origins []string, trustTrace bool) (*cors.Cors, error) {
	if len(origins) == 0 {
		return nil, nil
	}
	for _, o := range origins {
		if err := checkOrigin(o, len(origins)); err != nil {
			return nil, fmt.Errorf("gateway: CORS origin %q: %w", o, err)
		}
	}
	// The trace headers a browser's OpenTelemetry instrumentation sends:
	// without TrustTraceContext the gateway only links to traceparent, so
	// allowing them costs nothing; baggage it reads only when trusting.
	headers := []string{"Content-Type", "Authorization", requestIDHeader, "Traceparent", "Tracestate"}
	if trustTrace {
		headers = append(headers, "Baggage")
	}
	// And those of Connect and gRPC-Web, whose answers carry their status
	// in headers of their own (connectcors lists both).
	for _, h := range connectcors.AllowedHeaders() {
		if !slices.Contains(headers, h) {
			headers = append(headers, h)
		}
	}
	return cors.New(cors.Options{
		AllowedOrigins: origins,
		// The methods of the contract's routes (HEAD is GET's); Connect
		// and gRPC-Web take GET and POST.
		AllowedMethods: []string{http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPatch},
		AllowedHeaders: headers,
		ExposedHeaders: append([]string{requestIDHeader, "Retry-After", "Allow", "WWW-Authenticate"}, connectcors.ExposedHeaders()...),
		MaxAge:         corsMaxAge,
	}), nil
}

// checkOrigin says what is wrong with origin o, one of n, as newCORS
// takes them.
func checkOrigin(o string, n int) error {
	if o == "*" {
		if n > 1 {
			return errors.New(`"*" allows any origin: give it alone`)
		}
		return nil
	}
	const shape = "want scheme://host[:port], http or https, an ASCII host, no default port, no path, a * only as the host's first label"
	plain := o
	if scheme, rest, ok := strings.Cut(o, "://*."); ok {
		plain = scheme + "://x." + rest
	}
	u, err := url.Parse(plain)
	if err != nil || strings.Contains(plain, "*") || (u.Scheme != "http" && u.Scheme != "https") ||
		!strings.EqualFold(plain, u.Scheme+"://"+u.Host) || u.Hostname() == "" {
		return errors.New(shape)
	}
	for _, r := range u.Host {
		if r > 127 {
			return errors.New(shape + " (a browser sends an international name in its xn-- form)")
		}
	}
	switch port := u.Port(); {
	case strings.HasSuffix(u.Host, ":"),
		u.Scheme == "https" && port == "443",
		u.Scheme == "http" && port == "80":
		return errors.New(shape + " (a browser leaves the default port out)")
	}
	return nil
}

// withDefaults returns cfg with its zero fields set to the defaults.
func (cfg Config) withDefaults() Config {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if _, ok := cfg.Logger.Handler().(*logger.Handler); !ok {
		cfg.Logger = slog.New(logger.NewHandler(cfg.Logger.Handler()))
	}
	setDefault(&cfg.MaxBodyBytes, DefaultMaxBodyBytes)
	setDefault(&cfg.RequestTimeout, DefaultRequestTimeout)
	setDefault(&cfg.ReadyTimeout, DefaultReadyTimeout)
	setDefault(&cfg.ReadHeaderTimeout, DefaultReadHeaderTimeout)
	setDefault(&cfg.ReadTimeout, DefaultReadTimeout)
	// The write timeout runs from the end of the headers: a call may take
	// ReadTimeout to arrive and RequestTimeout to answer, so a longer
	// RequestTimeout than the default's must not be cut off by the
	// default write timeout, with the work done and no answer sent.
	setDefault(&cfg.WriteTimeout, max(DefaultWriteTimeout, cfg.ReadTimeout+cfg.RequestTimeout+5*time.Second))
	setDefault(&cfg.IdleTimeout, DefaultIdleTimeout)
	setDefault(&cfg.MaxHeaderBytes, DefaultMaxHeaderBytes)
	if cfg.MaxConnectionAge == 0 {
		cfg.MaxConnectionAge = DefaultMaxConnectionAge
	}
	return cfg
}

func setDefault[T int | int64 | time.Duration](v *T, def T) {
	if *v <= 0 {
		*v = def
	}
}

// Gateway is the REST edge. It implements http.Handler; mount it at the
// root of a server (Server builds one with sensible timeouts).
type Gateway struct {
	cfg      Config
	log      *slog.Logger
	mux      *runtime.ServeMux
	backends []backend
	// openAPI is the OpenAPI document of the services configured; docs
	// the page rendered from it.
	openAPI, docs []byte
	// withRules is openAPI with the contract's validation rules written
	// in, made by the first request for it: protovalidate compiles the
	// request messages' rules to tell which fields are required, ~15 ms
	// that start-up need not wait for.
	withRules func() []byte
	// routes says which methods a path takes, for a 405's Allow.
	routes routeTable
	// entry is serve, inside otelhttp's middleware when spans are
	// exported: it starts each request's server span (continuing the
	// caller's traceparent), which serve then carries on.
	entry http.Handler
	// draining is done once Drain is called; endWatches does that.
	// lineWindow is how long each line of a watch may take to go out.
	lineWindow time.Duration
	draining   context.Context
	endWatches context.CancelFunc
	// notReady is set by MarkNotReady.
	notReady atomic.Bool
	// query says which query parameters each route takes.
	query queryFields
	// cors answers cross-origin requests; nil without CORSOrigins.
	cors *cors.Cors
	// procedures are the Connect and gRPC-Web handlers, by path.
	procedures procedures
}

// errDraining is the cause with which Drain cancels a watch.
var errDraining = errors.New("gateway: shutting down")

// Drain ends every open watch, and any that starts later, with a last
// line carrying UNAVAILABLE (reason apierr.ReasonShuttingDown, RetryInfo),
// so its client watches again elsewhere or after the restart. A watch
// lasts as long as its order's saga, so an http.Server's graceful Shutdown
// would otherwise wait for it to the end of its bound. The server from
// Server calls Drain when its Shutdown starts; call it yourself before
// Shutdown when serving the Gateway with another http.Server. Other
// requests are unaffected. Drain is idempotent.
func (g *Gateway) Drain() { g.endWatches() }

// New builds a Gateway forwarding to the connections in cfg. ctx is handed
// to grpc-gateway's registration; the routes stay valid after it ends.
func New(ctx context.Context, cfg Config) (*Gateway, error) {
	if cfg.Users == nil || cfg.Orders == nil || cfg.Payments == nil {
		return nil, errors.New("gateway: Config.Users, Config.Orders and Config.Payments are required")
	}
	// A watch's lines each get the write timeout as set, or the default:
	// not the one withDefaults grows for long calls, which would let a
	// client that stopped reading hold a watch that much longer.
	// Negative as zero, as withDefaults takes it: a negative window put
	// every line's deadline in the past, failing every watch.
	lineWindow := cfg.WriteTimeout
	setDefault(&lineWindow, DefaultWriteTimeout)
	cfg = cfg.withDefaults()
	draining, endWatches := context.WithCancel(context.Background())
	g := &Gateway{
		cfg:        cfg,
		lineWindow: lineWindow,
		log:        cfg.Logger,
		draining:   draining,
		endWatches: endWatches,
		backends: []backend{
			{name: "user", service: userv1.UserService_ServiceDesc.ServiceName, conn: cfg.Users},
			{name: "order", service: orderv1.OrderService_ServiceDesc.ServiceName, conn: cfg.Orders},
			{name: "payment", service: paymentv1.PaymentService_ServiceDesc.ServiceName, conn: cfg.Payments},
		},
	}
	if cfg.Inventory != nil {
		g.backends = append(g.backends, backend{name: "inventory", service: inventoryv1.InventoryService_ServiceDesc.ServiceName, conn: cfg.Inventory})
	}
	if cfg.Notifications != nil {
		g.backends = append(g.backends, backend{name: "notification", service: notificationv1.NotificationService_ServiceDesc.ServiceName, conn: cfg.Notifications})
	}
	var err error
	if g.cors, err = newCORS(cfg.CORSOrigins, cfg.TrustTraceContext); err != nil {
		return nil, err
	}
	services := make([]string, len(g.backends))
	for i, b := range g.backends {
		services[i] = b.service
	}
	if g.openAPI, err = documentOf(services, cfg.Tokens); err != nil {
		return nil, err
	}
	g.withRules = sync.OnceValue(func() []byte {
		doc, err := withRules(g.openAPI, serviceDescriptors(services))
		if err != nil {
			// The document parsed above: a bug, not the caller's.
			g.log.Error("gateway: OpenAPI document: validation rules left out", "err", err)
			return g.openAPI
		}
		return doc
	})
	if g.docs, err = renderDocs(g.openAPI); err != nil {
		return nil, fmt.Errorf("gateway: docs page: %w", err)
	}
	var own []string
	for _, p := range g.ownPaths() {
		own = append(own, p.path)
	}
	if g.routes, err = newRouteTable(g.openAPI, own); err != nil {
		return nil, fmt.Errorf("gateway: %w", err)
	}
	g.query = newQueryFields(
		userv1.File_duet_user_v1_user_proto,
		orderv1.File_duet_order_v1_order_proto,
		paymentv1.File_duet_payment_v1_payment_proto,
		inventoryv1.File_duet_inventory_v1_inventory_proto,
		notificationv1.File_duet_notification_v1_notification_proto,
	)
	g.procedures = g.connectProcedures()
	g.entry = http.HandlerFunc(g.serve)
	if tracing.Exporting() {
		opts := []otelhttp.Option{
			otelhttp.WithSpanNameFormatter(func(_ string, r *http.Request) string { return spanName(r.Method) }),
		}
		if !cfg.TrustTraceContext {
			opts = append(opts,
				otelhttp.WithPublicEndpointFn(func(*http.Request) bool { return true }),
				// The caller's traceparent read only to link to, its
				// baggage not at all: a public client's key-value pairs
				// would travel with every call to every service.
				otelhttp.WithPropagators(propagation.TraceContext{}))
		}
		g.entry = otelhttp.NewHandler(g.entry, "gateway", opts...)
	}

	g.mux = runtime.NewServeMux(
		runtime.WithMarshalerOption(runtime.MIMEWildcard, newJSONMarshaler()),
		runtime.WithErrorHandler(g.handleError),
		runtime.WithStreamErrorHandler(g.handleStreamError),
		runtime.WithRoutingErrorHandler(g.handleRoutingError),
		runtime.WithMetadata(forwardRequestID),
		runtime.WithIncomingHeaderMatcher(incomingHeader),
		runtime.WithOutgoingHeaderMatcher(dropMetadata),
		runtime.WithOutgoingTrailerMatcher(dropMetadata),
		// X-HTTP-Method-Override would let a form POST run as a GET;
		// no client of this API needs it, and it blurs the access log.
		runtime.WithDisableHTTPMethodOverride(),
		// Nor may a form-encoded POST (curl -d's default) to a path with
		// no POST route fall back to its GET route: a mistaken update
		// would answer 200 with the record unchanged instead of 405.
		runtime.WithDisablePathLengthFallback(),
		runtime.WithMiddlewares(g.bound),
	)
	// grpc-gateway tries a method's routes one by one, the most recently
	// registered first, and each route tried before the one that matches
	// costs allocations: so the probe and docs paths go in first (tried
	// last), and the services by how busy their routes are, users and
	// orders last (tried first). No route of one service matches a request
	// for another's (TestRoutesOfDifferentServicesDoNotOverlap), and each
	// service's routes keep the generated order among themselves, so this
	// order changes the cost of finding a route, never which one is found.
	// The gateway's own paths are on the same mux so that a wrong method
	// or path on them gets the same JSON routing errors as the API.
	for _, own := range g.ownPaths() {
		if err := g.mux.HandlePath(http.MethodGet, own.path, func(w http.ResponseWriter, r *http.Request, _ map[string]string) { own.h(w, r) }); err != nil {
			return nil, fmt.Errorf("gateway: route %s: %w", own.path, err)
		}
	}
	if cfg.Notifications != nil {
		if err := notificationv1.RegisterNotificationServiceHandler(ctx, g.mux, cfg.Notifications); err != nil {
			return nil, fmt.Errorf("gateway: notification routes: %w", err)
		}
	}
	if cfg.Inventory != nil {
		if err := inventoryv1.RegisterInventoryServiceHandler(ctx, g.mux, cfg.Inventory); err != nil {
			return nil, fmt.Errorf("gateway: inventory routes: %w", err)
		}
	}
	if err := paymentv1.RegisterPaymentServiceHandler(ctx, g.mux, cfg.Payments); err != nil {
		return nil, fmt.Errorf("gateway: payment routes: %w", err)
	}
	if err := orderv1.RegisterOrderServiceHandler(ctx, g.mux, cfg.Orders); err != nil {
		return nil, fmt.Errorf("gateway: order routes: %w", err)
	}
	if err := userv1.RegisterUserServiceHandler(ctx, g.mux, cfg.Users); err != nil {
		return nil, fmt.Errorf("gateway: user routes: %w", err)
	}
	return g, nil
}

// ownPath is one of the gateway's own GET paths, served beside the API.
type ownPath struct {
	path string
	h    http.HandlerFunc
}

// ownPaths lists the gateway's own GET paths, in the order New registers them.
func (g *Gateway) ownPaths() []ownPath {
	return []ownPath{
		{"/docs", g.serveDocs},
		{"/openapi.json", g.serveOpenAPI},
		{"/healthz", g.serveHealthz},
		{"/readyz", g.serveReadyz},
	}
}

// ServeHTTP implements http.Handler: it assigns the request id, logs the
// request once it is answered, turns panics into a JSON 500, bounds the
// body, then routes; once routed (bound), the query is checked and the
// call gets its time.
func (g *Gateway) ServeHTTP(w http.ResponseWriter, r *http.Request) { g.entry.ServeHTTP(w, r) }

func (g *Gateway) serve(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	// The trace starts here (or continues the span otelhttp started, or a
	// trusted caller's traceparent), so the gateway's log line and every
	// hop behind it share a trace id.
	var ctx context.Context
	if g.cfg.TrustTraceContext {
		ctx = tracing.Continue(r.Context(), propagation.HeaderCarrier(r.Header))
	} else {
		ctx = tracing.NewTrace(r.Context())
	}
	ctx = withRequestID(ctx, r.Header.Get(requestIDHeader))
	w.Header().Set(requestIDHeader, requestIDFrom(ctx))
	if end, ok := ctx.Value(connEndKey{}).(time.Time); ok && start.After(end) {
		// net/http closes the connection after this answer (HTTP/1.1),
		// or sends a GOAWAY and closes it once its calls end (HTTP/2).
		w.Header().Set("Connection", "close")
	}
	rec := &responseRecorder{ResponseWriter: w}
	procedure := g.procedures[r.URL.Path]
	if procedure != nil {
		// Connect, gRPC-Web or gRPC (connect.go): the outcome
		// interceptor finds rec here.
		ctx = context.WithValue(ctx, connectKey{}, rec)
		rec.connect = true
	}
	r = r.WithContext(ctx)
	defer func() { g.logAccess(ctx, r, rec, time.Since(start)) }()
	defer g.recoverPanic(ctx, rec, r)

	if g.cors != nil {
		// First, so that the gateway's own refusals below (413, 400,
		// 431) are readable by the page too: a preflight is answered here
		// (204, with the CORS headers when its origin, method and headers
		// are allowed); any other request gets its CORS headers and goes on.
		g.cors.HandlerFunc(rec, r)
		if r.Method == http.MethodOptions && r.Header.Get("Access-Control-Request-Method") != "" {
			return
		}
	}
	if refusal, ok := g.limitBody(rec, r); !ok {
		g.refuse(rec, r, procedure, refusal)
		return
	}
	if err := checkURLText(r.URL); err != nil {
		g.refuse(rec, r, procedure, newAPIError(err, 0))
		return
	}
	if err := checkForwardedSize(r, procedure != nil, g.cfg.TrustTraceContext); err != nil {
		g.refuse(rec, r, procedure, newAPIError(err, http.StatusRequestHeaderFieldsTooLarge))
		return
	}
	if procedure != nil {
		procedure.ServeHTTP(rec, r)
		return
	}
	routed := r
	if r.Method == http.MethodHead {
		// HEAD is GET without the body (RFC 9110, 9.3.2), which load
		// balancers and uptime checks send; routed as GET, and net/http
		// drops the body it writes for a HEAD request. A watch is not
		// served so (bound refuses it, by its route: it would hold the
		// call open to write nothing). (A copy: the access log names the
		// method the client sent.)
		routed = r.WithContext(context.WithValue(ctx, headKey{}, true))
		routed.Method = http.MethodGet
	}
	g.mux.ServeHTTP(rec, routed)
}

// bound is the mux's middleware: it runs once a request has found its
// route: it refuses a query parameter the route does not take
// (queryFields), and gives the call its time. A unary call gets RequestTimeout. A
// watch (a route whose verb is watchVerb) streams until the order is
// terminal, which the saga bounds; the per-call deadline and the server's
// write timeout would cut it off, so its response has neither. Each line
// instead has WriteTimeout (as set, else its default) to go out: a client
// that stops reading would otherwise hold the watch, and its backend
// stream, for as long as its kernel keeps the connection. The client's
// disconnect still ends it, and so does Drain. Deciding by the route, not
// by the path, matters: "GET /v1/users/x:watch" is GetUser with id
// "x:watch", a unary call that must keep its deadline.
func (g *Gateway) bound(next runtime.HandlerFunc) runtime.HandlerFunc {
	// grpc-gateway wraps each route's handler on its own, so what the
	// route is (its query, whether it watches) is worked out once, on its
	// first request, which carries its pattern (HEAD comes as GET).
	var (
		once  sync.Once
		query *queryRoute
		watch bool
	)
	return func(w http.ResponseWriter, r *http.Request, params map[string]string) {
		once.Do(func() {
			if pat, ok := runtime.HTTPPattern(r.Context()); ok {
				query, watch = g.query.route(r.Method, pat), pat.Verb() == watchVerb
			}
		})
		if watch && r.Context().Value(headKey{}) != nil {
			w.Header().Set("Allow", http.MethodGet)
			writeError(w, newAPIError(apierr.New(codes.Unimplemented, ReasonMethodNotAllowed,
				fmt.Sprintf("method HEAD is not allowed on %s: a watch streams its order's changes", r.URL.Path)), http.StatusMethodNotAllowed))
			return
		}
		if e := query.check(r); e != nil {
			writeError(w, newAPIError(e, 0))
			return
		}
		rec, ok := w.(*responseRecorder)
		if !ok || !watch {
			ctx, cancel := context.WithTimeout(r.Context(), g.cfg.RequestTimeout)
			defer cancel()
			next(w, r.WithContext(ctx), params)
			return
		}
		out := g.watchWriter(rec)
		ctx, stop := g.untilDrained(r.Context())
		defer stop()
		// handleStreamError sets Retry-After on the response through it.
		ctx = context.WithValue(ctx, watchResponseKey{}, rec)
		next(out, r.WithContext(ctx), params)
	}
}

// watchWriter clears rec's write deadline, which would cut a watch off,
// and returns the writer that gives each of its writes a window of its
// own instead. REST and Connect watches write through it.
func (g *Gateway) watchWriter(rec *responseRecorder) watchWriter {
	rc := http.NewResponseController(rec)
	_ = rc.SetWriteDeadline(time.Time{})
	return watchWriter{responseRecorder: rec, rc: rc, window: g.lineWindow}
}

// untilDrained returns ctx, cancelled with cause errDraining when Drain
// is called (at once if it has been), and the function that releases it.
func (g *Gateway) untilDrained(ctx context.Context) (context.Context, func()) {
	ctx, cancel := context.WithCancelCause(ctx)
	stop := context.AfterFunc(g.draining, func() { cancel(errDraining) })
	return ctx, func() {
		stop()
		cancel(nil)
	}
}

// watchVerb is the custom verb of the server-streaming routes
// ("/v1/orders/{id}:watch").
const watchVerb = "watch"

// watchResponseKey is the context key under which bound hands a watch's
// response to handleStreamError.
type watchResponseKey struct{}

// spanName names a request's server span by its method, as OpenTelemetry's
// HTTP conventions do, and "_OTHER" for a method the API does not use, so
// clients cannot make up span names (net/http takes any token as one).
// otelhttp's own name would add the outer mux's pattern, "/".
func spanName(method string) string {
	switch method {
	case http.MethodGet, http.MethodPost, http.MethodPatch, http.MethodPut, http.MethodDelete, http.MethodHead, http.MethodOptions:
		return method
	}
	return "_OTHER"
}

// checkURLText refuses a path or query that is not UTF-8 once decoded
// (%FF, say). grpc-gateway copies path and query values into the
// request's string fields as they are, and grpc-go then fails to encode
// the request: INTERNAL, a 500, for a client's mistake.
func checkURLText(u *url.URL) *apierr.Error {
	if !utf8.ValidString(u.Path) {
		return apierr.New(codes.InvalidArgument, apierr.ReasonInvalidArgument, "the URL path must be UTF-8 once decoded")
	}
	if strings.IndexByte(u.RawQuery, '%') < 0 && utf8.ValidString(u.RawQuery) {
		return nil // nothing decodes to anything else
	}
	query, err := url.ParseQuery(u.RawQuery)
	if err != nil {
		return nil // queryFields.check answers a malformed query
	}
	for key, values := range query {
		if !utf8.ValidString(key) {
			return apierr.New(codes.InvalidArgument, apierr.ReasonInvalidArgument, "the URL's query parameter names must be UTF-8 once decoded")
		}
		for _, v := range values {
			if !utf8.ValidString(v) {
				return apierr.InvalidField(key, "must be UTF-8 once decoded")
			}
		}
	}
	return nil
}

// headKey marks in a request's context that the client sent HEAD, which
// serve routes as GET.
type headKey struct{}

// Server returns an http.Server for g listening on addr, with every timeout
// and the header size limit set from the Config, and net/http's own errors
// sent to the Logger. Its Shutdown closes at once the connections on which
// no request has begun, as it does idle ones.
//
// Without TLS it speaks HTTP/2 too (h2c, to a client that starts with
// HTTP/2's preface), beside HTTP/1.1: gRPC clients (grpc-go, grpcurl
// -plaintext) call the Connect procedures there as they would a
// service, and a TLS-terminating proxy in front may forward HTTP/2 as
// it is. With TLS, HTTP/2 is offered by ALPN as net/http does. To serve
// HTTP/1.1 only, call SetUnencryptedHTTP2(false) and SetHTTP2(false) on
// the returned server's Protocols.
//
// Over HTTP/2 a connection carries at most MaxConcurrentStreams calls at
// once, each buffering at most twice MaxBodyBytes of its body unread, and
// a connection whose writes make no progress for WriteTimeout is closed
// (net/http's WriteByteTimeout): over HTTP/2, WriteTimeout itself ends a
// stream, not its connection.
func (g *Gateway) Server(addr string) *http.Server {
	var fresh newConns
	var protocols http.Protocols
	protocols.SetHTTP1(true)
	protocols.SetHTTP2(true)
	protocols.SetUnencryptedHTTP2(true)
	srv := &http.Server{
		Protocols: &protocols,
		HTTP2: &http.HTTP2Config{
			MaxConcurrentStreams:      MaxConcurrentStreams,
			MaxReceiveBufferPerStream: int(min(2*g.cfg.MaxBodyBytes, 1<<20)),
			WriteByteTimeout:          g.cfg.WriteTimeout,
		},
		Addr:              addr,
		Handler:           g,
		ReadHeaderTimeout: g.cfg.ReadHeaderTimeout,
		ReadTimeout:       g.cfg.ReadTimeout,
		WriteTimeout:      g.cfg.WriteTimeout,
		IdleTimeout:       g.cfg.IdleTimeout,
		MaxHeaderBytes:    g.cfg.MaxHeaderBytes,
		ErrorLog:          slog.NewLogLogger(g.log.Handler(), slog.LevelWarn),
		ConnState:         fresh.track,
	}
	if age := g.cfg.MaxConnectionAge; age > 0 {
		srv.ConnContext = func(ctx context.Context, _ net.Conn) context.Context {
			jitter := time.Duration(rand.Int64N(int64(age/5)+1)) - age/10
			// Two Adds: Time.Add saturates, where age+jitter would wrap
			// for an age as large as math.MaxInt64 (grpc-go's "for ever").
			return context.WithValue(ctx, connEndKey{}, time.Now().Add(age).Add(jitter))
		}
	}
	srv.RegisterOnShutdown(fresh.close)
	srv.RegisterOnShutdown(g.Drain)
	return srv
}

// connEndKey holds, in the context of a connection to the server from
// Server, when the connection stops taking new requests
// (Config.MaxConnectionAge).
type connEndKey struct{}

// newConns holds the connections of a server still in http.StateNew.
// http.Server.Shutdown closes idle connections at once but waits up to 5 s
// for one that was accepted and has not sent a request yet: an HTTP client
// that dialed more connections than it then used (Go's does, under load)
// held `duet` up for ~2 s at every stop (bench/README.md).
type newConns struct {
	m sync.Map // net.Conn → struct{}
}

func (n *newConns) track(c net.Conn, state http.ConnState) {
	if state == http.StateNew {
		n.m.Store(c, struct{}{})
		return
	}
	// Every later state (a request began, or the connection closed)
	// ends its newness; a Load first keeps the hot path free of writes.
	if _, ok := n.m.Load(c); ok {
		n.m.Delete(c)
	}
}

// close closes every connection still new; run when Shutdown starts.
func (n *newConns) close() {
	n.m.Range(func(c, _ any) bool {
		_ = c.(net.Conn).Close()
		n.m.Delete(c)
		return true
	})
}

// recoverPanic answers a panicking request with a JSON 500 that reveals
// nothing, and logs the panic; once the response has begun, it aborts it.
// http.ErrAbortHandler keeps its meaning.
func (g *Gateway) recoverPanic(ctx context.Context, w *responseRecorder, r *http.Request) {
	p := recover()
	if p == nil {
		return
	}
	if p == http.ErrAbortHandler {
		panic(p)
	}
	g.log.ErrorContext(ctx, "gateway: panic serving request", "panic", fmt.Sprint(p), "method", r.Method, "path", r.URL.Path)
	if w.wroteHeader {
		// Too late for a 500: returning would end the body cleanly, and
		// a watch's client would take a cut-off stream for a finished
		// one. Aborting resets the stream (HTTP/2) or closes the
		// connection without the last chunk (HTTP/1.1).
		w.aborted = true
		panic(http.ErrAbortHandler)
	}
	writeError(w, internalError())
}

// logAccess writes the access log line of one request.
func (g *Gateway) logAccess(ctx context.Context, r *http.Request, w *responseRecorder, d time.Duration) {
	code, failed := w.rpcCode, w.rpcFailed
	if code == 0 && w.connect && w.status() == http.StatusOK {
		// A gRPC or gRPC-Web call connect-go refused itself, before
		// the outcome interceptor (a malformed envelope, say): a
		// gRPC-Web answer is trailers-only, the status in the headers;
		// a gRPC one has it in HTTP trailers.
		grpcStatus := w.Header().Get("Grpc-Status")
		if grpcStatus == "" {
			grpcStatus = w.Header().Get(http.TrailerPrefix + "Grpc-Status")
		}
		if n, err := strconv.Atoi(grpcStatus); err == nil && n > 0 {
			code = connect.Code(n)
			failed = serverFailure(code)
		}
	}
	level := slog.LevelInfo
	if w.status() >= 500 || w.aborted || failed {
		level = slog.LevelError
	}
	// "code" (a Connect, gRPC-Web or gRPC call that failed) and "aborted"
	// join the last attribute, in a group without a name (which slog
	// inlines), only when set: the common line's attributes stay a fixed
	// list, with no slice to build.
	last := slog.Int64("bytes", w.written)
	switch {
	case code != 0 && w.aborted:
		last = slog.Group("", last, slog.String("code", code.String()), slog.Bool("aborted", true))
	case code != 0:
		last = slog.Group("", last, slog.String("code", code.String()))
	case w.aborted:
		last = slog.Group("", last, slog.Bool("aborted", true))
	}
	logger.LogAttrs(ctx, g.log, level, "http request",
		slog.String("method", r.Method),
		slog.String("path", r.URL.Path),
		slog.Int("status", w.status()),
		slog.Duration("duration", d),
		last,
	)
}

// responseRecorder remembers the status and size of a response for the
// access log.
type responseRecorder struct {
	http.ResponseWriter
	code        int
	wroteHeader bool
	written     int64
	// aborted: the response was cut off after it had begun.
	aborted bool
	// connect: the request is a call of a Connect procedure (Connect,
	// gRPC-Web or gRPC), which serve hands rec in its context.
	connect bool
	// refusal is the answer to such a call that serve refused before
	// routing (refuse), for the outcome interceptor to give.
	refusal *connect.Error
	// rpcCode is the code of such a call that failed, as the outcome
	// interceptor saw it; 0 otherwise. rpcFailed: it is the server's
	// failure, logged at ERROR as a REST 5xx is. drained: Drain ended
	// the call.
	rpcCode            connect.Code
	rpcFailed, drained bool
}

func (w *responseRecorder) WriteHeader(code int) {
	if !w.wroteHeader {
		w.code, w.wroteHeader = code, true
		if code == http.StatusServiceUnavailable && w.Header().Get("Retry-After") == "" {
			// Every 503 says when to retry: /readyz's and the one
			// grpc-gateway writes for a stream that fails before its
			// first line have no RetryInfo to take it from.
			w.Header().Set("Retry-After", strconv.Itoa(int(DefaultRetryAfter/time.Second)))
		}
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *responseRecorder) Write(b []byte) (int, error) {
	if !w.wroteHeader {
		w.WriteHeader(http.StatusOK)
	}
	n, err := w.ResponseWriter.Write(b)
	w.written += int64(n)
	return n, err
}

// Unwrap lets http.ResponseController reach the connection's writer
// (Flush, deadlines).
func (w *responseRecorder) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// Flush passes flushes through for streamed responses.
func (w *responseRecorder) Flush() {
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		if !w.wroteHeader {
			w.WriteHeader(http.StatusOK)
		}
		f.Flush()
	}
}

// watchWriter gives every write of a watch, and every flush, its own
// deadline, window from when it starts, and clears it once the write is
// done: HTTP/2's server resets a stream when its write deadline passes,
// writing or not, and a watch may rightly be silent for longer.
type watchWriter struct {
	*responseRecorder
	rc     *http.ResponseController
	window time.Duration
}

func (w watchWriter) Write(b []byte) (int, error) {
	_ = w.rc.SetWriteDeadline(time.Now().Add(w.window))
	defer w.rc.SetWriteDeadline(time.Time{})
	return w.responseRecorder.Write(b)
}

func (w watchWriter) Flush() {
	_ = w.rc.SetWriteDeadline(time.Now().Add(w.window))
	defer w.rc.SetWriteDeadline(time.Time{})
	w.responseRecorder.Flush()
}

func (w *responseRecorder) status() int {
	if !w.wroteHeader {
		// Nothing written: net/http answers 200 with an empty body.
		return http.StatusOK
	}
	return w.code
}
