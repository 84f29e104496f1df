package authn_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	testpb "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/duetkit/duet/internal/logbuffer"
	"github.com/duetkit/duet/kit/apierr"
	"github.com/duetkit/duet/kit/authn"
	"github.com/duetkit/duet/kit/authn/devissuer"
	"github.com/duetkit/duet/kit/mtls"
	"github.com/duetkit/duet/kit/mtls/mtlstest"
	"github.com/duetkit/duet/kit/server"
)

var _ server.Authorizer = (*authn.Verifier)(nil)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

const (
	issuerName = "https://id.example"
	audience   = "duet"
)

// newIssuer makes an issuer whose key is named kid.
func newIssuer(t testing.TB, kid string) *devissuer.Issuer {
	t.Helper()
	iss, err := devissuer.New(issuerName, kid)
	if err != nil {
		t.Fatal(err)
	}
	return iss
}

// writeKeys writes the key set of issuers to a new file and returns its
// name.
func writeKeys(t testing.TB, issuers ...*devissuer.Issuer) string {
	t.Helper()
	file := filepath.Join(t.TempDir(), "keys.json")
	set, err := devissuer.KeySet(issuers...)
	if err != nil {
		t.Fatal(err)
	}
	mtlstest.WriteFile(t, file, set)
	return file
}

