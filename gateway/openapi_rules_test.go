package gateway

import (
	"encoding/json"
	"errors"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"

	"buf.build/gen/go/bufbuild/protovalidate/protocolbuffers/go/buf/validate"
	"buf.build/go/protovalidate"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protodesc"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/descriptorpb"
	"google.golang.org/protobuf/types/dynamicpb"

	inventoryv1 "github.com/duetkit/duet/gen/duet/inventory/v1"
	notificationv1 "github.com/duetkit/duet/gen/duet/notification/v1"
	orderv1 "github.com/duetkit/duet/gen/duet/order/v1"
	paymentv1 "github.com/duetkit/duet/gen/duet/payment/v1"
	userv1 "github.com/duetkit/duet/gen/duet/user/v1"
)

// TestOpenAPIRules: the document served says what the contract's
// validation rules require of request bodies, the messages in them and
// query and path parameters, in OpenAPI's keywords, required fields
// included; a message's fields keep the contract's order.
func TestOpenAPIRules(t *testing.T) {
	e := newEnv(t)
	var doc struct {
		Paths       map[string]map[string]struct{ Parameters []map[string]any } `json:"paths"`
		Definitions map[string]map[string]json.RawMessage                       `json:"definitions"`
	}
	body := e.do(t, "GET", "/openapi.json", nil).body
	if err := json.Unmarshal(body, &doc); err != nil {
		t.Fatal(err)
	}
	property := func(def, name string) map[string]any {
		t.Helper()
		var props map[string]map[string]any
		if err := json.Unmarshal(doc.Definitions[def]["properties"], &props); err != nil {
			t.Fatalf("definition %s: %v", def, err)
		}
		return props[name]
	}
	parameter := func(path, method, name string) map[string]any {
		t.Helper()
		for _, p := range doc.Paths[path][method].Parameters {
			if p["name"] == name {
				return p
			}
		}
		t.Fatalf("%s %s has no parameter %s", method, path, name)
		return nil
	}
	tests := []struct {
		name string
		got  map[string]any
		want map[string]any
	}{
		{"an email", property("v1CreateUserRequest", "email"), map[string]any{"maxLength": 254.0, "format": nil}},
		{"a length", property("v1CreateUserRequest", "name"), map[string]any{"minLength": 1.0, "maxLength": 100.0}},
		{"a uuid", property("v1CreateOrderRequest", "userId"), map[string]any{"format": "uuid"}},
		{"a list's size", property("v1CreateOrderRequest", "items"), map[string]any{"minItems": 1.0, "maxItems": 100.0}},
		{"a nested message's pattern", property("v1LineItem", "sku"), map[string]any{"pattern": "^[A-Za-z0-9_-]{1,64}$"}},
		{"a nested message's bounds", property("v1LineItem", "quantity"), map[string]any{"minimum": 1.0, "maximum": 10000.0}},
		{"two messages down", property("v1Money", "currencyCode"), map[string]any{"pattern": "^[A-Z]{3}$"}},
		{"a query parameter's bounds", parameter("/v1/users", "get", "pageSize"), map[string]any{"minimum": 0.0, "maximum": 100.0}},
		{"a query parameter's length", parameter("/v1/users", "get", "pageToken"), map[string]any{"maxLength": 1024.0}},
		{"a path parameter", parameter("/v1/users/{id}", "get", "id"), map[string]any{"format": "uuid"}},
	}
	for _, tt := range tests {
		for k, v := range tt.want {
			if !reflect.DeepEqual(tt.got[k], v) {
				t.Errorf("%s: %s is %v, want %v (%v)", tt.name, k, tt.got[k], v, tt.got)
			}
		}
	}
	// Required: a message field the rules require, and a field whose zero
	// value ("", 0), which JSON leaving it out means, the rules refuse;
	// not one whose rules ignore its zero value (userId), which keeps no
	// keyword "" would fail.
	for _, tt := range []struct {
		def  string
		want []string
	}{
		{"v1ChargeRequest", []string{"amount", "paymentMethodToken", "idempotencyKey"}},
		{"v1CreateUserRequest", []string{"email", "name"}},
		{"v1LineItem", []string{"sku", "quantity"}},
		{"PaymentServiceRefundBody", nil},
	} {
		if doc.Definitions[tt.def] == nil {
			t.Errorf("no definition %s", tt.def)
			continue
		}
		var required []string
		_ = json.Unmarshal(doc.Definitions[tt.def]["required"], &required)
		if !reflect.DeepEqual(required, tt.want) {
			t.Errorf("%s's required fields %v, want %v", tt.def, required, tt.want)
		}
	}
	if userID := property("v1ChargeRequest", "userId"); userID == nil || userID["format"] != nil {
		t.Errorf("ChargeRequest's userId, which may be empty: %v, want no format", userID)
	}
	// The contract's order, not the alphabet's.
	order := propertyOrder(t, definition(t, body, "v1CreateOrderRequest"))
	if want := []string{"userId", "items", "paymentToken", "idempotencyKey", "wait"}; !reflect.DeepEqual(order, want) {
		t.Errorf("CreateOrderRequest's properties in the order %v, want %v", order, want)
	}
}

