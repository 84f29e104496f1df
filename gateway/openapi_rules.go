package gateway

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"

	"buf.build/gen/go/bufbuild/protovalidate/protocolbuffers/go/buf/validate"
	"buf.build/go/protovalidate"
	"google.golang.org/genproto/googleapis/api/annotations"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
)

// withRules returns doc with the contract's validation rules (its
// buf.validate annotations, which protovalidate enforces in the
// services) written into what the REST API takes: the schemas of request
// bodies and the messages in them, and query and path parameters, as the
// OpenAPI keywords that say the same (minLength, maxLength, pattern,
// format, minimum, maximum, minItems, maxItems, uniqueItems, enum,
// required). protoc-gen-openapiv2 does not read them, so a client
// generated from the document, or a person reading it, learned a field's
// limits only from its comment or from a 400. A definition a request
// shares with responses (Money, LineItem) carries them too, which the
// services' answers meet. A rule with no keyword that says exactly the
// same (a CEL expression, prefix, bytes counts, an email address, 64-bit
// bounds, which JSON carries as strings) is not stated: the document
// never refuses what the services take. services are the services whose
// methods' operations (operationId "UserService_CreateUser") the document
// may hold.
func withRules(doc []byte, services []protoreflect.ServiceDescriptor) ([]byte, error) {
	out, _, err := rulesDocument(doc, services)
	return out, err
}

// rulesDocument is withRules, which also returns the message each
// definition it wrote rules into stands for.
func rulesDocument(doc []byte, services []protoreflect.ServiceDescriptor) ([]byte, map[string]protoreflect.MessageDescriptor, error) {
	methods := map[string]protoreflect.MethodDescriptor{}
	for _, s := range services {
		for i := range s.Methods().Len() {
			m := s.Methods().Get(i)
			methods[string(s.Name())+"_"+string(m.Name())] = m
		}
	}
	var spec map[string]json.RawMessage
	if err := json.Unmarshal(doc, &spec); err != nil {
		return nil, nil, err
	}
	var paths map[string]map[string]json.RawMessage
	if raw, ok := spec["paths"]; ok {
		if err := json.Unmarshal(raw, &paths); err != nil {
			return nil, nil, fmt.Errorf("paths: %w", err)
		}
	}
	var definitions map[string]json.RawMessage
	if raw, ok := spec["definitions"]; ok {
		if err := json.Unmarshal(raw, &definitions); err != nil {
			return nil, nil, fmt.Errorf("definitions: %w", err)
		}
	}
	r := ruleWriter{definitions: definitions, done: map[string]protoreflect.MessageDescriptor{}}
	if err := editOperations(paths, func(op map[string]json.RawMessage) error {
		var id string
		_ = json.Unmarshal(op["operationId"], &id)
		m, ok := methods[id]
		if !ok {
			return nil
		}
		var params []map[string]json.RawMessage
		if raw, ok := op["parameters"]; ok {
			if err := json.Unmarshal(raw, &params); err != nil {
				return fmt.Errorf("parameters: %w", err)
			}
		}
		body := ""
		if rule, _ := proto.GetExtension(m.Options(), annotations.E_Http).(*annotations.HttpRule); rule != nil {
			body = rule.GetBody()
		}
		for _, p := range params {
			if err := r.parameter(p, m.Input(), body); err != nil {
				return err
			}
		}
		if params == nil {
			return nil
		}
		var err error
		op["parameters"], err = json.Marshal(params)
		return err
	}); err != nil {
		return nil, nil, err
	}
	var err error
	if paths != nil {
		if spec["paths"], err = json.Marshal(paths); err != nil {
			return nil, nil, err
		}
	}
	if definitions != nil {
		if spec["definitions"], err = json.Marshal(definitions); err != nil {
			return nil, nil, err
		}
	}
	out, err := json.MarshalIndent(spec, "", "  ")
	return out, r.done, err
}

// ruleWriter writes rules into a document's definitions, each at most
// once.
type ruleWriter struct {
	definitions map[string]json.RawMessage
	// done holds the definitions written, and the message of each.
	done map[string]protoreflect.MessageDescriptor
}

