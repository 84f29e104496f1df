package domain

import (
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// Reasons a stock import rejects a record with (ImportRejection.reason).
// Published: never change them.
const (
	// RejectInvalidSKU: the sku is empty or not 1 to 64 letters, digits,
	// '-' or '_'.
	RejectInvalidSKU = "INVALID_SKU"
	// RejectInvalidName: the name is too long, not UTF-8 or holds control
	// characters.
	RejectInvalidName = "INVALID_NAME"
	// RejectInvalidPrice: the price has a malformed currency or is not
	// more than zero (or above the maximum).
	RejectInvalidPrice = "INVALID_PRICE"
	// RejectInvalidStock: the stock change is larger than MaxStock either way.
	RejectInvalidStock = "INVALID_STOCK"
	// RejectInvalidRecord: the record breaks a rule of the contract not
	// covered by a more specific reason.
	RejectInvalidRecord = "INVALID_RECORD"
	// RejectUnknownProduct: the record changes only stock, of a sku that
	// has no product (usually a typo in the sku).
	RejectUnknownProduct = "UNKNOWN_PRODUCT"
	// RejectMissingName: the record creates a product but has no name.
	RejectMissingName = "MISSING_NAME"
	// RejectMissingPrice: the record creates a product but has no price.
	RejectMissingPrice = "MISSING_PRICE"
	// RejectCurrencyMismatch: the record's price is in another currency
	// than the product's; a product's currency never changes.
	RejectCurrencyMismatch = "CURRENCY_MISMATCH"
	// RejectStockBelowZero: the stock change would take the available
	// units below zero.
	RejectStockBelowZero = "STOCK_BELOW_ZERO"
	// RejectStockAboveLimit: the stock change adds units and would take
	// the available units above MaxStock.
	RejectStockAboveLimit = "STOCK_ABOVE_LIMIT"
)

// Import limits.
const (
	// DefaultImportLimit is how many records one import buffers at most.
	DefaultImportLimit = 100_000
	// MaxRejections is how many rejections a summary lists; the counts
	// stay exact beyond it.
	MaxRejections = 1000
)

// StockRecord is one record of a stock import.
type StockRecord struct {
	// Line is the record's line in the client's file, echoed in rejections.
	Line int64
	// SKU names the product; a new sku creates it.
	SKU string
	// Name is the new display name; empty keeps the current one.
	Name string
	// Price is the new price; nil keeps the current one.
	Price *Money
	// StockDelta is added to the available units (negative removes).
	StockDelta int64
}

// Rejection says why one record was not applied.
type Rejection struct {
	// Line and SKU are the record's, as sent; a sku longer than MaxSKULen
	// bytes is cut there and ends in "…".
	Line int64
	SKU  string
	// Reason is one of the Reject… constants.
	Reason string
	// Message says what is wrong, for a human.
	Message string
}

// ImportSummary is the outcome of an import. Received = Applied + Rejected.
type ImportSummary struct {
	// Received counts the records the import took, Applied those applied
	// and Rejected those rejected.
	Received, Applied, Rejected int64
	// Rejections lists the first MaxRejections rejections in the order the
	// records were received.
	Rejections []Rejection
	// Replayed reports that an earlier import with the same id applied
	// the records and this is its summary: nothing was applied now.
	Replayed bool
	// ImportID is the import's id, "" when it had none.
	ImportID string
}

// MaxImportIDLen bounds an import id, in characters.
const MaxImportIDLen = 128

// Import collects the records of one stock import and applies them at once.
//
// Records are checked twice. Add checks each on its own (sku, name, price,
// size of the stock change) and rejects the bad ones right away. Apply then
// runs the remaining records in one transaction, sku by sku in the order
// they were received, against the stored product and the records before
// them: a new sku needs a name and a price, a currency never changes, stock
// never goes below 0 and is not added to beyond MaxStock. A record that
// fails is rejected and leaves the product as the records before it left
// it. Records for the same sku accumulate: two records adding 5 add 10.
//
// An Import is not safe for concurrent use; one gRPC stream owns it.
type Import struct {
	repo  Repository
	now   func() time.Time
	limit int64

	received int64
	seq      int64
	// early holds the first MaxRejections rejections Add made;
	// earlyCount counts them all.
	early      []sequenced
	earlyCount int64
	// pending holds the records Add accepted, by sku, in order.
	pending map[string][]sequenced
	done    bool
	// id is the import's id ("" when it has none); digest hashes every
	// record taken, in order, for the fingerprint stored with it.
	id     string
	digest hash.Hash
}

// sequenced is a record or a rejection with the order its record arrived in.
type sequenced struct {
	seq       int64
	record    StockRecord
	rejection Rejection
}

// Add takes the next record of the import. A record that is bad on its own
// is rejected at once; the others wait for Apply. Add fails only with
// ErrImportTooLarge, when the import already holds its limit of records;
// the import must then be abandoned.
func (imp *Import) Add(rec StockRecord) error {
	if err := imp.count(rec); err != nil {
		return err
	}
	if reason, msg := checkRecord(&rec); reason != "" {
		imp.reject(rec, reason, msg)
		return nil
	}
	if imp.pending == nil {
		imp.pending = make(map[string][]sequenced)
	}
	imp.pending[rec.SKU] = append(imp.pending[rec.SKU], sequenced{seq: imp.seq, record: rec})
	return nil
}

// Reject takes the next record of the import and rejects it with reason,
// for records an adapter already knows to be bad (one that broke the
// contract's own rules, say). Add's checks still run first, so the record
// gets their more specific reason when one applies. It fails like Add.
func (imp *Import) Reject(rec StockRecord, reason, message string) error {
	if err := imp.count(rec); err != nil {
		return err
	}
	if r, msg := checkRecord(&rec); r != "" {
		reason, message = r, msg
	}
	imp.reject(rec, reason, message)
	return nil
}

// count counts one more record received, rec, or fails when that is one
// too many.
func (imp *Import) count(rec StockRecord) error {
	if imp.done {
		return errors.New("stock import already applied")
	}
	if imp.received >= imp.limit {
		return ErrImportTooLarge
	}
	imp.received++
	imp.seq++
	if imp.digest != nil {
		writeRecord(imp.digest, rec)
	}
	return nil
}

// SetID makes the import idempotent under id: Apply then applies it only
// if no import the store still keeps (the service forgets them after its
// retention) was applied under id before, and otherwise answers that
// one's summary (or ErrImportIDReused, when its records were others: the
// same records are the same fields, line numbers and order). Call it once,
// before the first record; an empty id leaves the import without one.
func (imp *Import) SetID(id string) error {
	switch {
	case imp.received > 0 || imp.done:
		return errors.New("stock import: the id is set before the first record")
	case id == "":
		return nil
	case utf8.RuneCountInString(id) > MaxImportIDLen || !utf8.ValidString(id) || strings.ContainsRune(id, 0):
		return &ValidationError{Field: "import_id", Description: fmt.Sprintf("must be 1 to %d characters of UTF-8, without NUL", MaxImportIDLen)}
	}
	imp.id, imp.digest = id, sha256.New()
	return nil
}

// ID returns the import's id, "" when it has none.
func (imp *Import) ID() string { return imp.id }

// writeRecord writes rec to h, each field length-prefixed so that no two
// different records write the same bytes.
func writeRecord(h hash.Hash, rec StockRecord) {
	price := "-"
	if rec.Price != nil {
		price = rec.Price.Currency + " " + strconv.FormatInt(rec.Price.Units, 10)
	}
	for _, f := range []string{strconv.FormatInt(rec.Line, 10), rec.SKU, rec.Name, price, strconv.FormatInt(rec.StockDelta, 10)} {
		fmt.Fprintf(h, "%d:%s;", len(f), f)
	}
}

func (imp *Import) reject(rec StockRecord, reason, message string) {
	imp.earlyCount++
	if len(imp.early) < MaxRejections {
		imp.early = append(imp.early, sequenced{seq: imp.seq, rejection: rejection(rec, reason, message)})
	}
}

// rejection says why rec was not applied, echoing its sku with EchoSKU.
func rejection(rec StockRecord, reason, message string) Rejection {
	return Rejection{Line: rec.Line, SKU: EchoSKU(rec.SKU), Reason: reason, Message: message}
}

// EchoSKU is sku as a rejection echoes it: at most MaxSKULen bytes, cut at
// a character's start, then "…". An invalid sku can be megabytes long, and
// the summary of a thousand such rejections has to fit in memory and in the
// reply that follows an import already applied.
func EchoSKU(sku string) string {
	if len(sku) <= MaxSKULen {
		return sku
	}
	n := MaxSKULen
	for n > 0 && !utf8.RuneStart(sku[n]) {
		n--
	}
	return sku[:n] + "…"
}

// Received returns how many records the import has taken so far.
func (imp *Import) Received() int64 { return imp.received }

// checkRecord checks what can be checked of rec without the stored product
// and normalises its name. It returns a rejection reason and message, or
// "" when rec is fine so far.
func checkRecord(rec *StockRecord) (reason, message string) {
	if err := CheckSKU("sku", rec.SKU); err != nil {
		return RejectInvalidSKU, err.Error()
	}
	if rec.Name != "" {
		name, err := NormalizeName("name", rec.Name)
		if err != nil {
			return RejectInvalidName, err.Error()
		}
		rec.Name = name
	}
	if rec.Price != nil {
		if err := CheckPrice("price", *rec.Price); err != nil {
			return RejectInvalidPrice, err.Error()
		}
	}
	if rec.StockDelta < -MaxStock || rec.StockDelta > MaxStock {
		return RejectInvalidStock, fmt.Sprintf("invalid stock_delta: must be between %d and %d", -MaxStock, MaxStock)
	}
	return "", ""
}

// Apply applies every record Add accepted, in one transaction, and returns
// the summary of the whole import. When it fails nothing was applied. An
// Import is applied at most once, and an import with an id (SetID) at most
// once per id while the store keeps the id: when one was applied under it
// before, Apply applies
// nothing and returns that one's summary, Replayed, or ErrImportIDReused
// when its records were others.
func (imp *Import) Apply(ctx context.Context) (ImportSummary, error) {
	if imp.done {
		return ImportSummary{}, errors.New("stock import already applied")
	}
	imp.done = true
	var fingerprint string
	if imp.id != "" {
		// Versioned, so that a change to what is hashed can tell the
		// fingerprints stored before it.
		fingerprint = "v1:" + hex.EncodeToString(imp.digest.Sum(nil))
		if sum, err := imp.replay(ctx, fingerprint); !errors.Is(err, ErrImportNotFound) {
			return sum, err
		}
	}
	sum, err := imp.apply(ctx, fingerprint)
	if errors.Is(err, ErrImportIDTaken) {
		// A concurrent import with the id committed first.
		return imp.replay(ctx, fingerprint)
	}
	return sum, err
}

// replay returns the summary of the import stored under imp's id,
// Replayed, or ErrImportIDReused when its records were others, or
// ErrImportNotFound.
func (imp *Import) replay(ctx context.Context, fingerprint string) (ImportSummary, error) {
	prior, err := imp.repo.ImportByID(ctx, imp.id)
	switch {
	case err != nil:
		return ImportSummary{}, err
	case prior.Fingerprint != fingerprint:
		return ImportSummary{}, ErrImportIDReused
	}
	prior.Summary.Replayed = true
	return prior.Summary, nil
}

// apply applies the import, storing it under its id, if any, with
// fingerprint.
func (imp *Import) apply(ctx context.Context, fingerprint string) (ImportSummary, error) {
	skus := make([]string, 0, len(imp.pending))
	for sku := range imp.pending {
		skus = append(skus, sku)
	}
	slices.Sort(skus)

	var (
		applied int64
		late    []sequenced
	)
	// With an id the import is stored even when no record is left to
	// apply, so that sending it again is answered the same.
	if len(skus) == 0 && imp.id == "" {
		return imp.summary(0, nil), nil
	}
	err := retryConflicts(ctx, func() error {
		// A retry starts over: the stored products may have changed.
		applied, late = 0, late[:0]
		now := Timestamp(imp.now())
		var record func() StoredImport
		if imp.id != "" {
			record = func() StoredImport {
				return StoredImport{ID: imp.id, Fingerprint: fingerprint, Summary: imp.summary(applied, late), CreateTime: now}
			}
		}
		return imp.repo.ApplyStock(ctx, skus, func(sku string, current *Product) (*Product, error) {
			next, n, rejected := applyRecords(current, imp.pending[sku], now)
			applied += n
			late = append(late, rejected...)
			return next, nil
		}, record)
	})
	if err != nil {
		return ImportSummary{}, err
	}
	return imp.summary(applied, late), nil
}

// summary sums the import up, given how many records applied and the
// records rejected while applying.
func (imp *Import) summary(applied int64, late []sequenced) ImportSummary {
	all := append(slices.Clone(imp.early), late...)
	slices.SortFunc(all, func(a, b sequenced) int { return cmp.Compare(a.seq, b.seq) })
	sum := ImportSummary{
		ImportID:   imp.id,
		Received:   imp.received,
		Applied:    applied,
		Rejected:   imp.earlyCount + int64(len(late)),
		Rejections: make([]Rejection, 0, min(len(all), MaxRejections)),
	}
	for _, r := range all[:min(len(all), MaxRejections)] {
		sum.Rejections = append(sum.Rejections, r.rejection)
	}
	return sum
}

// applyRecords runs records, all for one sku, against current (nil when the
// product does not exist). It returns the product to store (nil when
// nothing changed), how many records applied, and the rejected ones.
func applyRecords(current *Product, records []sequenced, now time.Time) (*Product, int64, []sequenced) {
	var (
		next     *Product
		applied  int64
		rejected []sequenced
	)
	if current != nil {
		p := *current
		next = &p
	}
	for _, r := range records {
		rec := r.record
		reason, msg := applyRecord(&next, rec, now)
		if reason != "" {
			r.rejection = rejection(rec, reason, msg)
			rejected = append(rejected, r)
			continue
		}
		applied++
	}
	if next == nil || current != nil && sameProduct(*current, *next) {
		return nil, applied, rejected
	}
	if current != nil && now.After(current.UpdateTime) {
		next.UpdateTime = now
	}
	return next, applied, rejected
}

// applyRecord applies rec to *p (nil when the product does not exist yet),
// or returns why it cannot and leaves *p alone.
func applyRecord(p **Product, rec StockRecord, now time.Time) (reason, message string) {
	if *p == nil {
		switch {
		case rec.Name == "" && rec.Price == nil:
			return RejectUnknownProduct, fmt.Sprintf("no product has sku %q; to create it give a name and a price", rec.SKU)
		case rec.Name == "":
			return RejectMissingName, "a new product needs a name"
		case rec.Price == nil:
			return RejectMissingPrice, "a new product needs a price"
		case rec.StockDelta < 0:
			return RejectStockBelowZero, fmt.Sprintf("a new product cannot start with %d units", rec.StockDelta)
		}
		*p = &Product{SKU: rec.SKU, Name: rec.Name, Price: *rec.Price, Available: rec.StockDelta,
			CreateTime: now, UpdateTime: now}
		return "", ""
	}
	cur := *p
	if rec.Price != nil && rec.Price.Currency != cur.Price.Currency {
		return RejectCurrencyMismatch, fmt.Sprintf("price is in %s but the product is priced in %s", rec.Price.Currency, cur.Price.Currency)
	}
	available := cur.Available + rec.StockDelta
	switch {
	case available < 0:
		return RejectStockBelowZero, fmt.Sprintf("removing %d units from %d available would leave %d", -rec.StockDelta, cur.Available, available)
	case rec.StockDelta > 0 && available > MaxStock:
		// Only what an import adds is bounded: a released reservation can
		// leave more than MaxStock available, and removing some of it, or
		// renaming the product, must still go through.
		return RejectStockAboveLimit, fmt.Sprintf("adding %d units to %d available would exceed %d", rec.StockDelta, cur.Available, MaxStock)
	}
	cur.Available = available
	if rec.Name != "" {
		cur.Name = rec.Name
	}
	if rec.Price != nil {
		cur.Price = *rec.Price
	}
	return "", ""
}

// sameProduct reports whether a and b differ in nothing an import changes.
func sameProduct(a, b Product) bool {
	return a.Name == b.Name && a.Price == b.Price && a.Available == b.Available
}