// TestOpenAPIRulesAreEnforced: every limit the document states of a
// request message's field, protovalidate enforces on that field: a value
// just past it, or the field left out when the document lists it as
// required, is a violation of the field itself. The document claims
// nothing the services do not check.
func TestOpenAPIRulesAreEnforced(t *testing.T) {
	var services []string
	for _, f := range []protoreflect.FileDescriptor{userv1.File_duet_user_v1_user_proto, orderv1.File_duet_order_v1_order_proto,
		paymentv1.File_duet_payment_v1_payment_proto, inventoryv1.File_duet_inventory_v1_inventory_proto,
		notificationv1.File_duet_notification_v1_notification_proto} {
		for i := range f.Services().Len() {
			services = append(services, string(f.Services().Get(i).FullName()))
		}
	}
	out, messages, err := rulesDocument(openAPIDocument, serviceDescriptors(services))
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Paths map[string]map[string]struct {
			OperationID string           `json:"operationId"`
			Parameters  []map[string]any `json:"parameters"`
		} `json:"paths"`
		Definitions map[string]struct {
			Properties map[string]map[string]any `json:"properties"`
			Required   []string                  `json:"required"`
		} `json:"definitions"`
	}
	if err := json.Unmarshal(out, &doc); err != nil {
		t.Fatal(err)
	}
	checked := 0
	check := func(where string, md protoreflect.MessageDescriptor, fd protoreflect.FieldDescriptor, schema map[string]any) {
		for _, kw := range []string{"minLength", "maxLength", "pattern", "format", "minimum", "maximum", "minItems", "maxItems"} {
			bound, ok := schema[kw]
			if !ok || (kw == "format" && fd.Kind() != protoreflect.StringKind) {
				continue // the format of a number or a Timestamp is its type's
			}
			msg := dynamicpb.NewMessage(md)
			if !setPast(msg, fd, kw, bound, schema) {
				continue
			}
			checked++
			if !violates(msg, fd, ruleIDs(kw, fd, bound)...) {
				t.Errorf("%s: %s %v is not the rule enforced", where, kw, bound)
			}
		}
	}
	inputs := map[string]protoreflect.MessageDescriptor{}
	for _, s := range serviceDescriptors(services) {
		for i := range s.Methods().Len() {
			inputs[string(s.Name())+"_"+string(s.Methods().Get(i).Name())] = s.Methods().Get(i).Input()
		}
	}
	for path, item := range doc.Paths {
		for method, op := range item {
			for _, p := range op.Parameters {
				// (A dotted parameter sets a field of a field: none has
				// rules in the contract.)
				if name, _ := p["name"].(string); p["in"] != "body" && !strings.Contains(name, ".") {
					check(method+" "+path+" "+name, inputs[op.OperationID], fieldAt(inputs[op.OperationID], name), p)
				}
			}
		}
	}
	for name, md := range messages {
		def := doc.Definitions[name]
		for prop, schema := range def.Properties {
			check(name+"."+prop, md, fieldAt(md, prop), schema)
		}
		for _, prop := range def.Required {
			checked++
			if fd := fieldAt(md, prop); !violates(dynamicpb.NewMessage(md), fd) {
				t.Errorf("%s.%s: required, but may be left out", name, prop)
			}
		}
	}
	// 62 when written: a document that lost some would check fewer.
	if checked < 62 {
		t.Errorf("%d limits checked, want 62: the document states fewer than the contract has", checked)
	}
}

