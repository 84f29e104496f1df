package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/duetkit/duet/internal/system"
	"github.com/duetkit/duet/kit/apierr"
	"github.com/duetkit/duet/kit/authn"
	"github.com/duetkit/duet/kit/authn/devissuer"
	"github.com/duetkit/duet/kit/authz"
)

// TestTokenFlagChecked: --token is refused before any call when it could
// not be a token or would cross the network in plaintext.
func TestTokenFlagChecked(t *testing.T) {
	tests := []struct {
		name    string
		token   string
		target  string
		tls     bool
		wantErr string // "" means accepted
	}{
		{name: "none", target: "10.0.0.2:9094"},
		{name: "loopback", token: "a.b.c", target: "127.0.0.1:9094"},
		{name: "localhost, trailing newline", token: "a.b.c\n", target: "localhost:9094"},
		{name: "unix socket", token: "a.b.c", target: "unix:///run/duet/inventory.sock"},
		{name: "remote over TLS", token: "a.b.c", target: "inventory.internal:9094", tls: true},
		{name: "remote in plaintext", token: "a.b.c", target: "inventory.internal:9094", wantErr: "over plaintext"},
		{name: "any address in plaintext", token: "a.b.c", target: "0.0.0.0:9094", wantErr: "over plaintext"},
		{name: "blank", token: "  ", target: "127.0.0.1:9094", wantErr: "blank"},
		{name: "with its scheme", token: "Bearer a.b.c", target: "127.0.0.1:9094", wantErr: `without "Bearer "`},
		{name: "two tokens", token: "a.b.c d.e.f", target: "127.0.0.1:9094", wantErr: "a space"},
		{name: "a header injected", token: "a.b.c\r\nx-admin:1", target: "127.0.0.1:9094", wantErr: "control character"},
		{name: "a NUL", token: "a.b.c\x00", target: "127.0.0.1:9094", wantErr: "control character"},
		{name: "non-ASCII", token: "a.b.ç", target: "127.0.0.1:9094", wantErr: "beyond ASCII"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := bearerFlag{token: tt.token}
			err := b.check(tt.target, tt.tls)
			switch {
			case tt.wantErr == "" && err != nil:
				t.Fatalf("check = %v, want it accepted", err)
			case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
				t.Fatalf("check = %v, want an error saying %q", err, tt.wantErr)
			}
		})
	}
}

// TestTokenOnlyToLoopback: in plaintext, a connection that carries a
// token is made only to a loopback address, whatever address the target's
// name resolved to: a peer reporting another address is refused before
// the call is sent, so the server sees none.
func TestTokenOnlyToLoopback(t *testing.T) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var calls atomic.Int32
	srv := grpc.NewServer(grpc.UnaryInterceptor(func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		calls.Add(1)
		return handler(ctx, req)
	}))
	healthpb.RegisterHealthServer(srv, health.NewServer())
	go srv.Serve(lis)
	t.Cleanup(srv.Stop)

	tests := []struct {
		name   string
		remote net.Addr // what the connection reports; nil: its own
		ok     bool
	}{
		{name: "loopback", ok: true},
		{name: "resolved elsewhere", remote: &net.TCPAddr{IP: net.IPv4(192, 0, 2, 7), Port: 9094}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := bearerFlag{token: "a.b.c"}
			creds, opts := b.apply(nil)
			dial := func(ctx context.Context, addr string) (net.Conn, error) {
				c, err := (&net.Dialer{}).DialContext(ctx, "tcp", addr)
				if err != nil || tt.remote == nil {
					return c, err
				}
				return remoteAddrConn{Conn: c, remote: tt.remote}, nil
			}
			conn, err := grpc.NewClient("passthrough:///"+lis.Addr().String(), append(opts, grpc.WithTransportCredentials(creds), grpc.WithContextDialer(dial))...)
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
			defer cancel()
			before := calls.Load()
			_, err = healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{})
			if (err == nil) != tt.ok {
				t.Fatalf("Check = %v, want ok %v", err, tt.ok)
			}
			if got := calls.Load() - before; (got > 0) != tt.ok {
				t.Fatalf("the server saw %d calls, want any: %v", got, tt.ok)
			}
		})
	}
}

// remoteAddrConn is a connection that reports another peer address, as one
// to a name that resolved off this machine would.
type remoteAddrConn struct {
	net.Conn
	remote net.Addr
}

func (c remoteAddrConn) RemoteAddr() net.Addr { return c.remote }

