// Package authn checks the JSON Web Tokens (RFC 7519) that end users'
// calls carry, and tells handlers on whose behalf a call is made.
//
// A call sends its token as gRPC metadata "authorization: Bearer <jwt>"
// (the REST gateway forwards the HTTP header of that name as it is). The
// token must be signed (RS256, RS384, RS512, PS256, PS384, PS512, ES256,
// ES384, ES512 or EdDSA; never HMAC, never "none") by a key of the
// issuer's JSON Web Key Set (RFC 7517), named by the token's "kid", and
// its claims must name the issuer ("iss") and this system among its
// audiences ("aud"), and hold the current time between "nbf" and "exp",
// give or take Config.Leeway for clocks that drift. A call with no token
// is refused with UNAUTHENTICATED, reason TOKEN_MISSING (HTTP 401
// through the gateway); one whose token fails a check with reason
// TOKEN_INVALID, or TOKEN_EXPIRED once it has expired, so a client knows
// to fetch a new one. Handlers read who called with FromContext. A
// process that passes its callers' tokens on, such as a REST gateway,
// checks them before the calls leave with UnaryClientInterceptor and
// StreamClientInterceptor, so a bad token is refused at the edge.
//
// Two kinds of calls need no token. Config.Public names methods anyone may
// call (signing up, a product catalogue); a token sent to one is still
// checked, so a handler can tell a signed-in caller. Config.TrustedPeers
// names the system's own components, by the names in their mutual-TLS
// certificates (as kit/access names callers, but exactly: no wildcards),
// whose calls act on their own behalf: the order saga reserving stock long
// after the user's token expired. Never list a component that passes end
// users' calls on, such as the REST gateway: its calls without a token
// would then pass as its own. Without mutual TLS no caller has a name, so
// none is trusted (unless Config.PeerNames reads names from elsewhere);
// the names are only as good as the server's check of client
// certificates (kit/mtls checks them against its CA).
//
// The key set is a file, read again every Config.Refresh so the issuer's
// keys rotate without a restart (publish the new key, wait a refresh,
// then sign with it); a set that does not parse, or holds a private or
// symmetric key, is logged once and the last good one kept (keys it
// cannot use, such as an issuer's encryption keys, are skipped and
// logged). A token verified once is remembered until it expires or the
// key set changes, so a client's calls after its first cost a map
// lookup, not a signature check (an RSA or ECDSA verification costs tens
// of microseconds, as much as the rest of the kit's chain). Up to 4,096
// tokens are remembered; past that all are forgotten at once, so a
// server whose clients hold more tokens than that at a time checks
// signatures more often. Health checks need no token, whatever they
// carry; reflection does, unless listed in Config.Public.
package authn

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"

	"github.com/duetkit/duet/internal/watchfile"
	"github.com/duetkit/duet/kit/apierr"
	"github.com/duetkit/duet/kit/mtls"
)

// Reasons of the refusals, in the ErrorInfo of an UNAUTHENTICATED status.
const (
	// ReasonTokenMissing: the call needs a token and carried none.
	ReasonTokenMissing = "TOKEN_MISSING"
	// ReasonTokenInvalid: the token is malformed, signed by no key of the
	// set, or not for this issuer, this audience or this time.
	ReasonTokenInvalid = "TOKEN_INVALID"
	// ReasonTokenExpired: the token was good and has expired; the client
	// should get a new one.
	ReasonTokenExpired = "TOKEN_EXPIRED"
)

// Defaults for zero fields of Config.
const (
	// DefaultRefresh is how often the key set is read again.
	DefaultRefresh = time.Minute
	// DefaultLeeway is how far the clocks of the issuer and the server
	// may differ.
	DefaultLeeway = 30 * time.Second
)

// MaxTokenBytes bounds the token a call may carry; a longer one is
// refused unread. Identity providers' tokens are under 2 KB.
const MaxTokenBytes = 8 << 10

// maxRemembered bounds the tokens remembered as verified. When it is
// reached they are all forgotten at once: a simple bound, paid for by a
// signature check on each client's next call.
const maxRemembered = 4096

// algorithms are the signature algorithms a token may use: public-key
// ones only, so a key set, which is public, cannot sign.
var algorithms = []jose.SignatureAlgorithm{
	jose.RS256, jose.RS384, jose.RS512,
	jose.PS256, jose.PS384, jose.PS512,
	jose.ES256, jose.ES384, jose.ES512,
	jose.EdDSA,
}

