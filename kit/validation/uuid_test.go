package validation_test

import (
	"testing"

	"buf.build/gen/go/bufbuild/protovalidate/protocolbuffers/go/buf/validate"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protodesc"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/descriptorpb"
	"google.golang.org/protobuf/types/dynamicpb"

	"github.com/duetkit/duet/kit/validation"
)

// itemType builds, without a .proto file, a message that holds UUIDs in
// every place a rule can put them, and itself at any depth:
//
//	message Item {
//	  string id = 1 [(buf.validate.field).string.uuid = true];
//	  repeated string ids = 2 [(buf.validate.field).repeated.items.string.uuid = true];
//	  Item child = 3;
//	  repeated Item children = 4;
//	  map<string, Item> by_key = 5;
//	  string name = 6;
//	  string tid = 7 [(buf.validate.field).string.tuuid = true];
//	  map<string, string> refs = 8 [(buf.validate.field).map.values.string.uuid = true];
//	}
func itemType(t *testing.T) protoreflect.MessageDescriptor {
	t.Helper()
	rules := func(r *validate.FieldRules) *descriptorpb.FieldOptions {
		o := &descriptorpb.FieldOptions{}
		proto.SetExtension(o, validate.E_Field, r)
		return o
	}
	uuid := &validate.FieldRules{Type: &validate.FieldRules_String_{String_: &validate.StringRules{
		WellKnown: &validate.StringRules_Uuid{Uuid: true}}}}
	tuuid := &validate.FieldRules{Type: &validate.FieldRules_String_{String_: &validate.StringRules{
		WellKnown: &validate.StringRules_Tuuid{Tuuid: true}}}}
	field := func(name string, n int32, label descriptorpb.FieldDescriptorProto_Label, typ descriptorpb.FieldDescriptorProto_Type, typeName string, opts *descriptorpb.FieldOptions) *descriptorpb.FieldDescriptorProto {
		f := &descriptorpb.FieldDescriptorProto{
			Name: proto.String(name), Number: proto.Int32(n), Label: label.Enum(), Type: typ.Enum(),
			JsonName: proto.String(name), Options: opts,
		}
		if typeName != "" {
			f.TypeName = proto.String(typeName)
		}
		return f
	}
	const (
		opt = descriptorpb.FieldDescriptorProto_LABEL_OPTIONAL
		rep = descriptorpb.FieldDescriptorProto_LABEL_REPEATED
		str = descriptorpb.FieldDescriptorProto_TYPE_STRING
		msg = descriptorpb.FieldDescriptorProto_TYPE_MESSAGE
	)
	entry := func(name, valueType string, typ descriptorpb.FieldDescriptorProto_Type) *descriptorpb.DescriptorProto {
		return &descriptorpb.DescriptorProto{
			Name: proto.String(name),
			Field: []*descriptorpb.FieldDescriptorProto{
				field("key", 1, opt, str, "", nil),
				field("value", 2, opt, typ, valueType, nil),
			},
			Options: &descriptorpb.MessageOptions{MapEntry: proto.Bool(true)},
		}
	}
	file := &descriptorpb.FileDescriptorProto{
		Name:    proto.String("lowertest/item.proto"),
		Package: proto.String("lowertest"),
		Syntax:  proto.String("proto3"),
		MessageType: []*descriptorpb.DescriptorProto{{
			Name: proto.String("Item"),
			Field: []*descriptorpb.FieldDescriptorProto{
				field("id", 1, opt, str, "", rules(uuid)),
				field("ids", 2, rep, str, "", rules(&validate.FieldRules{Type: &validate.FieldRules_Repeated{
					Repeated: &validate.RepeatedRules{Items: uuid}}})),
				field("child", 3, opt, msg, ".lowertest.Item", nil),
				field("children", 4, rep, msg, ".lowertest.Item", nil),
				field("by_key", 5, rep, msg, ".lowertest.Item.ByKeyEntry", nil),
				field("name", 6, opt, str, "", nil),
				field("tid", 7, opt, str, "", rules(tuuid)),
				field("refs", 8, rep, msg, ".lowertest.Item.RefsEntry", rules(&validate.FieldRules{Type: &validate.FieldRules_Map{
					Map: &validate.MapRules{Values: uuid}}})),
			},
			NestedType: []*descriptorpb.DescriptorProto{
				entry("ByKeyEntry", ".lowertest.Item", msg),
				entry("RefsEntry", "", str),
			},
		}},
	}
	fd, err := protodesc.NewFile(file, nil)
	if err != nil {
		t.Fatal(err)
	}
	return fd.Messages().ByName("Item")
}

func TestLowerUUIDs(t *testing.T) {
	item := itemType(t)
	const (
		upper = "0E4B2A7C-9D3F-4C1A-8B6E-5F2D1C0A9B8E"
		lower = "0e4b2a7c-9d3f-4c1a-8b6e-5f2d1c0a9b8e"
	)
	tests := []struct {
		name     string
		in, want string // Item in protojson
	}{
		{"a UUID field", `{"id":"` + upper + `"}`, `{"id":"` + lower + `"}`},
		{"already lower", `{"id":"` + lower + `"}`, `{"id":"` + lower + `"}`},
		{"a trimmed UUID field", `{"tid":"0E4B2A7C9D3F4C1A8B6E5F2D1C0A9B8E"}`, `{"tid":"0e4b2a7c9d3f4c1a8b6e5f2d1c0a9b8e"}`},
		{"not hex, left as sent", `{"id":"NOT-A-UUID"}`, `{"id":"NOT-A-UUID"}`},
		{"a field without the rule", `{"name":"` + upper + `"}`, `{"name":"` + upper + `"}`},
		{"repeated items", `{"ids":["` + upper + `","` + lower + `","ABC-XYZ"]}`, `{"ids":["` + lower + `","` + lower + `","ABC-XYZ"]}`},
		{"nested at depth", `{"child":{"child":{"id":"` + upper + `","name":"AB"}}}`, `{"child":{"child":{"id":"` + lower + `","name":"AB"}}}`},
		{"a list of messages", `{"children":[{"id":"` + upper + `"},{"ids":["` + upper + `"]}]}`, `{"children":[{"id":"` + lower + `"},{"ids":["` + lower + `"]}]}`},
		{"map values that are messages", `{"by_key":{"K":{"id":"` + upper + `"}}}`, `{"by_key":{"K":{"id":"` + lower + `"}}}`},
		{"map values with the rule, keys kept", `{"refs":{"AB":"` + upper + `"}}`, `{"refs":{"AB":"` + lower + `"}}`},
		{"empty", `{}`, `{}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in, want := dynamicpb.NewMessage(item), dynamicpb.NewMessage(item)
			if err := protojson.Unmarshal([]byte(tt.in), in); err != nil {
				t.Fatal(err)
			}
			if err := protojson.Unmarshal([]byte(tt.want), want); err != nil {
				t.Fatal(err)
			}
			validation.LowerUUIDs(in)
			if !proto.Equal(in, want) {
				t.Errorf("LowerUUIDs(%s) = %s, want %s", tt.in, protojson.Format(in), tt.want)
			}
		})
	}
}

// A nil message, or a typed nil one, is left alone rather than panicking.
func TestLowerUUIDsNil(t *testing.T) {
	validation.LowerUUIDs(nil)
	validation.LowerUUIDs((*descriptorpb.FieldOptions)(nil))
}
