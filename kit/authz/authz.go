// Package authz decides, method by method, whether the caller a call was
// made for may make it: that a user reads only their own orders, that
// only an administrator adds products. Rules are expressions in the
// Common Expression Language (CEL, github.com/google/cel-spec) over the
// request, the response and the caller, which kit/authn's interceptors
// put in the call's context (a token's subject and scopes, or a trusted
// component's certificate name).
//
// A Rule's Request expression is checked on the request before the
// handler runs, and on each message a client or bidirectional stream
// receives, even one that fails validation (as it was sent: validation
// lowers a valid message's UUIDs only). On such a stream the handler
// starts before the first message arrives, so an expression that reads
// only the caller (the request's fields aside: "the admin scope") is
// checked before the handler starts instead, and before the first
// message is validated, and a stream that sends no message is checked
// too.
//
// A Response expression is checked on each response before it is sent,
// for methods whose request cannot tell whose resource it names (an
// order fetched by its own id): the handler has run by then, so give
// Response only to methods that change nothing. A handler's NOT_FOUND
// (on a stream, before it sent anything) is checked as an empty response
// would be, so a caller the expression refuses an empty response cannot
// tell a missing id from another's (AIP-211): both are refused. Write
// such expressions so that a caller who owns nothing owns no empty
// response either: `caller.subject != "" && response.order.user_id ==
// caller.subject`.
//
// A call an expression refuses, or whose expression fails to evaluate
// (which is logged, once a FailureLogInterval per rule), ends with PERMISSION_DENIED, reason
// ReasonNotPermitted (HTTP 403 through the REST gateway): a unary call
// gets no response, a stream nothing from the refused message on
// (earlier messages were sent), whatever its handler then returns.
//
// Expressions see three variables: request (the method's request
// message; Request only), response (its response message; Response
// only) and caller (a Caller: caller.subject, caller.scopes,
// caller.peer), with CEL's standard functions and its strings extension
// (lowerAscii and the like). They are compiled and type-checked against
// the methods' messages in New, so a misspelt field or a method that
// does not exist is an error at start, not a refusal at the first call.
//
// Methods without a rule are not checked. A server that checks rules
// should have one for every method its callers reach; kit/server runs
// these interceptors as Config.Permissions, after validation, so rules
// read well-formed unary requests.
package authz

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"reflect"
	"strings"
	"sync/atomic"
	"time"

	"cel.dev/cel-go/cel"
	"cel.dev/cel-go/ext"
	"cel.dev/cel-go/interpreter"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"

	"github.com/duetkit/duet/kit/apierr"
	"github.com/duetkit/duet/kit/authn"
)

// ReasonNotPermitted is the ErrorInfo reason of a call a rule refused.
const ReasonNotPermitted = "NOT_PERMITTED"

// Rule is what a method's caller must satisfy. At least one expression
// must be set; each must give a bool.
type Rule struct {
	// Request is checked on each request message before the handler
	// sees it: `request.user_id == caller.subject`.
	Request string
	// Response is checked on each response message before it is sent:
	// `caller.subject != "" && response.order.user_id ==
	// caller.subject`. Only for methods that change nothing: the handler
	// has run.
	Response string
	// Why, when set, ends the refusal's message, so a caller learns what
	// the rule asks ("an order is read by the user who placed it"); the
	// expressions themselves are never shown.
	Why string
}

// Caller is who a call was made for, as rules see it (the variable
// caller). Without a token on a public method, or without kit/authn,
// every field is empty.
type Caller struct {
	// Subject is the token's "sub": the end user.
	Subject string `cel:"subject"`
	// Scopes are the token's scopes.
	Scopes []string `cel:"scopes"`
	// Peer is the certificate name of a trusted component calling on its
	// own behalf (kit/authn's Config.TrustedPeers).
	Peer string `cel:"peer"`
}

// Config names the rules.
type Config struct {
	// Rules maps methods, by full name ("/pkg.Service/Method"), to their
	// rule. The methods' services must be linked into the program (their
	// generated Go package imported), as New reads their messages from
	// the protobuf registry.
	Rules map[string]Rule
	// Logger receives a line for each expression that fails to evaluate
	// at a call; nil means slog.Default().
	Logger *slog.Logger
}

// Permissions checks calls against compiled rules. It is safe for
// concurrent use.
type Permissions struct {
	rules map[string]*rule
	log   *slog.Logger
}

type rule struct {
	method  string
	request cel.Program
	// callerOnly says request reads only the caller: streams check it
	// before their handler starts.
	callerOnly bool
	response   cel.Program
	// missing is an empty response, which a handler's NOT_FOUND is
	// checked as.
	missing proto.Message
	denied  error
	// logged is when an evaluation failure was last logged (Unix ns).
	logged atomic.Int64
}

// FailureLogInterval is how often a rule that fails to evaluate is
// logged: its first failure, then at most once an interval.
const FailureLogInterval = time.Minute

