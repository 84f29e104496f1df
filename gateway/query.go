package gateway

import (
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"strings"

	"github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
	"google.golang.org/genproto/googleapis/api/annotations"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/duetkit/duet/kit/apierr"
)

// queryFields holds, per route, what its query parameters may set, so
// that a request naming anything else is refused (400, the parameter as
// the field) rather than served as if it had not been sent: grpc-gateway
// skips a parameter that names no field, or one its path or body sets,
// and "?limit=5" for page_size, or a typo, quietly returned the default
// page. Google's own REST front ends refuse them too. In the mux's
// middleware rather than a runtime.SetQueryParameterParser wrapping
// grpc-gateway's: that parser is the whole process's, routes whose body is
// the whole message never call it, and its error reaches the client as
// text, without the field. A route is keyed by
// its method and its template as grpc-gateway's runtime.Pattern prints it
// ("GET /v1/users/{user_id=*}/orders").
type queryFields map[string]*queryRoute

// queryRoute is what one route's query may set: the request message's
// top-level fields, by proto and JSON name, but those its path and its
// body set. No names: a route whose body is the whole message ("*").
type queryRoute struct {
	msg   protoreflect.MessageDescriptor
	names map[string]bool
}

// newQueryFields reads the HTTP rules of every method of the services in
// files.
func newQueryFields(files ...protoreflect.FileDescriptor) queryFields {
	q := queryFields{}
	for _, f := range files {
		for j := range f.Services().Len() {
			q.add(f.Services().Get(j))
		}
	}
	return q
}

// add reads the HTTP rules of every method of s.
func (q queryFields) add(s protoreflect.ServiceDescriptor) {
	methods := s.Methods()
	for i := range methods.Len() {
		m := methods.Get(i)
		rule, _ := proto.GetExtension(m.Options(), annotations.E_Http).(*annotations.HttpRule)
		if rule == nil {
			continue
		}
		for _, r := range append([]*annotations.HttpRule{rule}, rule.GetAdditionalBindings()...) {
			if method, template := httpRule(r); template != "" {
				q[method+" "+patternForm(template)] = newQueryRoute(m.Input(), template, r.GetBody())
			}
		}
	}
}

// newQueryRoute lists the fields of msg that a query may set when template
// and body set the others.
func newQueryRoute(msg protoreflect.MessageDescriptor, template, body string) *queryRoute {
	route := &queryRoute{msg: msg, names: map[string]bool{}}
	if body == "*" {
		return route
	}
	taken := map[string]bool{body: true}
	for _, v := range variable.FindAllStringSubmatch(template, -1) {
		// "{user.id}" sets a field of user: user is the path's.
		taken[strings.SplitN(v[1], ".", 2)[0]] = true
	}
	fields := msg.Fields()
	for i := range fields.Len() {
		f := fields.Get(i)
		if !taken[string(f.Name())] {
			route.names[string(f.Name())], route.names[f.JSONName()] = true, true
		}
	}
	return route
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

// variable matches a path template's variable, "{id}", "{user.id}" or
// "{name=shelves/*}", its field path as the first submatch.
var variable = regexp.MustCompile(`\{([^}=]*)(=[^}]*)?\}`)

// bareVariable matches a variable without a pattern, "{id}".
var bareVariable = regexp.MustCompile(`\{([^}=]*)\}`)

// patternForm writes template's variables as runtime.Pattern's String
// does: "{id}" is "{id=*}".
func patternForm(template string) string {
	return bareVariable.ReplaceAllString(template, "{$1=*}")
}

// mapKeyParam matches a parameter that sets one key of a map field,
// "labels[k]", as grpc-gateway reads it.
var mapKeyParam = regexp.MustCompile(`^(.*)\[(.*)\]$`)

// maxEchoedName bounds the parameter name an error repeats: the name is
// the client's, and may be as long as its headers.
const maxEchoedName = 64

// route returns what the query of method on the route grpc-gateway
// matched with pat may set; nil for a path that is not the contract's
// (the gateway's own), whose query is not checked.
func (q queryFields) route(method string, pat runtime.Pattern) *queryRoute {
	return q[method+" "+pat.String()]
}

// check returns an error naming the first query parameter of r (in
// sorted order) that the route does not take, or one saying the query
// cannot be read; nil when all are taken, or route is nil.
func (route *queryRoute) check(r *http.Request) *apierr.Error {
	if route == nil || r.URL.RawQuery == "" {
		return nil
	}
	values, err := url.ParseQuery(r.URL.RawQuery)
	if err != nil {
		// Most routes never parse their query; a pair that cannot be
		// read would otherwise pass unchecked.
		return apierr.New(codes.InvalidArgument, apierr.ReasonInvalidArgument, "the query string is malformed: "+err.Error())
	}
	var unknown []string
	for key := range values {
		if !route.takes(key) {
			unknown = append(unknown, key)
		}
	}
	if len(unknown) == 0 {
		return nil
	}
	slices.Sort(unknown)
	name := unknown[0]
	if len(name) > maxEchoedName {
		name = name[:maxEchoedName] + "…"
	}
	return apierr.InvalidField(name, "is not a query parameter of this method")
}

// takes reports whether the query parameter key sets a field the route's
// query may set: a top-level field, "a.b" through singular message
// fields, or "m[k]" for a map field.
func (route *queryRoute) takes(key string) bool {
	isMap := false
	if strings.HasSuffix(key, "]") {
		if m := mapKeyParam.FindStringSubmatch(key); m != nil {
			key, isMap = m[1], true
		}
	}
	path := strings.Split(key, ".")
	if !route.names[path[0]] {
		return false
	}
	msg := route.msg
	for i, name := range path {
		f := msg.Fields().ByTextName(name)
		if f == nil {
			f = msg.Fields().ByJSONName(name)
		}
		switch {
		case f == nil:
			return false
		case i == len(path)-1:
			return !isMap || f.IsMap()
		case f.Message() == nil || f.Cardinality() == protoreflect.Repeated:
			return false
		}
		msg = f.Message()
	}
	return false
}
