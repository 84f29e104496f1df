package validation

import (
	"strings"
	"sync"

	"buf.build/gen/go/bufbuild/protovalidate/protocolbuffers/go/buf/validate"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// LowerUUIDs rewrites in place, to lower case, every string in msg — in
// msg itself or in any message it holds — whose contract rule says it is a
// UUID (string.uuid or string.tuuid, on a field, on the items of a
// repeated field or on the values of a map).
//
// RFC 9562 makes UUIDs case-insensitive on input and lower case on output.
// A service that stores the ids it hands out and looks them up by exact
// match would otherwise answer NOT_FOUND to an upper-case spelling of an
// id it knows; lowering them once at the edge gives every store one
// spelling. A value that is not made of hex digits and hyphens only is
// left as it is, so a field the rules skipped keeps what the caller sent.
// kit/server calls it on every request that passed Check.
func LowerUUIDs(msg proto.Message) {
	if msg == nil {
		return
	}
	lowerUUIDs(msg.ProtoReflect())
}

func lowerUUIDs(m protoreflect.Message) {
	if !m.IsValid() {
		return
	}
	p := planFor(m.Descriptor())
	for _, fd := range p.strings {
		switch {
		case fd.IsList():
			if !m.Has(fd) {
				continue
			}
			l := m.Mutable(fd).List()
			for i := 0; i < l.Len(); i++ {
				if s, ok := lowerHex(l.Get(i).String()); ok {
					l.Set(i, protoreflect.ValueOfString(s))
				}
			}
		case fd.IsMap():
			if !m.Has(fd) {
				continue
			}
			mp := m.Mutable(fd).Map()
			var keys []protoreflect.MapKey
			mp.Range(func(k protoreflect.MapKey, v protoreflect.Value) bool {
				if _, ok := lowerHex(v.String()); ok {
					keys = append(keys, k)
				}
				return true
			})
			for _, k := range keys {
				s, _ := lowerHex(mp.Get(k).String())
				mp.Set(k, protoreflect.ValueOfString(s))
			}
		default:
			if s, ok := lowerHex(m.Get(fd).String()); ok {
				m.Set(fd, protoreflect.ValueOfString(s))
			}
		}
	}
	for _, fd := range p.messages {
		if !m.Has(fd) {
			continue
		}
		switch v := m.Mutable(fd); {
		case fd.IsList():
			l := v.List()
			for i := 0; i < l.Len(); i++ {
				lowerUUIDs(l.Get(i).Message())
			}
		case fd.IsMap():
			v.Map().Range(func(_ protoreflect.MapKey, v protoreflect.Value) bool {
				lowerUUIDs(v.Message())
				return true
			})
		default:
			lowerUUIDs(v.Message())
		}
	}
}

// lowerHex returns s in lower case and true when s is made of hex digits
// and hyphens only and has an upper-case digit; otherwise s and false.
func lowerHex(s string) (string, bool) {
	upper := false
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c >= 'A' && c <= 'F':
			upper = true
		case c >= '0' && c <= '9', c >= 'a' && c <= 'f', c == '-':
		default:
			return s, false
		}
	}
	if !upper {
		return s, false
	}
	return strings.ToLower(s), true
}

// plan lists, for one message type, the fields LowerUUIDs visits: worked
// out once per type, since most requests hold no UUID and should pay only
// for a map look-up.
type plan struct {
	strings  []protoreflect.FieldDescriptor // UUID strings: singular, list items or map values
	messages []protoreflect.FieldDescriptor // messages that hold some, at any depth
}

var plans sync.Map // protoreflect.MessageDescriptor → *plan

func planFor(md protoreflect.MessageDescriptor) *plan {
	if p, ok := plans.Load(md); ok {
		return p.(*plan)
	}
	p := &plan{}
	fields := md.Fields()
	for i := 0; i < fields.Len(); i++ {
		fd := fields.Get(i)
		if holdsUUID(fd) {
			p.strings = append(p.strings, fd)
		}
		if m := messageOf(fd); m != nil && reachesUUID(m, map[protoreflect.FullName]bool{}) {
			p.messages = append(p.messages, fd)
		}
	}
	plans.Store(md, p)
	return p
}

// holdsUUID reports whether fd's rules say its strings are UUIDs.
func holdsUUID(fd protoreflect.FieldDescriptor) bool {
	rules, _ := proto.GetExtension(fd.Options(), validate.E_Field).(*validate.FieldRules)
	switch {
	case fd.IsMap():
		return fd.MapValue().Kind() == protoreflect.StringKind && isUUID(rules.GetMap().GetValues())
	case fd.IsList():
		return fd.Kind() == protoreflect.StringKind && isUUID(rules.GetRepeated().GetItems())
	default:
		return fd.Kind() == protoreflect.StringKind && isUUID(rules)
	}
}

func isUUID(r *validate.FieldRules) bool {
	return r.GetString_().GetUuid() || r.GetString_().GetTuuid()
}

// messageOf returns the message type fd holds (a map's value type for a
// map), or nil.
func messageOf(fd protoreflect.FieldDescriptor) protoreflect.MessageDescriptor {
	if fd.IsMap() {
		fd = fd.MapValue()
	}
	if k := fd.Kind(); k == protoreflect.MessageKind || k == protoreflect.GroupKind {
		return fd.Message()
	}
	return nil
}

// reachesUUID reports whether md, or a message it holds at any depth, has
// a UUID field. seen stops the search going round a recursive type.
func reachesUUID(md protoreflect.MessageDescriptor, seen map[protoreflect.FullName]bool) bool {
	if seen[md.FullName()] {
		return false
	}
	seen[md.FullName()] = true
	fields := md.Fields()
	for i := 0; i < fields.Len(); i++ {
		fd := fields.Get(i)
		if holdsUUID(fd) {
			return true
		}
		if m := messageOf(fd); m != nil && reachesUUID(m, seen) {
			return true
		}
	}
	return false
}
