// Package server builds a production gRPC server with every concern a Duet
// service needs switched on by default: panic recovery, request ids, a slog
// access log, Prometheus RED metrics, OpenTelemetry tracing, protovalidate
// checks (which also lower the case of UUIDs), a default deadline, message
// size limits, keepalive enforcement, the grpc.health.v1 service and
// reflection.
//
// Each piece can be tuned or switched off through Config; the zero Config
// gives the defaults.
package server

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"runtime/debug"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"buf.build/go/protovalidate"
	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/recovery"
	"go.opentelemetry.io/contrib/instrumentation/google.golang.org/grpc/otelgrpc"
	"go.opentelemetry.io/otel/propagation"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/reflection"
	"google.golang.org/grpc/stats"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/tap"
	"google.golang.org/protobuf/proto"

	"github.com/duetkit/duet/kit/apierr"
	"github.com/duetkit/duet/kit/logger"
	"github.com/duetkit/duet/kit/metrics"
	"github.com/duetkit/duet/kit/requestid"
	"github.com/duetkit/duet/kit/tracing"
	"github.com/duetkit/duet/kit/validation"
)

// Defaults used for zero fields of Config.
const (
	DefaultTimeout     = 30 * time.Second
	DefaultMaxMsgSize  = 4 << 20
	DefaultDrain       = 15 * time.Second
	DefaultKeepalive   = 30 * time.Second
	DefaultPingTimeout = 10 * time.Second
	// DefaultMinPingInterval is the shortest client keepalive interval the
	// server tolerates; kit/client pings no more often than this.
	DefaultMinPingInterval = 10 * time.Second
	// DefaultStreamWorkers is how many goroutines a Server keeps to run
	// calls on (Config.StreamWorkers).
	DefaultStreamWorkers = 64
	// MaxStreamWorkers bounds Config.StreamWorkers: every worker is a
	// goroutine started by New, and grpc-go counts them in a uint32.
	MaxStreamWorkers = 1 << 16
	// DefaultMaxConcurrentStreams is how many calls one client connection
	// may have open at once (Config.MaxConcurrentStreams). grpc-go's own
	// default is no limit, which also switches off its defence against
	// HTTP/2 rapid reset (handlers started per connection are bounded by
	// this). A client over the limit waits for a free slot, so it is set
	// well above what one connection needs: the REST gateway carries every
	// client's calls to a service, long-lived watches and waiting order
	// creations included, over one connection, and 1,000 such calls would
	// have made every other call through it wait.
	DefaultMaxConcurrentStreams = 10_000
	// DefaultMaxHeaderListSize bounds the metadata of one call, in HTTP/2's
	// header list size (names and values, plus 32 bytes a field). grpc-go's
	// default of 16 MiB let a few kilobytes of HPACK-compressed headers,
	// one large value referenced again and again, hold megabytes per call.
	// 64 KiB leaves room for the REST gateway's bound on the headers it
	// forwards (48 KiB, gateway's maxForwardedMetadata).
	DefaultMaxHeaderListSize = 64 << 10
	// DefaultMaxConnectionAge is how long a client connection lives before
	// the server asks the client, with GOAWAY, to open a new one
	// (Config.Keepalive.MaxConnectionAge; grpc-go adds ±10 % jitter).
	// grpc-go's default is for ever, and its clients resolve a name again
	// only when a connection breaks: replicas added behind a DNS name or a
	// Kubernetes Service never got a call from clients connected before.
	// Calls in flight finish on the old connection, streams included
	// (MaxConnectionAgeGrace stays unbounded unless set).
	DefaultMaxConnectionAge = 5 * time.Minute
)

// maxConnectionAge is DefaultMaxConnectionAge, a variable for tests.
var maxConnectionAge = DefaultMaxConnectionAge

// stopWait bounds how long Shutdown waits, after cutting every connection,
// for handlers that ignore their context to return; a variable for tests.
var stopWait = 5 * time.Second

