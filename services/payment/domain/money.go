package domain

import "github.com/duetkit/duet/kit/iso4217"

// MaxUnits is the largest amount, in minor units, the payment service
// accepts; it matches the bound in the contract so a value the domain accepts
// can always be sent back over the wire.
const MaxUnits int64 = 100_000_000_000

// Money is an amount of one currency in its minor unit (cents for USD), so
// arithmetic never rounds.
type Money struct {
	// Currency is the ISO 4217 code, for example "USD".
	Currency string
	// Units is the amount in minor units.
	Units int64
}

// validatePositive checks that m is a well-formed, strictly positive amount.
// field is the request path of the Money, used to name the offending part.
func (m Money) validatePositive(field string) error {
	if !iso4217.Valid(m.Currency) {
		return &FieldError{Field: field + ".currency_code", Description: "must be an ISO 4217 code in upper case, like USD"}
	}
	if m.Units <= 0 {
		return &FieldError{Field: field + ".units", Description: "must be more than zero"}
	}
	if m.Units > MaxUnits {
		return &FieldError{Field: field + ".units", Description: "must be at most 100000000000"}
	}
	return nil
}
