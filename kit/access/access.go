// Package access decides which callers may call which methods of a gRPC
// server, by the names in their mutual-TLS certificates, from a policy
// file that is read again while the process runs.
//
// The policy is gRPC's authorization policy (grpc-go's authz package,
// the format gRPC's other languages read too): deny rules, then allow
// rules, each matching callers ("source": {"principals": [...]}, a
// certificate's first URI SAN kind present, else its DNS names, else its
// subject; "*" at either end matches any prefix or suffix) and requests
// ("request": {"paths": ["/pkg.Service/Method", "/pkg.Service/*"]}). A
// call no allow rule matches is refused with PERMISSION_DENIED, reason
// CALLER_NOT_ALLOWED. Health checks (grpc.health.v1) are answered
// whatever the policy: balancers and clients watch them.
//
//	{
//	  "name": "shop",
//	  "allow_rules": [
//	    {"name": "gateway", "source": {"principals": ["gateway"]}, "request": {"paths": ["*"]}},
//	    {"name": "order", "source": {"principals": ["order"]},
//	     "request": {"paths": ["/duet.payment.v1.PaymentService/Charge"]}}
//	  ]
//	}
//
// The file is read again every Config.Refresh; a new policy that parses
// applies to the calls after it, one that does not is logged and the
// last good one kept.
package access

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/authz"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/duetkit/duet/kit/apierr"
)

// ReasonCallerNotAllowed is the ErrorInfo reason of a call the policy
// refused.
const ReasonCallerNotAllowed = "CALLER_NOT_ALLOWED"

// DefaultRefresh is how often the policy file is read again when
// Config.Refresh is zero.
const DefaultRefresh = time.Minute

// healthPrefix starts the methods every caller may call.
const healthPrefix = "/grpc.health.v1.Health/"

// Config names the policy file.
type Config struct {
	// PolicyFile holds the policy, as JSON.
	PolicyFile string
	// Refresh is how often the file is read again; zero means
	// DefaultRefresh.
	Refresh time.Duration
	// Logger receives a line for each policy taken or refused after Load;
	// nil means slog.Default().
	Logger *slog.Logger
}

// Policy is a loaded policy, kept up to date with its file until Close.
type Policy struct {
	cfg    Config
	engine atomic.Pointer[authz.StaticInterceptor]
	stop   context.CancelFunc
	done   chan struct{}

	// Kept by the reading goroutine alone: the file's contents in use,
	// and the last ones refused or the last failure to read it.
	used, refused []byte
	readErr       string
}

// Load reads and compiles the policy file, so that a file missing or not
// a policy is an error now, and starts reading it again every Refresh.
// Close stops that: ctx's cancellation does not (its values reach the
// reading's log lines).
func Load(ctx context.Context, cfg Config) (*Policy, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	switch {
	case cfg.PolicyFile == "":
		return nil, errors.New("access: a policy file is needed")
	case cfg.Refresh < 0:
		return nil, fmt.Errorf("access: refresh must not be negative, got %v", cfg.Refresh)
	}
	if cfg.Refresh == 0 {
		cfg.Refresh = DefaultRefresh
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	contents, err := os.ReadFile(cfg.PolicyFile)
	if err != nil {
		return nil, fmt.Errorf("access: %w", err)
	}
	engine, err := compile(cfg.PolicyFile, contents)
	if err != nil {
		return nil, err
	}
	p := &Policy{cfg: cfg, used: contents, done: make(chan struct{})}
	p.engine.Store(engine)
	var watch context.Context
	watch, p.stop = context.WithCancel(context.WithoutCancel(ctx))
	go p.watch(watch)
	return p, nil
}

// compile parses a policy, saying which file is wrong.
func compile(file string, contents []byte) (*authz.StaticInterceptor, error) {
	engine, err := authz.NewStatic(string(contents))
	if err != nil {
		return nil, fmt.Errorf("access: policy %s: %w", file, err)
	}
	return engine, nil
}

// Close stops reading the file and waits for the reader to end. The
// interceptors go on deciding with the last policy read.
func (p *Policy) Close() {
	p.stop()
	<-p.done
}

// UnaryInterceptor refuses unary calls the policy does not allow.
func (p *Policy) UnaryInterceptor() grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		if strings.HasPrefix(info.FullMethod, healthPrefix) {
			return handler(ctx, req)
		}
		reached := false
		resp, err := p.engine.Load().UnaryInterceptor(ctx, req, info, func(ctx context.Context, req any) (any, error) {
			reached = true
			return handler(ctx, req)
		})
		if !reached {
			return nil, refusal(info.FullMethod, err)
		}
		return resp, err
	}
}

// StreamInterceptor refuses streams the policy does not allow.
func (p *Policy) StreamInterceptor() grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		if strings.HasPrefix(info.FullMethod, healthPrefix) {
			return handler(srv, ss)
		}
		reached := false
		err := p.engine.Load().StreamInterceptor(srv, ss, info, func(srv any, ss grpc.ServerStream) error {
			reached = true
			return handler(srv, ss)
		})
		if !reached {
			return refusal(info.FullMethod, err)
		}
		return err
	}
}

// refusal turns authz's bare status into the kit's error with a stable
// reason; anything but a denial (authz's INTERNAL for a peer it cannot
// read) stays an internal error without its text.
func refusal(method string, err error) error {
	if status.Code(err) != codes.PermissionDenied {
		return apierr.Internal()
	}
	return apierr.New(codes.PermissionDenied, ReasonCallerNotAllowed,
		"the caller's certificate is not allowed to call "+method, apierr.Metadata("method", method))
}

// watch reads the file every Refresh until ctx ends.
func (p *Policy) watch(ctx context.Context) {
	defer close(p.done)
	t := time.NewTicker(p.cfg.Refresh)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			p.reload(ctx)
		}
	}
}

// reload takes the file's contents if they changed and compile, and says
// what it did, once for each failure to read and each policy refused.
func (p *Policy) reload(ctx context.Context) {
	log := p.cfg.Logger.With("policy_file", p.cfg.PolicyFile)
	contents, err := os.ReadFile(p.cfg.PolicyFile)
	if err != nil {
		if err.Error() != p.readErr {
			p.readErr = err.Error()
			log.ErrorContext(ctx, "access: policy file not read; the last good policy is still used", "error", err)
		}
		return
	}
	p.readErr = ""
	switch {
	case bytes.Equal(contents, p.used):
		p.refused = nil
		return
	case p.refused != nil && bytes.Equal(contents, p.refused):
		return // said already
	}
	engine, err := compile(p.cfg.PolicyFile, contents)
	if err != nil {
		p.refused = contents
		log.ErrorContext(ctx, "access: new policy not used; the last good one still is", "error", err)
		return
	}
	p.engine.Store(engine)
	p.used, p.refused = contents, nil
	log.InfoContext(ctx, "access: policy reloaded")
}