// Config tunes a Server. The zero value is valid and means "defaults".
type Config struct {
	// Name identifies the service. The kit does not add it to log lines
	// itself: give Logger the attribute (duet's own servers log
	// "service").
	Name string
	// Logger receives the access log and recovered panics; nil means
	// slog.Default(). A logger from kit/logger.NewAsync keeps formatting
	// and writing the access log off the request's goroutine (duet's own).
	Logger *slog.Logger
	// Metrics records RED metrics; nil means metrics.Default().
	Metrics *metrics.Metrics
	// Creds secures the listener; nil means plaintext (loopback and tests).
	Creds credentials.TransportCredentials
	// DefaultTimeout bounds unary calls that arrive without a deadline,
	// from the moment their headers arrive, so a client that never sends
	// the request message does not hold a handler either. Negative
	// disables it.
	DefaultTimeout time.Duration
	// MaxConcurrentStreams bounds the calls one client connection may
	// have open at once; zero means DefaultMaxConcurrentStreams.
	MaxConcurrentStreams uint32
	// MaxHeaderListSize bounds one call's metadata in bytes (HTTP/2
	// SETTINGS_MAX_HEADER_LIST_SIZE); zero means DefaultMaxHeaderListSize.
	MaxHeaderListSize uint32
	// MaxRecvMsgSize and MaxSendMsgSize bound message sizes in bytes.
	MaxRecvMsgSize, MaxSendMsgSize int
	// Keepalive sets the server's pings and connection ages; zero fields
	// take grpc-go's defaults except Time, Timeout and MaxConnectionAge
	// (DefaultKeepalive, DefaultPingTimeout, DefaultMaxConnectionAge; a
	// negative MaxConnectionAge means for ever).
	Keepalive keepalive.ServerParameters
	// KeepalivePolicy bounds how often clients may ping; zero means a
	// MinTime of DefaultMinPingInterval, pings without streams allowed.
	// It is taken whole when set: kit/client pings idle connections every
	// 30 s, so a policy of one's own needs PermitWithoutStream (and a
	// MinTime of at most 30 s), or grpc-go closes those connections with
	// too_many_pings.
	KeepalivePolicy keepalive.EnforcementPolicy
	// DrainTimeout bounds Shutdown's graceful phase before in-flight calls
	// are cut off.
	DrainTimeout time.Duration
	// NotServingDelay is how long Shutdown goes on serving, calls and
	// streams alike, after it reports NOT_SERVING and before it stops
	// taking new calls: for balancers that poll health (Kubernetes
	// readiness probes, a proxy's health checks) and need a probe period
	// to take the server out of rotation; without it their callers met a
	// closed listener. Zero (the default) stops at once, which kit/client
	// callers, who watch the status and get GOAWAY, need no more.
	// Shutdown's context bounds the delay and the drain together: one
	// that ends during the delay cuts it short and leaves no time to
	// drain (in-flight calls are cut off), so give it the delay plus the
	// drain. A second Shutdown during the delay does not wait it again:
	// it stops taking calls at once.
	NotServingDelay time.Duration
	// NotReadyAtStart keeps the server NOT_SERVING when Serve starts, until
	// the owner calls SetServing(true): for a server that must warm up (a
	// cache to fill, a peer to reach) before it takes calls. Clients that
	// check health (kit/client does) send it none meanwhile; calls that
	// come anyway are served. Without it the first Serve marks the server
	// and every service SERVING, whatever was set before.
	NotReadyAtStart bool
	// FiniteStreams lists the server-streaming and bidirectional methods,
	// by full name ("/pkg.Service/Method"), that end by themselves, such
	// as a download. Shutdown lets those finish like unary calls; every
	// other such stream (a watch, a subscription, grpc.health.v1's Watch,
	// reflection) it ends at once with UNAVAILABLE, reason
	// apierr.ReasonShuttingDown and RetryInfo, so the client opens it
	// again elsewhere. Client-streaming calls always drain.
	FiniteStreams []string
	// StreamWorkers is how many goroutines the server keeps to run calls
	// on (grpc.NumStreamWorkers); a call that finds them all busy gets a
	// goroutine of its own, as every call does when this is negative. Zero
	// means DefaultStreamWorkers; more than MaxStreamWorkers is an error.
	//
	// Why keep them: a new goroutine starts on a small stack, and a
	// handler that validates, queries SQLite and calls a peer outgrows it
	// two or three times per call, each time copying the stack; in the
	// shop's order path that copying was 5% of all CPU (bench/README.md).
	// A worker keeps its grown stack from call to call until the garbage
	// collector shrinks it while idle.
	StreamWorkers int
	// Validator checks requests against protovalidate rules; nil makes one.
	Validator protovalidate.Validator
	// DisableValidation, DisableReflection, DisableAccessLog and
	// DisableTracing switch those defaults off.
	DisableValidation, DisableReflection, DisableAccessLog, DisableTracing bool
	// PublicEndpoint is for a server whose callers are outside the system
	// (the internet, another company's services): a call's W3C trace
	// context is not continued — the call starts a trace of its own,
	// linked to the caller's when spans are recorded — and its baggage is
	// dropped, so a client can neither pick the trace ids the services
	// log under, nor mark its calls sampled to have every span of every
	// hop exported, nor send key-value pairs along to every service. Off,
	// as between a system's own services, whose traces should join. (The
	// REST gateway's counterpart is its TrustTraceContext, the other way
	// round: it is public unless told otherwise.)
	PublicEndpoint bool
	// Authorizer, when not nil, decides which callers may call which
	// methods (kit/access's Policy is one). It runs after the access log,
	// metrics and panic recovery, so refusals are logged and counted, and
	// before validation: a caller it refuses costs no validation and
	// learns nothing of a request's rules. Health checks (grpc.health.v1)
	// skip it: balancers and kit/client watch them, and a refused watch
	// takes the server out of every client's rotation.
	Authorizer Authorizer
	// Authenticator, when not nil, checks on whose behalf a call is made
	// (kit/authn's Verifier is one: end users' JSON Web Tokens). It runs
	// right after the Authorizer, so a component refused by its
	// certificate learns nothing of its token, and before validation;
	// health checks skip it as they skip the Authorizer.
	Authenticator Authorizer
	// Permissions, when not nil, decides what the caller the
	// Authenticator found may do with the call's data (kit/authz's
	// Permissions: that users read only their own orders). It runs after
	// validation, so its rules read well-formed unary requests (a
	// stream's message that fails validation reaches them too, as
	// kit/authz says), and closest to the handler but for
	// UnaryInterceptors and StreamInterceptors.
	Permissions Authorizer
	// UnaryInterceptors and StreamInterceptors run after the defaults,
	// closest to the handler.
	UnaryInterceptors  []grpc.UnaryServerInterceptor
	StreamInterceptors []grpc.StreamServerInterceptor
	// Options are appended to the grpc.ServerOptions the server is built
	// with. grpc.InTapHandle is not among them: the server sets its own
	// (DefaultTimeout), unless DefaultTimeout is negative, and grpc-go
	// panics at a second.
	Options []grpc.ServerOption
}

