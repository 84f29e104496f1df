package gateway

import (
	"bytes"
	_ "embed"
	"encoding/json"
	"fmt"
	"html/template"
	"net/http"
	"regexp"
	"slices"
	"strconv"
	"strings"

	inventoryv1 "github.com/duetkit/duet/gen/duet/inventory/v1"
	notificationv1 "github.com/duetkit/duet/gen/duet/notification/v1"
	orderv1 "github.com/duetkit/duet/gen/duet/order/v1"
	paymentv1 "github.com/duetkit/duet/gen/duet/payment/v1"
	userv1 "github.com/duetkit/duet/gen/duet/user/v1"
)

// openAPIDocument is the OpenAPI document of the REST API, generated from
// the contract by protoc-gen-openapiv2 straight into this package
// (scripts/gen) so that go:embed can reach it; CI fails when it is stale.
//
//go:embed openapi/duet.swagger.json
var openAPIDocument []byte

// serveOpenAPI serves the OpenAPI document of the services configured,
// with the contract's validation rules written in.
func (g *Gateway) serveOpenAPI(w http.ResponseWriter, _ *http.Request) {
	doc := g.withRules()
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Content-Length", strconv.Itoa(len(doc)))
	_, _ = w.Write(doc)
}

// restServices are the services whose REST routes a Gateway may serve,
// the first three always (Config's Users, Orders, Payments).
var restServices = []string{
	userv1.UserService_ServiceDesc.ServiceName,
	orderv1.OrderService_ServiceDesc.ServiceName,
	paymentv1.PaymentService_ServiceDesc.ServiceName,
	inventoryv1.InventoryService_ServiceDesc.ServiceName,
	notificationv1.NotificationService_ServiceDesc.ServiceName,
}

// Services returns the full names of the services whose REST routes a
// Gateway may serve, all five of the shop's ("duet.user.v1.UserService"
// first): user, order and payment always, inventory and notification
// when configured.
func Services() []string { return slices.Clone(restServices) }

// Document returns the OpenAPI document that a Gateway reaching services
// (full names, among Services, the first three of which it always
// reaches) and taking tokens (Config.Tokens; nil for none) serves at
// /openapi.json, byte for byte, the contract's validation rules written
// in: for generating a client, or checking one, without running the
// system.
func Document(services []string, tokens *Tokens) ([]byte, error) {
	for _, s := range restServices[:3] {
		if !slices.Contains(services, s) {
			return nil, fmt.Errorf("gateway: a gateway always serves %s: it must be among the services", s)
		}
	}
	for _, s := range services {
		if !slices.Contains(restServices, s) {
			return nil, fmt.Errorf("gateway: no REST routes for service %q", s)
		}
	}
	doc, err := documentOf(services, tokens)
	if err != nil {
		return nil, err
	}
	return withRules(doc, serviceDescriptors(services))
}

// documentOf is Document without the validation rules, which New's
// Gateway writes in when first asked for the document.
func documentOf(services []string, tokens *Tokens) ([]byte, error) {
	doc, err := openAPIOf(openAPIDocument, services)
	if err != nil {
		return nil, fmt.Errorf("gateway: OpenAPI document: %w", err)
	}
	if tokens != nil {
		if doc, err = withTokens(doc, tokens.Public); err != nil {
			return nil, fmt.Errorf("gateway: OpenAPI document: %w", err)
		}
	}
	return doc, nil
}

