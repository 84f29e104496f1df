package domain

import (
	"regexp"
	"strings"
	"time"

	"github.com/duetkit/duet/kit/displaytext"
	"github.com/duetkit/duet/kit/iso4217"
)

// Limits on products. They match the contract's validation rules, so a
// request that passed those passes these.
const (
	// MaxSKULen is the longest sku, in characters.
	MaxSKULen = 64
	// MaxNameLen is the longest product name, in characters.
	MaxNameLen = 200
	// MaxPriceUnits is the highest price, in minor units.
	MaxPriceUnits int64 = 100_000_000_000
	// MaxStock is the most units a product may be created with or an
	// import may bring its available units to (a released reservation
	// can leave more), and the largest stock change one import record may
	// make.
	MaxStock int64 = 1_000_000_000
)

// skuPattern is what a sku looks like: letters, digits, '-' and '_'.
var skuPattern = regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}$`)

// Money is an amount of one currency in its minor unit (cents for USD), so
// arithmetic never rounds.
type Money struct {
	// Currency is the ISO 4217 code, for example "USD".
	Currency string
	// Units is the amount in minor units.
	Units int64
}

// Product is something the shop sells, with its stock.
type Product struct {
	// SKU is the stock-keeping unit, the product's identity. Skus are
	// compared exactly: "ab-1" and "AB-1" are two products.
	SKU string
	// Name is the display name.
	Name string
	// Price is the price of one unit; it is always more than zero.
	Price Money
	// Available counts units in stock that no reservation holds.
	Available int64
	// Reserved counts units held by reservations that are neither
	// committed nor released.
	Reserved int64
	// CreateTime and UpdateTime are UTC, truncated to the microsecond.
	// UpdateTime moves whenever the product or its stock changes.
	CreateTime, UpdateTime time.Time
}

// NewProduct is what CreateProduct needs to add a product.
type NewProduct struct {
	// SKU, Name and Price are the new product's; see Product.
	SKU   string
	Name  string
	Price Money
	// Stock is the number of units available to start with.
	Stock int64
}

// CheckSKU checks that sku is 1 to 64 letters, digits, '-' or '_'. field
// names it in the error.
func CheckSKU(field, sku string) error {
	if sku == "" {
		return invalid(field, "must not be empty")
	}
	if !skuPattern.MatchString(sku) {
		return invalid(field, "must be 1 to %d letters, digits, '-' or '_'", MaxSKULen)
	}
	return nil
}

// NormalizeName trims the spaces around name and checks what is left as
// displaytext does: 1 to MaxNameLen characters, something visible among
// them, nothing that would break or reorder the text a product's name is
// shown in (a list, a receipt, a log line). field names it in the error.
func NormalizeName(field, name string) (string, error) {
	name = strings.TrimSpace(name)
	if err := displaytext.Check(name, MaxNameLen); err != nil {
		return "", invalid(field, "%v", err)
	}
	return name, nil
}

// CheckPrice checks that price is a well-formed amount of more than zero.
// field is the request path of the price; the error names the part of it
// that is wrong.
func CheckPrice(field string, price Money) error {
	switch {
	case !iso4217.Valid(price.Currency):
		return invalid(field+".currency_code", "must be an ISO 4217 code in upper case, like USD")
	case price.Units <= 0:
		return invalid(field+".units", "must be more than zero")
	case price.Units > MaxPriceUnits:
		return invalid(field+".units", "must be at most %d", MaxPriceUnits)
	}
	return nil
}

// newProduct validates np and returns the product it describes, created at now.
func newProduct(np NewProduct, now time.Time) (Product, error) {
	if err := CheckSKU("sku", np.SKU); err != nil {
		return Product{}, err
	}
	name, err := NormalizeName("name", np.Name)
	if err != nil {
		return Product{}, err
	}
	if err := CheckPrice("price", np.Price); err != nil {
		return Product{}, err
	}
	if np.Stock < 0 || np.Stock > MaxStock {
		return Product{}, invalid("stock", "must be between 0 and %d", MaxStock)
	}
	now = Timestamp(now)
	return Product{
		SKU: np.SKU, Name: name, Price: np.Price, Available: np.Stock,
		CreateTime: now, UpdateTime: now,
	}, nil
}

// Timestamp puts t in the form stored timestamps take: UTC, microseconds.
func Timestamp(t time.Time) time.Time { return t.UTC().Truncate(time.Microsecond) }
