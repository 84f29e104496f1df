// Package iso4217 tells ISO 4217 currency codes from other three-letter
// strings, for services that check the money they are sent.
package iso4217

import "golang.org/x/text/currency"

// Valid reports whether code is an ISO 4217 alphabetic currency code in
// upper case, such as "USD": three letters A to Z that the standard assigns
// (CLDR's list, through golang.org/x/text/currency). A shape check alone
// would store a typo such as "USX" as a currency of its own.
func Valid(code string) bool {
	if len(code) != 3 {
		return false
	}
	for i := range 3 {
		if code[i] < 'A' || code[i] > 'Z' {
			return false
		}
	}
	_, err := currency.ParseISO(code)
	return err == nil
}
