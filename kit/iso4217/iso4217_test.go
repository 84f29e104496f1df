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
		{"VES", true}, // assigned after x/text's CLDR data
		{"MRU", true},
		{"SLE", true},
		{"ZWG", true},
		{"HRK", true}, // withdrawn in 2023: stored amounts still read back
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

func TestMinorDigits(t *testing.T) {
	for code, want := range map[string]int{
		"USD": 2, "EUR": 2, "JPY": 0, "KRW": 0, "CLP": 0, "ISK": 0, "UYI": 0,
		"KWD": 3, "BHD": 3, "IQD": 3, "TND": 3, "CLF": 4, "UYW": 4,
		"IRR": 2, "LAK": 2, // ISO's 2, where CLDR shows none
		"XYZ": 2,
	} {
		if got := iso4217.MinorDigits(code); got != want {
			t.Errorf("MinorDigits(%q) = %d, want %d", code, got, want)
		}
	}
}

func ExampleMinorDigits() {
	for _, code := range []string{"USD", "JPY", "KWD"} {
		fmt.Println(code, iso4217.MinorDigits(code))
	}
	// Output:
	// USD 2
	// JPY 0
	// KWD 3
}
