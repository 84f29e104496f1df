package domain

import (
	"errors"
	"fmt"
	"strings"
)

// Errors the domain reports. The gRPC handler maps each to a code and a
// stable reason; see grpchandler.
var (
	// ErrProductNotFound means no product has the sku. Operations over
	// several skus return a *ProductsNotFoundError, which matches it.
	ErrProductNotFound = errors.New("product not found")
	// ErrSKUTaken means a product with the sku already exists.
	ErrSKUTaken = errors.New("sku already exists")
	// ErrReservationNotFound means the order has no reservation.
	ErrReservationNotFound = errors.New("reservation not found")
	// ErrReservationReleased means the order's reservation was released (or
	// the order was released before it ever reserved), so it can be
	// neither committed nor made again.
	ErrReservationReleased = errors.New("reservation already released")
	// ErrReservationCommitted means the order's reservation is committed:
	// the units are sold and cannot be released.
	ErrReservationCommitted = errors.New("reservation already committed")
	// ErrReservationMismatch means the order already holds a reservation
	// with other lines than the ones asked for now.
	ErrReservationMismatch = errors.New("order already holds a reservation with different lines")
	// ErrImportTooLarge means a stock import sent more records than the
	// service buffers for one stream; nothing was applied.
	ErrImportTooLarge = errors.New("stock import has too many records")
	// ErrImportIDReused means an import with the same id but other records
	// was applied before; nothing was applied now.
	ErrImportIDReused = errors.New("import id already used with other records")
	// ErrImportNotFound is returned by a Repository when no import was
	// applied under the id asked for.
	ErrImportNotFound = errors.New("no import applied under this id")
	// ErrImportIDTaken is returned by a Repository when an import with the
	// same id is stored already (one before, or a concurrent one that
	// committed first); nothing was written.
	ErrImportIDTaken = errors.New("import id taken")
	// ErrConflict is returned by a Repository when a transaction lost a race
	// it cannot resolve itself (a deadlock, a serialisation failure, a
	// product created concurrently by another import). Nothing was written;
	// the Service retries the whole operation a few times.
	ErrConflict = errors.New("concurrent update conflict")
)

// ValidationError is bad input to a domain operation.
type ValidationError struct {
	// Field is the path of the offending field in the request ("sku",
	// "price.units", "lines[2].quantity", "page_size").
	Field string
	// Description says what is wrong, in words safe to show a client.
	Description string
}

// Error implements error.
func (e *ValidationError) Error() string {
	return fmt.Sprintf("invalid %s: %s", e.Field, e.Description)
}

func invalid(field, format string, args ...any) *ValidationError {
	return &ValidationError{Field: field, Description: fmt.Sprintf(format, args...)}
}

// MissingProduct is one sku of a request that names no product.
type MissingProduct struct {
	// Index is the position of the sku in the request (in skus or lines).
	Index int
	// SKU is the unknown sku.
	SKU string
}

// ProductsNotFoundError names the skus of a request that have no product,
// in request order. errors.Is(err, ErrProductNotFound) holds for it.
type ProductsNotFoundError struct {
	// Missing lists the unknown skus, at least one.
	Missing []MissingProduct
}

// Error implements error.
func (e *ProductsNotFoundError) Error() string {
	skus := make([]string, len(e.Missing))
	for i, m := range e.Missing {
		skus[i] = m.SKU
	}
	return "products not found: " + strings.Join(skus, ", ")
}

// Is makes errors.Is(err, ErrProductNotFound) true.
func (e *ProductsNotFoundError) Is(target error) bool { return target == ErrProductNotFound }

// Shortage is one line of a reservation that stock cannot cover.
type Shortage struct {
	// Index is the position of the line in the request.
	Index int
	// SKU is the product that is short.
	SKU string
	// Requested is the quantity asked for; Available what was in stock.
	Requested, Available int64
}

// OutOfStockError lists the lines of a reservation that stock cannot cover,
// in request order. Nothing was reserved.
type OutOfStockError struct {
	// Shortages lists the lines that are short, at least one.
	Shortages []Shortage
}

// Error implements error.
func (e *OutOfStockError) Error() string {
	parts := make([]string, len(e.Shortages))
	for i, s := range e.Shortages {
		parts[i] = fmt.Sprintf("%s (requested %d, available %d)", s.SKU, s.Requested, s.Available)
	}
	return "out of stock: " + strings.Join(parts, ", ")
}
