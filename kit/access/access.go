// Package access decides which callers may call which methods of a gRPC
// server, by the names in their mutual-TLS certificates, from a policy
// file that is read again while the process runs.
//
// The policy is gRPC's authorization policy (grpc-go's authz package,
// the format gRPC's other languages read too): deny rules, then allow
// rules, each matching callers ("source": {"principals": [...]}: a
// certificate's URI names if it has any, else its DNS names, else its
// whole subject as "CN=operator,O=Shop"; "*" at either end matches any
// prefix or suffix; a rule without a source matches every caller) and
// requests ("request": {"paths": ["/pkg.Service/Method",
// "/pkg.Service/*"]}). A call no allow rule matches is refused with
// PERMISSION_DENIED, reason CALLER_NOT_ALLOWED, and logged with the name
// the caller was known by. Health checks (grpc.health.v1) are answered
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
// applies to the calls after it (streams already open go on), one that
// does not is logged and the last good one kept.
package access

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/authz"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	"github.com/duetkit/duet/internal/watchfile"
	"github.com/duetkit/duet/kit/apierr"
	"github.com/duetkit/duet/kit/mtls"
)

// ReasonCallerNotAllowed is the ErrorInfo reason of a call the policy
// refused.
const ReasonCallerNotAllowed = "CALLER_NOT_ALLOWED"

// DefaultRefresh is how often the policy file is read again when
// Config.Refresh is zero.
const DefaultRefresh = time.Minute

// healthMethods are the methods every caller may call, by name (a
// made-up name under their prefix is decided by the policy).
var healthMethods = map[string]bool{
	healthpb.Health_Check_FullMethodName: true,
	healthpb.Health_Watch_FullMethodName: true,
	healthpb.Health_List_FullMethodName:  true,
}

// maxMethod bounds the method name a refusal repeats: a caller may send
// one as long as its headers.
const maxMethod = 256

// Config names the policy file.
type Config struct {
	// PolicyFile holds the policy, as JSON.
	PolicyFile string
	// Refresh is how often the file is read again; zero means
	// DefaultRefresh.
	Refresh time.Duration
	// Logger receives a line for each policy taken or refused after Load
	// and for each call refused; nil means slog.Default().
	Logger *slog.Logger
}

// Policy is a loaded policy, kept up to date with its file until Close.
type Policy struct {
	cfg    Config
	engine atomic.Pointer[authz.StaticInterceptor]
	file   *watchfile.Watcher
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
	p := &Policy{cfg: cfg}
	p.engine.Store(engine)
	p.file = watchfile.Start(ctx, watchfile.Config{File: cfg.PolicyFile, FileKey: "policy_file", Every: cfg.Refresh, Package: "access", Noun: "policy", Logger: cfg.Logger,
		Take: func(contents []byte) error {
			engine, err := compile(cfg.PolicyFile, contents)
			if err == nil {
				p.engine.Store(engine)
			}
			return err
		}}, contents)
	return p, nil
}

// compile parses a policy, saying which file is wrong.
func compile(file string, contents []byte) (*authz.StaticInterceptor, error) {
	// authz reads the first JSON value and ignores what follows it: a
	// second policy pasted after the first would be silently dropped.
	dec := json.NewDecoder(bytes.NewReader(contents))
	var policy json.RawMessage
	if err := dec.Decode(&policy); err == nil {
		if _, err := dec.Token(); err != io.EOF {
			return nil, fmt.Errorf("access: policy %s: text after the policy", file)
		}
	}
	engine, err := authz.NewStatic(string(contents))
	if err != nil {
		return nil, fmt.Errorf("access: policy %s: %w", file, err)
	}
	return engine, nil
}

// Close stops reading the file and waits for the reader to end. The
// interceptors go on deciding with the last policy read.
func (p *Policy) Close() { p.file.Close() }

// UnaryInterceptor refuses unary calls the policy does not allow.
func (p *Policy) UnaryInterceptor() grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		if healthMethods[info.FullMethod] {
			return handler(ctx, req)
		}
		reached := false
		resp, err := p.engine.Load().UnaryInterceptor(ctx, req, info, func(ctx context.Context, req any) (any, error) {
			reached = true
			return handler(ctx, req)
		})
		if !reached {
			return nil, p.refusal(ctx, info.FullMethod, err)
		}
		return resp, err
	}
}

// StreamInterceptor refuses streams the policy does not allow.
func (p *Policy) StreamInterceptor() grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		if healthMethods[info.FullMethod] {
			return handler(srv, ss)
		}
		reached := false
		err := p.engine.Load().StreamInterceptor(srv, ss, info, func(srv any, ss grpc.ServerStream) error {
			reached = true
			return handler(srv, ss)
		})
		if !reached {
			return p.refusal(ss.Context(), info.FullMethod, err)
		}
		return err
	}
}

// refusal turns authz's bare status into the kit's error with a stable
// reason, and logs who was refused; anything but a denial (authz's
// INTERNAL for a call whose peer it cannot read) is logged and answered
// as an internal error without its text.
func (p *Policy) refusal(ctx context.Context, method string, err error) error {
	if len(method) > maxMethod {
		method = strings.ToValidUTF8(method[:maxMethod], "") + "…"
	}
	if status.Code(err) != codes.PermissionDenied {
		p.cfg.Logger.ErrorContext(ctx, "access: the policy could not decide", "method", method, "error", err)
		return apierr.Internal()
	}
	p.cfg.Logger.InfoContext(ctx, "access: call refused", "method", method, "principal", principal(ctx))
	return apierr.New(codes.PermissionDenied, ReasonCallerNotAllowed,
		"the caller's certificate is not allowed to call "+method, apierr.Metadata("method", method))
}

// principal is the name the policy knew the caller by (mtls.PeerNames).
func principal(ctx context.Context) string {
	return strings.Join(mtls.PeerNames(ctx), ",")
}
