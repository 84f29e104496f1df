// Package client opens the one shared gRPC connection a Duet process keeps
// per peer, with keepalive, round-robin balancing over the peer's healthy
// addresses, retries of idempotent
// methods on UNAVAILABLE, per-method timeouts, and propagation of the
// request id, trace context and caller's deadline.
//
// Which methods are retried is read from the contract itself: a method
// marked `option idempotency_level = IDEMPOTENT` or `NO_SIDE_EFFECTS` in its
// .proto gets the retry policy; every other method is tried once. Only
// failures where the call did not run are retried: an UNAVAILABLE that a
// kit/server application returned on purpose (with an ErrorInfo, usually
// RetryInfo too) tells the transport not to retry, so such answers are
// not retried again at every hop; the caller reads RetryInfo and decides.
// A bare UNAVAILABLE a handler returns (a peer's error passed through as
// it came) is retried as a blip would be: a handler that calls peers
// should answer with an error of its own (apierr), as Duet's services do,
// or a failing peer at the end of a chain gets the retries of every hop
// multiplied.
package client

import (
	"encoding/json"
	"fmt"
	"net/url"
	"strconv"
	"strings"
	"time"

	"go.opentelemetry.io/contrib/instrumentation/google.golang.org/grpc/otelgrpc"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	_ "google.golang.org/grpc/health" // registers client-side health checking
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/resolver"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/descriptorpb"

	"github.com/duetkit/duet/kit/metrics"
	"github.com/duetkit/duet/kit/server"
	"github.com/duetkit/duet/kit/tracing"
)

// DefaultTimeout bounds each unary call that has no shorter deadline.
const DefaultTimeout = 10 * time.Second

// connectParams is how a connection retries after its peer went away:
// grpc-go's defaults but for a first wait of 100 ms instead of 1 s and at
// most 5 s between attempts instead of 120.
//
// Why: while a connection waits to retry, calls on it fail at once with
// UNAVAILABLE, and the retry policy's attempts (about 0.7 s of them) are
// spent before the wait is over. With grpc-go's 1 s a peer that restarted
// in a few hundred milliseconds still had its callers failing for most of
// a second (the chaos test's gateway did: 503 on a product read 0.6 s
// after inventory was back), and after a longer outage the waits grow
// towards two minutes. A connection attempt to a peer that is down costs
// a refused SYN on a LAN: one every 5 s while it stays down is nothing.
// The time allowed for each attempt stays grpc-go's 20 s. A
// grpc.WithConnectParams in Config.Options comes later and wins.
var connectParams = grpc.ConnectParams{
	Backoff: backoff.Config{
		BaseDelay:  100 * time.Millisecond,
		Multiplier: backoff.DefaultConfig.Multiplier,
		Jitter:     backoff.DefaultConfig.Jitter,
		MaxDelay:   5 * time.Second,
	},
	MinConnectTimeout: 20 * time.Second,
}

// Retry tunes the retry policy of idempotent methods (gRPC service config
// retryPolicy). Only UNAVAILABLE is retried: it means the call did not run.
type Retry struct {
	// MaxAttempts counts the first try; grpc-go caps it at 5. Default 4;
	// 1 (or less) means one try, no retries.
	MaxAttempts int
	// InitialBackoff and MaxBackoff bound the jittered exponential backoff.
	// Defaults 100ms and 1s.
	InitialBackoff, MaxBackoff time.Duration
}