func load(t testing.TB, cfg authn.Config) *authn.Verifier {
	t.Helper()
	if cfg.Issuer == "" {
		cfg.Issuer = issuerName
	}
	if cfg.Audience == "" {
		cfg.Audience = audience
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	v, err := authn.Load(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(v.Close)
	return v
}

func sign(t testing.TB, iss *devissuer.Issuer, c devissuer.Claims) string {
	t.Helper()
	if c.Audience == nil {
		c.Audience = []string{audience}
	}
	tok, err := iss.Sign(c)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// signWith signs claims with key under alg, naming kid, as an issuer of
// another kind (or an attacker) would.
func signWith(t testing.TB, alg jose.SignatureAlgorithm, key any, kid string, claims any) string {
	t.Helper()
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: alg, Key: jose.JSONWebKey{Key: key, KeyID: kid}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	tok, err := jwt.Signed(signer).Claims(claims).Serialize()
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func b64(v any) string {
	b, _ := json.Marshal(v)
	return base64.RawURLEncoding.EncodeToString(b)
}

func TestVerify(t *testing.T) {
	good := newIssuer(t, "k1")
	impostor := newIssuer(t, "k1") // another key under the same kid
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	ecKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	// The key set: the issuer's ES256 key, an RSA key, and an EC key
	// marked for ES384 while it is a P-256 key.
	set, err := devissuer.KeySet(good)
	if err != nil {
		t.Fatal(err)
	}
	var keys jose.JSONWebKeySet
	if err := json.Unmarshal(set, &keys); err != nil {
		t.Fatal(err)
	}
	keys.Keys = append(keys.Keys,
		jose.JSONWebKey{Key: &rsaKey.PublicKey, KeyID: "rsa", Use: "sig"},
		jose.JSONWebKey{Key: &ecKey.PublicKey, KeyID: "es384", Algorithm: string(jose.ES384)})
	set, err = json.Marshal(keys)
	if err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(t.TempDir(), "keys.json")
	mtlstest.WriteFile(t, file, set)
	v := load(t, authn.Config{KeysFile: file, Leeway: time.Minute})

	now := time.Now()
	claims := func(sub string) jwt.Claims {
		return jwt.Claims{Issuer: issuerName, Subject: sub, Audience: jwt.Audience{audience}, Expiry: jwt.NewNumericDate(now.Add(time.Hour))}
	}
	// The public RSA key's modulus as an HMAC secret: the classic
	// confusion of an HS256 token verified with an RSA key.
	hmacSecret := rsaKey.PublicKey.N.Bytes()
	tests := []struct {
		name   string
		token  string
		reason string // "" for accepted
		says   string // part of the refusal's message
		want   authn.Identity
	}{
		{name: "ES256 with scopes", token: sign(t, good, devissuer.Claims{Subject: "u1", Scopes: []string{"orders:read", "admin"}}),
			want: authn.Identity{Subject: "u1", Scopes: []string{"orders:read", "admin"}}},
		{name: "RS256", token: signWith(t, jose.RS256, rsaKey, "rsa", claims("u2")), want: authn.Identity{Subject: "u2"}},
		{name: "PS512", token: signWith(t, jose.PS512, rsaKey, "rsa", claims("u3")), want: authn.Identity{Subject: "u3"}},
		{name: "one of several audiences", token: sign(t, good, devissuer.Claims{Subject: "u4", Audience: []string{"other", audience}}),
			want: authn.Identity{Subject: "u4"}},
		{name: "expired within the leeway", token: sign(t, good, devissuer.Claims{Subject: "u5", NotBefore: now.Add(-time.Hour), Expiry: now.Add(-30 * time.Second)}),
			want: authn.Identity{Subject: "u5"}},
		{name: "expired", token: sign(t, good, devissuer.Claims{Subject: "u", NotBefore: now.Add(-time.Hour), Expiry: now.Add(-2 * time.Minute)}),
			reason: authn.ReasonTokenExpired},
		{name: "not valid yet", token: sign(t, good, devissuer.Claims{Subject: "u", NotBefore: now.Add(5 * time.Minute)}), reason: authn.ReasonTokenInvalid},
		{name: "another audience", token: sign(t, good, devissuer.Claims{Subject: "u", Audience: []string{"billing"}}), reason: authn.ReasonTokenInvalid},
		{name: "no audience", token: sign(t, good, devissuer.Claims{Subject: "u", Audience: []string{}}), reason: authn.ReasonTokenInvalid},
		{name: "another issuer", token: signWith(t, jose.RS256, rsaKey, "rsa",
			jwt.Claims{Issuer: "https://evil.example", Subject: "u", Audience: jwt.Audience{audience}, Expiry: jwt.NewNumericDate(now.Add(time.Hour))}),
			reason: authn.ReasonTokenInvalid},
		{name: "no expiry", token: signWith(t, jose.RS256, rsaKey, "rsa",
			jwt.Claims{Issuer: issuerName, Subject: "u", Audience: jwt.Audience{audience}}), reason: authn.ReasonTokenInvalid},
		{name: "no subject", token: signWith(t, jose.RS256, rsaKey, "rsa", claims("")), reason: authn.ReasonTokenInvalid},
		{name: "signed by another key under the same kid", token: sign(t, impostor, devissuer.Claims{Subject: "u"}), reason: authn.ReasonTokenInvalid, says: "signature does not verify"},
		{name: "no kid", token: signWith(t, jose.RS256, rsaKey, "", claims("u")), reason: authn.ReasonTokenInvalid},
		{name: "unknown kid", token: signWith(t, jose.RS256, rsaKey, "nobody", claims("u")), reason: authn.ReasonTokenInvalid},
		{name: "key for another algorithm", token: signWith(t, jose.ES256, ecKey, "es384", claims("u")), reason: authn.ReasonTokenInvalid},
		{name: "HS256 with the public key as secret", token: signWith(t, jose.HS256, hmacSecret, "rsa", claims("u")), reason: authn.ReasonTokenInvalid},
		{name: "alg none", token: b64(map[string]string{"alg": "none", "kid": "k1"}) + "." + b64(claims("u")) + ".", reason: authn.ReasonTokenInvalid},
		{name: "scope as an array", token: signWith(t, jose.RS256, rsaKey, "rsa", map[string]any{
			"iss": issuerName, "sub": "u6", "aud": audience, "exp": now.Add(time.Hour).Unix(), "scope": []string{"a", "b"}}),
			want: authn.Identity{Subject: "u6", Scopes: []string{"a", "b"}}},
		{name: "expiry not a number", token: signWith(t, jose.RS256, rsaKey, "rsa", map[string]any{
			"iss": issuerName, "sub": "u", "aud": audience, "exp": "tomorrow"}), reason: authn.ReasonTokenInvalid, says: "claims are malformed"},
		{name: "scope a number", token: signWith(t, jose.RS256, rsaKey, "rsa", map[string]any{
			"iss": issuerName, "sub": "u", "aud": audience, "exp": now.Add(time.Hour).Unix(), "scope": 7}), reason: authn.ReasonTokenInvalid, says: "claims are malformed"},
		{name: "not a JWT", token: "hello", reason: authn.ReasonTokenInvalid},
		{name: "empty", token: "", reason: authn.ReasonTokenInvalid},
		{name: "too long", token: strings.Repeat("a", authn.MaxTokenBytes+1), reason: authn.ReasonTokenInvalid},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for range 2 { // the second answer may be a remembered one
				id, err := v.Verify(tt.token)
				if tt.reason != "" {
					if status.Code(err) != codes.Unauthenticated || !apierr.Is(err, tt.reason) || !strings.Contains(status.Convert(err).Message(), tt.says) {
						t.Fatalf("Verify = %+v, %v; want UNAUTHENTICATED %s saying %q", id, err, tt.reason, tt.says)
					}
					continue
				}
				if err != nil {
					t.Fatalf("Verify: %v", err)
				}
				if id.Subject != tt.want.Subject || strings.Join(id.Scopes, " ") != strings.Join(tt.want.Scopes, " ") || id.Expiry.IsZero() || id.Peer != "" {
					t.Fatalf("Verify = %+v, want %+v with an expiry", id, tt.want)
				}
				// A caller's changes stay its own.
				for i := range id.Scopes {
					id.Scopes[i] = "changed"
				}
			}
		})
	}
}

// TestRemembered checks that a token remembered as verified is refused
// once it expires and once its key leaves the set.
func TestRemembered(t *testing.T) {
	iss, next := newIssuer(t, "k1"), newIssuer(t, "k2")
	file := writeKeys(t, iss)
	v := load(t, authn.Config{KeysFile: file, Leeway: time.Nanosecond, Refresh: time.Hour})

	soon := sign(t, iss, devissuer.Claims{Subject: "u", Expiry: time.Now().Add(time.Second)})
	if _, err := v.Verify(soon); err != nil {
		t.Fatal(err)
	}
	if !v.Remembered(soon) {
		t.Fatal("a token verified is not remembered")
	}
	// Wait for the expiry by the clock, without sleeping a fixed time.
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		_, err := v.Verify(soon)
		if err != nil {
			if !apierr.Is(err, authn.ReasonTokenExpired) {
				t.Fatalf("an expired remembered token: %v, want %s", err, authn.ReasonTokenExpired)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the token was still accepted 4 s after its expiry")
		}
	}

	token := sign(t, iss, devissuer.Claims{Subject: "u"})
	if _, err := v.Verify(token); err != nil {
		t.Fatal(err)
	}
	// The issuer rotates: the set holds only the next key.
	set, err := devissuer.KeySet(next)
	if err != nil {
		t.Fatal(err)
	}
	mtlstest.WriteFile(t, file, set)
	v.Reload(t.Context())
	if _, err := v.Verify(token); !apierr.Is(err, authn.ReasonTokenInvalid) {
		t.Fatalf("a remembered token whose key left the set: %v, want %s", err, authn.ReasonTokenInvalid)
	}
	if _, err := v.Verify(sign(t, next, devissuer.Claims{Subject: "u"})); err != nil {
		t.Fatalf("a token of the new key: %v", err)
	}
}

// TestKeysRotate checks that a key set rewritten is read again by
// itself, as an issuer's rotation needs.
func TestKeysRotate(t *testing.T) {
	iss, next := newIssuer(t, "k1"), newIssuer(t, "k2")
	file := writeKeys(t, iss)
	v := load(t, authn.Config{KeysFile: file, Refresh: 20 * time.Millisecond})
	token := sign(t, next, devissuer.Claims{Subject: "u"})
	if _, err := v.Verify(token); !apierr.Is(err, authn.ReasonTokenInvalid) {
		t.Fatalf("a token of a key not published yet: %v", err)
	}
	set, err := devissuer.KeySet(iss, next)
	if err != nil {
		t.Fatal(err)
	}
	mtlstest.WriteFile(t, file, set)
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		if _, err := v.Verify(token); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the key published was not taken in 10 s")
		}
	}
}

