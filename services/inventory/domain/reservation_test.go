package domain_test

import (
	"errors"
	"testing"
	"time"

	"github.com/duetkit/duet/services/inventory/domain"
)

// TestReservationTransitions walks the state machine: RESERVED goes to
// COMMITTED or RELEASED once; every other transition is a no-op or refused.
func TestReservationTransitions(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	later := t0.Add(time.Minute)
	tests := []struct {
		name       string
		from       domain.ReservationStatus
		op         string
		wantStatus domain.ReservationStatus
		wantMove   domain.StockMove
		wantErr    error
	}{
		{name: "commit reserved", from: domain.StatusReserved, op: "commit", wantStatus: domain.StatusCommitted, wantMove: domain.MoveCommit},
		{name: "commit committed", from: domain.StatusCommitted, op: "commit", wantStatus: domain.StatusCommitted, wantMove: domain.MoveNone},
		{name: "commit released", from: domain.StatusReleased, op: "commit", wantStatus: domain.StatusReleased, wantErr: domain.ErrReservationReleased},
		{name: "release reserved", from: domain.StatusReserved, op: "release", wantStatus: domain.StatusReleased, wantMove: domain.MoveRelease},
		{name: "release released", from: domain.StatusReleased, op: "release", wantStatus: domain.StatusReleased, wantMove: domain.MoveNone},
		{name: "release committed", from: domain.StatusCommitted, op: "release", wantStatus: domain.StatusCommitted, wantErr: domain.ErrReservationCommitted},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := domain.Reservation{OrderID: "o", Status: tt.from, CreateTime: t0, UpdateTime: t0,
				Lines: []domain.Line{{SKU: "A", Quantity: 1}}}
			var (
				move domain.StockMove
				err  error
			)
			if tt.op == "commit" {
				move, err = r.Commit(later)
			} else {
				move, err = r.Release(later)
			}
			if !errors.Is(err, tt.wantErr) || move != tt.wantMove || r.Status != tt.wantStatus {
				t.Fatalf("%s from %s = %v, %v, status %s; want %v, %v, %s", tt.op, tt.from, move, err, r.Status, tt.wantMove, tt.wantErr, tt.wantStatus)
			}
			wantTime := t0
			if tt.wantMove != domain.MoveNone {
				wantTime = later
			}
			if !r.UpdateTime.Equal(wantTime) {
				t.Errorf("update time = %v, want %v", r.UpdateTime, wantTime)
			}
		})
	}
	// A clock that steps back never moves update time backwards.
	r := domain.Reservation{Status: domain.StatusReserved, UpdateTime: later}
	if _, err := r.Commit(t0); err != nil || !r.UpdateTime.Equal(later) {
		t.Errorf("commit with an earlier clock: update time %v, %v; want %v", r.UpdateTime, err, later)
	}
}