// Authorizer gives the interceptors that refuse calls a caller may not
// make.
type Authorizer interface {
	UnaryInterceptor() grpc.UnaryServerInterceptor
	StreamInterceptor() grpc.StreamServerInterceptor
}

// Server is a gRPC server with health, reflection and the default
// interceptor chain. It implements grpc.ServiceRegistrar, so generated
// Register functions take it directly.
type Server struct {
	grpc   *grpc.Server
	health *health.Server
	log    *slog.Logger
	drain  time.Duration
	// notServingDelay is Config.NotServingDelay; delayed is set by the
	// first Shutdown, which alone waits it.
	notServingDelay time.Duration
	delayed         atomic.Bool
	// endStreams ends the long-lived streams (streamDrain).
	endStreams context.CancelFunc
	// deadlines gives unary calls without a deadline the default one.
	deadlines *deadlines
	// metrics counts the calls; Serve tells it the registered methods.
	metrics *metrics.ServerMetrics
	// outer is the unary chain's outermost step, whose access log and
	// request id a unary call whose request could not be read gets too
	// (read.go).
	outer unaryOuter

	mu       sync.Mutex
	services []string
	// notReady is Config.NotReadyAtStart.
	notReady bool
	// serving marks the server SERVING on the first Serve only.
	serving sync.Once
}

