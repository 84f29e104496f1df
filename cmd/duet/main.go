// Command duet runs the Duet shop: every service and the REST gateway in one
// process (`duet` or `duet up`), or one component per process
// (`duet serve user|order|payment|inventory|notification|gateway`). Every flag can also be set
// through the DUET_* environment variable shown in --help.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/duetkit/duet/internal/system"
	"github.com/duetkit/duet/kit/authn"
	"github.com/duetkit/duet/kit/events"
	"github.com/duetkit/duet/kit/logger"
	"github.com/duetkit/duet/kit/tracing"
	"github.com/duetkit/duet/services/inventory"
	"github.com/duetkit/duet/services/order"
	"github.com/duetkit/duet/services/order/saga"
)

func main() {
	system.TuneGC()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	// From the first signal on, signals get their default handling back:
	// a second Ctrl+C ends a drain that takes too long.
	context.AfterFunc(ctx, stop)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	switch {
	case err == nil, errors.Is(err, flag.ErrHelp):
	default:
		fmt.Fprintln(os.Stderr, "duet:", err)
		os.Exit(1)
	}
}

const usage = `duet runs the Duet shop.

Usage:
  duet [up] [flags]                 every service, the gateway and NATS in one process
  duet serve COMPONENT [flags]      one component: user, order, payment, inventory,
                                    notification or gateway
  duet stock import FILE.csv        stream a CSV of stock records to the inventory service
  duet order watch ORDER_ID         follow an order's saga until it ends
  duet certs NAME...                a development CA and certificates for
                                    mutual TLS between duet serve's components
  duet token SUBJECT                an end user's token from a development
                                    issuer, for duet up/serve --auth-keys
  duet openapi [--tokens]           the REST API's OpenAPI document of all five
                                    services, as duet up serves it at /openapi.json
  duet help [COMMAND]               this text, or a command's flags

Each flag may also be set with the environment variable shown beside it;
a flag given on the command line wins, and an empty variable counts as
unset.
`

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	cmd := "up"
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		cmd, args = args[0], args[1:]
	}
	switch cmd {
	case "up":
		return up(ctx, args, stdout, stderr)
	case "serve":
		return serve(ctx, args, stderr)
	case "stock":
		return stockCmd(ctx, args, stdout, stderr)
	case "order":
		return orderCmd(ctx, args, stdout, stderr)
	case "certs":
		return certsCmd(ctx, args, stdout, stderr)
	case "token":
		return tokenCmd(ctx, args, stdout, stderr)
	case "openapi":
		return openAPICmd(ctx, args, stdout, stderr)
	case "help":
		fmt.Fprint(stdout, usage)
		if len(args) > 0 {
			fmt.Fprintln(stdout)
			return run(ctx, []string{args[0], "--help"}, stdout, stdout)
		}
		return nil
	default:
		fmt.Fprint(stderr, usage)
		return fmt.Errorf("unknown command %q", cmd)
	}
}

// common holds the flags every command has.
type common struct {
	logLevel        string
	drainTimeout    time.Duration
	dataDir         string
	eventStream     string
	eventPrefix     string
	sagaStep        time.Duration
	sagaBacklog     int
	importRetention time.Duration
	trustTrace      bool
	corsOrigins     string
}

// origins splits the --cors-origins list.
func (c *common) origins() []string { return commaList(c.corsOrigins) }

// commaList splits a comma-separated flag, dropping blanks.
func commaList(flag string) []string {
	var out []string
	for _, o := range strings.Split(flag, ",") {
		if o = strings.TrimSpace(o); o != "" {
			out = append(out, o)
		}
	}
	return out
}