// TestKeysSkipped: keys a verifier cannot use (an issuer's encryption
// key, a type go-jose does not know, one without a kid) are skipped and
// said, and the others used.
func TestKeysSkipped(t *testing.T) {
	iss := newIssuer(t, "k1")
	set, err := devissuer.KeySet(iss)
	if err != nil {
		t.Fatal(err)
	}
	var keys struct {
		Keys []json.RawMessage `json:"keys"`
	}
	if err := json.Unmarshal(set, &keys); err != nil {
		t.Fatal(err)
	}
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	enc, err := json.Marshal(jose.JSONWebKey{Key: &rsaKey.PublicKey, KeyID: "enc-1", Use: "enc", Algorithm: "RSA-OAEP"})
	if err != nil {
		t.Fatal(err)
	}
	noKid, err := json.Marshal(jose.JSONWebKey{Key: &rsaKey.PublicKey, Use: "sig"})
	if err != nil {
		t.Fatal(err)
	}
	keys.Keys = append(keys.Keys, enc, noKid, json.RawMessage(`{"kty": "PQC", "kid": "future", "x": "AAAA"}`))
	contents, err := json.Marshal(keys)
	if err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(t.TempDir(), "keys.json")
	mtlstest.WriteFile(t, file, contents)
	logs := &logbuffer.Buffer{}
	v := load(t, authn.Config{KeysFile: file, Logger: slog.New(slog.NewJSONHandler(logs, nil))})
	if _, err := v.Verify(sign(t, iss, devissuer.Claims{Subject: "u"})); err != nil {
		t.Fatalf("the usable key's token: %v", err)
	}
	lines := logs.Lines(t)
	if len(lines) != 1 || lines[0]["msg"] != "authn: keys skipped" {
		t.Fatalf("logged %v, want one line of keys skipped", lines)
	}
	skipped := fmt.Sprint(lines[0]["skipped"])
	for _, want := range []string{`"enc"`, "no kid", "key 3: go-jose/go-jose: unsupported key type"} {
		if !strings.Contains(skipped, want) {
			t.Errorf("the keys skipped %s do not say %s", skipped, want)
		}
	}
}