// New builds a Server from cfg.
func New(cfg Config) (*Server, error) {
	if cfg.StreamWorkers > MaxStreamWorkers {
		return nil, fmt.Errorf("server: Config.StreamWorkers is %d, more than MaxStreamWorkers (%d)", cfg.StreamWorkers, MaxStreamWorkers)
	}
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	m := cfg.Metrics
	if m == nil {
		m = metrics.Default()
	}
	validator := cfg.Validator
	if validator == nil && !cfg.DisableValidation {
		var err error
		if validator, err = protovalidate.New(); err != nil {
			return nil, fmt.Errorf("server: protovalidate: %w", err)
		}
	}
	creds := cfg.Creds
	if creds == nil {
		creds = insecure.NewCredentials()
	}
	ka := cfg.Keepalive
	if ka.Time == 0 {
		ka.Time = DefaultKeepalive
	}
	if ka.Timeout == 0 {
		ka.Timeout = DefaultPingTimeout
	}
	switch {
	case ka.MaxConnectionAge == 0:
		ka.MaxConnectionAge = maxConnectionAge
	case ka.MaxConnectionAge < 0:
		ka.MaxConnectionAge = 0 // grpc-go's for ever
	}
	policy := cfg.KeepalivePolicy
	if policy == (keepalive.EnforcementPolicy{}) {
		policy = keepalive.EnforcementPolicy{MinTime: DefaultMinPingInterval, PermitWithoutStream: true}
	}
	drain := cfg.DrainTimeout
	if drain <= 0 {
		drain = DefaultDrain
	}

	recover := recovery.WithRecoveryHandlerContext(func(ctx context.Context, p any) error {
		log.ErrorContext(ctx, "panic in handler", "panic", fmt.Sprint(p), "stack", string(debug.Stack()))
		return apierr.Internal()
	})

	timeout := cfg.DefaultTimeout
	if timeout == 0 {
		timeout = DefaultTimeout
	}
	dl := &deadlines{timeout: timeout}
	// With an exporter the otelgrpc stats handler below records spans;
	// without one, only the trace context is carried (kit/tracing).
	carryTrace := !cfg.DisableTracing && !tracing.Exporting()
	outer := unaryOuter{trace: carryTrace, public: cfg.PublicEndpoint}
	if !cfg.DisableAccessLog {
		outer.log = log
	}
	inner := unaryInner{timeout: timeout}
	if !cfg.DisableValidation {
		inner.validator = validator
	}
	unary := []grpc.UnaryServerInterceptor{
		outer.intercept,
		m.Server.UnaryServerInterceptor(),
		recovery.UnaryServerInterceptor(recover),
	}
	for _, auth := range []Authorizer{cfg.Authorizer, cfg.Authenticator} {
		if auth != nil {
			unary = append(unary, skipHealthUnary(auth.UnaryInterceptor()))
		}
	}
	unary = append(unary, inner.intercept)
	if cfg.Permissions != nil {
		unary = append(unary, skipHealthUnary(cfg.Permissions.UnaryInterceptor()))
	}

	stream := []grpc.StreamServerInterceptor{requestid.StreamServerInterceptor()}
	if carryTrace {
		carry := tracing.StreamServerInterceptor()
		if cfg.PublicEndpoint {
			carry = tracing.NewTraceStreamServerInterceptor()
		}
		stream = append([]grpc.StreamServerInterceptor{carry}, stream...)
	}
	if !cfg.DisableAccessLog {
		stream = append(stream, streamAccessLog(log))
	}
	// Outermost, so that the access log still has the whole error.
	stream = append([]grpc.StreamServerInterceptor{streamStatus}, stream...)
	draining, endStreams := context.WithCancel(context.Background())
	sd := &streamDrain{draining: draining, finite: make(map[string]bool, len(cfg.FiniteStreams))}
	for _, name := range cfg.FiniteStreams {
		sd.finite[name] = true
	}
	stream = append(stream, m.Server.StreamServerInterceptor(), recovery.StreamServerInterceptor(recover), sd.intercept)
	for _, auth := range []Authorizer{cfg.Authorizer, cfg.Authenticator} {
		if auth != nil {
			stream = append(stream, skipHealthStream(auth.StreamInterceptor()))
		}
	}
	if !cfg.DisableValidation {
		stream = append(stream, validation.StreamServerInterceptor(validator))
	}
	if cfg.Permissions != nil {
		stream = append(stream, skipHealthStream(cfg.Permissions.StreamInterceptor()))
	}
	unary = append(unary, cfg.UnaryInterceptors...)
	stream = append(stream, cfg.StreamInterceptors...)

	opts := []grpc.ServerOption{
		grpc.Creds(creds),
		grpc.ChainUnaryInterceptor(unary...),
		grpc.ChainStreamInterceptor(stream...),
		grpc.MaxRecvMsgSize(orDefault(cfg.MaxRecvMsgSize, DefaultMaxMsgSize)),
		grpc.MaxSendMsgSize(orDefault(cfg.MaxSendMsgSize, DefaultMaxMsgSize)),
		grpc.KeepaliveParams(ka),
		grpc.KeepaliveEnforcementPolicy(policy),
		grpc.MaxConcurrentStreams(cmp.Or(cfg.MaxConcurrentStreams, DefaultMaxConcurrentStreams)),
		grpc.MaxHeaderListSize(cmp.Or(cfg.MaxHeaderListSize, DefaultMaxHeaderListSize)),
	}
	if timeout > 0 {
		opts = append(opts, grpc.InTapHandle(dl.tap))
	}
	workers := cfg.StreamWorkers
	if workers == 0 {
		workers = DefaultStreamWorkers
	}
	if workers > 0 {
		opts = append(opts, grpc.NumStreamWorkers(uint32(workers)))
	}
	if !cfg.DisableTracing && tracing.Exporting() {
		var public []otelgrpc.Option
		if cfg.PublicEndpoint {
			// The caller's traceparent read only to link to, its baggage
			// not at all.
			public = []otelgrpc.Option{otelgrpc.WithPublicEndpoint(), otelgrpc.WithPropagators(propagation.TraceContext{})}
		}
		// A span is named after the method the client sent, before any
		// interceptor: one as long as its headers (60 KB) or of any shape
		// would go to the exporter as it is. Such calls are logged and
		// counted (unknownMethod), not traced.
		traced := otelgrpc.WithFilter(func(info *stats.RPCTagInfo) bool { return metrics.WellFormedMethod(info.FullMethodName) })
		opts = append(opts, grpc.StatsHandler(otelgrpc.NewServerHandler(append(public, traced)...)))
	}
	// Before cfg.Options, so that an UnknownServiceHandler of the
	// caller's replaces this one.
	opts = append(opts, grpc.UnknownServiceHandler(unknownMethod))
	opts = append(opts, cfg.Options...)

	s := &Server{grpc: grpc.NewServer(opts...), health: health.NewServer(), log: log, drain: drain, notServingDelay: max(cfg.NotServingDelay, 0),
		endStreams: endStreams, deadlines: dl, notReady: cfg.NotReadyAtStart, metrics: m.Server, outer: outer}
	s.grpc.RegisterService(s.reporting(&healthpb.Health_ServiceDesc), s.health)
	if !cfg.DisableReflection {
		reflection.Register(s.grpc)
	}
	// Until Serve runs, nothing is ready.
	s.health.SetServingStatus("", healthpb.HealthCheckResponse_NOT_SERVING)
	return s, nil
}

