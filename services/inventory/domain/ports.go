package domain

import (
	"context"
	"time"
)

// Repository stores products and reservations. Every method that writes does
// so in one transaction: it either completes or changes nothing.
//
// Stock arithmetic is the Repository's to make safe under concurrency: a
// decrement of Available or Reserved is guarded in the statement that makes
// it (UPDATE … WHERE available >= ?), never decided by a read that another
// transaction could invalidate, and the schema rejects negative counts.
type Repository interface {
	// CreateProduct stores a new product; ErrSKUTaken when the sku exists.
	CreateProduct(ctx context.Context, p Product) error
	// Product returns the product with sku, or ErrProductNotFound.
	Product(ctx context.Context, sku string) (Product, error)
	// Products returns the products with the given skus, keyed by sku;
	// unknown skus are simply absent.
	Products(ctx context.Context, skus []string) (map[string]Product, error)
	// ListProducts returns up to limit products with a sku after afterSKU
	// (from the start when it is empty), in sku order.
	ListProducts(ctx context.Context, afterSKU string, limit int) ([]Product, error)

	// Reserve records r, whose status is RESERVED, and moves each line's
	// quantity from Available to Reserved.
	//
	// When the order already has a reservation it changes nothing and
	// returns that one with existed true; racing calls for one order end
	// with exactly one reservation. Unknown skus are a
	// *ProductsNotFoundError and, when all skus exist, lines that stock
	// cannot cover an *OutOfStockError; either way nothing is written.
	Reserve(ctx context.Context, r Reservation) (existing Reservation, existed bool, err error)
	// UpdateReservation loads the reservation of orderID, lets fn change it,
	// and stores the result together with the stock move fn returns, in one
	// transaction that no other change of the reservation interleaves with.
	// When fn fails nothing is written.
	//
	// When the order has no reservation, UpdateReservation stores *create
	// and returns it without calling fn, or returns ErrReservationNotFound
	// when create is nil.
	UpdateReservation(ctx context.Context, orderID string, create *Reservation, fn func(*Reservation) (StockMove, error)) (Reservation, error)
	// Reservation returns the reservation of orderID, or
	// ErrReservationNotFound.
	Reservation(ctx context.Context, orderID string) (Reservation, error)

	// ApplyStock calls fn once for each of skus (distinct, in ascending
	// order) with the stored product, or nil when there is none, and stores
	// the product fn returns: a new one, or the old one changed. fn returns
	// nil to leave a sku alone. All of it is one transaction, committed only
	// when every fn returned without error; the products stay locked
	// against concurrent changes until then. A product created concurrently
	// by someone else is ErrConflict.
	//
	// When record is not nil, ApplyStock calls it once fn has run for
	// every sku and stores the import it returns in the same transaction:
	// ErrImportIDTaken when one with its id is stored already.
	ApplyStock(ctx context.Context, skus []string, fn func(sku string, current *Product) (*Product, error), record func() StoredImport) error
	// ImportByID returns the import stored under id, or ErrImportNotFound.
	ImportByID(ctx context.Context, id string) (StoredImport, error)
}

// StoredImport is what is kept of an import applied under an id, so that
// the same import sent again is answered without applying it twice.
type StoredImport struct {
	// ID is the client's import id.
	ID string
	// Fingerprint identifies the import's records, so the id sent again
	// with other records is told apart.
	Fingerprint string
	// Summary is the import's outcome.
	Summary ImportSummary
	// CreateTime is when it was applied.
	CreateTime time.Time
}