// parameter writes into p, a parameter of an operation whose request
// message is msg and whose HTTP rule's body is body, the rules of what p
// carries: a body's schema gets its message's, a query or path parameter
// its field's.
func (r *ruleWriter) parameter(p map[string]json.RawMessage, msg protoreflect.MessageDescriptor, body string) error {
	var in, name string
	_ = json.Unmarshal(p["in"], &in)
	_ = json.Unmarshal(p["name"], &name)
	switch in {
	case "body":
		if p["schema"] == nil {
			return nil
		}
		carried := msg
		if body != "*" && body != "" {
			fd := msg.Fields().ByName(protoreflect.Name(body))
			if fd == nil || fd.Message() == nil {
				return nil // a scalar body: nothing to write
			}
			carried = fd.Message()
		}
		schema, err := r.schema(p["schema"], carried)
		if err != nil {
			return fmt.Errorf("parameter %s: %w", name, err)
		}
		p["schema"] = schema
	case "query", "path":
		if fd := fieldAt(msg, name); fd != nil {
			// A field inside another ("filter.status") is required only
			// when the one around it is set: not said.
			nested := strings.Contains(name, ".")
			if err := writeRules(p, fd, rulesOf(fd), nested); err != nil {
				return fmt.Errorf("parameter %s: %w", name, err)
			}
		}
	}
	return nil
}

// schema returns raw, the schema of a msg (a reference to its definition,
// or the object itself), with msg's rules written in: the definition's
// when it is a reference.
func (r *ruleWriter) schema(raw json.RawMessage, msg protoreflect.MessageDescriptor) (json.RawMessage, error) {
	if len(raw) == 0 || strings.HasPrefix(string(msg.FullName()), "google.protobuf.") {
		return raw, nil
	}
	var ref struct {
		Ref string `json:"$ref"`
	}
	_ = json.Unmarshal(raw, &ref)
	if name, ok := strings.CutPrefix(ref.Ref, "#/definitions/"); ok {
		def, found := r.definitions[name]
		if _, done := r.done[name]; !found || done {
			return raw, nil
		}
		r.done[name] = msg
		written, err := r.object(def, msg)
		if err != nil {
			return nil, fmt.Errorf("definition %s: %w", name, err)
		}
		r.definitions[name] = written
		return raw, nil
	}
	return r.object(raw, msg)
}

// object writes msg's rules into the object schema raw: each property's
// into its schema, and the fields rules require into "required".
func (r *ruleWriter) object(raw json.RawMessage, msg protoreflect.MessageDescriptor) (json.RawMessage, error) {
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(raw, &obj); err != nil {
		return nil, err
	}
	props, err := decodeOrdered(obj["properties"])
	if err != nil {
		return nil, fmt.Errorf("properties: %w", err)
	}
	var required []string
	_ = json.Unmarshal(obj["required"], &required)
	zeroRefused := refusesZero(msg)
	for i, prop := range props {
		fd := fieldAt(msg, prop.key)
		if fd == nil {
			continue
		}
		rules := rulesOf(fd)
		needed := rules.GetRequired() && ignoreOf(fd, rules) != validate.Ignore_IGNORE_ALWAYS
		if (needed || zeroRefused[fd.Name()]) && !slices.Contains(required, prop.key) {
			required = append(required, prop.key)
		}
		var s map[string]json.RawMessage
		if err := json.Unmarshal(prop.value, &s); err != nil {
			return nil, fmt.Errorf("property %s: %w", prop.key, err)
		}
		if err := writeRules(s, fd, rules, true); err != nil {
			return nil, fmt.Errorf("property %s: %w", prop.key, err)
		}
		if props[i].value, err = json.Marshal(s); err != nil {
			return nil, err
		}
		if fd.Message() == nil || fd.IsMap() {
			continue
		}
		// The message's own fields, in its schema or its items' (a list
		// without items says nothing of them).
		switch {
		case !fd.IsList():
			if props[i].value, err = r.schema(props[i].value, fd.Message()); err != nil {
				return nil, fmt.Errorf("property %s: %w", prop.key, err)
			}
		case s["items"] != nil:
			if s["items"], err = r.schema(s["items"], fd.Message()); err != nil {
				return nil, fmt.Errorf("property %s: %w", prop.key, err)
			}
			if props[i].value, err = json.Marshal(s); err != nil {
				return nil, err
			}
		}
	}
	if props != nil {
		if obj["properties"], err = encodeOrdered(props); err != nil {
			return nil, err
		}
	}
	if len(required) > 0 {
		if obj["required"], err = json.Marshal(required); err != nil {
			return nil, err
		}
	}
	return json.Marshal(obj)
}

