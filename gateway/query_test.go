package gateway

import (
	"net/http"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"

	"github.com/duetkit/duet/kit/apierr"
)

// TestUnknownQueryParameters: a query parameter that names no field the
// route takes is refused with 400 naming it, where grpc-gateway skipped
// it and "?limit=1" answered the default page; the fields' proto and
// JSON names, and the gateway's own paths, are served as before.
func TestUnknownQueryParameters(t *testing.T) {
	e := newEnv(t)
	tests := []struct {
		method, path string
		body         any
		wantField    string // "" for served
	}{
		{"GET", "/v1/users?pageSize=2&pageToken=", nil, ""},
		{"GET", "/v1/users?page_size=2", nil, ""},
		{"GET", "/v1/users?limit=2", nil, "limit"},
		{"GET", "/v1/users?pageSize=2&zeta=1&alpha=2", nil, "alpha"},
		{"GET", "/v1/users?pagesize=2", nil, "pagesize"},
		{"GET", "/v1/users/" + knownUserID + "?verbose=1", nil, "verbose"},
		{"HEAD", "/v1/users/" + knownUserID + "?verbose=1", nil, "verbose"},
		// The body is the whole message: the query sets nothing.
		{"POST", "/v1/users?email=ada@example.com", `{"email":"ada@example.com","name":"Ada"}`, "email"},
		// update_mask may come in the query, as grpc-gateway reads it.
		{"PATCH", "/v1/users/" + knownUserID + "?updateMask=name", `{"name":"Ann"}`, ""},
		{"PATCH", "/v1/users/" + knownUserID + "?update_mask=name", `{"name":"Ann"}`, ""},
		{"PATCH", "/v1/users/" + knownUserID + "?updateMask.pathz=name", `{"name":"Ann"}`, "updateMask.pathz"},
		// What the path or the body sets, the query may not: grpc-gateway
		// threw such a value away.
		{"PATCH", "/v1/users/" + knownUserID + "?user.name=Bob", `{"name":"Ann"}`, "user.name"},
		{"GET", "/v1/users/" + knownUserID + "?id=" + knownUserID, nil, "id"},
		{"GET", "/v1/users/" + knownUserID + "/orders?userId=" + knownUserID, nil, "userId"},
		{"GET", "/v1/users/" + knownUserID + "/orders?pageSize=1", nil, ""},
		{"GET", "/readyz?verbose=1", nil, ""},
	}
	for _, tt := range tests {
		t.Run(tt.method+" "+tt.path, func(t *testing.T) {
			resp := e.do(t, tt.method, tt.path, tt.body)
			if tt.wantField == "" {
				if resp.status != http.StatusOK {
					t.Fatalf("HTTP %d, want 200: %s", resp.status, resp.body)
				}
				return
			}
			if tt.method == "HEAD" {
				if resp.status != http.StatusBadRequest {
					t.Fatalf("HTTP %d, want 400", resp.status)
				}
				return
			}
			checkError(t, resp, errorCase{httpStatus: 400, code: codes.InvalidArgument, reason: apierr.ReasonInvalidArgument, field: tt.wantField})
		})
	}
}

// TestEveryRouteChecksItsQuery: every route of the contract is known to
// the check, under the key grpc-gateway's matched pattern gives; a route
// the check missed would skip unknown parameters again.
func TestEveryRouteChecksItsQuery(t *testing.T) {
	e := newEnv(t)
	table, err := newRouteTable(openAPIDocument, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range table {
		path := ""
		for _, s := range r.segments {
			if strings.HasPrefix(s, "{") {
				s = knownUserID
			}
			path += "/" + s
		}
		if r.verb != "" {
			path += ":" + r.verb
		}
		for _, method := range r.methods {
			t.Run(method+" "+path, func(t *testing.T) {
				resp := e.do(t, method, path+"?bogus=1", nil)
				checkError(t, resp, errorCase{httpStatus: 400, code: codes.InvalidArgument, reason: apierr.ReasonInvalidArgument, field: "bogus"})
			})
		}
	}
	if len(table) < 10 {
		t.Errorf("%d routes in the contract, want the shop's 10 or more", len(table))
	}
}

// TestMalformedOrLongQuery: a query that cannot be read is refused, not
// passed unchecked (most routes never parse theirs), and a parameter name
// as long as the headers allow is cut short in the error.
func TestMalformedOrLongQuery(t *testing.T) {
	e := newEnv(t)
	resp := e.do(t, "GET", "/v1/users/"+knownUserID+"?bogus=1&x=%zz", nil)
	checkError(t, resp, errorCase{httpStatus: 400, code: codes.InvalidArgument, reason: apierr.ReasonInvalidArgument, message: "malformed"})
	resp = e.do(t, "GET", "/v1/users?"+strings.Repeat("q", 20000)+"=1", nil)
	checkError(t, resp, errorCase{httpStatus: 400, code: codes.InvalidArgument, reason: apierr.ReasonInvalidArgument, field: strings.Repeat("q", maxEchoedName) + "…"})
	if len(resp.body) > 1000 {
		t.Errorf("error of %d bytes for a long parameter name, want it cut short", len(resp.body))
	}
}