// TestInterceptorAlone checks the interceptor's answers that kit/server
// does not show: a server of one's own runs health checks through it,
// and a public method called with a good token gives the handler its
// identity.
func TestInterceptorAlone(t *testing.T) {
	iss := newIssuer(t, "k1")
	v := load(t, authn.Config{KeysFile: writeKeys(t, iss), Public: []string{publicMethod}})
	token := sign(t, iss, devissuer.Claims{Subject: "u1"})
	tests := []struct {
		name, method, authorization string
		reason, who                 string
	}{
		{name: "health with a bad token", method: healthpb.Health_Check_FullMethodName, authorization: "Bearer nope", who: "nobody"},
		{name: "health without a token", method: healthpb.Health_Watch_FullMethodName, who: "nobody"},
		{name: "a made-up health method", method: "/grpc.health.v1.Health/Other", reason: authn.ReasonTokenMissing},
		{name: "public with a good token", method: publicMethod, authorization: "Bearer " + token, who: "u1"},
		{name: "public without a token", method: publicMethod, who: "nobody"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := t.Context()
			if tt.authorization != "" {
				ctx = metadata.NewIncomingContext(ctx, metadata.Pairs("authorization", tt.authorization))
			}
			var got string
			_, err := v.UnaryInterceptor()(ctx, nil, &grpc.UnaryServerInfo{FullMethod: tt.method}, func(ctx context.Context, _ any) (any, error) {
				got = who(ctx)
				return nil, nil
			})
			if tt.reason != "" {
				if !apierr.Is(err, tt.reason) {
					t.Fatalf("answered %v, want %s", err, tt.reason)
				}
				return
			}
			if err != nil || got != tt.who {
				t.Fatalf("answered %v, the handler saw %q; want %q", err, got, tt.who)
			}
		})
	}
}

// TestRememberedBounded: past its bound, the verdicts remembered are
// forgotten, not kept growing.
func TestRememberedBounded(t *testing.T) {
	iss := newIssuer(t, "k1")
	v := load(t, authn.Config{KeysFile: writeKeys(t, iss)})
	first := sign(t, iss, devissuer.Claims{Subject: "first"})
	if _, err := v.Verify(first); err != nil {
		t.Fatal(err)
	}
	var last string
	for i := range authn.MaxRemembered {
		last = sign(t, iss, devissuer.Claims{Subject: fmt.Sprint("u", i)})
		if _, err := v.Verify(last); err != nil {
			t.Fatal(err)
		}
	}
	if v.Remembered(first) || !v.Remembered(last) {
		t.Fatalf("after %d more tokens: the first remembered %v, the last %v; want false, true", authn.MaxRemembered, v.Remembered(first), v.Remembered(last))
	}
	if n := v.RememberedCount(); n > authn.MaxRemembered {
		t.Fatalf("%d tokens remembered, more than %d", n, authn.MaxRemembered)
	}
}