// openAPIOf returns doc cut down to the operations and tags of services
// (full names, "duet.user.v1.UserService"), which protoc-gen-openapiv2
// tags with the service's short name, and to the definitions those
// operations refer to: a gateway run without the inventory or
// notification service documents neither their routes (which answer 404)
// nor their messages. doc itself when every tagged service is configured.
// Operations and definitions are kept as they are written (a message's
// fields in the contract's order); objects around them get their keys
// sorted.
func openAPIOf(doc []byte, services []string) ([]byte, error) {
	var spec map[string]json.RawMessage
	if err := json.Unmarshal(doc, &spec); err != nil {
		return nil, err
	}
	keep := map[string]bool{}
	for _, s := range services {
		keep[s[strings.LastIndexByte(s, '.')+1:]] = true
	}
	// A key the document lacks reads as empty.
	field := func(key string, into any) error {
		if raw, ok := spec[key]; ok {
			if err := json.Unmarshal(raw, into); err != nil {
				return fmt.Errorf("%s: %w", key, err)
			}
		}
		return nil
	}
	var tags []struct {
		Name string `json:"name"`
	}
	var rawTags []json.RawMessage
	if err := field("tags", &tags); err != nil {
		return nil, err
	}
	if err := field("tags", &rawTags); err != nil {
		return nil, err
	}
	kept := []json.RawMessage{}
	for i, t := range tags {
		if keep[t.Name] {
			kept = append(kept, rawTags[i])
		}
	}
	if len(kept) == len(tags) {
		return doc, nil
	}
	var paths map[string]map[string]json.RawMessage
	if err := field("paths", &paths); err != nil {
		return nil, err
	}
	var used [][]byte // what the operations kept refer to
	for path, item := range paths {
		operations := 0
		for key, op := range item {
			if !slices.Contains(httpMethods, key) {
				continue // path-level parameters, extensions
			}
			var tagged struct {
				Tags []string `json:"tags"`
			}
			if err := json.Unmarshal(op, &tagged); err != nil {
				return nil, fmt.Errorf("paths %s %s: %w", path, key, err)
			}
			if len(tagged.Tags) > 0 && !keep[tagged.Tags[0]] {
				delete(item, key)
				continue
			}
			operations++
			used = append(used, op)
		}
		if operations == 0 {
			delete(paths, path)
		}
	}
	var definitions map[string]json.RawMessage
	if err := field("definitions", &definitions); err != nil {
		return nil, err
	}
	reached := map[string]json.RawMessage{}
	for len(used) > 0 {
		var next [][]byte
		for _, raw := range used {
			for _, m := range definitionRef.FindAllSubmatch(raw, -1) {
				name := string(m[1])
				if d, ok := definitions[name]; ok && reached[name] == nil {
					reached[name] = d
					next = append(next, d)
				}
			}
		}
		used = next
	}
	var err error
	for key, v := range map[string]any{"tags": kept, "paths": paths, "definitions": reached} {
		if spec[key], err = json.Marshal(v); err != nil {
			return nil, err
		}
	}
	return json.MarshalIndent(spec, "", "  ")
}

// tokenScheme names the end users' tokens among the document's
// securityDefinitions. Swagger 2.0 has no bearer type (OpenAPI 3's
// http/bearer): an API key in the Authorization header is how it says
// one, and what code generators and /docs consoles send.
const tokenScheme = "bearer"

// tokenAnswers are the answers an operation that needs a token gets
// when it lacks one, or its user may not make the call.
var tokenAnswers = map[string]json.RawMessage{
	"401": json.RawMessage(`{"description": "No token (reason TOKEN_MISSING), or a bad or expired one (TOKEN_INVALID, TOKEN_EXPIRED): WWW-Authenticate says which.", "headers": {"WWW-Authenticate": {"type": "string", "description": "Bearer, with error=\"invalid_token\" for a token refused."}}, "schema": {"$ref": "#/definitions/rpcStatus"}}`),
	"403": json.RawMessage(`{"description": "The token's user may not make this call (reason NOT_PERMITTED); a read of one resource by its id answers so for a missing id too.", "schema": {"$ref": "#/definitions/rpcStatus"}}`),
}

// publicTokenAnswer is the answer of an operation that needs no token
// to one sent that fails its check.
var publicTokenAnswer = json.RawMessage(`{"description": "A bad or expired token (TOKEN_INVALID, TOKEN_EXPIRED): none is needed, but one sent is checked.", "headers": {"WWW-Authenticate": {"type": "string", "description": "Bearer error=\"invalid_token\"."}}, "schema": {"$ref": "#/definitions/rpcStatus"}}`)