// New compiles cfg.Rules; an expression that does not compile, or does
// not give a bool, or a method not in the registry is an error.
func New(cfg Config) (*Permissions, error) {
	p := &Permissions{rules: make(map[string]*rule, len(cfg.Rules)), log: cfg.Logger}
	if p.log == nil {
		p.log = slog.Default()
	}
	for method, r := range cfg.Rules {
		compiled, err := compile(method, r)
		if err != nil {
			return nil, fmt.Errorf("authz: %s: %w", method, err)
		}
		p.rules[method] = compiled
	}
	return p, nil
}

// compile type-checks r's expressions against method's messages.
func compile(method string, r Rule) (*rule, error) {
	if r.Request == "" && r.Response == "" {
		return nil, errors.New("the rule has neither a Request nor a Response expression")
	}
	md, err := methodDescriptor(method)
	if err != nil {
		return nil, err
	}
	out := &rule{method: method, denied: notPermitted(r.Why)}
	if r.Request != "" {
		if out.request, err = program("request", md.Input(), r.Request); err != nil {
			return nil, fmt.Errorf("the Request expression: %w", err)
		}
		_, err := program("", nil, r.Request)
		out.callerOnly = err == nil
	}
	if r.Response != "" {
		if out.response, err = program("response", md.Output(), r.Response); err != nil {
			return nil, fmt.Errorf("the Response expression: %w", err)
		}
		mt, err := protoregistry.GlobalTypes.FindMessageByName(md.Output().FullName())
		if err != nil {
			return nil, fmt.Errorf("no Go type for %s in the protobuf registry", md.Output().FullName())
		}
		out.missing = mt.Zero().Interface()
	}
	return out, nil
}

// methodDescriptor finds "/pkg.Service/Method" in the registry.
func methodDescriptor(method string) (protoreflect.MethodDescriptor, error) {
	service, name, ok := strings.Cut(strings.TrimPrefix(method, "/"), "/")
	if !ok || !strings.HasPrefix(method, "/") || name == "" || strings.Contains(name, "/") {
		return nil, errors.New(`not a full method name ("/pkg.Service/Method")`)
	}
	d, err := protoregistry.GlobalFiles.FindDescriptorByName(protoreflect.FullName(service))
	if err != nil {
		return nil, fmt.Errorf("no service %s in the protobuf registry (is its generated package imported?)", service)
	}
	sd, ok := d.(protoreflect.ServiceDescriptor)
	if !ok {
		return nil, fmt.Errorf("%s is not a service", service)
	}
	md := sd.Methods().ByName(protoreflect.Name(name))
	if md == nil {
		return nil, fmt.Errorf("service %s has no method %s", service, name)
	}
	return md, nil
}

// callerType is Caller as CEL knows it.
var callerType = reflect.TypeOf(Caller{})

// program compiles expr with the message md as the variable name, or
// with caller alone when name is empty.
func program(name string, md protoreflect.MessageDescriptor, expr string) (cel.Program, error) {
	opts := []cel.EnvOption{
		ext.Strings(),
		ext.NativeTypes(callerType, ext.ParseStructTags(true)),
		cel.Variable("caller", cel.ObjectType("authz.Caller")),
	}
	if name != "" {
		mt, err := protoregistry.GlobalTypes.FindMessageByName(md.FullName())
		if err != nil {
			return nil, fmt.Errorf("no Go type for %s in the protobuf registry", md.FullName())
		}
		// Proto types before native ones, as ext.NativeTypes asks.
		opts = append([]cel.EnvOption{cel.Types(mt.Zero().Interface())}, opts...)
		opts = append(opts, cel.Variable(name, cel.ObjectType(string(md.FullName()))))
	}
	env, err := cel.NewEnv(opts...)
	if err != nil {
		return nil, err
	}
	ast, issues := env.Compile(expr)
	if issues.Err() != nil {
		return nil, issues.Err()
	}
	if !ast.OutputType().IsExactType(cel.BoolType) {
		return nil, fmt.Errorf("gives %s, not a bool", ast.OutputType())
	}
	return env.Program(ast)
}

func notPermitted(why string) error {
	msg := "the caller may not make this call"
	if why != "" {
		msg += ": " + why
	}
	return apierr.New(codes.PermissionDenied, ReasonNotPermitted, msg)
}

// vars is an expression's variables, without a map per call.
type vars struct {
	name    string
	message any
	caller  *Caller
}

func (v *vars) ResolveName(name string) (any, bool) {
	switch name {
	case v.name:
		return v.message, true
	case "caller":
		return v.caller, true
	}
	return nil, false
}

func (v *vars) Parent() interpreter.Activation { return nil }