func TestLoadRefuses(t *testing.T) {
	iss := newIssuer(t, "k1")
	good := writeKeys(t, iss)
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	setOf := func(keys ...jose.JSONWebKey) string {
		b, err := json.Marshal(jose.JSONWebKeySet{Keys: keys})
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	pub := jose.JSONWebKey{Key: &rsaKey.PublicKey, KeyID: "r", Use: "sig"}
	withUse := pub
	withUse.Use = "enc"
	withAlg := pub
	withAlg.Algorithm = "HS256"
	noKid := pub
	noKid.KeyID = ""
	tests := []struct {
		name     string
		keys     string // the file's contents; "" for good's
		cfg      authn.Config
		contains string
	}{
		{name: "no file", cfg: authn.Config{Issuer: issuerName, Audience: audience}, contains: "key set file is needed"},
		{name: "file missing", keys: "-", cfg: authn.Config{Issuer: issuerName, Audience: audience}, contains: "no such file"},
		{name: "no issuer", cfg: authn.Config{Audience: audience}, contains: "issuer"},
		{name: "no audience", cfg: authn.Config{Issuer: issuerName}, contains: "audience"},
		{name: "negative leeway", cfg: authn.Config{Issuer: issuerName, Audience: audience, Leeway: -time.Second}, contains: "leeway"},
		{name: "negative refresh", cfg: authn.Config{Issuer: issuerName, Audience: audience, Refresh: -time.Second}, contains: "refresh"},
		{name: "not JSON", keys: "keys", contains: "not a JSON Web Key Set"},
		{name: "text after the set", keys: setOf(pub) + "{}", contains: "text after it"},
		{name: "a brace after the set", keys: setOf(pub) + "}", contains: "text after it"},
		{name: "no keys", keys: `{"keys": []}`, contains: "no key to verify"},
		{name: "private key", keys: setOf(jose.JSONWebKey{Key: rsaKey, KeyID: "r"}), contains: "private or symmetric"},
		{name: "symmetric key", keys: setOf(jose.JSONWebKey{Key: []byte("secret-secret-secret-secret-1234"), KeyID: "s"}), contains: "private or symmetric"},
		{name: "only a key for encryption", keys: setOf(withUse), contains: "no key to verify"},
		{name: "only a key for HMAC", keys: setOf(withAlg), contains: "no key to verify"},
		{name: "only a key without kid", keys: setOf(noKid), contains: "no kid"},
		{name: "a private key among good ones", keys: setOf(pub, jose.JSONWebKey{Key: rsaKey, KeyID: "p"}), contains: "private or symmetric"},
		{name: "two keys, one kid", keys: setOf(pub, pub), contains: "two keys"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := tt.cfg
			if cfg.Issuer == "" && cfg.Audience == "" {
				cfg.Issuer, cfg.Audience = issuerName, audience
			}
			switch tt.keys {
			case "":
				if tt.name != "no file" {
					cfg.KeysFile = good
				}
			case "-":
				cfg.KeysFile = filepath.Join(t.TempDir(), "missing.json")
			default:
				cfg.KeysFile = filepath.Join(t.TempDir(), "keys.json")
				mtlstest.WriteFile(t, cfg.KeysFile, []byte(tt.keys))
			}
			v, err := authn.Load(t.Context(), cfg)
			if err == nil {
				v.Close()
				t.Fatal("Load accepted it")
			}
			if !strings.Contains(err.Error(), tt.contains) {
				t.Fatalf("Load: %v, want it to say %q", err, tt.contains)
			}
		})
	}
}

// TestReloadSays checks that a key set refused or a file not read is
// said once while it stays, and the last good set is kept meanwhile.
func TestReloadSays(t *testing.T) {
	iss, next := newIssuer(t, "k1"), newIssuer(t, "k2")
	file := writeKeys(t, iss)
	logs := &logbuffer.Buffer{}
	v := load(t, authn.Config{KeysFile: file, Refresh: time.Hour, Logger: slog.New(slog.NewJSONHandler(logs, nil))})
	token := sign(t, iss, devissuer.Claims{Subject: "u"})

	steps := []struct {
		name  string
		write string // "" leaves the file as it is; "-" removes it
		says  string // the line this step adds; "" for none
	}{
		{name: "unchanged"},
		{name: "a private key", write: "private", says: "new key set not used"},
		{name: "the same private key again"},
		{name: "removed", write: "-", says: "key set file not read"},
		{name: "still removed"},
		{name: "back as it was", write: "good"},
		{name: "rotated", write: "next", says: "key set reloaded"},
	}
	for _, s := range steps {
		before := len(logs.Lines(t))
		switch s.write {
		case "private":
			priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
			if err != nil {
				t.Fatal(err)
			}
			b, err := json.Marshal(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{Key: priv, KeyID: "k2"}}})
			if err != nil {
				t.Fatal(err)
			}
			mtlstest.WriteFile(t, file, b)
		case "-":
			if err := os.Remove(file); err != nil {
				t.Fatal(err)
			}
		case "good", "next":
			i := iss
			if s.write == "next" {
				i = next
			}
			set, err := devissuer.KeySet(i)
			if err != nil {
				t.Fatal(err)
			}
			mtlstest.WriteFile(t, file, set)
		}
		v.Reload(t.Context())
		lines := logs.Lines(t)[before:]
		switch {
		case s.says == "" && len(lines) != 0:
			t.Errorf("%s: said %q, want nothing", s.name, lines)
		case s.says != "" && (len(lines) != 1 || !strings.Contains(fmt.Sprint(lines[0]["msg"]), s.says)):
			t.Errorf("%s: said %q, want one line saying %q", s.name, lines, s.says)
		case s.says != "" && lines[0]["keys_file"] != file:
			t.Errorf("%s: the line does not name the key set file as keys_file: %v", s.name, lines[0])
		}
		_, err := v.Verify(token)
		if rotated := s.write == "next"; (err == nil) == rotated {
			t.Errorf("%s: the old key's token: %v", s.name, err)
		}
	}
}

