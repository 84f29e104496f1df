package main

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"

	"github.com/duetkit/duet/internal/system"
	"github.com/duetkit/duet/kit/authn/devissuer"
)

// testIssuerName is the issuer of the tests' tokens (--auth-issuer).
const testIssuerName = "https://id.test"

// testIssuer makes an issuer whose key is named kid (its thumbprint when
// empty) and writes its key set to a file, for --auth-keys.
func testIssuer(t *testing.T, kid string) (iss *devissuer.Issuer, keysFile string) {
	t.Helper()
	iss, err := devissuer.New(testIssuerName, kid)
	if err != nil {
		t.Fatal(err)
	}
	keysFile = filepath.Join(t.TempDir(), "jwks.json")
	if err := iss.WriteKeySet(keysFile); err != nil {
		t.Fatal(err)
	}
	return iss, keysFile
}

// TestServeEndUserTokens: a service given --auth-keys answers the
// gateway's REST callers only with a token its issuer signed (401 with a
// Bearer challenge otherwise), but for signing up and health checks.
func TestServeEndUserTokens(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	iss, keys := testIssuer(t, "k1")
	authFlags := []string{"--auth-keys", keys, "--auth-issuer", testIssuerName}
	user := startComponent(t, ctx, "user", append([]string{"--data-dir", t.TempDir()}, authFlags...)...)
	inventory := startComponent(t, ctx, "inventory", append([]string{"--data-dir", t.TempDir()}, authFlags...)...)
	gateway := startComponent(t, ctx, "gateway", "--user-target", user.addr, "--order-target", user.addr, "--payment-target", user.addr,
		"--inventory-target", inventory.addr)
	if !strings.Contains(user.stderr.String(), `"end_user_tokens":true`) {
		t.Errorf("the user service's serving line does not say it checks tokens:\n%s", user.stderr.String())
	}

	sign := func(c devissuer.Claims) string {
		t.Helper()
		tok, err := iss.Sign(c)
		if err != nil {
			t.Fatal(err)
		}
		return "Bearer " + tok
	}
	call := func(method, path, authorization, body string) (int, http.Header, map[string]any) {
		t.Helper()
		code, header, b := send(t, ctx, method, "http://"+gateway.addr+path, authorization, body)
		var m map[string]any
		if err := json.Unmarshal(b, &m); err != nil {
			t.Fatalf("%s %s: %d %s", method, path, code, b)
		}
		return code, header, m
	}

	// Signing up needs no token.
	code, _, created := call("POST", "/v1/users", "", `{"name":"Ada","email":"ada@example.com"}`)
	if code != http.StatusOK {
		t.Fatalf("POST /v1/users without a token: %d %v", code, created)
	}
	id, _ := created["user"].(map[string]any)["id"].(string)
	path := "/v1/users/" + id

	good := sign(devissuer.Claims{Subject: id, Audience: []string{"duet"}})
	// The admin's own record need not exist: the scope reaches anyone's.
	admin := sign(devissuer.Claims{Subject: "0b0d5c4e-5d35-4c6a-9a0e-1f6f3f6b1a0f", Audience: []string{"duet"}, Scopes: []string{system.AdminScope}})
	code, _, created = call("POST", "/v1/users", "", `{"name":"Bo","email":"bo@example.com"}`)
	if code != http.StatusOK {
		t.Fatalf("POST /v1/users without a token: %d %v", code, created)
	}
	other, _ := created["user"].(map[string]any)["id"].(string)
	impostor, err := devissuer.New(testIssuerName, "k1") // another key under the same kid
	if err != nil {
		t.Fatal(err)
	}
	forged, err := impostor.Sign(devissuer.Claims{Subject: id, Audience: []string{"duet"}})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, method, path, authorization, body string
		status                                  int
		challenge, reason                       string
	}{
		{name: "no token", status: 401, challenge: "Bearer", reason: "TOKEN_MISSING"},
		{name: "forged", authorization: "Bearer " + forged, status: 401, challenge: `Bearer error="invalid_token"`, reason: "TOKEN_INVALID"},
		{name: "catalogue without a token", path: "/v1/products", status: 200},
		{name: "catalogue with an expired token", path: "/v1/products", authorization: sign(devissuer.Claims{Subject: id, Audience: []string{"duet"},
			NotBefore: time.Now().Add(-2 * time.Hour), Expiry: time.Now().Add(-time.Hour)}),
			status: 401, challenge: `Bearer error="invalid_token"`, reason: "TOKEN_EXPIRED"},
		{name: "new product without a token", method: "POST", path: "/v1/products",
			body: `{"sku":"A","name":"A","price":{"currencyCode":"EUR","units":"7"},"stock":1}`, status: 401, challenge: "Bearer", reason: "TOKEN_MISSING"},
		{name: "new product, a user's token", method: "POST", path: "/v1/products", authorization: good,
			body: `{"sku":"A","name":"A","price":{"currencyCode":"EUR","units":"7"},"stock":1}`, status: 403, reason: "NOT_PERMITTED"},
		{name: "new product, an admin's token", method: "POST", path: "/v1/products", authorization: admin,
			body: `{"sku":"A","name":"A","price":{"currencyCode":"EUR","units":"7"},"stock":1}`, status: 200},
		{name: "another user's record", path: "/v1/users/" + other, authorization: good, status: 403, reason: "NOT_PERMITTED"},
		{name: "another user's record, an admin's token", path: "/v1/users/" + other, authorization: admin, status: 200},
		{name: "all users, a user's token", path: "/v1/users", authorization: good, status: 403, reason: "NOT_PERMITTED"},
		{name: "all users, an admin's token", path: "/v1/users", authorization: admin, status: 200},
		{name: "expired", authorization: sign(devissuer.Claims{Subject: id, Audience: []string{"duet"},
			NotBefore: time.Now().Add(-2 * time.Hour), Expiry: time.Now().Add(-time.Hour)}),
			status: 401, challenge: `Bearer error="invalid_token"`, reason: "TOKEN_EXPIRED"},
		{name: "another audience", authorization: sign(devissuer.Claims{Subject: id, Audience: []string{"billing"}}),
			status: 401, challenge: `Bearer error="invalid_token"`, reason: "TOKEN_INVALID"},
		{name: "good", authorization: good, status: 200},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			method, p := cmp.Or(tt.method, "GET"), cmp.Or(tt.path, path)
			code, header, body := call(method, p, tt.authorization, tt.body)
			if code != tt.status {
				t.Fatalf("%s %s: %d %v, want %d", method, p, code, body, tt.status)
			}
			if tt.status == 200 {
				return
			}
			if got := header.Get("WWW-Authenticate"); got != tt.challenge {
				t.Errorf("WWW-Authenticate %q, want %q", got, tt.challenge)
			}
			if b, _ := json.Marshal(body); !bytes.Contains(b, []byte(`"reason":"`+tt.reason+`"`)) {
				t.Errorf("body %s does not give reason %s", b, tt.reason)
			}
		})
	}

	// Health checks need none, whatever they carry.
	conn, err := grpc.NewClient(user.addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	stale := metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer stale")
	if resp, err := healthpb.NewHealthClient(conn).Check(stale, &healthpb.HealthCheckRequest{}); err != nil || resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		t.Errorf("health with a bad token: %v, %v", resp, err)
	}
}