// check evaluates prg on message for caller: nil, or the refusal.
func (p *Permissions) check(ctx context.Context, r *rule, prg cel.Program, name string, message any, caller *Caller) error {
	out, _, err := prg.Eval(&vars{name: name, message: message, caller: caller})
	if err != nil {
		// A rule that fails for one call likely fails for every call:
		// a line per rule per FailureLogInterval, not per call.
		now := time.Now().UnixNano()
		last := r.logged.Load()
		if (last == 0 || now-last >= int64(FailureLogInterval)) && r.logged.CompareAndSwap(last, now) {
			p.log.WarnContext(ctx, "authz: a rule failed to evaluate; the call is refused (said once a minute per rule)",
				"method", r.method, "variable", name, "error", err.Error())
		}
		return r.denied
	}
	if allowed, ok := out.Value().(bool); ok && allowed {
		return nil
	}
	return r.denied
}

// callerOf is the caller kit/authn put in ctx, or an empty one.
func callerOf(ctx context.Context) *Caller {
	id, ok := authn.FromContext(ctx)
	if !ok {
		return &Caller{Scopes: []string{}}
	}
	if id.Scopes == nil {
		id.Scopes = []string{}
	}
	return &Caller{Subject: id.Subject, Scopes: id.Scopes, Peer: id.Peer}
}

// UnaryInterceptor checks unary calls against their method's rule.
func (p *Permissions) UnaryInterceptor() grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		r := p.rules[info.FullMethod]
		if r == nil {
			return handler(ctx, req)
		}
		caller := callerOf(ctx)
		if r.request != nil {
			if err := p.check(ctx, r, r.request, "request", req, caller); err != nil {
				return nil, err
			}
		}
		resp, err := handler(ctx, req)
		if r.response == nil {
			return resp, err
		}
		if err != nil {
			return nil, p.missing(ctx, r, err, caller)
		}
		if err := p.check(ctx, r, r.response, "response", resp, caller); err != nil {
			return nil, err
		}
		return resp, nil
	}
}

// missing is the answer to a call of r whose handler failed with err:
// for NOT_FOUND, the refusal of an empty response if the Response
// expression refuses one, so a caller cannot probe for others' ids;
// else err.
func (p *Permissions) missing(ctx context.Context, r *rule, err error, caller *Caller) error {
	if apierr.Code(err) != codes.NotFound {
		return err
	}
	if refused := p.check(ctx, r, r.response, "response", r.missing, caller); refused != nil {
		return refused
	}
	return err
}

// StreamInterceptor checks each message a stream receives against its
// method's Request expression and each it sends against its Response
// one. A refusal ends the call with PERMISSION_DENIED, whatever the
// handler then returns.
func (p *Permissions) StreamInterceptor() grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		r := p.rules[info.FullMethod]
		if r == nil {
			return handler(srv, ss)
		}
		caller := callerOf(ss.Context())
		if r.request != nil && r.callerOnly {
			if err := p.check(ss.Context(), r, r.request, "request", nil, caller); err != nil {
				return err
			}
		}
		cs := &checkedStream{ServerStream: ss, p: p, rule: r, caller: caller}
		err := handler(srv, cs)
		if denied := cs.denied.Load(); denied != nil {
			return *denied
		}
		if err != nil && r.response != nil && !cs.sent.Load() {
			return p.missing(ss.Context(), r, err, caller)
		}
		return err
	}
}

// checkedStream checks the messages of a call with a rule.
type checkedStream struct {
	grpc.ServerStream
	p      *Permissions
	rule   *rule
	caller *Caller
	// denied is the refusal, once a message was refused, and sent
	// whether a message was sent: the handler may receive and send from
	// two goroutines.
	denied atomic.Pointer[error]
	sent   atomic.Bool
}

func (s *checkedStream) refuse(err error) error {
	s.denied.CompareAndSwap(nil, &err)
	return err
}

// RecvMsg receives m and checks it. After a refusal it receives nothing
// more.
func (s *checkedStream) RecvMsg(m any) error {
	if denied := s.denied.Load(); denied != nil {
		return *denied
	}
	err := s.ServerStream.RecvMsg(m)
	if denied := s.denied.Load(); denied != nil {
		return *denied // refused while this receive waited
	}
	if s.rule.request == nil || s.rule.callerOnly {
		return err // checked before the handler started
	}
	// Validation's INVALID_ARGUMENT comes with m decoded, and a handler
	// may go on past it (an import rejecting one record): the caller is
	// checked all the same.
	if err != nil && apierr.Code(err) != codes.InvalidArgument {
		return err
	}
	if refused := s.p.check(s.Context(), s.rule, s.rule.request, "request", m, s.caller); refused != nil {
		return s.refuse(refused)
	}
	return err
}

// SendMsg checks m and sends it if allowed.
func (s *checkedStream) SendMsg(m any) error {
	if s.denied.Load() != nil {
		return *s.denied.Load()
	}
	if s.rule.response != nil {
		if err := s.p.check(s.Context(), s.rule, s.rule.response, "response", m, s.caller); err != nil {
			return s.refuse(err)
		}
	}
	s.sent.Store(true)
	return s.ServerStream.SendMsg(m)
}