// healthMethods are grpc.health.v1.Health's methods, by name: a made-up
// name under its prefix must not skip the Authorizer on its way to an
// UnknownServiceHandler of the owner's.
var healthMethods = map[string]bool{
	healthpb.Health_Check_FullMethodName: true,
	healthpb.Health_Watch_FullMethodName: true,
	healthpb.Health_List_FullMethodName:  true,
}

// skipHealthUnary runs auth for every call but health checks.
func skipHealthUnary(auth grpc.UnaryServerInterceptor) grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		if healthMethods[info.FullMethod] {
			return handler(ctx, req)
		}
		return auth(ctx, req, info, handler)
	}
}

// skipHealthStream runs auth for every stream but health watches.
func skipHealthStream(auth grpc.StreamServerInterceptor) grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		if healthMethods[info.FullMethod] {
			return handler(srv, ss)
		}
		return auth(srv, ss, info, handler)
	}
}

func orDefault(v, d int) int {
	if v <= 0 {
		return d
	}
	return v
}

// RegisterService implements grpc.ServiceRegistrar and records the service
// so that its health status follows the server's. A unary call of the
// service whose request cannot be read (over MaxRecvMsgSize, not the
// method's message, or not sent before the call's deadline), which
// grpc-go answers before any interceptor runs, is logged and counted as
// any other call; a service registered on GRPC() is not. (A method
// handler of one's own, not generated, must read its request before it
// calls the interceptor, and once, as generated ones do, or such a call
// is logged twice.)
func (s *Server) RegisterService(desc *grpc.ServiceDesc, impl any) {
	s.grpc.RegisterService(s.reporting(desc), impl)
	s.mu.Lock()
	s.services = append(s.services, desc.ServiceName)
	s.mu.Unlock()
	s.health.SetServingStatus(desc.ServiceName, healthpb.HealthCheckResponse_NOT_SERVING)
}

// GRPC returns the underlying *grpc.Server, for options this package does not cover.
func (s *Server) GRPC() *grpc.Server { return s.grpc }

// Health returns the health service, to report readiness changes of your own
// (a lost database, say) with SetServingStatus.
func (s *Server) Health() *health.Server { return s.health }

// SetServing marks the server and every registered service SERVING or NOT_SERVING.
func (s *Server) SetServing(serving bool) {
	st := healthpb.HealthCheckResponse_NOT_SERVING
	if serving {
		st = healthpb.HealthCheckResponse_SERVING
	}
	s.mu.Lock()
	names := append([]string{""}, s.services...)
	s.mu.Unlock()
	for _, n := range names {
		s.health.SetServingStatus(n, st)
	}
}

// Serve marks the server SERVING (unless Config.NotReadyAtStart) and
// accepts connections on lis until Shutdown. It returns nil after a
// Shutdown. Only the first Serve marks it, overwriting what was set with
// Health or SetServing before; one on another listener later leaves the
// statuses set meanwhile as they are.
func (s *Server) Serve(lis net.Listener) error {
	s.deadlines.learn(s.grpc)
	s.metrics.KnownMethods(s.grpc.GetServiceInfo())
	if !s.notReady {
		s.serving.Do(func() { s.SetServing(true) })
	}
	err := s.grpc.Serve(lis)
	if errors.Is(err, grpc.ErrServerStopped) {
		return nil
	}
	return err
}