// echo is a test service that says who called.
type echo struct {
	testpb.UnimplementedTestServiceServer
}

// UnaryCall answers with the caller's subject, or peer, as its username.
func (echo) UnaryCall(ctx context.Context, _ *testpb.SimpleRequest) (*testpb.SimpleResponse, error) {
	return &testpb.SimpleResponse{Username: who(ctx)}, nil
}

// EmptyCall is the public method.
func (echo) EmptyCall(context.Context, *testpb.Empty) (*testpb.Empty, error) {
	return &testpb.Empty{}, nil
}

// StreamingOutputCall sends the caller's subject as the payload.
func (echo) StreamingOutputCall(_ *testpb.StreamingOutputCallRequest, stream grpc.ServerStreamingServer[testpb.StreamingOutputCallResponse]) error {
	return stream.Send(&testpb.StreamingOutputCallResponse{Payload: &testpb.Payload{Body: []byte(who(stream.Context()))}})
}

func who(ctx context.Context) string {
	id, ok := authn.FromContext(ctx)
	switch {
	case !ok:
		return "nobody"
	case id.Peer != "":
		return "peer " + id.Peer
	}
	return id.Subject
}

const publicMethod = "/grpc.testing.TestService/EmptyCall"

// serve runs the test service behind kit/server with v as its
// Authenticator, over creds (plaintext when nil).
func serve(t *testing.T, v *authn.Verifier, creds credentials.TransportCredentials) string {
	t.Helper()
	srv, err := server.New(server.Config{Name: "test", Authenticator: v, Creds: creds, DisableAccessLog: true, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	testpb.RegisterTestServiceServer(srv, echo{})
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(lis) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(ctx)
		<-done
	})
	return lis.Addr().String()
}

// callAs makes a call of kind ("unary", "public", "stream" or "health")
// with the authorization values given, and says who the server saw.
func callAs(t *testing.T, conn *grpc.ClientConn, kind string, authorization ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	for _, a := range authorization {
		ctx = metadata.AppendToOutgoingContext(ctx, "authorization", a)
	}
	client := testpb.NewTestServiceClient(conn)
	switch kind {
	case "unary":
		resp, err := client.UnaryCall(ctx, &testpb.SimpleRequest{})
		return resp.GetUsername(), err
	case "public":
		_, err := client.EmptyCall(ctx, &testpb.Empty{})
		return "", err
	case "stream":
		stream, err := client.StreamingOutputCall(ctx, &testpb.StreamingOutputCallRequest{})
		if err != nil {
			return "", err
		}
		var got string
		for {
			resp, err := stream.Recv()
			if errors.Is(err, io.EOF) {
				return got, nil
			} else if err != nil {
				return "", err
			}
			got = string(resp.GetPayload().GetBody())
		}
	default:
		_, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{})
		return "", err
	}
}

func dial(t *testing.T, addr string, creds credentials.TransportCredentials) *grpc.ClientConn {
	t.Helper()
	if creds == nil {
		creds = insecure.NewCredentials()
	}
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(creds))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

