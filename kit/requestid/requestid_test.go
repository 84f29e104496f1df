package requestid_test

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/google/uuid"

	"github.com/duetkit/duet/kit/requestid"
)

func TestValid(t *testing.T) {
	tests := []struct {
		id   string
		want bool
	}{
		{"", false},
		{"abc-123", true},
		{"0b7f5b4e-8a1e-4f57-9d7e-0d4b8f3e2a11", true},
		{"a.b_c:d", true},
		{strings.Repeat("a", 128), true},
		{strings.Repeat("a", 129), false},
		{"has space", false},
		{"new\nline", false},
		{"<script>", false},
	}
	for _, tt := range tests {
		if got := requestid.Valid(tt.id); got != tt.want {
			t.Errorf("Valid(%q) = %v, want %v", tt.id, got, tt.want)
		}
	}
	if !requestid.Valid(requestid.New()) {
		t.Error("New makes invalid ids")
	}
}

func ExampleFromContext() {
	ctx := requestid.NewContext(context.Background(), "req-7")
	fmt.Println(requestid.FromContext(ctx))
	// Output: req-7
}

func TestNewIsAVersion4UUID(t *testing.T) {
	seen := make(map[string]bool)
	for range 1000 {
		id := requestid.New()
		u, err := uuid.Parse(id)
		if err != nil {
			t.Fatalf("New() = %q: %v", id, err)
		}
		if u.Version() != 4 || u.Variant() != uuid.RFC4122 {
			t.Fatalf("New() = %q: version %d, variant %v; want 4, RFC4122", id, u.Version(), u.Variant())
		}
		if !requestid.Valid(id) {
			t.Fatalf("New() = %q is not Valid", id)
		}
		if seen[id] {
			t.Fatalf("New() repeated %q", id)
		}
		seen[id] = true
	}
}
