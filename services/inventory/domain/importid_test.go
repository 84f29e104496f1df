package domain_test

import (
	"errors"
	"reflect"
	"strings"
	"testing"

	"github.com/duetkit/duet/services/inventory/domain"
)

// importWithID runs one import of records under id and returns its summary
// and Apply's error.
func importWithID(t *testing.T, s *domain.Service, id string, records ...domain.StockRecord) (domain.ImportSummary, error) {
	t.Helper()
	imp := s.NewImport()
	if err := imp.SetID(id); err != nil {
		t.Fatal(err)
	}
	for _, r := range records {
		if err := imp.Add(r); err != nil {
			t.Fatal(err)
		}
	}
	return imp.Apply(t.Context())
}

// TestImportID: an import under an id applies once; sent again it applies
// nothing and answers the first summary, Replayed; the id with other
// records is refused; other ids, or none, apply each time.
func TestImportID(t *testing.T) {
	add := []domain.StockRecord{
		{Line: 2, SKU: "MUG", StockDelta: 3},
		{Line: 3, SKU: "MUG", StockDelta: -100}, // rejected: kept in the summary
		{Line: 4, SKU: "bad sku!", StockDelta: 1},
	}
	other := []domain.StockRecord{{Line: 2, SKU: "MUG", StockDelta: 4}}
	tests := []struct {
		name string
		// second is the second import's id and records.
		secondID  string
		second    []domain.StockRecord
		wantErr   error
		wantStock int64
		replayed  bool
	}{
		{name: "the same again", secondID: "imp-1", second: add, wantStock: 8, replayed: true},
		{name: "other records", secondID: "imp-1", second: other, wantErr: domain.ErrImportIDReused, wantStock: 8},
		{name: "one record fewer", secondID: "imp-1", second: add[:2], wantErr: domain.ErrImportIDReused, wantStock: 8},
		{name: "another id", secondID: "imp-2", second: add, wantStock: 11},
		{name: "no id", secondID: "", second: add, wantStock: 11},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, _ := newService(t)
			seed(t, s, map[string]int64{"MUG": 5})
			first, err := importWithID(t, s, "imp-1", add...)
			if err != nil || first.Applied != 1 || first.Rejected != 2 || first.Replayed {
				t.Fatalf("first import = %+v, %v; want 1 applied, 2 rejected", first, err)
			}
			got, err := importWithID(t, s, tt.secondID, tt.second...)
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("second import error %v, want %v", err, tt.wantErr)
			}
			if a, _ := stockOf(t, s, "MUG"); a != tt.wantStock {
				t.Errorf("MUG available %d, want %d", a, tt.wantStock)
			}
			if err != nil {
				return
			}
			if got.Replayed != tt.replayed {
				t.Errorf("second import replayed %v, want %v", got.Replayed, tt.replayed)
			}
			if tt.replayed {
				got.Replayed = false
				if !reflect.DeepEqual(got, first) {
					t.Errorf("replayed summary %+v, want the first %+v", got, first)
				}
			}
		})
	}
}

// TestImportIDWithNothingToApply: an import whose records were all
// rejected on their own is kept under its id too, and answered the same.
func TestImportIDWithNothingToApply(t *testing.T) {
	s, _ := newService(t)
	bad := domain.StockRecord{Line: 2, SKU: "bad sku!", StockDelta: 1}
	first, err := importWithID(t, s, "imp-1", bad)
	if err != nil || first.Rejected != 1 {
		t.Fatalf("first import = %+v, %v", first, err)
	}
	again, err := importWithID(t, s, "imp-1", bad)
	if err != nil || !again.Replayed || again.Rejected != 1 {
		t.Fatalf("the same import again = %+v, %v; want it replayed", again, err)
	}
	if _, err := importWithID(t, s, "imp-1", domain.StockRecord{Line: 2, SKU: "MUG", StockDelta: 1}); !errors.Is(err, domain.ErrImportIDReused) {
		t.Fatalf("the id with another record = %v, want ErrImportIDReused", err)
	}
}

// TestImportIDRace: an import that found no earlier one under its id but
// lost the race to store it answers the winner's summary.
func TestImportIDRace(t *testing.T) {
	s, repo := newService(t)
	seed(t, s, map[string]int64{"MUG": 5})
	rec := domain.StockRecord{Line: 2, SKU: "MUG", StockDelta: 3}
	if _, err := importWithID(t, s, "imp-1", rec); err != nil {
		t.Fatal(err)
	}
	repo.missImportOnce = true // as if the first committed just after the second looked
	got, err := importWithID(t, s, "imp-1", rec)
	if err != nil || !got.Replayed || got.Applied != 1 {
		t.Fatalf("import losing the race = %+v, %v; want the first one's summary, replayed", got, err)
	}
	if a, _ := stockOf(t, s, "MUG"); a != 8 {
		t.Errorf("MUG available %d, want 8: applied once", a)
	}
}

func TestImportSetID(t *testing.T) {
	tests := []struct {
		name, id string
		wantErr  bool
	}{
		{"none", "", false},
		{"short", "a", false},
		{"128 characters", strings.Repeat("é", 128), false},
		{"129 characters", strings.Repeat("é", 129), true},
		{"NUL", "a\x00b", true},
		{"not UTF-8", "a\xffb", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, _ := newService(t)
			err := s.NewImport().SetID(tt.id)
			var invalid *domain.ValidationError
			if tt.wantErr != (err != nil) || (err != nil && (!errors.As(err, &invalid) || invalid.Field != "import_id")) {
				t.Fatalf("SetID(%q) = %v, want an error on import_id: %v", tt.id, err, tt.wantErr)
			}
		})
	}
	s, _ := newService(t)
	imp := s.NewImport()
	if err := imp.Add(domain.StockRecord{SKU: "MUG"}); err != nil {
		t.Fatal(err)
	}
	if err := imp.SetID("late"); err == nil {
		t.Fatal("SetID after a record succeeded")
	}
}
