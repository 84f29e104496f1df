package gateway

import (
	"bytes"
	"encoding/json"
	"math"
	"reflect"
	"strings"
	"testing"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/fieldmaskpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	orderv1 "github.com/duetkit/duet/gen/duet/order/v1"
	typev1 "github.com/duetkit/duet/gen/duet/type/v1"
	userv1 "github.com/duetkit/duet/gen/duet/user/v1"
)

// contractMessages returns every message of Duet's contract (the duet.*
// packages the gateway links in, nested messages included), sorted by name.
func contractMessages(t *testing.T) []protoreflect.MessageType {
	t.Helper()
	var out []protoreflect.MessageType
	protoregistry.GlobalTypes.RangeMessages(func(mt protoreflect.MessageType) bool {
		name := string(mt.Descriptor().FullName())
		if strings.HasPrefix(name, "duet.") && !strings.HasPrefix(name, "duet.bench.") {
			out = append(out, mt)
		}
		return true
	})
	if len(out) < 50 {
		t.Fatalf("found %d contract messages; the gen packages are not all linked in", len(out))
	}
	return out
}

// variant selects how fill sets a message's fields.
type variant int

const (
	// unset leaves every field unset: the JSON must be {}.
	unset variant = iota
	// extremes sets every field (the first oneof member) to values at the
	// edges of its type: 64-bit integers beyond 2^53, negative and
	// unsigned maxima, infinities, escapes and non-ASCII text, an enum
	// value the contract does not define, Timestamps with nanoseconds.
	extremes
	// ordinary sets every field (the last oneof member) to everyday
	// values, and fields with presence to their zero value, which proto3
	// JSON must still emit.
	ordinary
)

// fill sets m's fields as v says, recursing into messages up to depth 3.
func fill(t *testing.T, m protoreflect.Message, v variant, depth int) {
	if v == unset {
		return
	}
	fields := m.Descriptor().Fields()
	for i := range fields.Len() {
		fd := fields.Get(i)
		if od := fd.ContainingOneof(); od != nil && !od.IsSynthetic() {
			pick := od.Fields().Get(0)
			if v == ordinary {
				pick = od.Fields().Get(od.Fields().Len() - 1)
			}
			if pick != fd {
				continue
			}
		}
		if fd.Message() != nil && depth >= 3 && !isWellKnown(fd.Message()) {
			continue
		}
		switch {
		case fd.IsList():
			list := m.Mutable(fd).List()
			for j := range 2 {
				list.Append(fieldValue(t, m, fd, v, depth, j))
			}
		case fd.IsMap():
			mp := m.Mutable(fd).Map()
			for j := range 2 {
				mp.Set(mapKey(fd.MapKey(), j), fieldValue(t, m, fd.MapValue(), v, depth, j))
			}
		case v == ordinary && fd.HasPresence() && fd.Message() == nil:
			m.Set(fd, fd.Default()) // present, but the zero value
		default:
			m.Set(fd, fieldValue(t, m, fd, v, depth, 0))
		}
	}
}

func isWellKnown(md protoreflect.MessageDescriptor) bool {
	return md.ParentFile().Package() == "google.protobuf"
}

func mapKey(fd protoreflect.FieldDescriptor, j int) protoreflect.MapKey {
	switch fd.Kind() {
	case protoreflect.StringKind:
		return protoreflect.ValueOfString([]string{"key ä", "k\"2"}[j]).MapKey()
	case protoreflect.BoolKind:
		return protoreflect.ValueOfBool(j == 0).MapKey()
	case protoreflect.Int32Kind, protoreflect.Sint32Kind, protoreflect.Sfixed32Kind:
		return protoreflect.ValueOfInt32(int32(-1 - j)).MapKey()
	case protoreflect.Int64Kind, protoreflect.Sint64Kind, protoreflect.Sfixed64Kind:
		return protoreflect.ValueOfInt64(math.MaxInt64 - int64(j)).MapKey()
	case protoreflect.Uint32Kind, protoreflect.Fixed32Kind:
		return protoreflect.ValueOfUint32(uint32(j)).MapKey()
	default:
		return protoreflect.ValueOfUint64(math.MaxUint64 - uint64(j)).MapKey()
	}
}