// Config tunes a connection. The zero value is valid and means "defaults".
type Config struct {
	// Metrics records client RED metrics; nil means metrics.Default().
	Metrics *metrics.Metrics
	// Creds secures the connection; nil means plaintext.
	Creds credentials.TransportCredentials
	// Services names the fully-qualified services the peer serves (for
	// example "duet.user.v1.UserService"), whose methods get timeouts and
	// retries. Empty means every service linked into this binary.
	Services []string
	// Timeout bounds each unary call; negative disables it.
	Timeout time.Duration
	// Retry tunes retries of idempotent methods.
	Retry Retry
	// DisableRetries turns retries off altogether.
	DisableRetries bool
	// Keepalive sets client pings; zero means every 30s, 10s timeout,
	// even without active calls, which kit/server allows. A zero Time or
	// Timeout in a struct that sets other fields takes its default (30s,
	// 10s) as well; PermitWithoutStream is as given. Time is never under
	// server.DefaultMinPingInterval. A server with
	// grpc-go's default enforcement (pings no more often than every 5
	// minutes, none without a call open) closes such a connection with
	// GOAWAY too_many_pings at the fourth ping without data between them,
	// some two minutes into an idle one or a quiet stream: to call one,
	// set Time to 5 minutes or more and PermitWithoutStream false.
	Keepalive keepalive.ClientParameters
	// DisableTracing turns off the OpenTelemetry stats handler.
	DisableTracing bool
	// DisableHealthCheck turns off client-side health checking. With it
	// on (the default), each connection to one of the target's addresses
	// keeps a grpc.health.v1 Watch open and round_robin sends no calls to
	// an address whose server reports NOT_SERVING for the whole server
	// (service name ""): one that is draining (kit/server's Shutdown says
	// so before it stops), not ready yet (server.Config.NotReadyAtStart),
	// or whose owner said it cannot serve (SetServing(false), or
	// Health().SetServingStatus("", …); a single service's status is not
	// read). When no address is healthy, calls fail with UNAVAILABLE, as
	// they would with none reachable.
	//
	// A server without the health service counts as healthy (grpc-go
	// logs an error through grpclog each time such a connection opens).
	// The Watch carries the connection's credentials, per-RPC ones
	// included, but not what UnaryInterceptors and StreamInterceptors add
	// to calls: a server that demands such metadata of grpc.health.v1
	// refuses the Watch, and its addresses never become healthy. Let the
	// health service through unauthenticated (its answers tell nothing
	// secret), or turn this off.
	DisableHealthCheck bool
	// UnaryInterceptors and StreamInterceptors run after the defaults.
	UnaryInterceptors  []grpc.UnaryClientInterceptor
	StreamInterceptors []grpc.StreamClientInterceptor
	// Options are appended to the dial options.
	Options []grpc.DialOption
}

// keepaliveParams returns the pings New sets for Config.Keepalive ka.
func keepaliveParams(ka keepalive.ClientParameters) keepalive.ClientParameters {
	if ka == (keepalive.ClientParameters{}) {
		ka.PermitWithoutStream = true
	}
	// Field by field: a struct setting only Timeout had Time 0 raised to
	// the 10s floor below, pinging three times as often as the default.
	if ka.Time == 0 {
		ka.Time = DefaultKeepaliveTime
	}
	if ka.Timeout == 0 {
		ka.Timeout = DefaultKeepaliveTimeout
	}
	if ka.Time < server.DefaultMinPingInterval {
		// Pinging faster than servers allow gets the connection closed
		// with ENHANCE_YOUR_CALM.
		ka.Time = server.DefaultMinPingInterval
	}
	return ka
}

// Client keepalive defaults (Config.Keepalive).
const (
	DefaultKeepaliveTime    = 30 * time.Second
	DefaultKeepaliveTimeout = 10 * time.Second
)

// New returns a connection to target ("host:port", "dns:///name:port",
// "static:///host:port,host:port", or any target grpc.NewClient accepts).
// It does not connect until first used; share it for the life of the
// process.
func New(target string, cfg Config) (*grpc.ClientConn, error) {
	if u, err := url.Parse(target); err == nil && u.Scheme == StaticScheme {
		// grpc.NewClient resolves on the first call: a bad list would
		// fail every call rather than the start. The endpoint as grpc
		// reads it ("static://a:1,b:2", one slash short, has none).
		if _, err := StaticAddresses((resolver.Target{URL: *u}).Endpoint()); err != nil {
			return nil, fmt.Errorf("client: %s: %w", target, err)
		}
	}
	m := cfg.Metrics
	if m == nil {
		m = metrics.Default()
	}
	creds := cfg.Creds
	if creds == nil {
		creds = insecure.NewCredentials()
	}
	ka := keepaliveParams(cfg.Keepalive)
	sc, err := ServiceConfig(cfg)
	if err != nil {
		return nil, err
	}
	// With an exporter, otelgrpc's stats handler records client spans and
	// carries the trace context itself; without one, only the context is
	// carried, by propagation.
	exporting := !cfg.DisableTracing && tracing.Exporting()
	prop := propagation{trace: !cfg.DisableTracing && !exporting}
	opts := []grpc.DialOption{
		grpc.WithTransportCredentials(creds),
		grpc.WithConnectParams(connectParams),
		grpc.WithKeepaliveParams(ka),
		grpc.WithDefaultServiceConfig(sc),
		grpc.WithChainUnaryInterceptor(append([]grpc.UnaryClientInterceptor{
			prop.unary,
			m.Client.UnaryClientInterceptor(),
		}, cfg.UnaryInterceptors...)...),
		grpc.WithChainStreamInterceptor(append([]grpc.StreamClientInterceptor{
			prop.stream,
			m.Client.StreamClientInterceptor(),
		}, cfg.StreamInterceptors...)...),
	}
	if exporting {
		opts = append(opts, grpc.WithStatsHandler(otelgrpc.NewClientHandler()))
	}
	opts = append(opts, cfg.Options...)
	conn, err := grpc.NewClient(target, opts...)
	if err != nil {
		return nil, fmt.Errorf("client: %s: %w", target, err)
	}
	return conn, nil
}