// Config names the key set and what tokens must claim.
type Config struct {
	// KeysFile is the issuer's JSON Web Key Set: public keys only, each
	// named by a "kid" of its own; keys for encryption, of another
	// algorithm or without a kid are skipped.
	KeysFile string
	// Issuer is the "iss" a token must claim.
	Issuer string
	// Audience must be among a token's "aud".
	Audience string
	// Leeway is how far the issuer's clock may be from this one's when
	// "exp" and "nbf" are checked; zero means DefaultLeeway.
	Leeway time.Duration
	// Refresh is how often KeysFile is read again; zero means
	// DefaultRefresh.
	Refresh time.Duration
	// Public lists methods, by full name ("/pkg.Service/Method"), that a
	// call may reach without a token.
	Public []string
	// TrustedPeers lists the certificate names (a certificate's URI names
	// if it has any, else its DNS names, else its subject; matched
	// exactly) of callers whose calls need no token. Never a component
	// that passes end users' calls on, such as the REST gateway.
	TrustedPeers []string
	// PeerNames reads a call's caller's names for TrustedPeers; nil means
	// mtls.PeerNames, the names of its mutual-TLS certificate. A process
	// whose connections name their callers another way (duet up's
	// in-memory ones) gives its own; whatever names it returns are
	// trusted as a certificate's would be.
	PeerNames func(context.Context) []string
	// Logger receives a line for each key set taken or refused after
	// Load; nil means slog.Default().
	Logger *slog.Logger
}

// Identity is who a call was made for.
type Identity struct {
	// Subject is the token's "sub": the end user. Empty for a trusted
	// peer's call.
	Subject string
	// Scopes are the token's "scope" claim, split at spaces (RFC 8693),
	// or its names if the issuer sent an array.
	Scopes []string
	// Expiry is when the token expires; zero for a trusted peer's call.
	Expiry time.Time
	// Peer is the certificate name of a trusted peer calling on its own
	// behalf (Config.TrustedPeers); empty for an end user's call.
	Peer string
}

// HasScope says whether the token granted scope.
func (id Identity) HasScope(scope string) bool { return slices.Contains(id.Scopes, scope) }

type identityKey struct{}

// NewContext returns ctx carrying id, as the interceptors pass it on.
func NewContext(ctx context.Context, id Identity) context.Context {
	return context.WithValue(ctx, identityKey{}, &id)
}

// FromContext returns the identity the call was checked for; false for a
// call to a public method without a token, or one that passed no Verifier.
func FromContext(ctx context.Context) (Identity, bool) {
	// The context holds a pointer, shared by every call with the same
	// token (a remembered verdict): the copy keeps a handler's changes
	// to its own.
	id, ok := ctx.Value(identityKey{}).(*Identity)
	if !ok {
		return Identity{}, false
	}
	out := *id
	out.Scopes = slices.Clone(id.Scopes)
	return out, true
}

// Verifier checks tokens against a key set kept up to date with its file
// until Close.
type Verifier struct {
	cfg     Config
	public  map[string]bool
	trusted map[string]bool
	keys    atomic.Pointer[keySet]
	file    *watchfile.Watcher

	// remembered maps a token verified to its rememberedToken.
	remembered sync.Map
	count      atomic.Int64
}

// keySet is one reading of the file: keys by their "kid".
type keySet struct {
	byID map[string]jose.JSONWebKey
}

// rememberedToken is a token verified against keys.
type rememberedToken struct {
	id   *Identity
	keys *keySet
}