func (c *common) register(fs *flag.FlagSet) {
	fs.StringVar(&c.logLevel, "log-level", "info", "log level: debug, info, warn or error")
	fs.DurationVar(&c.drainTimeout, "drain-timeout", 15*time.Second, "how long in-flight calls may run on shutdown before they are cut off")
	fs.StringVar(&c.dataDir, "data-dir", system.DefaultDataDir, "directory for the SQLite databases (and the embedded NATS store)")
	fs.StringVar(&c.eventStream, "event-stream", events.DefaultStream, "JetStream stream that holds the events")
	fs.StringVar(&c.eventPrefix, "event-prefix", events.DefaultPrefix, "subject prefix of the events")
	fs.DurationVar(&c.sagaStep, "saga-step-timeout", 30*time.Second, "order saga: how long a step retries a peer that is down before compensating")
	fs.IntVar(&c.sagaBacklog, "saga-max-backlog", saga.DefaultMaxBacklog, "order saga: orders in progress past which CreateOrder answers ORDERS_OVERLOADED (UNAVAILABLE, 503); -1 for no bound")
	fs.DurationVar(&c.importRetention, "import-retention", inventory.DefaultImportRetention, "inventory: how long a stock import's import_id is remembered, at least, so that the import sent again applies nothing (then forgotten: the id is new again); at least 1h, or negative for ever")
	fs.BoolVar(&c.trustTrace, "trust-trace-context", false, "gateway: continue the trace a request's traceparent names (behind a proxy of your own); off, each request starts its own trace, linked to the caller's")
	fs.StringVar(&c.corsOrigins, "cors-origins", "", "gateway: comma-separated origins whose browser pages may call the API (https://shop.example, https://*.shop.example, or * for any); empty, none")
}

// flushTracing sends the spans still buffered, giving up after two
// seconds: an unreachable collector held the exit for the exporter's
// 10 s, past the drain the user asked for.
func flushTracing(ctx context.Context, shutdown func(context.Context) error) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
	defer cancel()
	_ = shutdown(ctx)
}

// check refuses durations the flags' users cannot mean: the servers read a
// drain of 0 or less as their own default while up would give shutdown
// only 5 s, a saga step with no time could never call a peer, and an
// import id forgotten within the hour would not outlive its retries.
func (c *common) check() error {
	if _, err := c.level(); err != nil {
		return err
	}
	if c.drainTimeout <= 0 {
		return fmt.Errorf("--drain-timeout must be positive, got %v", c.drainTimeout)
	}
	if c.sagaStep <= 0 {
		return fmt.Errorf("--saga-step-timeout must be positive, got %v", c.sagaStep)
	}
	if c.sagaBacklog == 0 || c.sagaBacklog < -1 {
		// 0 would be the default, not "none"; below -1 means nothing.
		return fmt.Errorf("--saga-max-backlog must be positive, or -1 for no bound, got %d", c.sagaBacklog)
	}
	if c.importRetention >= 0 && c.importRetention < time.Hour {
		// 0 would be the default, not "no time at all"; and an id must
		// outlive its own import (up to 10 minutes) and the client's
		// retries of it.
		return fmt.Errorf("--import-retention must be at least 1h, or negative to remember imports for ever, got %v", c.importRetention)
	}
	return nil
}

func (c *common) bus() events.BusConfig {
	return events.BusConfig{Stream: c.eventStream, Prefix: c.eventPrefix}
}

func (c *common) saga() order.SagaConfig {
	return order.SagaConfig{StepTimeout: c.sagaStep, MaxBacklog: c.sagaBacklog}
}

// observe starts the process's JSON logger, whose lines a goroutine
// writes in batches (logger.NewAsync), and its tracing as service; flush,
// to be called on every way out, ends the tracing (its spans exported,
// within 2 s), then writes the log lines still queued.
func (c *common) observe(ctx context.Context, stderr io.Writer, service string) (_ *slog.Logger, flush func(), _ error) {
	level, err := c.level()
	if err != nil {
		return nil, nil, err
	}
	log, async := logger.NewAsync(stderr, level, "")
	flushLog := func() { _ = async.Close(context.Background()) }
	shutdownTracing, err := tracing.Setup(ctx, service)
	if err != nil {
		flushLog()
		return nil, nil, err
	}
	return log, func() {
		flushTracing(ctx, shutdownTracing)
		flushLog()
	}, nil
}

// level is --log-level's.
func (c *common) level() (slog.Level, error) {
	var level slog.Level
	if err := level.UnmarshalText([]byte(c.logLevel)); err != nil {
		return 0, fmt.Errorf("--log-level: %w", err)
	}
	return level, nil
}