// TestServeAuthFlagsChecked: the token flags are refused where they
// cannot work, before anything starts.
func TestServeAuthFlagsChecked(t *testing.T) {
	keys := filepath.Join(t.TempDir(), "jwks.json")
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"gateway", "--user-target", "127.0.0.1:1", "--order-target", "127.0.0.1:1", "--payment-target", "127.0.0.1:1",
			"--auth-keys", keys, "--auth-issuer", "x", "--auth-trusted", "order"}, "for services"},
		{[]string{"user", "--auth-keys", keys}, "needs --auth-issuer"},
		{[]string{"user", "--auth-issuer", "x"}, "needs --auth-keys"},
		{[]string{"user", "--auth-audience", "x"}, "needs --auth-keys"},
		{[]string{"user", "--auth-refresh", "1ms"}, "needs --auth-keys"},
		{[]string{"user", "--auth-keys", keys, "--auth-issuer", "x", "--auth-audience", " "}, "must not be empty"},
		{[]string{"user", "--auth-keys", keys, "--auth-issuer", "x", "--auth-trusted", "order,Gateway"}, `must not name "Gateway"`},
		{[]string{"user", "--auth-keys", keys, "--auth-issuer", "x", "--auth-trusted", "localhost"}, `must not name "localhost"`},
		{[]string{"user", "--auth-keys", keys, "--auth-issuer", "x", "--auth-trusted", "order"}, "needs mutual TLS"},
		{[]string{"user", "--auth-keys", keys, "--auth-issuer", "x", "--auth-refresh", "10ms"}, "at least 1s"},
		{[]string{"user", "--auth-keys", keys, "--auth-issuer", "x"}, "no such file"},
	}
	for _, tt := range tests {
		args := append([]string{"serve"}, tt.args...)
		args = append(args, "--listen", "127.0.0.1:0", "--data-dir", t.TempDir())
		err := run(t.Context(), args, &bytes.Buffer{}, &bytes.Buffer{})
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%v = %v, want an error saying %q", tt.args, err, tt.want)
		}
	}
	// duet up checks them alike, before anything starts, and has no
	// --auth-trusted: its saga's connections name it.
	for _, tt := range []struct {
		args []string
		want string
	}{
		{[]string{"--auth-keys", keys}, "needs --auth-issuer"},
		{[]string{"--auth-issuer", "x"}, "needs --auth-keys"},
		{[]string{"--auth-keys", keys, "--auth-issuer", "x", "--auth-refresh", "10ms"}, "at least 1s"},
		{[]string{"--auth-keys", keys, "--auth-issuer", "x", "--auth-trusted", "order"}, "flag provided but not defined: -auth-trusted"},
		{[]string{"--auth-keys", keys, "--auth-issuer", "x"}, "no such file"},
	} {
		args := append([]string{"up"}, tt.args...)
		for _, flag := range []string{"--http-addr", "--user-addr", "--order-addr", "--payment-addr", "--inventory-addr", "--notification-addr"} {
			args = append(args, flag, "127.0.0.1:0")
		}
		args = append(args, "--data-dir", t.TempDir())
		err := run(t.Context(), args, &bytes.Buffer{}, &bytes.Buffer{})
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("up %v = %v, want an error saying %q", tt.args, err, tt.want)
		}
	}
}