// Shutdown drains the server: health turns NOT_SERVING so balancers stop
// sending new calls (and, with Config.NotServingDelay, the server goes on
// serving that long for balancers that poll), long-lived streams end
// (Config.FiniteStreams), other
// in-flight calls may finish until ctx is done or the drain timeout
// passes, and whatever is left is then cut off; ctx bounds the whole of
// it, NotServingDelay included. A handler that ignores its
// context can outlive Shutdown, which waits for such handlers at most 5 s
// after cutting them off. A long-lived stream whose client has stopped
// reading, with a send waiting on HTTP/2 flow control, is not ended early:
// grpc-go keeps the stream, and its connection, until the client reads or
// the stream is cut, so such a client holds Shutdown for the whole drain
// timeout.
func (s *Server) Shutdown(ctx context.Context) {
	s.health.Shutdown()
	if s.notServingDelay > 0 && !s.delayed.Swap(true) {
		delay := time.NewTimer(s.notServingDelay)
		select {
		case <-delay.C:
		case <-ctx.Done():
			delay.Stop()
		}
	}
	s.endStreams()
	done := make(chan struct{})
	go func() {
		s.grpc.GracefulStop()
		close(done)
	}()
	timer := time.NewTimer(s.drain)
	defer timer.Stop()
	select {
	case <-done:
		return
	case <-ctx.Done():
	case <-timer.C:
	}
	s.log.WarnContext(ctx, "drain timed out; stopping with calls in flight")
	s.grpc.Stop()
	// Stop closes every connection at once, but grpc-go still waits for
	// the handlers to return, and one that ignores its context would
	// hold Shutdown, and the process's exit, for ever.
	wait := time.NewTimer(stopWait)
	defer wait.Stop()
	select {
	case <-done:
	case <-wait.C:
		s.log.ErrorContext(ctx, "handlers still running after stop; leaving them", "waited", stopWait)
	}
}

// deadlines gives the unary calls that arrive without a deadline the
// server's default one, as soon as their headers arrive
// (grpc.InTapHandle): a deadline set in an interceptor would start only
// once the request message had come, and a client that sends headers and
// nothing more would hold a handler goroutine for as long as it keeps the
// connection open. Streams are left alone: they may rightly last for ever.
// unary is filled once, by the first Serve, from every service registered
// (grpc-go refuses registrations after Serve), before any transport reads
// it.
type deadlines struct {
	timeout time.Duration
	once    sync.Once
	// unary is published whole: calls may already arrive through
	// GRPC().Serve on one listener while Serve learns for another, and
	// filling a map the tap read was a concurrent map write.
	unary atomic.Pointer[map[string]bool]
}

// learn records the unary methods of every service registered on srv.
func (d *deadlines) learn(srv *grpc.Server) {
	d.once.Do(func() {
		unary := make(map[string]bool)
		for name, info := range srv.GetServiceInfo() {
			for _, m := range info.Methods {
				if !m.IsClientStream && !m.IsServerStream {
					unary["/"+name+"/"+m.Name] = true
				}
			}
		}
		d.unary.Store(&unary)
	})
}

func (d *deadlines) tap(ctx context.Context, info *tap.Info) (context.Context, error) {
	unary := d.unary.Load()
	if _, ok := ctx.Deadline(); ok || unary == nil || !(*unary)[info.FullMethodName] {
		return ctx, nil
	}
	ctx, cancel := context.WithTimeout(ctx, d.timeout)
	// The stream's own cancel, called when the call ends, cancels ctx's
	// parent, and with it ctx and its timer.
	_ = cancel
	return ctx, nil
}

// unaryOuter and unaryInner are the kit's own steps of the unary chain,
// in two interceptors around metrics and recovery rather than one per
// step: grpc-go's chain costs a closure allocation and a call per
// interceptor and call, and these steps are cheap next to that.
//
// unaryOuter carries the trace context and the request id into the
// handler's context and writes the access log line, outside metrics and
// recovery so that a recovered panic is logged as the INTERNAL it became.
type unaryOuter struct {
	trace  bool         // carry W3C trace context (kit/tracing)
	public bool         // and start a trace of the server's own (PublicEndpoint)
	log    *slog.Logger // the access log; nil: none
}

func (o unaryOuter) intercept(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	start := time.Now()
	ctx, made := o.incoming(ctx)
	if made {
		// Only an id the caller does not have is sent back: echoing
		// every id cost ~3 µs of CPU per small call (kit/requestid).
		requestid.SetTrailer(ctx)
	}
	resp, err := handler(ctx, req)
	if o.log != nil {
		// The whole error, for the server's own log; the client gets the
		// status it wraps.
		logCall(ctx, o.log, info.FullMethod, "unary", start, err, callRead)
	}
	return resp, statusError(err)
}