func up(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	cfg, c, err := upConfig(args, stderr)
	if err != nil {
		return err
	}
	log, flush, err := c.observe(ctx, stderr, "duet")
	if err != nil {
		return err
	}
	defer flush()

	cfg.Logger = log
	sys, err := system.Start(ctx, cfg)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, `Duet is running (data in %s).
  REST gateway   http://%[2]s   (try: curl http://%[2]s/v1/users)
  API docs       http://%[2]s/docs   (OpenAPI: http://%[2]s/openapi.json)
  Metrics        http://%[2]s/metrics
  gRPC user      %[3]s
  gRPC order     %[4]s
  gRPC payment   %[5]s
  gRPC inventory %[6]s
  gRPC notify    %[7]s
  NATS           %[8]s
Press Ctrl+C to stop.
`, c.dataDir, sys.HTTPAddr, sys.UserAddr, sys.OrderAddr, sys.PaymentAddr, sys.InventoryAddr, sys.NotificationAddr, natsLabel(sys.NATSURL))

	<-ctx.Done()
	log.Info("shutting down: draining in-flight requests")
	stopCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), c.drainTimeout+5*time.Second)
	defer cancel()
	if err := sys.Shutdown(stopCtx); err != nil {
		return err
	}
	log.Info("stopped")
	return nil
}

// upConfig reads `duet up`'s arguments, and the DUET_* variables of the
// flags they leave unset, into the whole system's configuration (but its
// Logger), refused as up would refuse it; the common flags come back too,
// for the logger.
func upConfig(args []string, stderr io.Writer) (system.Config, *common, error) {
	fs := newFlagSet("up", "duet [up] [flags]", stderr)
	var c common
	c.register(fs)
	httpAddr := fs.String("http-addr", system.DefaultHTTPAddr, "gateway REST listen address")
	userAddr := fs.String("user-addr", system.DefaultUserAddr, "user service gRPC listen address")
	orderAddr := fs.String("order-addr", system.DefaultOrderAddr, "order service gRPC listen address")
	paymentAddr := fs.String("payment-addr", system.DefaultPaymentAddr, "payment service gRPC listen address")
	inventoryAddr := fs.String("inventory-addr", system.DefaultInventoryAddr, "inventory service gRPC listen address")
	notificationAddr := fs.String("notification-addr", system.DefaultNotificationAddr, "notification service gRPC listen address")
	natsURL := fs.String("nats-url", "", "external NATS server for events (default: embedded, JetStream store in --data-dir)")
	var auth authFlags
	auth.register(fs, false)
	if err := parse(fs, args); err != nil {
		return system.Config{}, nil, err
	}
	if err := c.check(); err != nil {
		return system.Config{}, nil, err
	}
	authCfg, err := auth.config(fs)
	if err != nil {
		return system.Config{}, nil, err
	}
	return system.Config{
		DataDir:  c.dataDir,
		HTTPAddr: *httpAddr, UserAddr: *userAddr, OrderAddr: *orderAddr, PaymentAddr: *paymentAddr,
		InventoryAddr: *inventoryAddr, NotificationAddr: *notificationAddr,
		NATSURL:           *natsURL,
		Bus:               c.bus(),
		Saga:              c.saga(),
		ImportRetention:   c.importRetention,
		TrustTraceContext: c.trustTrace,
		CORSOrigins:       c.origins(),
		DrainTimeout:      c.drainTimeout,
		Auth:              authCfg,
	}, &c, nil
}

func serve(ctx context.Context, args []string, stderr io.Writer) error {
	component, cfg, c, err := serveConfig(args, stderr)
	if err != nil {
		return err
	}
	log, flush, err := c.observe(ctx, stderr, "duet-"+component)
	if err != nil {
		return err
	}
	defer flush()
	cfg.Logger = log
	return system.Serve(ctx, component, cfg)
}