// fieldValue is a value for one element of fd (the field itself, a list
// element or a map value); j tells the two elements of a list or map apart.
func fieldValue(t *testing.T, parent protoreflect.Message, fd protoreflect.FieldDescriptor, v variant, depth, j int) protoreflect.Value {
	edge := v == extremes
	switch fd.Kind() {
	case protoreflect.BoolKind:
		return protoreflect.ValueOfBool(edge)
	case protoreflect.EnumKind:
		values := fd.Enum().Values()
		if edge && j == 1 {
			return protoreflect.ValueOfEnum(1000) // not in the contract: JSON carries the number
		}
		return protoreflect.ValueOfEnum(values.Get(values.Len() - 1).Number())
	case protoreflect.Int32Kind, protoreflect.Sint32Kind, protoreflect.Sfixed32Kind:
		if edge {
			return protoreflect.ValueOfInt32(math.MinInt32)
		}
		return protoreflect.ValueOfInt32(42)
	case protoreflect.Int64Kind, protoreflect.Sint64Kind, protoreflect.Sfixed64Kind:
		if edge {
			return protoreflect.ValueOfInt64([]int64{math.MaxInt64, -(1<<53 + 1)}[j])
		}
		return protoreflect.ValueOfInt64(900)
	case protoreflect.Uint32Kind, protoreflect.Fixed32Kind:
		if edge {
			return protoreflect.ValueOfUint32(math.MaxUint32)
		}
		return protoreflect.ValueOfUint32(7)
	case protoreflect.Uint64Kind, protoreflect.Fixed64Kind:
		if edge {
			return protoreflect.ValueOfUint64(math.MaxUint64)
		}
		return protoreflect.ValueOfUint64(7)
	case protoreflect.FloatKind:
		if edge {
			return protoreflect.ValueOfFloat32(float32([]float64{math.Inf(1), -1.5e-7}[j]))
		}
		return protoreflect.ValueOfFloat32(0.25)
	case protoreflect.DoubleKind:
		if edge {
			return protoreflect.ValueOfFloat64([]float64{math.Inf(-1), 1e21}[j])
		}
		return protoreflect.ValueOfFloat64(19.99)
	case protoreflect.StringKind:
		if edge {
			return protoreflect.ValueOfString([]string{"Zoë \"quoted\" <b>&</b>\u2028\t\x00 ☃", "\\/"}[j])
		}
		return protoreflect.ValueOfString("plain")
	case protoreflect.BytesKind:
		if edge {
			return protoreflect.ValueOfBytes([]byte{0, 0xff, 0xfe, '+', '/'})
		}
		return protoreflect.ValueOfBytes([]byte("abc"))
	}
	// A message: the well-known types the contract uses get valid values,
	// anything else is filled the same way one level deeper.
	var sub protoreflect.Message
	switch {
	case fd.IsList():
		sub = parent.Mutable(fd).List().NewElement().Message()
	case fd.IsMap():
		sub = parent.Mutable(fd).Map().NewValue().Message()
	default:
		sub = parent.NewField(fd).Message()
	}
	switch sub.Descriptor().FullName() {
	case "google.protobuf.Timestamp":
		ts := &timestamppb.Timestamp{Seconds: 1795000000}
		if edge {
			ts.Seconds, ts.Nanos = []int64{253402300799, -62135596800}[j], []int32{999999999, 1000}[j]
		}
		return protoreflect.ValueOfMessage(ts.ProtoReflect())
	case "google.protobuf.FieldMask":
		fm := &fieldmaskpb.FieldMask{Paths: []string{"email"}}
		if edge {
			fm.Paths = []string{"name", "email", "user.create_time"}
		}
		return protoreflect.ValueOfMessage(fm.ProtoReflect())
	case "google.protobuf.Any":
		inner := &orderv1.OrderConfirmed{}
		fill(t, inner.ProtoReflect(), v, depth+1)
		a, err := anypb.New(inner)
		if err != nil {
			t.Fatal(err)
		}
		return protoreflect.ValueOfMessage(a.ProtoReflect())
	}
	if isWellKnown(sub.Descriptor()) {
		t.Fatalf("%s uses %s, which this test does not know how to fill: add it", parent.Descriptor().FullName(), sub.Descriptor().FullName())
	}
	fill(t, sub, v, depth+1)
	return protoreflect.ValueOfMessage(sub)
}