// refusesZero returns the fields of msg whose rules refuse them unset:
// a field without presence (a proto3 string, number or list) whose zero
// value fails its rules ("", a uuid; 0, at least 1) must be sent, since
// JSON that leaves it out sets it to zero. protovalidate itself says
// which, checking the empty message.
func refusesZero(msg protoreflect.MessageDescriptor) map[protoreflect.Name]bool {
	mt, err := protoregistry.GlobalTypes.FindMessageByName(msg.FullName())
	if err != nil {
		return nil
	}
	var verr *protovalidate.ValidationError
	if !errors.As(protovalidate.Validate(mt.New().Interface()), &verr) {
		return nil
	}
	out := map[protoreflect.Name]bool{}
	for _, v := range verr.Violations {
		elems := v.Proto.GetField().GetElements()
		if len(elems) == 0 {
			continue // the message's own rule
		}
		if fd := msg.Fields().ByNumber(protoreflect.FieldNumber(elems[0].GetFieldNumber())); fd != nil && !fd.HasPresence() {
			out[fd.Name()] = true
		}
	}
	return out
}

// rulesOf returns fd's validation rules, read as protovalidate reads
// them; nil when it has none (or they do not parse, which protovalidate
// would refuse to compile).
func rulesOf(fd protoreflect.FieldDescriptor) *validate.FieldRules {
	rules, _ := protovalidate.ResolveFieldRules(fd)
	return rules
}

// fieldAt returns the field of msg a parameter or property names: by JSON
// or proto name, a dotted path for a nested one ("filter.status"); nil
// when none.
func fieldAt(msg protoreflect.MessageDescriptor, name string) protoreflect.FieldDescriptor {
	var fd protoreflect.FieldDescriptor
	for part := range strings.SplitSeq(name, ".") {
		if msg == nil {
			return nil
		}
		fields := msg.Fields()
		if fd = fields.ByJSONName(part); fd == nil {
			if fd = fields.ByName(protoreflect.Name(part)); fd == nil {
				return nil
			}
		}
		msg = fd.Message()
	}
	return fd
}

// writeRules writes into s, the schema (or a query or path parameter) of
// a value of fd, the keywords that say what rules require of it. A
// repeated field's rules are the list's, its items' go into s's "items".
// Under a "$ref" (a property whose value is a message or an enum), whose
// siblings OpenAPI 2 ignores, nothing is written. inSchema: s is a schema,
// not a parameter, which says a required field by its message's
// "required" list instead.
func writeRules(s map[string]json.RawMessage, fd protoreflect.FieldDescriptor, rules *validate.FieldRules, inSchema bool) error {
	if rules == nil {
		return nil
	}
	ignore := ignoreOf(fd, rules)
	if ignore == validate.Ignore_IGNORE_ALWAYS {
		return nil
	}
	if _, ok := s["$ref"]; ok {
		return nil
	}
	kw := map[string]any{}
	if rules.GetRequired() && !inSchema {
		kw["required"] = true
	}
	if !fd.IsList() {
		scalarKeywords(kw, s, rules)
		return put(s, kw, ignore)
	}
	if rr := rules.GetRepeated(); rr != nil {
		if rr.HasMinItems() {
			kw["minItems"] = rr.GetMinItems()
		}
		if rr.HasMaxItems() {
			kw["maxItems"] = rr.GetMaxItems()
		}
		if rr.GetUnique() {
			kw["uniqueItems"] = true
		}
		if items := rr.GetItems(); items != nil && items.GetIgnore() != validate.Ignore_IGNORE_ALWAYS {
			var is map[string]json.RawMessage
			if err := json.Unmarshal(s["items"], &is); err == nil && is["$ref"] == nil {
				ikw := map[string]any{}
				scalarKeywords(ikw, is, items)
				if err := put(is, ikw, items.GetIgnore()); err != nil {
					return err
				}
				raw, err := json.Marshal(is)
				if err != nil {
					return err
				}
				s["items"] = raw
			}
		}
	}
	return put(s, kw, ignore)
}