// incoming returns ctx with the call's trace context and request id, and
// whether the id was made here (the caller sent none).
func (o unaryOuter) incoming(ctx context.Context) (context.Context, bool) {
	switch {
	case o.trace && o.public:
		ctx = tracing.NewTrace(ctx)
	case o.trace:
		ctx = tracing.Incoming(ctx)
	}
	return requestid.Incoming(ctx)
}

// unaryInner gives a call without a deadline the default one, checks the
// request against its protovalidate rules (and lowers its UUIDs), and
// keeps clients from retrying an UNAVAILABLE the application decided on.
type unaryInner struct {
	timeout   time.Duration           // the default deadline; <= 0: none
	validator protovalidate.Validator // nil: no validation
}

func (in unaryInner) intercept(ctx context.Context, req any, _ *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	// A call that carries no deadline gets one, so a forgotten client
	// timeout cannot pin server resources forever. The deadlines tap has
	// given one already, from the headers' arrival, to every unary method
	// registered when Serve ran; this covers a server started with
	// GRPC().Serve, which skips Serve's learn.
	if _, ok := ctx.Deadline(); !ok && in.timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, in.timeout)
		defer cancel()
	}
	if in.validator != nil {
		if msg, ok := req.(proto.Message); ok {
			if err := validation.Check(in.validator, msg); err != nil {
				return nil, err
			}
			validation.LowerUUIDs(msg)
		}
	}
	resp, err := handler(ctx, req)
	if err != nil && apierr.Code(err) == codes.Unavailable && apierr.Info(err) != nil {
		// Transport retries are for calls that never ran; retrying a
		// decided failure (PROVIDER_UNAVAILABLE with RetryInfo, say) at
		// every hop multiplies load on the failing dependency (4
		// attempts per hop over 3 hops is 64 calls). The caller still
		// gets RetryInfo and decides when to try again. Sending the
		// headers first makes the answer one grpc-go never retries
		// (only trailers-only answers are); a retry pushback of -1 in
		// the trailers did that too, but grpc-go counts such an answer
		// against the connection's retry throttling (gRFC A6), so a run
		// of decided failures on one method disabled transport retries
		// on every method of the connection.
		_ = grpc.SendHeader(ctx, metadata.MD{})
	}
	return resp, err
}

// statusError returns the status error err wraps, when it is not one
// itself: grpc-go sends a wrapped status error with the whole chain's text
// as its message ("reading the user: rpc error: code = NotFound ..."),
// which tells the client about the handler's insides. Other errors are
// returned as they are.
func statusError(err error) error {
	if err == nil {
		return nil
	}
	if _, ok := err.(interface{ GRPCStatus() *status.Status }); ok {
		return err
	}
	var st interface {
		error
		GRPCStatus() *status.Status
	}
	if errors.As(err, &st) {
		return st
	}
	return err
}

// streamStatus is statusError for streams.
func streamStatus(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	return statusError(handler(srv, ss))
}

// unknownMethod answers a call of a method that no service registered
// here with UNIMPLEMENTED, as grpc-go does, but as the server's handler of
// unknown methods (grpc.UnknownServiceHandler), inside the stream
// interceptors: the call is logged and counted like any other (as a
// bidirectional stream, which grpc-go takes every unknown call for), so a
// client built against a newer contract, or pointed at the wrong server,
// shows in the access log and the metrics instead of nowhere. kit/metrics
// counts at most 1,024 such names, the rest under "unknown".
func unknownMethod(_ any, stream grpc.ServerStream) error {
	method, _ := grpc.MethodFromServerStream(stream)
	return apierr.New(codes.Unimplemented, apierr.ReasonUnknownMethod, fmt.Sprintf("unknown method %q", shortMethod(method)))
}

// maxLoggedMethod bounds a method name in the access log and in
// unknownMethod's message: a client's headers may carry one of 60 KB.
const maxLoggedMethod = 256

// shortMethod returns fullMethod cut to maxLoggedMethod bytes, marked "…"
// when cut.
func shortMethod(fullMethod string) string {
	if len(fullMethod) <= maxLoggedMethod {
		return fullMethod
	}
	return fullMethod[:maxLoggedMethod] + "…"
}

// streamAccessLog writes the access log line of a stream, as unaryOuter
// does for unary calls.
func streamAccessLog(log *slog.Logger) grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		start := time.Now()
		read := &readFailures{ServerStream: ss}
		err := handler(srv, read)
		kind := "server_stream"
		switch {
		case info.IsClientStream && info.IsServerStream:
			kind = "bidi_stream"
		case info.IsClientStream:
			kind = "client_stream"
		}
		how := callRead
		switch {
		case read.unread(err):
			how = requestUnread
		case info.FullMethod == healthpb.Health_Watch_FullMethodName:
			how = healthWatch
		}
		logCall(ss.Context(), log, info.FullMethod, kind, start, err, how)
		return err
	}
}

