// Package domain holds the inventory service's rules: what a valid product
// is, how stock moves between available and reserved as an order's
// reservation goes from RESERVED to COMMITTED or RELEASED, and how a stock
// import is checked record by record and applied all at once.
//
// It knows nothing of gRPC or SQL. The store implements Repository; the gRPC
// handler turns requests into Service calls and errors into status errors.
//
// # Stock
//
// A product counts Available units (in stock, not held by anyone) and
// Reserved units (held by reservations that are neither committed nor
// released). Reserving moves units from Available to Reserved, committing
// removes them from Reserved (they are sold), releasing moves them back to
// Available. Neither count can go below zero: the Repository guards every
// decrement in the same statement that makes it, so concurrent orders can
// never oversell, and the database's CHECK constraints back that up.
//
// # Reservations
//
// A reservation is identified by its order id and its operations are
// idempotent: reserving again with the same lines returns the reservation
// as it is, committing or releasing again is a no-op. Releasing an order
// that never reserved records a RELEASED reservation without lines, a
// tombstone, so that a reservation arriving late (a retry overtaken by the
// compensation that gave up on it) is refused instead of holding stock for
// an order that is already cancelled.
package domain