// setPast sets fd of msg to a value just past the limit the keyword kw,
// bound, states; false for a limit it has no such value for.
func setPast(msg *dynamicpb.Message, fd protoreflect.FieldDescriptor, kw string, bound any, schema map[string]any) bool {
	n, _ := bound.(float64)
	if fd.IsList() {
		items := int(n) + 1 // past maxItems
		if kw == "minItems" {
			items = int(n) - 1
		} else if kw != "maxItems" {
			return false
		}
		list := msg.NewField(fd).List()
		for range items {
			list.Append(list.NewElement())
		}
		msg.Set(fd, protoreflect.ValueOfList(list))
		return true
	}
	switch fd.Kind() {
	case protoreflect.StringKind:
		v := ""
		switch kw {
		case "maxLength":
			v = strings.Repeat("a", int(n)+1)
		case "minLength":
			v = strings.Repeat("a", int(n)-1)
		case "pattern":
			v = "!"
			if regexp.MustCompile(bound.(string)).MatchString(v) {
				return false
			}
		case "format":
			v = "not-" + bound.(string)
		}
		msg.Set(fd, protoreflect.ValueOfString(v))
		return true
	case protoreflect.Int32Kind, protoreflect.Sint32Kind, protoreflect.Sfixed32Kind:
		v := int32(n) + 1
		if kw == "minimum" {
			v = int32(n) - 1
			if schema["exclusiveMinimum"] == true {
				v = int32(n)
			}
		} else if schema["exclusiveMaximum"] == true {
			v = int32(n)
		}
		msg.Set(fd, protoreflect.ValueOfInt32(v))
		return true
	}
	return false
}

// violates reports whether protovalidate finds msg's field fd itself
// (not a field inside it) in violation: of one of the rules ids names, or
// of any with none.
func violates(msg proto.Message, fd protoreflect.FieldDescriptor, ids ...string) bool {
	var verr *protovalidate.ValidationError
	if !errors.As(protovalidate.Validate(msg), &verr) {
		return false
	}
	for _, v := range verr.Violations {
		elems := v.Proto.GetField().GetElements()
		if len(elems) == 1 && elems[0].GetFieldNumber() == int32(fd.Number()) && (ids == nil || slices.Contains(ids, v.Proto.GetRuleId())) {
			return true
		}
	}
	return false
}

// ruleIDs are the ids of the protovalidate rules that the keyword kw,
// bound, of fd's schema may state.
func ruleIDs(kw string, fd protoreflect.FieldDescriptor, bound any) []string {
	kind := strings.ToLower(fd.Kind().String())
	switch kw {
	case "minLength":
		return []string{"string.min_len", "string.len"}
	case "maxLength":
		return []string{"string.max_len", "string.len"}
	case "pattern":
		return []string{"string.pattern"}
	case "format":
		return []string{"string." + bound.(string) + "_empty", "string." + bound.(string)}
	case "minimum":
		return []string{kind + ".gte", kind + ".gt", kind + ".gte_lte", kind + ".gt_lt", kind + ".gte_lt", kind + ".gt_lte"}
	case "maximum":
		return []string{kind + ".lte", kind + ".lt", kind + ".gte_lte", kind + ".gt_lt", kind + ".gte_lt", kind + ".gt_lte"}
	case "minItems":
		return []string{"repeated.min_items"}
	case "maxItems":
		return []string{"repeated.max_items"}
	}
	return nil
}