// sameJSON reports whether two JSON documents hold the same value (object
// key order and protojson's deliberately unstable spacing aside), keeping
// numbers as written.
func sameJSON(t *testing.T, a, b []byte) bool {
	t.Helper()
	decode := func(data []byte) any {
		d := json.NewDecoder(bytes.NewReader(data))
		d.UseNumber()
		var v any
		if err := d.Decode(&v); err != nil {
			t.Fatalf("not JSON: %v\n%s", err, data)
		}
		return v
	}
	return reflect.DeepEqual(decode(a), decode(b))
}

// TestJSONConformsToProtojson checks, for every message of the contract in
// three variants (unset, extreme values, ordinary values with present
// zeroes), that the gateway's JSON is protojson's (the proto3 JSON
// mapping, with the gateway's settings), and that the gateway reads its
// own output back to an equal message. If the gateway ever gets a faster
// JSON path, this is the test that keeps it honest.
func TestJSONConformsToProtojson(t *testing.T) {
	m := newJSONMarshaler()
	reference := protojson.MarshalOptions{UseProtoNames: false, EmitUnpopulated: false}
	for _, mt := range contractMessages(t) {
		for _, v := range []variant{unset, extremes, ordinary} {
			name := string(mt.Descriptor().FullName()) + "/" + []string{"unset", "extremes", "ordinary"}[v]
			t.Run(name, func(t *testing.T) {
				msg := mt.New()
				fill(t, msg, v, 0)
				want, err := reference.Marshal(msg.Interface())
				if err != nil {
					t.Fatalf("protojson: %v", err)
				}
				got, err := m.Marshal(msg.Interface())
				if err != nil {
					t.Fatalf("gateway marshal: %v", err)
				}
				if !sameJSON(t, got, want) {
					t.Fatalf("gateway JSON differs from protojson\n got: %s\nwant: %s", got, want)
				}
				if v == unset && string(bytes.TrimSpace(got)) != "{}" {
					t.Errorf("unset message = %s, want {}", got)
				}
				back := mt.New().Interface()
				if err := m.Unmarshal(got, back); err != nil {
					t.Fatalf("gateway cannot read its own JSON: %v\n%s", err, got)
				}
				if !proto.Equal(back, msg.Interface()) {
					t.Errorf("round trip changed the message\n sent: %v\n back: %v", msg.Interface(), back)
				}
			})
		}
	}
}

// TestJSONTrickyCases spells out what the proto3 JSON mapping asks for the
// cases clients trip over, on the gateway's marshaler.
func TestJSONTrickyCases(t *testing.T) {
	m := newJSONMarshaler()
	cases := []struct {
		name string
		msg  proto.Message
		want string
	}{
		{"int64 as a string",
			&typev1.Money{CurrencyCode: "USD", Units: 1<<53 + 1},
			`{"currencyCode":"USD","units":"9007199254740993"}`},
		{"negative int64",
			&typev1.Money{CurrencyCode: "EUR", Units: -3},
			`{"currencyCode":"EUR","units":"-3"}`},
		{"enum by name, Timestamp in RFC 3339 with nanoseconds, names in lowerCamelCase",
			&orderv1.Order{Status: orderv1.OrderStatus_ORDER_STATUS_CONFIRMED, CreateTime: &timestamppb.Timestamp{Seconds: 1795000000, Nanos: 120000000}},
			`{"status":"ORDER_STATUS_CONFIRMED","createTime":"2026-11-18T11:06:40.120Z"}`},
		{"enum value outside the contract as its number",
			&orderv1.Order{Status: orderv1.OrderStatus(77)},
			`{"status":77}`},
		{"field mask as one string of lowerCamelCase paths",
			&userv1.UpdateUserRequest{UpdateMask: &fieldmaskpb.FieldMask{Paths: []string{"name", "user.create_time"}}},
			`{"updateMask":"name,user.createTime"}`},
		{"unset fields and the zero enum left out",
			&orderv1.Order{Id: "o1"},
			`{"id":"o1"}`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, err := m.Marshal(c.msg)
			if err != nil {
				t.Fatal(err)
			}
			if !sameJSON(t, got, []byte(c.want)) {
				t.Errorf("got  %s\nwant %s", got, c.want)
			}
		})
	}
}