// The JSON shapes of gRPC service config (gRFC A6 and service_config.proto).
type serviceConfig struct {
	LoadBalancingConfig []map[string]struct{} `json:"loadBalancingConfig"`
	HealthCheckConfig   *healthCheckConfig    `json:"healthCheckConfig,omitempty"`
	MethodConfig        []methodConfig        `json:"methodConfig,omitempty"`
	RetryThrottling     *retryThrottling      `json:"retryThrottling,omitempty"`
}

// healthCheckConfig names the service whose grpc.health.v1 status decides
// whether an address gets calls (gRFC A17); "" is the whole server.
type healthCheckConfig struct {
	ServiceName string `json:"serviceName"`
}

// retryThrottling is gRFC A6's retry throttling: every failed attempt
// costs a token, every success gives back TokenRatio, and retries stop
// while half the tokens or fewer are left.
type retryThrottling struct {
	MaxTokens  int     `json:"maxTokens"`
	TokenRatio float64 `json:"tokenRatio"`
}

// throttling is the retry throttling of every connection with retries
// (gRFC A6's own example). Without it a peer that fails every call gets
// every call MaxAttempts times, which at each hop of a call chain
// multiplies the load on it just when it can least take it; with it, once
// failed attempts have spent half the connection's ten tokens (five
// UNAVAILABLE answers to calls of retried methods, whether in a row or
// among successes; each OK, of any method, earns back a tenth of one),
// calls are tried once until successes earn the tokens back; failures go
// on spending them, down to none, and then it takes some sixty OKs. A
// restart under concurrent load so gets a few of its calls retried, not
// all.
var throttling = &retryThrottling{MaxTokens: 10, TokenRatio: 0.1}

type methodName struct {
	Service string `json:"service"`
	Method  string `json:"method,omitempty"`
}

type methodConfig struct {
	Name         []methodName `json:"name"`
	Timeout      string       `json:"timeout,omitempty"`
	WaitForReady *bool        `json:"waitForReady,omitempty"`
	RetryPolicy  *retryPolicy `json:"retryPolicy,omitempty"`
}

type retryPolicy struct {
	MaxAttempts          int      `json:"maxAttempts"`
	InitialBackoff       string   `json:"initialBackoff"`
	MaxBackoff           string   `json:"maxBackoff"`
	BackoffMultiplier    float64  `json:"backoffMultiplier"`
	RetryableStatusCodes []string `json:"retryableStatusCodes"`
}

// seconds writes d as service config's duration: decimal seconds with no
// exponent, which grpc-go refuses (%g wrote 300h as "1.08e+06s").
func seconds(d time.Duration) string {
	// In integers: d.Seconds() is a float sum, and 1.14 s came out as
	// "1.1400000000000001s", which grpc-go refuses (at most nine
	// decimals), so that New failed with an invalid service config.
	s := strconv.FormatInt(int64(d/time.Second), 10)
	if ns := int64(d % time.Second); ns != 0 {
		s += "." + strings.TrimRight(fmt.Sprintf("%09d", ns), "0")
	}
	return s + "s"
}

