package iso4217_test

import (
	"fmt"
	"testing"

	"github.com/duetkit/duet/kit/iso4217"
)

func TestValid(t *testing.T) {
	tests := []struct {
		code string
		want bool
	}{
		{"USD", true},
		{"EUR", true},
		{"JPY", true},
		{"CHF", true},
		{"XAU", true}, // gold: assigned, if not a country's
		{"XYZ", false},
		{"USX", false},
		{"usd", false},
		{"Usd", false},
		{"US", false},
		{"USDD", false},
		{"", false},
		{"U$D", false},
		{"ÜSD", false},
	}
	for _, tt := range tests {
		if got := iso4217.Valid(tt.code); got != tt.want {
			t.Errorf("Valid(%q) = %v, want %v", tt.code, got, tt.want)
		}
	}
}

func ExampleValid() {
	fmt.Println(iso4217.Valid("USD"), iso4217.Valid("XYZ"), iso4217.Valid("usd"))
	// Output: true false false
}
