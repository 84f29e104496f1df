package gateway

import (
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"strings"

	"github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
	"google.golang.org/genproto/googleapis/api/annotations"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/duetkit/duet/kit/apierr"
)

// queryFields holds, per route, the request message whose fields the
// route's query parameters may set (nil for a route whose body is the
// whole message, "*", which takes none), so that a request naming anything
// else is refused (400, the parameter as the field) rather than served as
// if it had not been sent: grpc-gateway skips a parameter that names no
// field, and "?limit=5" for page_size, or a typo, quietly returned the
// default page. Google's own REST front ends refuse them too. A route is
// keyed by its method and its template with every variable written "{}"
// (routeKey), from the contract's google.api.http rules and, per request,
// from the pattern grpc-gateway matched ("{user_id=*}").
type queryFields map[string]protoreflect.MessageDescriptor

// newQueryFields reads the HTTP rules of every method of services.
func newQueryFields(services ...protoreflect.ServiceDescriptor) queryFields {
	q := queryFields{}
	for _, s := range services {
		methods := s.Methods()
		for i := range methods.Len() {
			m := methods.Get(i)
			rule, _ := proto.GetExtension(m.Options(), annotations.E_Http).(*annotations.HttpRule)
			if rule == nil {
				continue
			}
			for _, r := range append([]*annotations.HttpRule{rule}, rule.GetAdditionalBindings()...) {
				method, template := httpRule(r)
				switch {
				case template == "":
				case r.GetBody() == "*":
					q[routeKey(method, template)] = nil
				default:
					q[routeKey(method, template)] = m.Input()
				}
			}
		}
	}
	return q
}

// httpRule returns the HTTP method and path template of r.
func httpRule(r *annotations.HttpRule) (method, template string) {
	switch {
	case r.GetGet() != "":
		return http.MethodGet, r.GetGet()
	case r.GetPost() != "":
		return http.MethodPost, r.GetPost()
	case r.GetPut() != "":
		return http.MethodPut, r.GetPut()
	case r.GetPatch() != "":
		return http.MethodPatch, r.GetPatch()
	case r.GetDelete() != "":
		return http.MethodDelete, r.GetDelete()
	case r.GetCustom() != nil:
		return r.GetCustom().GetKind(), r.GetCustom().GetPath()
	}
	return "", ""
}

// variable matches a path template's variable: "{id}", "{user.id}",
// "{user_id=*}".
var variable = regexp.MustCompile(`\{[^}]*\}`)

// routeKey is method and template, each variable of the template "{}".
func routeKey(method, template string) string {
	return method + " " + variable.ReplaceAllString(template, "{}")
}

// check returns an error naming the first query parameter of r (in
// sorted order) whose name, up to its first '.' or '[', is no field of
// the request message of the route r was matched to, or nil. Names are a
// field's proto name or its JSON name, as grpc-gateway takes them. Paths
// that are not the contract's (the gateway's own) are not checked.
func (q queryFields) check(r *http.Request) *apierr.Error {
	if r.URL.RawQuery == "" {
		return nil
	}
	pat, ok := runtime.HTTPPattern(r.Context())
	if !ok {
		return nil
	}
	msg, ok := q[routeKey(r.Method, pat.String())]
	if !ok {
		return nil
	}
	values, err := url.ParseQuery(r.URL.RawQuery)
	if err != nil {
		return nil // grpc-gateway's own parsing answers it
	}
	var unknown []string
	for key := range values {
		name := key
		if i := strings.IndexAny(name, ".["); i >= 0 {
			name = name[:i]
		}
		if msg == nil || msg.Fields().ByTextName(name) == nil && msg.Fields().ByJSONName(name) == nil {
			unknown = append(unknown, key)
		}
	}
	if len(unknown) == 0 {
		return nil
	}
	slices.Sort(unknown)
	return apierr.InvalidField(unknown[0], "is not a query parameter of this method")
}
