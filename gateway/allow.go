package gateway

import (
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strings"
)

// route is one path template of the API (from the OpenAPI document) or of
// the gateway's own, with the methods served on it.
type route struct {
	segments []string // "{…}" matches any one segment
	verb     string   // the custom verb of the last segment (":watch"), if any
	methods  []string // upper case
}

// routeTable lists the API's path templates and the gateway's own paths,
// to say which methods a path takes when a request used another: a 405
// must carry an Allow header (RFC 9110, 15.5.6), and grpc-gateway's mux
// does not say.
type routeTable []route

// newRouteTable reads the path templates of the OpenAPI document doc and
// adds own, served with GET.
func newRouteTable(doc []byte, own []string) (routeTable, error) {
	var spec struct {
		Paths map[string]map[string]json.RawMessage `json:"paths"`
	}
	if err := json.Unmarshal(doc, &spec); err != nil {
		return nil, fmt.Errorf("routes: %w", err)
	}
	var t routeTable
	for path, item := range spec.Paths {
		var methods []string
		for _, m := range httpMethods {
			if _, ok := item[m]; ok {
				methods = append(methods, strings.ToUpper(m))
			}
		}
		t = append(t, newRoute(path, methods))
	}
	for _, path := range own {
		t = append(t, newRoute(path, []string{http.MethodGet}))
	}
	return t, nil
}

func newRoute(template string, methods []string) route {
	segments := strings.Split(strings.TrimPrefix(template, "/"), "/")
	r := route{segments: segments, methods: methods}
	last := segments[len(segments)-1]
	// A verb follows the last segment's variable: "{id}:watch".
	if i := strings.LastIndexByte(last, ':'); i > 0 && strings.HasSuffix(last[:i], "}") {
		r.segments[len(segments)-1], r.verb = last[:i], last[i+1:]
	}
	return r
}

// matches reports whether path (as the request has it) fits r's template,
// as grpc-gateway matches: segments split as they are (an empty one, from
// "//" or a trailing "/", is a segment, which a variable matches), and a
// verb split off the last segment only where it does not start it.
func (r route) matches(path string) bool {
	segments := strings.Split(strings.TrimPrefix(path, "/"), "/")
	if len(segments) != len(r.segments) {
		return false
	}
	last := len(segments) - 1
	if r.verb != "" {
		rest, ok := strings.CutSuffix(segments[last], ":"+r.verb)
		if !ok || rest == "" {
			return false
		}
		segments[last] = rest
	}
	for i, s := range r.segments {
		if strings.HasPrefix(s, "{") {
			continue
		}
		if s != segments[i] {
			return false
		}
	}
	return true
}

// allow returns the Allow header for path: the methods of every template
// it fits, with HEAD wherever GET is but on a watch (Gateway.serve routes
// HEAD as GET), sorted; "" when it fits none.
func (t routeTable) allow(path string) string {
	// A last segment that is nothing but a route's verb (":watch") ends
	// grpc-gateway's search for that route's methods with a 404.
	last := path[strings.LastIndexByte(path, '/')+1:]
	var refused []string
	for _, r := range t {
		if r.verb != "" && last == ":"+r.verb {
			refused = append(refused, r.methods...)
		}
	}
	// For one method, a route with a verb the path ends in is the one
	// grpc-gateway takes over one whose last variable would hold the verb
	// too: GET "/v1/orders/x:watch" is WatchOrder, not GetOrder (while
	// GET "/v1/payments/x:refund" is GetPayment, the verb being POST's).
	// grpc-gateway takes the matching route registered last, and the
	// contract declares each verb route after the plain one it shadows;
	// TestHead and TestRouteTableAllow would see a reorder.
	verbed := map[string]bool{}
	for _, r := range t {
		if r.verb != "" && r.matches(path) {
			for _, m := range r.methods {
				verbed[m] = true
			}
		}
	}
	var methods []string
	for _, r := range t {
		if !r.matches(path) {
			continue
		}
		for _, m := range r.methods {
			if r.verb == "" && verbed[m] {
				continue
			}
			if slices.Contains(refused, m) {
				continue
			}
			methods = append(methods, m)
			if m == http.MethodGet && r.verb != watchVerb {
				methods = append(methods, http.MethodHead)
			}
		}
	}
	slices.Sort(methods)
	return strings.Join(slices.Compact(methods), ", ")
}