// serveConfig reads `duet serve`'s arguments, and the DUET_* variables of
// the flags they leave unset, into the component and its configuration
// (but its Logger), refused as Serve would refuse it; the common flags
// come back too, for the logger.
func serveConfig(args []string, stderr io.Writer) (string, system.ServeConfig, *common, error) {
	fs := newFlagSet("serve", "duet serve COMPONENT [flags]   (COMPONENT: "+strings.Join(system.Components, ", ")+")", stderr)
	var c common
	c.register(fs)
	listen := fs.String("listen", "127.0.0.1:9090", "listen address: gRPC for a service, HTTP for the gateway")
	dbURL := fs.String("database-url", "", "database URL: postgres://… or sqlite:PATH (default: a SQLite file in --data-dir)")
	userTarget := fs.String("user-target", "", "user service address (host:port, dns:///host:port, or static:///host:port,host:port for a list of replicas); order and gateway")
	orderTarget := fs.String("order-target", "", "order service address; gateway")
	paymentTarget := fs.String("payment-target", "", "payment service address; order and gateway")
	inventoryTarget := fs.String("inventory-target", "", "inventory service address; order and gateway")
	notificationTarget := fs.String("notification-target", "", "notification service address; gateway")
	natsURL := fs.String("nats-url", "", "NATS server for events; user, payment, order and notification")
	metricsAddr := fs.String("metrics-addr", "", "HTTP address for /metrics, /healthz and /readyz (off when empty); when set, the gateway serves /metrics there instead of on its API port")
	var tls tlsFlags
	tls.register(fs)
	accessPolicy := fs.String("access-policy", "", "services: gRPC authorization policy file (JSON) naming which callers' certificates may call which methods, read again every --tls-refresh; needs the --tls-* flags; none, any caller the CA signed may call any method")
	var auth authFlags
	auth.register(fs, true)
	notServingDelay := fs.Duration("not-serving-delay", 0, "on SIGINT or SIGTERM, how long to go on serving while readiness reports not ready (gRPC health NOT_SERVING, /readyz 503) before draining, for balancers that poll it: as long as they take to act; stopping takes up to this plus --drain-timeout plus 5s; a second signal stops at once")
	fail := func(err error) (string, system.ServeConfig, *common, error) {
		return "", system.ServeConfig{}, nil, err
	}
	if len(args) == 0 || strings.HasPrefix(args[0], "-") {
		if err := parse(fs, args); err != nil {
			return fail(err)
		}
		fs.Usage()
		return fail(errors.New("serve needs a component"))
	}
	component := args[0]
	if err := parse(fs, args[1:]); err != nil {
		return fail(err)
	}
	if err := c.check(); err != nil {
		return fail(err)
	}
	if *notServingDelay < 0 {
		return fail(fmt.Errorf("--not-serving-delay must not be negative, got %v", *notServingDelay))
	}
	tlsCfg, err := tls.config()
	if err != nil {
		return fail(err)
	}
	authCfg, err := auth.config(fs)
	if err != nil {
		return fail(err)
	}
	cfg := system.ServeConfig{
		Listen: *listen, DatabaseURL: *dbURL, DataDir: c.dataDir,
		UserTarget: *userTarget, OrderTarget: *orderTarget, PaymentTarget: *paymentTarget,
		InventoryTarget: *inventoryTarget, NotificationTarget: *notificationTarget, NATSURL: *natsURL,
		Bus: c.bus(), Saga: c.saga(), ImportRetention: c.importRetention, TrustTraceContext: c.trustTrace, CORSOrigins: c.origins(),
		MetricsAddr: *metricsAddr, DrainTimeout: c.drainTimeout, NotServingDelay: *notServingDelay,
		TLS: tlsCfg, AccessPolicy: *accessPolicy, Auth: authCfg,
	}
	if err := cfg.Check(component); err != nil {
		return fail(err)
	}
	return component, cfg, &c, nil
}

// authFlags are the end users' token flags of serve and up.
type authFlags struct {
	keys, issuer, audience, trusted *string
	refresh                         *time.Duration
}

// register adds the flags to fs; serve's (services) take --auth-trusted
// too, which up, whose saga its in-memory connections name, does not.
func (a *authFlags) register(fs *flag.FlagSet, serve bool) {
	who, but := "services and gateway", "the --auth-trusted certificates' calls"
	if !serve {
		who, but = "every component", "the order saga's calls"
	}
	a.keys = fs.String("auth-keys", "", who+": the identity provider's JSON Web Key Set (a file, read again every --auth-refresh): every call then needs an end user's token (Authorization: Bearer, which the gateway checks and passes on) signed by one of its keys, but health checks and, without a token, signing up, reading the catalogue and "+but+"; a token sent is always checked, and whose data it reaches is each service's rules' to say; none, no token is asked for")
	a.issuer = fs.String("auth-issuer", "", who+": the \"iss\" tokens must claim; needs --auth-keys")
	a.audience = fs.String("auth-audience", "duet", who+": the \"aud\" tokens must claim; needs --auth-keys")
	if serve {
		a.trusted = fs.String("auth-trusted", "", "services: comma-separated certificate names whose calls need no token (the order saga's: order; operators' commands: operator); needs --auth-keys and the --tls-* flags; never a name the gateway's certificate carries")
	} else {
		a.trusted = new(string)
	}
	a.refresh = fs.Duration("auth-refresh", authn.DefaultRefresh, who+": how often --auth-keys is read again, so the issuer's keys rotate without a restart (at least 1s); needs --auth-keys")
}

