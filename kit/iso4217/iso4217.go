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
	if assignedSinceCLDR[code] {
		return true
	}
	_, err := currency.ParseISO(code)
	return err == nil
}

// assignedSinceCLDR are the codes ISO 4217 assigned after the CLDR data
// golang.org/x/text/currency carries (currency.CLDRVersion, 32, of 2017):
// without them a shop could not price in Venezuela's, Mauritania's or
// Sierra Leone's money of today. Codes since withdrawn (HRK, VEF, MRO…)
// stay valid through CLDR's list, so money stored in them still reads back.
var assignedSinceCLDR = map[string]bool{
	"MRU": true, // Mauritanian ouguiya, 2018
	"VES": true, // Venezuelan bolívar soberano, 2018
	"UYW": true, // Uruguayan unidad previsional, 2018
	"VED": true, // Venezuelan bolívar digital, 2021
	"SLE": true, // Sierra Leonean leone, 2022
	"ZWG": true, // Zimbabwe gold, 2024
	"XCG": true, // Caribbean guilder, 2025
}

// MinorDigits is how many decimal digits the minor unit of the currency
// with the given code has, as ISO 4217 lists it: 2 for most ("USD": 1999
// minor units are 19.99), 0 where the minor unit is the unit itself
// ("JPY"), 3 ("KWD") or 4 ("CLF") for a few. A code the table does not
// name counts as 2.
//
// The list is ISO's own rather than CLDR's (golang.org/x/text/currency's
// rounding): CLDR gives the digits people use, 0 for currencies such as
// IQD, IRR or LAK whose minor unit is out of use, while Duet's amounts are
// counted in ISO's minor unit (duet.type.v1.Money).
func MinorDigits(code string) int {
	switch code {
	case "BIF", "CLP", "DJF", "GNF", "ISK", "JPY", "KMF", "KRW", "PYG", "RWF", "UGX", "UYI", "VND", "VUV", "XAF", "XOF", "XPF":
		return 0
	case "BHD", "IQD", "JOD", "KWD", "LYD", "OMR", "TND":
		return 3
	case "CLF", "UYW":
		return 4
	}
	return 2
}