// Load reads the key set, so a file missing or not a usable key set is an
// error now, and starts reading it again every Refresh. Close stops that:
// ctx's cancellation does not (its values reach the reading's log lines).
func Load(ctx context.Context, cfg Config) (*Verifier, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	switch {
	case cfg.KeysFile == "":
		return nil, errors.New("authn: a key set file is needed")
	case cfg.Issuer == "":
		return nil, errors.New("authn: the issuer tokens must claim is needed")
	case cfg.Audience == "":
		return nil, errors.New("authn: the audience tokens must claim is needed")
	case cfg.Leeway < 0:
		return nil, fmt.Errorf("authn: leeway must not be negative, got %v", cfg.Leeway)
	case cfg.Refresh < 0:
		return nil, fmt.Errorf("authn: refresh must not be negative, got %v", cfg.Refresh)
	}
	if cfg.Leeway == 0 {
		cfg.Leeway = DefaultLeeway
	}
	if cfg.Refresh == 0 {
		cfg.Refresh = DefaultRefresh
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.PeerNames == nil {
		cfg.PeerNames = mtls.PeerNames
	}
	contents, err := os.ReadFile(cfg.KeysFile)
	if err != nil {
		return nil, fmt.Errorf("authn: %w", err)
	}
	keys, skipped, err := parseKeys(contents)
	if err != nil {
		return nil, fmt.Errorf("authn: key set %s: %w", cfg.KeysFile, err)
	}
	if len(skipped) > 0 {
		cfg.Logger.InfoContext(ctx, "authn: keys skipped", "keys_file", cfg.KeysFile, "skipped", skipped)
	}
	v := &Verifier{cfg: cfg, public: make(map[string]bool, len(cfg.Public)), trusted: make(map[string]bool, len(cfg.TrustedPeers))}
	for _, m := range cfg.Public {
		v.public[m] = true
	}
	for _, p := range cfg.TrustedPeers {
		v.trusted[p] = true
	}
	v.keys.Store(keys)
	v.file = watchfile.Start(ctx, watchfile.Config{File: cfg.KeysFile, FileKey: "keys_file", Every: cfg.Refresh, Package: "authn", Noun: "key set", Logger: cfg.Logger,
		Take: func(contents []byte) error {
			keys, skipped, err := parseKeys(contents)
			if err != nil {
				return err
			}
			if len(skipped) > 0 {
				cfg.Logger.InfoContext(ctx, "authn: keys skipped", "keys_file", cfg.KeysFile, "skipped", skipped)
			}
			v.keys.Store(keys)
			return nil
		}}, contents)
	return v, nil
}

// parseKeys reads a JSON Web Key Set and keeps the keys that can verify
// a token: for signatures, with an algorithm accepted, named by a kid.
// Other keys are skipped and said in skipped (RFC 7517 §5: an issuer's
// set may also publish keys for encryption, or of types this library
// does not know), so that one of them does not stop a rotation; a set
// without a key to use is refused, and so is one holding a private or
// symmetric key, which a set to verify with never should.
func parseKeys(contents []byte) (ks *keySet, skipped []string, err error) {
	var set struct {
		Keys []json.RawMessage `json:"keys"`
	}
	dec := json.NewDecoder(bytes.NewReader(contents))
	if err := dec.Decode(&set); err != nil {
		return nil, nil, fmt.Errorf("not a JSON Web Key Set: %w", err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, nil, errors.New("not a JSON Web Key Set: text after it")
	}
	ks = &keySet{byID: make(map[string]jose.JSONWebKey, len(set.Keys))}
	for i, raw := range set.Keys {
		var k jose.JSONWebKey
		if err := k.UnmarshalJSON(raw); err != nil {
			skipped = append(skipped, fmt.Sprintf("key %d: %v", i, err))
			continue
		}
		switch {
		case !k.IsPublic():
			return nil, nil, fmt.Errorf("key %d (kid %q) is private or symmetric: a key set to verify with holds public keys only", i, k.KeyID)
		case k.Use != "" && k.Use != "sig":
			skipped = append(skipped, fmt.Sprintf("key %d (kid %q): for %q, not signatures", i, k.KeyID, k.Use))
		case k.Algorithm != "" && !slices.Contains(algorithms, jose.SignatureAlgorithm(k.Algorithm)):
			skipped = append(skipped, fmt.Sprintf("key %d (kid %q): for %s, not an algorithm accepted", i, k.KeyID, k.Algorithm))
		case k.KeyID == "":
			skipped = append(skipped, fmt.Sprintf("key %d: no kid, so no token can name it", i))
		case !k.Valid():
			skipped = append(skipped, fmt.Sprintf("key %d (kid %q): not a valid key", i, k.KeyID))
		case ks.byID[k.KeyID].Key != nil:
			return nil, nil, fmt.Errorf("two keys have kid %q", k.KeyID)
		default:
			ks.byID[k.KeyID] = k
		}
	}
	if len(ks.byID) == 0 {
		return nil, nil, fmt.Errorf("no key to verify signatures with (%d skipped: %s)", len(skipped), strings.Join(skipped, "; "))
	}
	return ks, skipped, nil
}

// Close stops reading the file and waits for the reader to end. The
// Verifier goes on checking with the last key set read.
func (v *Verifier) Close() { v.file.Close() }

// claims are the registered claims and "scope".
type claims struct {
	jwt.Claims
	Scope scopes `json:"scope"`
}

// scopes is a "scope" claim: a string of names separated by spaces (RFC
// 8693), or, as some issuers send it, an array of names.
type scopes []string

// UnmarshalJSON implements json.Unmarshaler.
func (s *scopes) UnmarshalJSON(b []byte) error {
	var joined string
	if err := json.Unmarshal(b, &joined); err == nil {
		*s = strings.Fields(joined)
		return nil
	}
	var names []string
	if err := json.Unmarshal(b, &names); err != nil {
		return errors.New(`"scope" is neither a string nor an array of strings`)
	}
	*s = names
	return nil
}

// Verify checks a token (without its "Bearer " prefix) and says whom it
// was issued for. Its errors are UNAUTHENTICATED apierr errors with
// ReasonTokenInvalid or ReasonTokenExpired.
func (v *Verifier) Verify(token string) (Identity, error) {
	id, err := v.identity(token)
	if err != nil {
		return Identity{}, err
	}
	out := *id
	out.Scopes = slices.Clone(id.Scopes) // the remembered one stays as verified
	return out, nil
}

// identity is Verify's, shared with every call of the same token.
func (v *Verifier) identity(token string) (*Identity, error) {
	keys := v.keys.Load()
	now := time.Now()
	if r, ok := v.remembered.Load(token); ok {
		if r := r.(rememberedToken); r.keys == keys {
			if now.After(r.id.Expiry.Add(v.cfg.Leeway)) {
				return nil, expired()
			}
			return r.id, nil
		}
	}
	id, err := v.verify(token, keys, now)
	if err != nil {
		return nil, err
	}
	if v.count.Add(1) > maxRemembered {
		v.remembered.Clear()
		v.count.Store(1)
	}
	v.remembered.Store(token, rememberedToken{id: &id, keys: keys})
	return &id, nil
}

// verify checks a token's signature and claims against keys at now.
func (v *Verifier) verify(token string, keys *keySet, now time.Time) (Identity, error) {
	if len(token) > MaxTokenBytes {
		return Identity{}, invalid(fmt.Sprintf("it is longer than %d bytes", MaxTokenBytes))
	}
	tok, err := jwt.ParseSigned(token, algorithms)
	if err != nil {
		return Identity{}, invalid("it is not a signed JWT with an algorithm accepted")
	}
	header := tok.Headers[0]
	key, ok := keys.byID[header.KeyID]
	if !ok {
		return Identity{}, invalid("no key of the issuer's has its kid")
	}
	if key.Algorithm != "" && key.Algorithm != header.Algorithm {
		return Identity{}, invalid("its key is for another algorithm")
	}
	// The payload is taken as it is and decoded apart, so that claims of
	// the wrong type are not reported as a bad signature.
	var payload json.RawMessage
	if err := tok.Claims(key.Key, &payload); err != nil {
		if errors.Is(err, jose.ErrCryptoFailure) {
			return Identity{}, invalid("its signature does not verify")
		}
		return Identity{}, invalid("it cannot be verified")
	}
	var c claims
	if err := json.Unmarshal(payload, &c); err != nil {
		return Identity{}, invalid("its claims are malformed")
	}
	if c.Expiry == nil {
		return Identity{}, invalid("it has no exp")
	}
	if c.Subject == "" {
		return Identity{}, invalid("it has no sub")
	}
	err = c.ValidateWithLeeway(jwt.Expected{Issuer: v.cfg.Issuer, AnyAudience: jwt.Audience{v.cfg.Audience}, Time: now}, v.cfg.Leeway)
	switch {
	case errors.Is(err, jwt.ErrExpired):
		return Identity{}, expired()
	case errors.Is(err, jwt.ErrInvalidIssuer):
		return Identity{}, invalid("it is from another issuer")
	case errors.Is(err, jwt.ErrInvalidAudience):
		return Identity{}, invalid("it is for another audience")
	case errors.Is(err, jwt.ErrNotValidYet), errors.Is(err, jwt.ErrIssuedInTheFuture):
		return Identity{}, invalid("it is not valid yet")
	case err != nil:
		return Identity{}, invalid("its claims do not hold")
	}
	return Identity{Subject: c.Subject, Scopes: c.Scope, Expiry: c.Expiry.Time()}, nil
}

func invalid(why string) error {
	return apierr.New(codes.Unauthenticated, ReasonTokenInvalid, "the bearer token is not accepted: "+why)
}

func expired() error {
	return apierr.New(codes.Unauthenticated, ReasonTokenExpired, "the bearer token has expired")
}

// healthMethods are answered without a token: balancers and kit/client
// watch them.
var healthMethods = map[string]bool{
	healthpb.Health_Check_FullMethodName: true,
	healthpb.Health_Watch_FullMethodName: true,
	healthpb.Health_List_FullMethodName:  true,
}

// check decides a call to method: its context with the caller's identity,
// or the refusal.
func (v *Verifier) check(ctx context.Context, method string) (context.Context, error) {
	if healthMethods[method] {
		return ctx, nil // whatever the call carries: a probe's stale token must not fail it
	}
	values := metadata.ValueFromIncomingContext(ctx, "authorization")
	if len(values) == 0 {
		if v.public[method] {
			return ctx, nil
		}
		if len(v.trusted) > 0 {
			for _, name := range v.cfg.PeerNames(ctx) {
				if v.trusted[name] {
					return NewContext(ctx, Identity{Peer: name}), nil
				}
			}
		}
		return ctx, missing()
	}
	id, err := v.bearer(values)
	if err != nil {
		return ctx, err
	}
	return context.WithValue(ctx, identityKey{}, id), nil
}

func missing() error {
	return apierr.New(codes.Unauthenticated, ReasonTokenMissing, "a bearer token is needed (metadata \"authorization: Bearer <token>\")")
}

// bearer checks a call's authorization values: one, "Bearer <token>",
// the token good.
func (v *Verifier) bearer(values []string) (*Identity, error) {
	if len(values) > 1 {
		return nil, invalid("the call has more than one authorization")
	}
	scheme, token, _ := strings.Cut(values[0], " ")
	if !strings.EqualFold(scheme, "bearer") {
		return nil, invalid("the authorization is not \"Bearer <token>\"")
	}
	return v.identity(strings.TrimSpace(token))
}

// checkOutgoing decides an outgoing call to method by the token its
// outgoing metadata carries, as check does an incoming one's but
// for TrustedPeers (the caller is this process).
func (v *Verifier) checkOutgoing(ctx context.Context, method string) error {
	if healthMethods[method] {
		return nil
	}
	// One key, without copying the call's metadata.
	values := metadata.ValueFromOutgoingContext(ctx, "authorization")
	if len(values) == 0 {
		if v.public[method] {
			return nil
		}
		return missing()
	}
	_, err := v.bearer(values)
	return err
}

// UnaryClientInterceptor refuses outgoing unary calls whose metadata does
// not carry a good token, before they leave: for a process that passes
// its callers' tokens on, such as a REST gateway, which so checks them at
// the edge as well as the services do behind it. Config.Public applies,
// Config.TrustedPeers does not.
func (v *Verifier) UnaryClientInterceptor() grpc.UnaryClientInterceptor {
	return func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
		if err := v.checkOutgoing(ctx, method); err != nil {
			return err
		}
		return invoker(ctx, method, req, reply, cc, opts...)
	}
}

// StreamClientInterceptor is UnaryClientInterceptor for streams.
func (v *Verifier) StreamClientInterceptor() grpc.StreamClientInterceptor {
	return func(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string, streamer grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
		if err := v.checkOutgoing(ctx, method); err != nil {
			return nil, err
		}
		return streamer(ctx, desc, cc, method, opts...)
	}
}

// UnaryInterceptor refuses unary calls without a good token and gives the
// handler the caller's Identity.
func (v *Verifier) UnaryInterceptor() grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		ctx, err := v.check(ctx, info.FullMethod)
		if err != nil {
			return nil, err
		}
		return handler(ctx, req)
	}
}

// StreamInterceptor refuses streams without a good token and gives the
// handler the caller's Identity.
func (v *Verifier) StreamInterceptor() grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		ctx, err := v.check(ss.Context(), info.FullMethod)
		if err != nil {
			return err
		}
		return handler(srv, &identityStream{ServerStream: ss, ctx: ctx})
	}
}

// identityStream gives a stream's handler the context with its Identity.
type identityStream struct {
	grpc.ServerStream
	ctx context.Context
}

func (s *identityStream) Context() context.Context { return s.ctx }