func TestInterceptors(t *testing.T) {
	iss := newIssuer(t, "k1")
	v := load(t, authn.Config{KeysFile: writeKeys(t, iss), Public: []string{publicMethod}})
	conn := dial(t, serve(t, v, nil), nil)
	token := sign(t, iss, devissuer.Claims{Subject: "u1"})
	expired := sign(t, iss, devissuer.Claims{Subject: "u1", NotBefore: time.Now().Add(-2 * time.Hour), Expiry: time.Now().Add(-time.Hour)})

	tests := []struct {
		name, kind    string
		authorization []string
		reason        string // the refusal's; "" for none
		who           string
	}{
		{name: "token", kind: "unary", authorization: []string{"Bearer " + token}, who: "u1"},
		{name: "scheme in lower case", kind: "unary", authorization: []string{"bearer " + token}, who: "u1"},
		{name: "stream with a token", kind: "stream", authorization: []string{"Bearer " + token}, who: "u1"},
		{name: "no token", kind: "unary", reason: authn.ReasonTokenMissing},
		{name: "stream without a token", kind: "stream", reason: authn.ReasonTokenMissing},
		{name: "expired", kind: "unary", authorization: []string{"Bearer " + expired}, reason: authn.ReasonTokenExpired},
		{name: "basic", kind: "unary", authorization: []string{"Basic dTpw"}, reason: authn.ReasonTokenInvalid},
		{name: "bearer without a token", kind: "unary", authorization: []string{"Bearer"}, reason: authn.ReasonTokenInvalid},
		{name: "two authorizations", kind: "unary", authorization: []string{"Bearer " + token, "Bearer " + token}, reason: authn.ReasonTokenInvalid},
		{name: "public without a token", kind: "public"},
		{name: "public with a bad token", kind: "public", authorization: []string{"Bearer nope"}, reason: authn.ReasonTokenInvalid},
		{name: "health without a token", kind: "health"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := callAs(t, conn, tt.kind, tt.authorization...)
			if tt.reason != "" {
				if status.Code(err) != codes.Unauthenticated || !apierr.Is(err, tt.reason) {
					t.Fatalf("answered %v, want UNAUTHENTICATED %s", err, tt.reason)
				}
				return
			}
			if err != nil {
				t.Fatalf("refused: %v", err)
			}
			if got != tt.who {
				t.Fatalf("the handler saw %q, want %q", got, tt.who)
			}
		})
	}
}

// TestTrustedPeers checks that the system's own components, named by
// their certificates, call without a token, and no one else does.
func TestTrustedPeers(t *testing.T) {
	iss := newIssuer(t, "k1")
	ca := mtlstest.NewCA(t, "duet")
	v := load(t, authn.Config{KeysFile: writeKeys(t, iss), TrustedPeers: []string{"order"}})
	serverCreds := loadCreds(t, ca, "127.0.0.1")
	addr := serve(t, v, serverCreds.Server())
	plain := serve(t, v, nil)
	token := sign(t, iss, devissuer.Claims{Subject: "u1"})

	order := dial(t, addr, loadCreds(t, ca, "order").Client())
	gateway := dial(t, addr, loadCreds(t, ca, "gateway").Client())
	tests := []struct {
		name          string
		conn          *grpc.ClientConn
		authorization []string
		reason, who   string
	}{
		{name: "trusted peer", conn: order, who: "peer order"},
		{name: "trusted peer with a user's token", conn: order, authorization: []string{"Bearer " + token}, who: "u1"},
		{name: "trusted peer with a bad token", conn: order, authorization: []string{"Bearer nope"}, reason: authn.ReasonTokenInvalid},
		{name: "other peer", conn: gateway, reason: authn.ReasonTokenMissing},
		{name: "other peer with a token", conn: gateway, authorization: []string{"Bearer " + token}, who: "u1"},
		{name: "plaintext", conn: dial(t, plain, nil), reason: authn.ReasonTokenMissing},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := callAs(t, tt.conn, "unary", tt.authorization...)
			if tt.reason != "" {
				if status.Code(err) != codes.Unauthenticated || !apierr.Is(err, tt.reason) {
					t.Fatalf("answered %v, want UNAUTHENTICATED %s", err, tt.reason)
				}
				return
			}
			if err != nil || got != tt.who {
				t.Fatalf("answered %q, %v; want %q", got, err, tt.who)
			}
		})
	}
}