// config checks the flags fs parsed and returns what they ask for.
func (a *authFlags) config(fs *flag.FlagSet) (authn.Config, error) {
	given := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { given[f.Name] = true }) // the environment's too
	for _, name := range []string{"auth-issuer", "auth-audience", "auth-trusted", "auth-refresh"} {
		if given[name] && *a.keys == "" {
			return authn.Config{}, fmt.Errorf("--%s needs --auth-keys, the identity provider's key set", name)
		}
	}
	switch {
	case *a.keys != "" && *a.issuer == "":
		return authn.Config{}, errors.New("--auth-keys needs --auth-issuer, the \"iss\" tokens must claim")
	case *a.keys != "" && strings.TrimSpace(*a.audience) == "":
		return authn.Config{}, errors.New("--auth-audience must not be empty: it is the \"aud\" tokens must claim")
	case *a.keys != "" && *a.refresh < time.Second:
		return authn.Config{}, fmt.Errorf("--auth-refresh must be at least 1s, got %v", *a.refresh)
	}
	return authn.Config{KeysFile: *a.keys, Issuer: *a.issuer, Audience: *a.audience, Refresh: *a.refresh, TrustedPeers: commaList(*a.trusted)}, nil
}

func natsLabel(url string) string {
	if url == "" {
		return "embedded (in process)"
	}
	return url
}

// envName is the environment variable that sets flag name: --user-target
// is DUET_USER_TARGET.
func envName(name string) string {
	return "DUET_" + strings.ToUpper(strings.ReplaceAll(name, "-", "_"))
}

// commandLineOnly are the flags no environment variable sets: each names
// one run (an import id), and a variable left in a job's environment would
// hand next week's import this week's id, and have it skipped.
// So are `duet certs`' flags: a one-off command for a developer, whose
// generic names (DUET_DIR) a deployment's environment could hold.
var commandLineOnly = map[string]bool{"import-id": true, "dir": true, "days": true,
	// And `duet token`'s, for the same reason.
	"issuer": true, "audience": true, "scope": true, "ttl": true,
	// And `duet openapi`'s.
	"tokens": true}

func newFlagSet(name, synopsis string, w io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(w)
	fs.Usage = func() {
		fmt.Fprintf(w, "Usage: %s\n\nFlags:\n", synopsis)
		var lines []string
		fs.VisitAll(func(f *flag.Flag) {
			def := ""
			if f.DefValue != "" {
				def = fmt.Sprintf(" (default %q)", f.DefValue)
			}
			env := envName(f.Name)
			if commandLineOnly[f.Name] {
				env = "command line only"
			}
			lines = append(lines, fmt.Sprintf("  --%s  [%s]\n        %s%s\n", f.Name, env, f.Usage, def))
		})
		sort.Strings(lines)
		fmt.Fprint(w, strings.Join(lines, ""))
	}
	return fs
}

// parse reads args, then fills every flag not given on the command line
// from its environment variable. An empty variable counts as unset: a
// deployment template that leaves DUET_LISTEN blank means the default, not
// an address of "" (every interface, on a port chosen at random).
func parse(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments: %v", fs.Args())
	}
	given := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { given[f.Name] = true })
	var err error
	fs.VisitAll(func(f *flag.Flag) {
		if given[f.Name] || commandLineOnly[f.Name] || err != nil {
			return
		}
		if v := os.Getenv(envName(f.Name)); v != "" {
			if serr := fs.Set(f.Name, v); serr != nil {
				err = fmt.Errorf("%s=%q: %w", envName(f.Name), v, serr)
			}
		}
	})
	return err
}