// withTokens returns doc declaring the end users' tokens: a security
// scheme, required by every operation but those of the public methods
// (full names, "/duet.user.v1.UserService/CreateUser", which
// protoc-gen-openapiv2 makes the operation "UserService_CreateUser"),
// which get an empty requirement and a 401 for a bad token sent, and the
// 401 and 403 answers of the others. Operations get their keys sorted; what is in them is kept.
func withTokens(doc []byte, public []string) ([]byte, error) {
	var spec map[string]json.RawMessage
	if err := json.Unmarshal(doc, &spec); err != nil {
		return nil, err
	}
	open := map[string]bool{}
	for _, m := range public {
		service, method, _ := strings.Cut(strings.TrimPrefix(m, "/"), "/")
		open[service[strings.LastIndexByte(service, '.')+1:]+"_"+method] = true
	}
	var paths map[string]map[string]json.RawMessage
	if raw, ok := spec["paths"]; ok {
		if err := json.Unmarshal(raw, &paths); err != nil {
			return nil, fmt.Errorf("paths: %w", err)
		}
	}
	if err := editOperations(paths, func(op map[string]json.RawMessage) error {
		var id string
		if raw, ok := op["operationId"]; ok {
			if err := json.Unmarshal(raw, &id); err != nil {
				return fmt.Errorf("operationId: %w", err)
			}
		}
		responses := map[string]json.RawMessage{}
		if raw, ok := op["responses"]; ok {
			if err := json.Unmarshal(raw, &responses); err != nil {
				return fmt.Errorf("responses: %w", err)
			}
		}
		answers := tokenAnswers
		if open[id] {
			op["security"] = json.RawMessage(`[]`)
			answers = map[string]json.RawMessage{"401": publicTokenAnswer}
		}
		for status, answer := range answers {
			if _, ok := responses[status]; !ok {
				responses[status] = answer
			}
		}
		var err error
		op["responses"], err = json.Marshal(responses)
		return err
	}); err != nil {
		return nil, err
	}
	var err error
	if spec["paths"], err = json.Marshal(paths); err != nil {
		return nil, err
	}
	spec["securityDefinitions"] = json.RawMessage(`{"` + tokenScheme + `": {"type": "apiKey", "name": "Authorization", "in": "header", "description": "An end user's JSON Web Token, after \"Bearer \"."}}`)
	spec["security"] = json.RawMessage(`[{"` + tokenScheme + `": []}]`)
	return json.MarshalIndent(spec, "", "  ")
}

// editOperations calls edit with each operation of paths decoded, and
// puts it back encoded, its keys sorted; an error of edit's is returned
// naming the operation.
func editOperations(paths map[string]map[string]json.RawMessage, edit func(op map[string]json.RawMessage) error) error {
	for path, item := range paths {
		for key, raw := range item {
			if !slices.Contains(httpMethods, key) {
				continue
			}
			var op map[string]json.RawMessage
			if err := json.Unmarshal(raw, &op); err != nil {
				return fmt.Errorf("paths %s %s: %w", path, key, err)
			}
			if err := edit(op); err != nil {
				return fmt.Errorf("paths %s %s: %w", path, key, err)
			}
			var err error
			if item[key], err = json.Marshal(op); err != nil {
				return err
			}
		}
	}
	return nil
}

// definitionRef finds the definitions a piece of the document refers to.
var definitionRef = regexp.MustCompile(`"\$ref":\s*"#/definitions/([^"]+)"`)

// serveDocs serves the page rendered by renderDocs. It loads nothing from
// elsewhere (the machine may be offline), and its Content-Security-Policy
// says so.
func (g *Gateway) serveDocs(w http.ResponseWriter, _ *http.Request) {
	h := w.Header()
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'")
	h.Set("Content-Length", strconv.Itoa(len(g.docs)))
	_, _ = w.Write(g.docs)
}

// operation is one REST operation listed on the docs page.
type operation struct {
	Method, Path, ID, Summary string
	// NoToken marks an operation that needs no token when the others
	// do (withTokens).
	NoToken bool
}

// docsPage is what the docs page shows.
type docsPage struct {
	// Tokens says the calls need end users' tokens (withTokens).
	Tokens bool
	Groups []docsGroup
}

// docsGroup is the operations of one service.
type docsGroup struct {
	Tag, Description string
	Operations       []operation
}

// httpMethods are the keys of an OpenAPI path item that are operations,
// in the order the page lists them.
var httpMethods = []string{"get", "post", "put", "patch", "delete", "head", "options"}