// TestWriteRules: the keywords written for rules the contract has no
// example of yet, on a message made here: a list's items get theirs;
// rules skipped for the zero value, or for the members of a message
// oneof, keep no keyword zero would fail; rules always skipped write
// nothing, "required" included; an email address's form and a pattern in
// RE2's own syntax are not stated.
func TestWriteRules(t *testing.T) {
	zero := validate.Ignore_IGNORE_IF_ZERO_VALUE.Enum()
	always := validate.Ignore_IGNORE_ALWAYS.Enum()
	type field struct {
		name   string
		typ    descriptorpb.FieldDescriptorProto_Type
		list   bool
		rules  *validate.FieldRules
		schema string
		want   string
	}
	fields := []field{
		{"skus", descriptorpb.FieldDescriptorProto_TYPE_STRING, true, validate.FieldRules_builder{Repeated: validate.RepeatedRules_builder{
			MaxItems: proto.Uint64(5), Items: validate.FieldRules_builder{String: validate.StringRules_builder{Pattern: proto.String("^[a-z]+$")}.Build()}.Build()}.Build()}.Build(),
			`{"type":"array","items":{"type":"string"}}`, `{"items":{"pattern":"^[a-z]+$","type":"string"},"maxItems":5,"type":"array"}`},
		{"positive_or_zero", descriptorpb.FieldDescriptorProto_TYPE_INT32, false, validate.FieldRules_builder{Ignore: zero,
			Int32: validate.Int32Rules_builder{Gt: proto.Int32(0), Lte: proto.Int32(9)}.Build()}.Build(),
			`{"type":"integer"}`, `{"maximum":9,"type":"integer"}`},
		{"either", descriptorpb.FieldDescriptorProto_TYPE_STRING, false, validate.FieldRules_builder{String: validate.StringRules_builder{Uuid: proto.Bool(true), MaxLen: proto.Uint64(36)}.Build()}.Build(),
			`{"type":"string"}`, `{"maxLength":36,"type":"string"}`},
		{"skipped", descriptorpb.FieldDescriptorProto_TYPE_STRING, false, validate.FieldRules_builder{Ignore: always, Required: proto.Bool(true),
			String: validate.StringRules_builder{MinLen: proto.Uint64(1)}.Build()}.Build(),
			`{"type":"string"}`, `{"type":"string"}`},
		{"email", descriptorpb.FieldDescriptorProto_TYPE_STRING, false, validate.FieldRules_builder{String: validate.StringRules_builder{Email: proto.Bool(true)}.Build()}.Build(),
			`{"type":"string"}`, `{"type":"string"}`},
		{"folded", descriptorpb.FieldDescriptorProto_TYPE_STRING, false, validate.FieldRules_builder{String: validate.StringRules_builder{Pattern: proto.String("(?i)^abc$")}.Build()}.Build(),
			`{"type":"string"}`, `{"type":"string"}`},
	}
	msg := &descriptorpb.DescriptorProto{Name: proto.String("Rules"), Options: &descriptorpb.MessageOptions{}}
	proto.SetExtension(msg.Options, validate.E_Message, validate.MessageRules_builder{Oneof: []*validate.MessageOneofRule{
		validate.MessageOneofRule_builder{Fields: []string{"either", "email"}}.Build()}}.Build())
	for i, f := range fields {
		label := descriptorpb.FieldDescriptorProto_LABEL_OPTIONAL
		if f.list {
			label = descriptorpb.FieldDescriptorProto_LABEL_REPEATED
		}
		opts := &descriptorpb.FieldOptions{}
		proto.SetExtension(opts, validate.E_Field, f.rules)
		msg.Field = append(msg.Field, &descriptorpb.FieldDescriptorProto{Name: proto.String(f.name), Number: proto.Int32(int32(i + 1)),
			Type: f.typ.Enum(), Label: label.Enum(), Options: opts})
	}
	file, err := protodesc.NewFile(&descriptorpb.FileDescriptorProto{Name: proto.String("rules_test.proto"), Package: proto.String("ruletest"),
		Syntax: proto.String("proto3"), MessageType: []*descriptorpb.DescriptorProto{msg}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	md := file.Messages().Get(0)
	for _, f := range fields {
		for _, inSchema := range []bool{true, false} {
			var s map[string]json.RawMessage
			if err := json.Unmarshal([]byte(f.schema), &s); err != nil {
				t.Fatal(err)
			}
			fd := md.Fields().ByName(protoreflect.Name(f.name))
			if err := writeRules(s, fd, rulesOf(fd), inSchema); err != nil {
				t.Fatal(err)
			}
			got, _ := json.Marshal(s)
			if string(got) != f.want {
				t.Errorf("%s (in a schema %v): %s, want %s", f.name, inSchema, got, f.want)
			}
		}
	}
}

// TestDocument: Document is, byte for byte, what a gateway of the same
// services and tokens serves at /openapi.json; a service it has no routes
// of, or a set without one a gateway always reaches, is an error.
func TestDocument(t *testing.T) {
	tokens := &Tokens{Public: []string{"/duet.user.v1.UserService/CreateUser"}}
	for _, tt := range []struct {
		name      string
		configure func(*Config)
		services  []string
		tokens    *Tokens
	}{
		{"every service", nil, Services(), nil},
		{"three, with tokens", func(c *Config) { c.Inventory, c.Notifications, c.Tokens = nil, nil, tokens }, Services()[:3], tokens},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var e *env
			if tt.configure != nil {
				e = newEnv(t, tt.configure)
			} else {
				e = newEnv(t)
			}
			doc, err := Document(tt.services, tt.tokens)
			if err != nil {
				t.Fatal(err)
			}
			if served := e.do(t, "GET", "/openapi.json", nil).body; string(served) != string(doc) {
				t.Errorf("Document differs from the document served (%d bytes against %d)", len(doc), len(served))
			}
		})
	}
	for _, services := range [][]string{append(Services(), "duet.bench.v1.EchoService"), Services()[1:]} {
		if _, err := Document(services, nil); err == nil {
			t.Errorf("%v taken: a service without REST routes, or without one a gateway always serves", services)
		}
	}
	// A caller's slice is its own.
	all := Services()
	_ = append(all[:3], all[4])
	if got := Services(); got[3] != "duet.inventory.v1.InventoryService" {
		t.Errorf("Services changed under a caller's append: %v", got)
	}
}

// TestRulesWriteNoNull: keys a schema lacks (a list's items, a body's
// schema, a document's definitions) stay absent, not null.
func TestRulesWriteNoNull(t *testing.T) {
	r := ruleWriter{definitions: map[string]json.RawMessage{}, done: map[string]protoreflect.MessageDescriptor{}}
	got, err := r.object(json.RawMessage(`{"type":"object","properties":{"items":{"type":"array"}}}`),
		(&orderv1.CreateOrderRequest{}).ProtoReflect().Descriptor())
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(got), "null") {
		t.Errorf("a list without items: %s", got)
	}
	p := map[string]json.RawMessage{"in": json.RawMessage(`"body"`), "name": json.RawMessage(`"body"`)}
	if err := r.parameter(p, (&orderv1.CreateOrderRequest{}).ProtoReflect().Descriptor(), "*"); err != nil || p["schema"] != nil {
		t.Errorf("a body without a schema: %v, %s", err, p["schema"])
	}
	doc, err := withRules([]byte(`{"swagger":"2.0"}`), nil)
	if err != nil || strings.Contains(string(doc), "null") {
		t.Errorf("a document without paths or definitions: %v, %s", err, doc)
	}
}
