package validation_test

import (
	"strings"
	"testing"
	"unicode/utf8"

	"buf.build/go/protovalidate"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/dynamicpb"

	inventoryv1 "github.com/duetkit/duet/gen/duet/inventory/v1"
	userv1 "github.com/duetkit/duet/gen/duet/user/v1"
	"github.com/duetkit/duet/kit/apierr"
	"github.com/duetkit/duet/kit/validation"
)

// TestCheckBounded: a request that breaks a per-item rule once per item
// gets an error of bounded size, not one violation per item (100,002 of
// them, and a message of megabytes, for a 200 KB request before the bound).
func TestCheckBounded(t *testing.T) {
	v, err := protovalidate.New()
	if err != nil {
		t.Fatal(err)
	}
	skus := func(n int) *inventoryv1.BatchGetProductsRequest {
		return &inventoryv1.BatchGetProductsRequest{Skus: make([]string, n)}
	}
	tests := []struct {
		name       string
		msg        proto.Message
		violations int    // field violations in the error
		field      string // the first one's field
		more       string // what the message says of those left out; "" for none
	}{
		{"small, two rules broken", &userv1.CreateUserRequest{Email: "x", Name: ""}, 2, "email", ""},
		{"under 16 KiB, every item broken", skus(1000), validation.MaxViolations, "skus", "and 902 more"},
		{"over 16 KiB, every item broken", skus(100_000), 1, "skus", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := validation.Check(v, tt.msg)
			if apierr.Code(err) != codes.InvalidArgument || apierr.Reason(err) != apierr.ReasonInvalidArgument {
				t.Fatalf("Check = %v, want INVALID_ARGUMENT", err)
			}
			fv := apierr.FieldViolations(err)
			if len(fv) != tt.violations {
				t.Fatalf("%d field violations, want %d", len(fv), tt.violations)
			}
			if fv[0].Field != tt.field {
				t.Errorf("first violation names %q, want %q", fv[0].Field, tt.field)
			}
			msg := err.Error()
			if len(msg) > 16<<10 {
				t.Errorf("message of %d bytes", len(msg))
			}
			if tt.more != "" && !strings.HasSuffix(msg, "; "+tt.more) {
				t.Errorf("message %q…%q does not end with %q", msg[:40], msg[len(msg)-40:], tt.more)
			}
			if tt.more == "" && strings.Contains(msg, "; and ") {
				t.Errorf("message %q says more were left out", msg)
			}
		})
	}
}

// validItem returns an Item (itemType) that keeps every rule: its id and
// tid are set; nothing else is.
func validItem(item protoreflect.MessageDescriptor) *dynamicpb.Message {
	m := dynamicpb.NewMessage(item)
	m.Set(item.Fields().ByName("id"), protoreflect.ValueOfString("0b7f5b4e-8a1e-4f57-9d7e-0d4b8f3e2a11"))
	m.Set(item.Fields().ByName("tid"), protoreflect.ValueOfString("0b7f5b4e8a1e4f579d7e0d4b8f3e2a11"))
	return m
}

// TestCheckShortensMapKeys: a map key is part of a violation's field
// path, and one of megabytes made an error of megabytes (of three times
// that once percent-encoded for the trailer, past what a client takes).
// The key is cut; the path keeps its end, the field that broke a rule.
func TestCheckShortensMapKeys(t *testing.T) {
	v, err := protovalidate.New()
	if err != nil {
		t.Fatal(err)
	}
	item := itemType(t)
	msg := validItem(item)
	child := validItem(item)
	child.Set(item.Fields().ByName("id"), protoreflect.ValueOfString("not a uuid"))
	key := strings.Repeat("é", 100_000) // 200,000 bytes
	msg.Mutable(item.Fields().ByName("by_key")).Map().Set(protoreflect.ValueOfString(key).MapKey(), protoreflect.ValueOfMessage(child))

	err = validation.Check(v, msg)
	if apierr.Code(err) != codes.InvalidArgument {
		t.Fatalf("Check = %v, want INVALID_ARGUMENT", err)
	}
	fields := apierr.FieldViolations(err)
	if len(fields) != 1 {
		t.Fatalf("violations %v, want one", fields)
	}
	want := `by_key["` + strings.Repeat("é", validation.MaxMapKey/2) + `…"].id`
	if got := fields[0].Field; got != want || !utf8.ValidString(got) {
		t.Errorf("field path of %d bytes (%.60q…), want %q", len(got), got, want)
	}
	if n := len(err.Error()); n > 1000 {
		t.Errorf("error of %d bytes", n)
	}
}

// TestCheckShortensDeepPaths: a message that nests itself makes a field
// path as deep as the request is large; the path keeps its start and the
// field that broke the rule.
func TestCheckShortensDeepPaths(t *testing.T) {
	v, err := protovalidate.New()
	if err != nil {
		t.Fatal(err)
	}
	item := itemType(t)
	const depth = 300 // "child." 300 times: 1,800 bytes
	inner := validItem(item)
	inner.Set(item.Fields().ByName("id"), protoreflect.ValueOfString("not a uuid"))
	msg := inner
	for range depth {
		outer := validItem(item)
		outer.Set(item.Fields().ByName("child"), protoreflect.ValueOfMessage(msg))
		msg = outer
	}
	fields := apierr.FieldViolations(validation.Check(v, msg))
	if len(fields) != 1 {
		t.Fatalf("violations %v, want one", fields)
	}
	got := fields[0].Field
	if len(got) > validation.MaxFieldPath || !strings.HasPrefix(got, "child.child.") || !strings.HasSuffix(got, "child.id") || !strings.Contains(got, "…") {
		t.Errorf("field path of %d bytes: %q; want at most %d, its start and its end", len(got), got, validation.MaxFieldPath)
	}
}