// ignoreOf is when fd's rules are skipped: as they say, or, for a field
// named by its message's (buf.validate.message).oneof that says nothing,
// when it is zero, as protovalidate does.
func ignoreOf(fd protoreflect.FieldDescriptor, rules *validate.FieldRules) validate.Ignore {
	if rules.HasIgnore() {
		return rules.GetIgnore()
	}
	mr, _ := protovalidate.ResolveMessageRules(fd.ContainingMessage())
	for _, o := range mr.GetOneof() {
		if slices.Contains(o.GetFields(), string(fd.Name())) {
			return validate.Ignore_IGNORE_IF_ZERO_VALUE
		}
	}
	return rules.GetIgnore()
}

// put writes the keywords kw into s. Rules skipped when the value is zero
// ("", 0, no items) let the zero value pass whatever they say, and
// OpenAPI has no "or empty": only the keywords zero passes too are
// written then.
func put(s map[string]json.RawMessage, kw map[string]any, ignore validate.Ignore) error {
	if ignore == validate.Ignore_IGNORE_IF_ZERO_VALUE {
		for _, k := range []string{"format", "pattern", "enum", "minLength", "minItems"} {
			delete(kw, k)
		}
		if min, ok := kw["minimum"]; ok && (positive(min) || (kw["exclusiveMinimum"] == true && !negative(min))) {
			delete(kw, "minimum")
			delete(kw, "exclusiveMinimum")
		}
		if max, ok := kw["maximum"]; ok && (negative(max) || (kw["exclusiveMaximum"] == true && !positive(max))) {
			delete(kw, "maximum")
			delete(kw, "exclusiveMaximum")
		}
	}
	for k, v := range kw {
		raw, err := json.Marshal(v)
		if err != nil {
			return err
		}
		s[k] = raw
	}
	return nil
}

// scalarKeywords adds to kw the keywords of rules on a single value whose
// schema is s: a string's lengths, pattern, format and allowed values; a
// 32-bit number's (or a float's) bounds and allowed values.
func scalarKeywords(kw map[string]any, s map[string]json.RawMessage, rules *validate.FieldRules) {
	if sr := rules.GetString(); sr != nil {
		if sr.HasLen() {
			kw["minLength"], kw["maxLength"] = sr.GetLen(), sr.GetLen()
		}
		if sr.HasMinLen() {
			kw["minLength"] = sr.GetMinLen()
		}
		if sr.HasMaxLen() {
			kw["maxLength"] = sr.GetMaxLen()
		}
		if sr.HasPattern() && portablePattern(sr.GetPattern()) {
			kw["pattern"] = sr.GetPattern()
		}
		if len(sr.GetIn()) > 0 {
			kw["enum"] = sr.GetIn()
		}
		if sr.HasConst() {
			kw["enum"] = []string{sr.GetConst()}
		}
		if _, set := s["format"]; !set {
			for _, f := range []struct {
				has    bool
				format string
			}{
				// Not email: protovalidate's is HTML's, which takes
				// addresses (a..b@example.com) that RFC 5322's, JSON
				// Schema's, refuses.
				{sr.GetUuid(), "uuid"}, {sr.GetHostname(), "hostname"},
				{sr.GetUri(), "uri"}, {sr.GetIpv4(), "ipv4"}, {sr.GetIpv6(), "ipv6"},
			} {
				if f.has {
					kw["format"] = f.format
				}
			}
		}
		return
	}
	// The numbers JSON carries as numbers: 64-bit integers are strings.
	var num protoreflect.Message
	switch {
	case rules.HasInt32():
		num = rules.GetInt32().ProtoReflect()
	case rules.HasUint32():
		num = rules.GetUint32().ProtoReflect()
	case rules.HasSint32():
		num = rules.GetSint32().ProtoReflect()
	case rules.HasFixed32():
		num = rules.GetFixed32().ProtoReflect()
	case rules.HasSfixed32():
		num = rules.GetSfixed32().ProtoReflect()
	case rules.HasFloat():
		num = rules.GetFloat().ProtoReflect()
	case rules.HasDouble():
		num = rules.GetDouble().ProtoReflect()
	default:
		return
	}
	fields := num.Descriptor().Fields()
	value := func(name string) (any, bool) {
		fd := fields.ByName(protoreflect.Name(name))
		if fd == nil || !num.Has(fd) {
			return nil, false
		}
		v := num.Get(fd)
		if fd.IsList() {
			var in []any
			for i := range v.List().Len() {
				in = append(in, v.List().Get(i).Interface())
			}
			return in, len(in) > 0
		}
		return v.Interface(), true
	}
	if v, ok := value("gte"); ok {
		kw["minimum"] = v
	}
	if v, ok := value("gt"); ok {
		kw["minimum"], kw["exclusiveMinimum"] = v, true
	}
	if v, ok := value("lte"); ok {
		kw["maximum"] = v
	}
	if v, ok := value("lt"); ok {
		kw["maximum"], kw["exclusiveMaximum"] = v, true
	}
	if v, ok := value("in"); ok {
		kw["enum"] = v
	}
	if v, ok := value("const"); ok {
		kw["enum"] = []any{v}
	}
}