// TestOperatorsCommandsSendTokens: against a system that checks tokens
// (`duet up --auth-keys`), `duet stock import` and `duet order watch`
// send the --token given, or DUET_TOKEN's, and the services' rules
// decide: without a token both were refused, whatever the operator did.
func TestOperatorsCommandsSendTokens(t *testing.T) {
	iss, keys := testIssuer(t, "")
	cfg := loopbackSystem(t)
	cfg.Auth = authn.Config{KeysFile: keys, Issuer: testIssuerName, Audience: "duet"}
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	sys, err := system.Start(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sys.Shutdown(context.WithoutCancel(ctx)) })
	token := func(subject string, scopes ...string) string {
		t.Helper()
		tok, err := iss.Sign(devissuer.Claims{Subject: subject, Audience: []string{"duet"}, Scopes: scopes})
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	admin := token("0b0d5c4e-5d35-4c6a-9a0e-1f6f3f6b1a0f", system.AdminScope)
	csv := filepath.Join(t.TempDir(), "stock.csv")
	if err := os.WriteFile(csv, []byte("sku,name,price,currency,stock\nTOK-1,Token,100,USD,5\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	importArgs := []string{"stock", "import", "--inventory-target", sys.InventoryAddr}

	// Signing up is public; the user's own token is then what a user has.
	status, _, body := send(t, ctx, "POST", "http://"+sys.HTTPAddr+"/v1/users", "", `{"email":"op@example.com","name":"Op"}`)
	var signedUp struct{ User struct{ ID string } }
	if err := json.Unmarshal(body, &signedUp); status != 200 || err != nil || signedUp.User.ID == "" {
		t.Fatalf("sign-up: %d %s %v", status, body, err)
	}
	user := token(signedUp.User.ID)

	imports := []struct {
		name       string
		args       []string
		env        string // DUET_TOKEN
		wantCode   codes.Code
		wantReason string
	}{
		{name: "no token", wantCode: codes.Unauthenticated, wantReason: authn.ReasonTokenMissing},
		{name: "a user's token", args: []string{"--token", user}, wantCode: codes.PermissionDenied, wantReason: authz.ReasonNotPermitted},
		{name: "another issuer's token", args: []string{"--token", otherIssuersToken(t)}, wantCode: codes.Unauthenticated, wantReason: authn.ReasonTokenInvalid},
		{name: "an admin's token", args: []string{"--token", admin}},
		{name: "an admin's token from the environment", env: admin, args: []string{"--import-id", "from-env"}},
	}
	for _, tt := range imports {
		t.Run(tt.name, func(t *testing.T) {
			t.Setenv("DUET_TOKEN", tt.env)
			var stdout, stderr strings.Builder
			err := run(ctx, append(append(importArgs, tt.args...), csv), &stdout, &stderr)
			if tt.wantCode == codes.OK {
				if err != nil || !strings.Contains(stdout.String(), "applied 1") {
					t.Fatalf("import = %v; stdout:\n%s", err, stdout.String())
				}
				return
			}
			if apierr.Code(err) != tt.wantCode || apierr.Reason(err) != tt.wantReason {
				t.Fatalf("import = %v (%v, %q), want %v %s", err, apierr.Code(err), apierr.Reason(err), tt.wantCode, tt.wantReason)
			}
		})
	}

	orderBody := fmt.Sprintf(`{"userId":%q,"items":[{"sku":"TOK-1","quantity":1}],"paymentToken":"tok_approve","idempotencyKey":"op-1","wait":true}`, signedUp.User.ID)
	status, _, body = send(t, ctx, "POST", "http://"+sys.HTTPAddr+"/v1/orders", "Bearer "+user, orderBody)
	var placed struct{ Order struct{ ID, Status string } }
	if err := json.Unmarshal(body, &placed); status != 200 || err != nil || placed.Order.Status != "ORDER_STATUS_CONFIRMED" {
		t.Fatalf("order: %d %s %v", status, body, err)
	}
	watchArgs := []string{"order", "watch", "--order-target", sys.OrderAddr, placed.Order.ID}
	watches := []struct {
		name     string
		token    string
		wantCode codes.Code
	}{
		{name: "no token", wantCode: codes.Unauthenticated},
		{name: "another user's token", token: token("7d0c9a4e-1111-4c6a-9a0e-1f6f3f6b1a0f"), wantCode: codes.PermissionDenied},
		{name: "the owner's token", token: user},
		{name: "an admin's token", token: admin},
	}
	for _, tt := range watches {
		t.Run("watch with "+tt.name, func(t *testing.T) {
			t.Setenv("DUET_TOKEN", "")
			args := watchArgs
			if tt.token != "" {
				args = append([]string{"order", "watch", "--token", tt.token}, watchArgs[2:]...)
			}
			var stdout, stderr strings.Builder
			err := run(ctx, args, &stdout, &stderr)
			if tt.wantCode == codes.OK {
				if err != nil || !strings.Contains(stdout.String(), "CONFIRMED") {
					t.Fatalf("watch = %v; stdout:\n%s", err, stdout.String())
				}
				return
			}
			if apierr.Code(err) != tt.wantCode {
				t.Fatalf("watch = %v (%v), want %v; stdout:\n%s", err, apierr.Code(err), tt.wantCode, stdout.String())
			}
		})
	}
}

// otherIssuersToken is a well-formed token no key of the test's issuer
// signed.
func otherIssuersToken(t *testing.T) string {
	t.Helper()
	other, err := devissuer.New(testIssuerName, "")
	if err != nil {
		t.Fatal(err)
	}
	tok, err := other.Sign(devissuer.Claims{Subject: "someone", Audience: []string{"duet"}})
	if err != nil {
		t.Fatal(err)
	}
	return tok
}