// logCall writes one access log line for a finished call: service,
// method, kind, code, duration, peer and error (kit/logger adds the
// request and trace ids from the context). It replaces go-grpc-middleware's
// logging interceptor, which measured at 18% of a small call's server CPU
// and 43 allocations per call (bench/README.md): the same facts in one
// record, and nothing at all when the level is off. The level is
// codeLevel's, but for a health Watch that ended as Watches do and a
// request grpc-go could not read (INTERNAL, by its code).
//
// A balancer's health Watch (kit/client keeps one open on every
// connection) ends at each connection's max age (CANCELLED) and at each
// Shutdown (UNAVAILABLE), a line per client each time, and tells nothing
// of the calls served: DEBUG. A Watch refused (an interceptor of the
// owner's wanting credentials, say) keeps its code's level: its client
// never sees the server healthy.
func logCall(ctx context.Context, log *slog.Logger, fullMethod, kind string, start time.Time, err error, how callKind) {
	code := apierr.CallCode(err)
	level := codeLevel(code)
	switch {
	case how == healthWatch && (code == codes.OK || code == codes.Canceled || code == codes.Unavailable):
		level = slog.LevelDebug
	case how == requestUnread && code == codes.Internal:
		// grpc-go's code for bytes that are not the method's message,
		// or a message cut short or missing: the client's doing, not a
		// bug of the server's.
		level = slog.LevelInfo
	case code == codes.Unimplemented && apierr.Reason(err) == apierr.ReasonUnknownMethod:
		// The caller's mistake, and some callers make it on purpose:
		// AWS load balancers' gRPC health checks call a method nobody
		// serves and expect UNIMPLEMENTED, every few seconds.
		level = slog.LevelInfo
	}
	if !log.Enabled(ctx, level) {
		return
	}
	// A name a client made up ("/pkg.S/a/b") goes under the labels the
	// metrics count it by; the error still quotes it (cut).
	service, method := "unknown", "unknown"
	if code != codes.Unimplemented || metrics.WellFormedMethod(fullMethod) {
		service, method = splitMethod(shortMethod(fullMethod))
	}
	attrs := [7]slog.Attr{
		slog.String("grpc.service", service),
		slog.String("grpc.method", method),
		slog.String("grpc.method_type", kind),
		slog.String("grpc.code", code.String()),
		// An integer: slog's JSON handler formats floats through
		// encoding/json, measured at 16% of a small call's server CPU.
		slog.Int64("grpc.time_us", time.Since(start).Microseconds()),
	}
	n := 5
	if p, ok := peer.FromContext(ctx); ok && p.Addr != nil {
		attrs[n] = slog.String("peer.address", p.Addr.String())
		n++
	}
	if err != nil {
		attrs[n] = slog.String("grpc.error", err.Error())
		n++
	}
	logger.LogAttrs(ctx, log, level, "finished call", attrs[:n]...)
}

// callKind tells logCall what kind of call it logs, where that changes
// the level of its line.
type callKind uint8

const (
	// callRead: a call whose request was read, the usual kind.
	callRead callKind = iota
	// healthWatch: a grpc.health.v1.Health Watch.
	healthWatch
	// requestUnread: a call that ended because a message it was sent
	// could not be read (read.go).
	requestUnread
)

// codeLevel is the level a call ending with code is logged at: the caller's
// mistakes and normal outcomes at INFO, trouble worth a look at WARN, bugs
// and broken dependencies at ERROR (go-grpc-middleware's server mapping).
func codeLevel(code codes.Code) slog.Level {
	switch code {
	case codes.OK, codes.NotFound, codes.Canceled, codes.AlreadyExists, codes.InvalidArgument, codes.Unauthenticated:
		return slog.LevelInfo
	case codes.DeadlineExceeded, codes.PermissionDenied, codes.ResourceExhausted, codes.FailedPrecondition,
		codes.Aborted, codes.OutOfRange, codes.Unavailable:
		return slog.LevelWarn
	default:
		return slog.LevelError
	}
}

// splitMethod splits "/pkg.Service/Method" into its service and method.
func splitMethod(full string) (service, method string) {
	full = strings.TrimPrefix(full, "/")
	if i := strings.LastIndexByte(full, '/'); i >= 0 {
		return full[:i], full[i+1:]
	}
	return "unknown", full
}