// TestPeerNamesReader: Config.PeerNames replaces the certificate as the
// source of a caller's names, for connections that name their callers
// otherwise; a name it gives is trusted as a certificate's would be.
func TestPeerNamesReader(t *testing.T) {
	iss := newIssuer(t, "k1")
	// Plaintext, so no certificate names anyone: the reader alone does.
	names := func(ctx context.Context) []string {
		if md, ok := metadata.FromIncomingContext(ctx); ok {
			return md.Get("x-test-caller")
		}
		return nil
	}
	v := load(t, authn.Config{KeysFile: writeKeys(t, iss), TrustedPeers: []string{"order"}, PeerNames: names})
	conn := dial(t, serve(t, v, nil), nil)
	for _, tt := range []struct {
		caller, who, reason string
	}{
		{caller: "order", who: "peer order"},
		{caller: "gateway", reason: authn.ReasonTokenMissing},
		{reason: authn.ReasonTokenMissing},
	} {
		ctx := t.Context()
		if tt.caller != "" {
			ctx = metadata.AppendToOutgoingContext(ctx, "x-test-caller", tt.caller)
		}
		ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		resp, err := testpb.NewTestServiceClient(conn).UnaryCall(ctx, &testpb.SimpleRequest{})
		cancel()
		got := resp.GetUsername()
		if tt.reason != "" {
			if !apierr.Is(err, tt.reason) {
				t.Errorf("%q: %v, want %s", tt.caller, err, tt.reason)
			}
			continue
		}
		if err != nil || got != tt.who {
			t.Errorf("%q: %q, %v; want %q", tt.caller, got, err, tt.who)
		}
	}
}

func loadCreds(t *testing.T, ca *mtlstest.CA, name string) *mtls.Credentials {
	t.Helper()
	cfg := ca.Write(t, t.TempDir(), time.Hour, []string{name})
	cfg.Logger = slog.New(slog.DiscardHandler)
	creds, err := mtls.Load(t.Context(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(creds.Close)
	return creds
}

func BenchmarkVerify(b *testing.B) {
	iss := newIssuer(b, "k1")
	v := load(b, authn.Config{KeysFile: writeKeys(b, iss)})
	token := sign(b, iss, devissuer.Claims{Subject: "u1", Scopes: []string{"orders"}})
	b.Run("remembered", func(b *testing.B) {
		for b.Loop() {
			if _, err := v.Verify(token); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("first", func(b *testing.B) {
		for b.Loop() {
			v.Forget()
			if _, err := v.Verify(token); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// TestClientInterceptors: a process that passes its callers' tokens on
// refuses an outgoing call without a good one before it leaves.
func TestClientInterceptors(t *testing.T) {
	iss := newIssuer(t, "k1")
	v := load(t, authn.Config{KeysFile: writeKeys(t, iss), Public: []string{publicMethod}, TrustedPeers: []string{"order"}})
	token := sign(t, iss, devissuer.Claims{Subject: "u1"})
	const private = "/grpc.testing.TestService/UnaryCall"
	tests := []struct {
		name, method, authorization, reason string
	}{
		{name: "good token", method: private, authorization: "Bearer " + token},
		{name: "no token", method: private, reason: authn.ReasonTokenMissing},
		{name: "bad token", method: private, authorization: "Bearer nope", reason: authn.ReasonTokenInvalid},
		{name: "public without a token", method: publicMethod},
		{name: "public with a bad token", method: publicMethod, authorization: "Bearer nope", reason: authn.ReasonTokenInvalid},
		{name: "health", method: healthpb.Health_Check_FullMethodName, authorization: "Bearer nope"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := t.Context()
			if tt.authorization != "" {
				ctx = metadata.AppendToOutgoingContext(ctx, "authorization", tt.authorization)
			}
			var sent, streamed bool
			err := v.UnaryClientInterceptor()(ctx, tt.method, nil, nil, nil, func(context.Context, string, any, any, *grpc.ClientConn, ...grpc.CallOption) error {
				sent = true
				return nil
			})
			_, serr := v.StreamClientInterceptor()(ctx, &grpc.StreamDesc{}, nil, tt.method, func(context.Context, *grpc.StreamDesc, *grpc.ClientConn, string, ...grpc.CallOption) (grpc.ClientStream, error) {
				streamed = true
				return nil, nil
			})
			for kind, got := range map[string]struct {
				err  error
				went bool
			}{"unary": {err, sent}, "stream": {serr, streamed}} {
				if tt.reason == "" && (got.err != nil || !got.went) {
					t.Errorf("%s: %v, sent %v; want it sent", kind, got.err, got.went)
				}
				if tt.reason != "" && (!apierr.Is(got.err, tt.reason) || got.went) {
					t.Errorf("%s: %v, sent %v; want %s and nothing sent", kind, got.err, got.went, tt.reason)
				}
			}
		})
	}
}