// TestServeGatewayChecksTokens: a gateway given --auth-keys refuses a
// call without a good token itself, before it reaches a service (this
// one checks none), and passes good ones and public calls on.
func TestServeGatewayChecksTokens(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	iss, keys := testIssuer(t, "")
	user := startComponent(t, ctx, "user", "--data-dir", t.TempDir())
	inventory := startComponent(t, ctx, "inventory", "--data-dir", t.TempDir())
	gateway := startComponent(t, ctx, "gateway", "--user-target", user.addr, "--order-target", user.addr, "--payment-target", user.addr,
		"--inventory-target", inventory.addr, "--auth-keys", keys, "--auth-issuer", testIssuerName)
	if !strings.Contains(gateway.stderr.String(), `"end_user_tokens":true`) {
		t.Errorf("the gateway's serving line does not say it checks tokens:\n%s", gateway.stderr.String())
	}
	token, err := iss.Sign(devissuer.Claims{Subject: "u", Audience: []string{"duet"}})
	if err != nil {
		t.Fatal(err)
	}
	var challenge string
	do := func(method, path, authorization, body string) (int, string) {
		t.Helper()
		code, header, b := send(t, ctx, method, "http://"+gateway.addr+path, authorization, body)
		challenge = header.Get("WWW-Authenticate")
		return code, string(b)
	}
	// Its document says which calls need a token: all but the public.
	if code, body := do("GET", "/openapi.json", "", ""); code != 200 || !strings.Contains(body, `"securityDefinitions"`) ||
		strings.Count(body, `"security": []`) != 3 {
		t.Errorf("/openapi.json: %d, without the token scheme or the three public operations: %.300s", code, body)
	}
	// Signing up and the catalogue pass without a token.
	if code, body := do("POST", "/v1/users", "", `{"name":"Ada","email":"ada@example.com"}`); code != 200 {
		t.Fatalf("sign-up without a token: %d %s", code, body)
	}
	if code, body := do("GET", "/v1/products", "", ""); code != 200 {
		t.Fatalf("the catalogue without a token: %d %s", code, body)
	}
	if code, body := do("GET", "/v1/orders/"+strings.Repeat("0", 8)+"-0000-7000-8000-000000000000:watch", "", ""); code != 401 || challenge != "Bearer" {
		t.Errorf("a watch without a token: %d %s, WWW-Authenticate %q; want 401, Bearer", code, body, challenge)
	}
	const unknown = "/v1/users/01a2507e-1204-7e18-96e6-32e181e063b4"
	for _, tt := range []struct {
		authorization string
		status        int
		reason        string
	}{
		{"", 401, "TOKEN_MISSING"},
		{"Bearer nope", 401, "TOKEN_INVALID"},
		{"Bearer " + token, 404, ""}, // passed on: the user service answers
	} {
		code, body := do("GET", unknown, tt.authorization, "")
		if code != tt.status || !strings.Contains(body, tt.reason) {
			t.Errorf("GET with %q: %d %s, want %d %s", tt.authorization, code, body, tt.status, tt.reason)
		}
	}
	// The user service saw the good token's call only (its log is
	// written in batches, in order: once that call's line is there, a
	// refused one's before it would be too).
	user.stderr.WaitFor(t, `"grpc.method":"GetUser"`, 10*time.Second)
	if n := strings.Count(user.stderr.String(), `"grpc.method":"GetUser"`); n != 1 {
		t.Errorf("the user service logged %d GetUser calls, want 1 (the refused ones must not reach it):\n%s", n, user.stderr.String())
	}
}
