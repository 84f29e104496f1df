package system_test

import (
	"fmt"
	"io"
	"path/filepath"
	"strings"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"

	userv1 "github.com/duetkit/duet/gen/duet/user/v1"
	"github.com/duetkit/duet/internal/system"
	"github.com/duetkit/duet/kit/apierr"
	"github.com/duetkit/duet/kit/authn"
	"github.com/duetkit/duet/kit/authn/devissuer"
	"github.com/duetkit/duet/kit/authz"
)

// TestStartWithTokens: `duet up` with an issuer's key set checks end
// users' tokens as `duet serve` does (the gateway, then each service's
// rules), while the order saga, over in-memory connections that name it,
// calls the services without one; a caller over TCP, nameless, cannot
// pass as the saga.
func TestStartWithTokens(t *testing.T) {
	issuer, err := devissuer.New("https://id.test", "")
	if err != nil {
		t.Fatal(err)
	}
	keysFile := filepath.Join(t.TempDir(), "jwks.json")
	if err := issuer.WriteKeySet(keysFile); err != nil {
		t.Fatal(err)
	}
	sys := start(t, system.Config{Auth: authn.Config{KeysFile: keysFile, Issuer: "https://id.test", Audience: "duet"}})
	base := "http://" + sys.HTTPAddr
	bearer := func(subject string, scopes ...string) []string {
		t.Helper()
		tok, err := issuer.Sign(devissuer.Claims{Subject: subject, Audience: []string{"duet"}, Scopes: scopes})
		if err != nil {
			t.Fatal(err)
		}
		return []string{"Authorization", "Bearer " + tok}
	}
	admin := bearer("0b0d5c4e-5d35-4c6a-9a0e-1f6f3f6b1a0f", system.AdminScope)

	if r := do(t, "POST", base+"/v1/products", `{"sku":"PEN-2","name":"A pen","price":{"currencyCode":"USD","units":"250"},"stock":5}`); r.status != 401 {
		t.Fatalf("a product without a token: %d %s", r.status, r.raw)
	}
	if r := do(t, "POST", base+"/v1/products", `{"sku":"PEN-2","name":"A pen","price":{"currencyCode":"USD","units":"250"},"stock":5}`, admin...); r.status != 200 {
		t.Fatalf("a product with the admin's token: %d %s", r.status, r.raw)
	}
	signUp := func(email string) string {
		t.Helper()
		r := do(t, "POST", base+"/v1/users", fmt.Sprintf(`{"email":%q,"name":"Ann"}`, email))
		if r.status != 200 {
			t.Fatalf("sign-up: %d %s", r.status, r.raw)
		}
		return path(r.body, "user", "id").(string)
	}
	ann, bob := signUp("ann@example.com"), signUp("bob@example.com")
	annToken := bearer(ann)

	for _, tc := range []struct {
		name, method, url, body string
		header                  []string
		status                  int
		reason                  string
	}{
		{"own record", "GET", "/v1/users/" + ann, "", annToken, 200, ""},
		{"no token", "GET", "/v1/users/" + ann, "", nil, 401, authn.ReasonTokenMissing},
		{"another's record", "GET", "/v1/users/" + bob, "", annToken, 403, authz.ReasonNotPermitted},
		{"another's order", "POST", "/v1/orders", fmt.Sprintf(`{"userId":%q,"items":[{"sku":"PEN-2","quantity":1}],"paymentToken":"tok_approve","idempotencyKey":"k1"}`, bob), annToken, 403, authz.ReasonNotPermitted},
		{"the catalogue", "GET", "/v1/products", "", nil, 200, `"sku":"PEN-2"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := do(t, tc.method, base+tc.url, tc.body, tc.header...)
			want := tc.reason
			if tc.status != 200 {
				want = `"reason":"` + tc.reason + `"`
			}
			if r.status != tc.status || !strings.Contains(r.raw, want) {
				t.Errorf("%s %s: %d %s, want %d %s", tc.method, tc.url, r.status, r.raw, tc.status, tc.reason)
			}
		})
	}

	// The gateway refused the call without a token itself: its client
	// counted it, the user service never saw it.
	count := func(metric string) float64 {
		t.Helper()
		resp, err := testClient.Get(base + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		raw, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		var sum float64
		for _, line := range strings.Split(string(raw), "\n") {
			if strings.HasPrefix(line, metric+"{") && strings.Contains(line, `grpc_code="Unauthenticated"`) && strings.Contains(line, `grpc_method="GetUser"`) {
				var v float64
				fmt.Sscan(line[strings.LastIndexByte(line, ' ')+1:], &v)
				sum += v
			}
		}
		return sum
	}
	client, server := count("grpc_client_handled_total"), count("grpc_server_handled_total")
	if r := do(t, "GET", base+"/v1/users/"+ann, ""); r.status != 401 {
		t.Fatalf("no token: %d", r.status)
	}
	if c, s := count("grpc_client_handled_total")-client, count("grpc_server_handled_total")-server; c != 1 || s != 0 {
		t.Errorf("a call without a token: the gateway's client counted %v refusals, the user service %v; want 1 and 0", c, s)
	}

	// The saga checks the user, prices, reserves and charges without
	// a token: its connections name it.
	r := do(t, "POST", base+"/v1/orders", fmt.Sprintf(`{"userId":%q,"items":[{"sku":"PEN-2","quantity":1}],"paymentToken":"tok_approve","idempotencyKey":"k2","wait":true}`, ann), annToken...)
	if r.status != 200 || path(r.body, "order", "status") != "ORDER_STATUS_CONFIRMED" {
		t.Fatalf("ann's order: %d %s", r.status, r.raw)
	}

	// Over TCP nobody is the saga: a gRPC caller without a token is
	// refused.
	conn, err := grpc.NewClient(sys.UserAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_, err = userv1.NewUserServiceClient(conn).GetUser(t.Context(), &userv1.GetUserRequest{Id: ann})
	if apierr.Code(err) != codes.Unauthenticated {
		t.Errorf("GetUser over TCP without a token: %v, want UNAUTHENTICATED", err)
	}
	// The gateway documents the token.
	if r := do(t, "GET", base+"/openapi.json", ""); r.status != 200 || r.body["securityDefinitions"] == nil {
		t.Errorf("/openapi.json does not declare the token: %d", r.status)
	}
}
