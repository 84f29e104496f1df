package domain_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/duetkit/duet/services/inventory/domain"
)

// field returns the field of a *domain.ValidationError, "" for nil and a
// marker for other errors.
func field(err error) string {
	if err == nil {
		return ""
	}
	var v *domain.ValidationError
	if !errors.As(err, &v) {
		return "<not validation: " + err.Error() + ">"
	}
	return v.Field
}

func TestCheckSKU(t *testing.T) {
	tests := []struct {
		sku   string
		valid bool
	}{
		{sku: "A", valid: true},
		{sku: "tshirt-M_01", valid: true},
		{sku: strings.Repeat("x", 64), valid: true},
		{sku: ""},
		{sku: strings.Repeat("x", 65)},
		{sku: "has space"},
		{sku: "slash/sku"},
		{sku: "dot.sku"},
		{sku: "ümlaut"},
		{sku: "new\nline"},
	}
	for _, tt := range tests {
		t.Run(tt.sku, func(t *testing.T) {
			err := domain.CheckSKU("sku", tt.sku)
			if (err == nil) != tt.valid {
				t.Errorf("CheckSKU(%q) = %v, want valid %v", tt.sku, err, tt.valid)
			}
			if err != nil && field(err) != "sku" {
				t.Errorf("field = %q, want sku", field(err))
			}
		})
	}
}

func TestNormalizeName(t *testing.T) {
	tests := []struct {
		in, want string
		invalid  bool
	}{
		{in: "Mug", want: "Mug"},
		{in: "  Mug \t", want: "Mug"},
		{in: strings.Repeat("é", 200), want: strings.Repeat("é", 200)},
		{in: strings.Repeat("é", 201), invalid: true},
		{in: "", invalid: true},
		{in: "   ", invalid: true},
		{in: "a\x00b", invalid: true},
		{in: "bad \xff utf8", invalid: true},
		{in: "Mug\u202e gpj.exe", invalid: true}, // right-to-left override
		{in: "Mug\u2028Cup", invalid: true},      // line separator
		{in: "\u200b", invalid: true},            // zero-width space: looks empty
		{in: "Kaffeebecher \u2615", want: "Kaffeebecher \u2615"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := domain.NormalizeName("name", tt.in)
			if tt.invalid {
				if field(err) != "name" {
					t.Errorf("NormalizeName(%q) = %q, %v; want a validation error on name", tt.in, got, err)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Errorf("NormalizeName(%q) = %q, %v; want %q", tt.in, got, err, tt.want)
			}
		})
	}
}

func TestCheckPrice(t *testing.T) {
	tests := []struct {
		name  string
		price domain.Money
		field string
	}{
		{name: "ok", price: domain.Money{Currency: "EUR", Units: 1999}},
		{name: "max", price: domain.Money{Currency: "JPY", Units: domain.MaxPriceUnits}},
		{name: "zero", price: domain.Money{Currency: "EUR"}, field: "price.units"},
		{name: "negative", price: domain.Money{Currency: "EUR", Units: -1}, field: "price.units"},
		{name: "too much", price: domain.Money{Currency: "EUR", Units: domain.MaxPriceUnits + 1}, field: "price.units"},
		{name: "lower-case currency", price: domain.Money{Currency: "eur", Units: 1}, field: "price.currency_code"},
		{name: "no currency", price: domain.Money{Units: 1}, field: "price.currency_code"},
		{name: "long currency", price: domain.Money{Currency: "EURO", Units: 1}, field: "price.currency_code"},
		{name: "unknown currency", price: domain.Money{Currency: "XYZ", Units: 1}, field: "price.currency_code"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := field(domain.CheckPrice("price", tt.price)); got != tt.field {
				t.Errorf("CheckPrice(%+v) field = %q, want %q", tt.price, got, tt.field)
			}
		})
	}
}

func TestCheckOrderID(t *testing.T) {
	for _, tt := range []struct {
		id    string
		valid bool
	}{
		{id: "0190b7a0-4c7e-7a39-9a39-3f0e7ad7f2f1", valid: true},
		{id: ""},
		{id: "42"},
		{id: "{0190b7a0-4c7e-7a39-9a39-3f0e7ad7f2f1}"},
		{id: "urn:uuid:0190b7a0-4c7e-7a39-9a39-3f0e7ad7f2f1"},
	} {
		err := domain.CheckOrderID(tt.id)
		if (err == nil) != tt.valid || err != nil && field(err) != "order_id" {
			t.Errorf("CheckOrderID(%q) = %v, want valid %v", tt.id, err, tt.valid)
		}
	}
}
