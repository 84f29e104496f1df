package domain

import (
	"cmp"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/google/uuid"
)

// Limits on reservations, matching the contract.
const (
	// MaxLines is the most lines one reservation may have.
	MaxLines = 100
	// MaxQuantity is the most units one line may hold.
	MaxQuantity = 10_000
)

// Line is a quantity of one product.
type Line struct {
	// SKU names the product.
	SKU string
	// Quantity is the number of units, 1 to MaxQuantity.
	Quantity int64
}

// ReservationStatus is where a reservation stands.
type ReservationStatus string

// The statuses of a reservation. RESERVED is the only one that changes.
const (
	// StatusReserved: the units are held for the order.
	StatusReserved ReservationStatus = "RESERVED"
	// StatusCommitted: the units are sold.
	StatusCommitted ReservationStatus = "COMMITTED"
	// StatusReleased: the units went back to stock, or the order was
	// released before it reserved anything (then Lines is empty).
	StatusReleased ReservationStatus = "RELEASED"
)

// Reservation is the stock held for one order.
type Reservation struct {
	// OrderID identifies the reservation.
	OrderID string
	// Lines are the units held, in the order the reservation asked for them.
	Lines []Line
	// Status is where the reservation stands.
	Status ReservationStatus
	// CreateTime and UpdateTime are UTC, truncated to the microsecond.
	CreateTime, UpdateTime time.Time
}

// StockMove is what a reservation's change of status does to stock, applied
// to every line: the Repository carries it out in the same transaction as
// the status change.
type StockMove int

// The stock moves. Reserving (Available -> Reserved) is not among them:
// Repository.Reserve does it when it records a new reservation.
const (
	// MoveNone changes no stock.
	MoveNone StockMove = iota
	// MoveCommit removes the units from Reserved: they are sold.
	MoveCommit
	// MoveRelease moves the units from Reserved back to Available.
	MoveRelease
)

// Commit makes a reserved reservation final at time now and returns the stock
// move that goes with it. Committing again is a no-op (MoveNone); a released
// reservation is ErrReservationReleased.
func (r *Reservation) Commit(now time.Time) (StockMove, error) {
	switch r.Status {
	case StatusReserved:
		r.Status = StatusCommitted
		r.touch(now)
		return MoveCommit, nil
	case StatusCommitted:
		return MoveNone, nil
	case StatusReleased:
		return MoveNone, ErrReservationReleased
	}
	return MoveNone, fmt.Errorf("reservation %s has unknown status %q", r.OrderID, r.Status)
}

// Release returns a reserved reservation's units to stock at time now and
// returns the stock move that goes with it. Releasing again is a no-op
// (MoveNone); a committed reservation is ErrReservationCommitted.
func (r *Reservation) Release(now time.Time) (StockMove, error) {
	switch r.Status {
	case StatusReserved:
		r.Status = StatusReleased
		r.touch(now)
		return MoveRelease, nil
	case StatusReleased:
		return MoveNone, nil
	case StatusCommitted:
		return MoveNone, ErrReservationCommitted
	}
	return MoveNone, fmt.Errorf("reservation %s has unknown status %q", r.OrderID, r.Status)
}

// touch moves UpdateTime to now, never backwards.
func (r *Reservation) touch(now time.Time) {
	if now = Timestamp(now); now.After(r.UpdateTime) {
		r.UpdateTime = now
	}
}

// tombstone is the RELEASED reservation without lines recorded when an order
// is released before it reserved.
func tombstone(orderID string, now time.Time) Reservation {
	now = Timestamp(now)
	return Reservation{OrderID: orderID, Status: StatusReleased, CreateTime: now, UpdateTime: now}
}

// CheckOrderID checks that id is a UUID, the form order ids take.
func CheckOrderID(id string) error {
	if id == "" {
		return invalid("order_id", "must not be empty")
	}
	if _, err := uuid.Parse(id); err != nil || len(id) != 36 {
		return invalid("order_id", "must be a UUID")
	}
	return nil
}

// normalizeOrderID checks id as CheckOrderID does and returns it in lower
// case: UUIDs are case-insensitive on input (RFC 9562), and reservations
// are keyed on the id as a string, so "ABCDEF00-…" and "abcdef00-…" would
// otherwise be two reservations for one order, stock held twice, and a
// release in one case would miss the reservation made in the other.
func normalizeOrderID(id string) (string, error) {
	if err := CheckOrderID(id); err != nil {
		return "", err
	}
	return strings.ToLower(id), nil
}

// checkLines validates the lines of a reservation: 1 to 100 of them, each a
// valid sku with 1 to 10000 units, no sku twice.
func checkLines(lines []Line) error {
	if len(lines) == 0 {
		return invalid("lines", "must hold at least one line")
	}
	if len(lines) > MaxLines {
		return invalid("lines", "must hold at most %d lines", MaxLines)
	}
	seen := make(map[string]int, len(lines))
	for i, l := range lines {
		if err := CheckSKU(fmt.Sprintf("lines[%d].sku", i), l.SKU); err != nil {
			return err
		}
		if l.Quantity < 1 || l.Quantity > MaxQuantity {
			return invalid(fmt.Sprintf("lines[%d].quantity", i), "must be between 1 and %d", MaxQuantity)
		}
		if j, dup := seen[l.SKU]; dup {
			return invalid("lines", "sku %q appears in lines[%d] and lines[%d]; give each sku once", l.SKU, j, i)
		}
		seen[l.SKU] = i
	}
	return nil
}

// sameLines reports whether a and b hold the same quantities of the same
// skus, in any order.
func sameLines(a, b []Line) bool {
	if len(a) != len(b) {
		return false
	}
	return slices.Equal(sortedLines(a), sortedLines(b))
}

// sortedLines returns a copy of lines ordered by sku.
func sortedLines(lines []Line) []Line {
	s := slices.Clone(lines)
	slices.SortFunc(s, func(a, b Line) int { return cmp.Compare(a.SKU, b.SKU) })
	return s
}