// renderDocs renders the docs page from the OpenAPI document once, at
// start-up: one table per service of method, path, operation and summary.
func renderDocs(doc []byte) ([]byte, error) {
	var spec struct {
		Tags []struct {
			Name        string `json:"name"`
			Description string `json:"description"`
		} `json:"tags"`
		Paths    map[string]map[string]json.RawMessage `json:"paths"`
		Security []json.RawMessage                     `json:"security"`
	}
	if err := json.Unmarshal(doc, &spec); err != nil {
		return nil, err
	}
	groups := map[string]*docsGroup{}
	group := func(tag string) *docsGroup {
		if groups[tag] == nil {
			groups[tag] = &docsGroup{Tag: tag}
		}
		return groups[tag]
	}
	for _, t := range spec.Tags {
		group(t.Name).Description = t.Description
	}
	for path, item := range spec.Paths {
		for method, raw := range item {
			if !slices.Contains(httpMethods, method) {
				continue // path-level "parameters" and extensions
			}
			var op struct {
				OperationID string            `json:"operationId"`
				Summary     string            `json:"summary"`
				Tags        []string          `json:"tags"`
				Security    []json.RawMessage `json:"security"`
			}
			if err := json.Unmarshal(raw, &op); err != nil {
				return nil, err
			}
			tag := "Other"
			if len(op.Tags) > 0 {
				tag = op.Tags[0]
			}
			g := group(tag)
			g.Operations = append(g.Operations, operation{
				Method:  strings.ToUpper(method),
				Path:    path,
				ID:      op.OperationID,
				Summary: op.Summary,
				NoToken: len(spec.Security) > 0 && op.Security != nil && len(op.Security) == 0,
			})
		}
	}
	var list []docsGroup
	for _, g := range groups {
		if len(g.Operations) == 0 {
			continue
		}
		slices.SortFunc(g.Operations, func(a, b operation) int {
			if c := strings.Compare(a.Path, b.Path); c != 0 {
				return c
			}
			return slices.Index(httpMethods, strings.ToLower(a.Method)) - slices.Index(httpMethods, strings.ToLower(b.Method))
		})
		list = append(list, *g)
	}
	slices.SortFunc(list, func(a, b docsGroup) int { return strings.Compare(a.Tag, b.Tag) })

	var buf bytes.Buffer
	if err := docsTemplate.Execute(&buf, docsPage{Tokens: len(spec.Security) > 0, Groups: list}); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

var docsTemplate = template.Must(template.New("docs").Parse(`<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Duet REST API</title>
<style>
body { font: 15px/1.45 system-ui, sans-serif; margin: 2rem auto; max-width: 72rem; padding: 0 1rem; color: #222; }
table { border-collapse: collapse; width: 100%; margin-bottom: 2rem; }
th, td { text-align: left; vertical-align: top; padding: .4rem .6rem; border-bottom: 1px solid #ddd; }
td.summary, p.desc { white-space: pre-line; }
code { font-size: 14px; }
.method { font-weight: 600; font-family: monospace; }
</style>
</head>
<body>
<h1>Duet REST API</h1>
<p>JSON in and out, proto3 JSON names (lowerCamelCase); 64-bit integers such as money units are strings.
The machine-readable description is <a href="openapi.json">openapi.json</a> (OpenAPI 2.0).</p>
<p>Errors are <code>{"code", "status", "message", "details"}</code>, with a <code>google.rpc.ErrorInfo</code>
detail whose <code>reason</code> is stable. HTTP statuses: 400 invalid input (a <code>BadRequest</code> detail names the field, or the query parameter a route does not take),
402 payment declined, 404 not found, 409 duplicate (<code>ALREADY_EXISTS</code>) or a race lost to a concurrent call that changed nothing (<code>ABORTED</code>, reason <code>CONFLICT</code>: send it again), 413 body too large, 503 temporarily unavailable (see <code>Retry-After</code>).
Send <code>X-Request-ID</code> to trace a call; every response returns it.</p>
<p>Browsers, and any Connect client, may call the same operations at their gRPC paths instead,
<code>POST /duet.user.v1.UserService/GetUser</code> say (the operation <code>UserService_GetUser</code>), in the Connect protocol
(JSON or binary) or gRPC-Web, with the same errors in Connect's shape; the reads take GET too.</p>
{{if .Tokens}}<p>Calls need an end user's token, <code>Authorization: Bearer &lt;jwt&gt;</code>, but those marked <em>no token</em>:
401 without one, or with a bad or expired one, even sent where none is needed (<code>WWW-Authenticate</code> says which), 403 when the token's user may not make the call (reason <code>NOT_PERMITTED</code>), which a read of one resource by its id answers for a missing id too.</p>
{{end}}{{range .Groups}}
<h2 id="{{.Tag}}">{{.Tag}}</h2>
{{with .Description}}<p class="desc">{{.}}</p>{{end}}
<table>
<tr><th>Method</th><th>Path</th><th>Operation</th><th>Summary</th></tr>
{{range .Operations}}<tr><td class="method">{{.Method}}</td><td><code>{{.Path}}</code></td><td>{{.ID}}</td><td class="summary">{{.Summary}}{{if .NoToken}}
<em>No token.</em>{{end}}</td></tr>
{{end}}</table>
{{end}}
</body>
</html>
`))