// ServiceConfig returns the JSON service config New installs for cfg:
// round_robin over the addresses whose server is healthy (gRFC A17), a
// timeout on every unary method, and a retry policy on idempotent ones,
// throttled as gRFC A6 describes. It is exported so it
// can be inspected and tested.
func ServiceConfig(cfg Config) (string, error) {
	timeout := cfg.Timeout
	if timeout == 0 {
		timeout = DefaultTimeout
	}
	r := cfg.Retry
	if r.InitialBackoff < 0 || r.MaxBackoff < 0 {
		return "", fmt.Errorf("client: Retry.InitialBackoff and Retry.MaxBackoff must not be negative (got %v, %v)", r.InitialBackoff, r.MaxBackoff)
	}
	if r.MaxAttempts == 0 {
		r.MaxAttempts = 4
	}
	if r.InitialBackoff == 0 {
		r.InitialBackoff = 100 * time.Millisecond
	}
	if r.MaxBackoff == 0 {
		r.MaxBackoff = time.Second
	}
	policy := &retryPolicy{
		MaxAttempts:          r.MaxAttempts,
		InitialBackoff:       seconds(r.InitialBackoff),
		MaxBackoff:           seconds(r.MaxBackoff),
		BackoffMultiplier:    2,
		RetryableStatusCodes: []string{"UNAVAILABLE"},
	}
	sc := serviceConfig{LoadBalancingConfig: []map[string]struct{}{{"round_robin": {}}}}
	if !cfg.DisableHealthCheck {
		sc.HealthCheckConfig = &healthCheckConfig{}
	}
	retries := !cfg.DisableRetries && r.MaxAttempts > 1
	if retries {
		sc.RetryThrottling = throttling
	}

	services, err := lookupServices(cfg.Services)
	if err != nil {
		return "", err
	}
	for _, sd := range services {
		var retried, once []methodName
		methods := sd.Methods()
		for i := 0; i < methods.Len(); i++ {
			md := methods.Get(i)
			if md.IsStreamingClient() || md.IsStreamingServer() {
				continue // streams live as long as their caller wants
			}
			name := methodName{Service: string(sd.FullName()), Method: string(md.Name())}
			if retries && idempotent(md) {
				retried = append(retried, name)
			} else {
				once = append(once, name)
			}
		}
		mc := methodConfig{}
		if timeout > 0 {
			mc.Timeout = seconds(timeout)
		}
		if len(retried) > 0 {
			c := mc
			c.Name, c.RetryPolicy = retried, policy
			sc.MethodConfig = append(sc.MethodConfig, c)
		}
		if len(once) > 0 && mc.Timeout != "" {
			c := mc
			c.Name = once
			sc.MethodConfig = append(sc.MethodConfig, c)
		}
	}
	b, err := json.Marshal(sc)
	if err != nil {
		return "", err
	}
	return string(b), nil
}

func idempotent(md protoreflect.MethodDescriptor) bool {
	opts, ok := md.Options().(*descriptorpb.MethodOptions)
	if !ok || opts == nil {
		return false
	}
	switch opts.GetIdempotencyLevel() {
	case descriptorpb.MethodOptions_IDEMPOTENT, descriptorpb.MethodOptions_NO_SIDE_EFFECTS:
		return true
	}
	return false
}

// lookupServices resolves names in the global registry; no names means
// every service linked in, except grpc's own (health, reflection).
func lookupServices(names []string) ([]protoreflect.ServiceDescriptor, error) {
	var out []protoreflect.ServiceDescriptor
	if len(names) > 0 {
		seen := map[string]bool{}
		for _, n := range names {
			if seen[n] {
				continue // grpc-go refuses a method named twice
			}
			seen[n] = true
			d, err := protoregistry.GlobalFiles.FindDescriptorByName(protoreflect.FullName(n))
			if err != nil {
				return nil, fmt.Errorf("client: unknown service %q: %w", n, err)
			}
			sd, ok := d.(protoreflect.ServiceDescriptor)
			if !ok {
				return nil, fmt.Errorf("client: %q is not a service", n)
			}
			out = append(out, sd)
		}
		return out, nil
	}
	protoregistry.GlobalFiles.RangeFiles(func(fd protoreflect.FileDescriptor) bool {
		if strings.HasPrefix(string(fd.Package()), "grpc.") {
			return true
		}
		svcs := fd.Services()
		for i := 0; i < svcs.Len(); i++ {
			out = append(out, svcs.Get(i))
		}
		return true
	})
	return out, nil
}