// portablePattern reports whether the RE2 pattern p (protovalidate's)
// means the same as an ECMA-262 one (OpenAPI's): none of RE2's own syntax
// (flags, \A and \z, Unicode classes, POSIX classes).
func portablePattern(p string) bool {
	for _, own := range []string{"(?i", "(?m", "(?s", "(?U", "(?-", "(?P<", `\A`, `\z`, `\p`, `\P`, "[[:", `\Q`} {
		if strings.Contains(p, own) {
			return false
		}
	}
	return true
}

// member is one key of a JSON object and its value.
type member struct {
	key   string
	value json.RawMessage
}

// decodeOrdered decodes the JSON object raw keeping its keys' order (a
// message's fields in the contract's order, which /docs and generated
// clients show); nil for none.
func decodeOrdered(raw json.RawMessage) ([]member, error) {
	if len(raw) == 0 {
		return nil, nil
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		return nil, fmt.Errorf("not an object: %s", raw)
	}
	var out []member
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return nil, err
		}
		key, _ := tok.(string)
		var v json.RawMessage
		if err := dec.Decode(&v); err != nil {
			return nil, err
		}
		out = append(out, member{key, v})
	}
	return out, nil
}

// encodeOrdered encodes members as a JSON object in their order.
func encodeOrdered(members []member) (json.RawMessage, error) {
	var b bytes.Buffer
	b.WriteByte('{')
	for i, m := range members {
		if i > 0 {
			b.WriteByte(',')
		}
		key, err := json.Marshal(m.key)
		if err != nil {
			return nil, err
		}
		b.Write(key)
		b.WriteByte(':')
		b.Write(m.value)
	}
	b.WriteByte('}')
	return b.Bytes(), nil
}

// serviceDescriptors returns the descriptors of the services named (full
// names) that this binary links.
func serviceDescriptors(names []string) []protoreflect.ServiceDescriptor {
	var out []protoreflect.ServiceDescriptor
	for _, name := range names {
		if d, err := protoregistry.GlobalFiles.FindDescriptorByName(protoreflect.FullName(name)); err == nil {
			if s, ok := d.(protoreflect.ServiceDescriptor); ok {
				out = append(out, s)
			}
		}
	}
	return out
}

// positive and negative report whether v, a bound scalarKeywords wrote,
// is more, or less, than zero.
func positive(v any) bool { return sign(v) > 0 }

func negative(v any) bool { return sign(v) < 0 }

func sign(v any) int {
	var f float64
	switch n := v.(type) {
	case int32:
		f = float64(n)
	case uint32:
		f = float64(n)
	case float32:
		f = float64(n)
	case float64:
		f = n
	}
	switch {
	case f > 0:
		return 1
	case f < 0:
		return -1
	}
	return 0
}
