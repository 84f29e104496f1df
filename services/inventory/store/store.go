// Package store keeps products and reservations in SQL (SQLite or
// PostgreSQL, through kit/sqldb) and implements domain.Repository.
//
// Stock never goes below zero because every decrement is a guarded UPDATE
// whose WHERE clause re-checks the count in the statement that changes it:
//
//	UPDATE products SET available = available - ?, reserved = reserved + ?
//	WHERE sku = ? AND available >= ?
//
// A row count of zero means the stock was not there (or the product is
// missing), and the transaction rolls back whole. SQLite runs one
// transaction at a time; on PostgreSQL, concurrent updates of one row queue
// on its row lock and each re-evaluates the WHERE clause against the row as
// the previous one left it, so the guard holds across connections too. The
// schema's CHECK constraints refuse negative counts as a last line of
// defence. Rows are always updated in sku order, so two transactions
// touching the same products cannot deadlock each other.
package store

import (
	"cmp"
	"context"
	"database/sql"
	"embed"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/duetkit/duet/kit/sqldb"
	"github.com/duetkit/duet/services/inventory/domain"
)

//go:embed migrations/*.sql
var migrations embed.FS

// Migrations returns the goose migrations that create the store's tables,
// for sqldb.Open.
func Migrations() fs.FS {
	sub, err := fs.Sub(migrations, "migrations")
	if err != nil {
		panic(err) // the directory is embedded above; cannot happen
	}
	return sub
}

// MigrationTable is the goose version table of the inventory service, so it
// can share a database with other services.
const MigrationTable = "inventory_goose_db_version"

// Open opens the database at url and brings its schema up to date.
func Open(ctx context.Context, url string, opts ...sqldb.Option) (*sqldb.DB, error) {
	opts = append([]sqldb.Option{sqldb.WithMigrationTable(MigrationTable)}, opts...)
	return sqldb.Open(ctx, url, Migrations(), opts...)
}

// lookupChunk bounds the skus one IN (…) list carries, well under both
// dialects' limits on bound parameters.
const lookupChunk = 500

// Store is the SQL inventory repository.
type Store struct {
	db *sqldb.DB
	// byteOrder makes an ORDER BY sku sort by bytes on PostgreSQL, as Go's
	// string comparison does (bySKU) and SQLite's BINARY collation: rows
	// are locked in the order they are sorted, and a database collated
	// en_US or ICU (a, A_1, A-1, B rather than A-1, A_1, B, a) would lock
	// an import's products in another order than a reservation's, so the
	// two could deadlock.
	byteOrder string
	// forUpdate locks the rows a SELECT reads on PostgreSQL. SQLite
	// transactions already hold the database's write lock (BEGIN
	// IMMEDIATE), so there it is empty.
	forUpdate string

	insertProduct, getProduct, listProducts, listProductsAfter         string
	reserve, commit, release, availableOf                              string
	insertReservation, getReservation, getLines, insertLine, setStatus string
}

var _ domain.Repository = (*Store)(nil)

const productColumns = "sku, name, currency, price_units, available, reserved, create_time, update_time"

// newer keeps update_time from moving backwards when a clock steps back:
// "update_time = " + newer takes the later of the stored time and the
// bound one (the argument is given twice).
const newer = "CASE WHEN update_time > ? THEN update_time ELSE ? END"

// New returns a Store over db, whose schema Open has migrated.
func New(db *sqldb.DB) *Store {
	s := &Store{db: db}
	if db.Dialect == sqldb.Postgres {
		s.forUpdate = " FOR UPDATE"
		s.byteOrder = ` COLLATE "C"`
	}
	r := db.Rebind
	s.insertProduct = r("INSERT INTO products (" + productColumns + ") VALUES (?, ?, ?, ?, ?, ?, ?, ?)")
	s.getProduct = r("SELECT " + productColumns + " FROM products WHERE sku = ?")
	s.listProducts = r("SELECT " + productColumns + " FROM products ORDER BY sku LIMIT ?")
	s.listProductsAfter = r("SELECT " + productColumns + " FROM products WHERE sku > ? ORDER BY sku LIMIT ?")
	// The stock moves, each guarded in its own WHERE clause.
	s.reserve = r("UPDATE products SET available = available - ?, reserved = reserved + ?, update_time = " + newer +
		" WHERE sku = ? AND available >= ?")
	s.commit = r("UPDATE products SET reserved = reserved - ?, update_time = " + newer +
		" WHERE sku = ? AND reserved >= ?")
	s.release = r("UPDATE products SET available = available + ?, reserved = reserved - ?, update_time = " + newer +
		" WHERE sku = ? AND reserved >= ?")
	s.availableOf = r("SELECT available FROM products WHERE sku = ?")
	// ON CONFLICT DO NOTHING (SQLite ≥ 3.24, PostgreSQL ≥ 9.5): on
	// PostgreSQL a racing insert of the same order waits for the first to
	// commit or roll back, then inserts nothing or inserts itself.
	s.insertReservation = r("INSERT INTO reservations (order_id, status, create_time, update_time) VALUES (?, ?, ?, ?)" +
		" ON CONFLICT (order_id) DO NOTHING")
	s.getReservation = r("SELECT status, create_time, update_time FROM reservations WHERE order_id = ?")
	s.getLines = r("SELECT sku, quantity FROM reservation_lines WHERE order_id = ? ORDER BY position")
	s.insertLine = r("INSERT INTO reservation_lines (order_id, position, sku, quantity) VALUES (?, ?, ?, ?)")
	s.setStatus = r("UPDATE reservations SET status = ?, update_time = ? WHERE order_id = ?")
	return s
}

// CreateProduct stores a new product; a taken sku is domain.ErrSKUTaken.
func (s *Store) CreateProduct(ctx context.Context, p domain.Product) error {
	_, err := s.db.ExecContext(ctx, s.insertProduct, productArgs(p)...)
	if sqldb.IsUniqueViolation(err) {
		return domain.ErrSKUTaken
	}
	if err != nil {
		return fmt.Errorf("store: insert product: %w", err)
	}
	return nil
}

func productArgs(p domain.Product) []any {
	return []any{p.SKU, p.Name, p.Price.Currency, p.Price.Units, p.Available, p.Reserved,
		p.CreateTime.UnixMicro(), p.UpdateTime.UnixMicro()}
}

// Product returns the product with sku, or domain.ErrProductNotFound.
func (s *Store) Product(ctx context.Context, sku string) (domain.Product, error) {
	p, err := scanProduct(s.db.QueryRowContext(ctx, s.getProduct, sku))
	if errors.Is(err, sql.ErrNoRows) {
		return domain.Product{}, domain.ErrProductNotFound
	}
	return p, err
}

// Products returns the products with the given skus, keyed by sku.
func (s *Store) Products(ctx context.Context, skus []string) (map[string]domain.Product, error) {
	found := make(map[string]domain.Product, len(skus))
	for chunk := range slices.Chunk(skus, lookupChunk) {
		if err := s.lookup(ctx, s.db, chunk, "", found); err != nil {
			return nil, err
		}
	}
	return found, nil
}

// queryer is what both *sql.DB and *sql.Tx offer.
type queryer interface {
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
}

// lookup adds the products among skus to found, reading them with suffix
// (such as FOR UPDATE) appended to the query.
func (s *Store) lookup(ctx context.Context, q queryer, skus []string, suffix string, found map[string]domain.Product) error {
	args := make([]any, len(skus))
	for i, sku := range skus {
		args[i] = sku
	}
	query := s.db.Rebind("SELECT " + productColumns + " FROM products WHERE sku IN (?" +
		strings.Repeat(", ?", len(skus)-1) + ") ORDER BY sku" + s.byteOrder + suffix)
	rows, err := q.QueryContext(ctx, query, args...)
	if err != nil {
		return fmt.Errorf("store: read products: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		p, err := scanProduct(rows)
		if err != nil {
			return err
		}
		found[p.SKU] = p
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("store: read products: %w", err)
	}
	return nil
}

// ListProducts returns up to limit products with a sku after afterSKU, in
// sku order: the database's collation order for TEXT, which is byte order
// on SQLite and on PostgreSQL databases with the C (or C.UTF-8) collation.
func (s *Store) ListProducts(ctx context.Context, afterSKU string, limit int) ([]domain.Product, error) {
	var (
		rows *sql.Rows
		err  error
	)
	if afterSKU == "" {
		rows, err = s.db.QueryContext(ctx, s.listProducts, limit)
	} else {
		rows, err = s.db.QueryContext(ctx, s.listProductsAfter, afterSKU, limit)
	}
	if err != nil {
		return nil, fmt.Errorf("store: list products: %w", err)
	}
	defer rows.Close()
	products := make([]domain.Product, 0, limit)
	for rows.Next() {
		p, err := scanProduct(rows)
		if err != nil {
			return nil, err
		}
		products = append(products, p)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("store: list products: %w", err)
	}
	return products, nil
}

// Reserve records r and moves its quantities from available to reserved, or
// returns the order's existing reservation; see domain.Repository.
func (s *Store) Reserve(ctx context.Context, r domain.Reservation) (domain.Reservation, bool, error) {
	var (
		existing domain.Reservation
		existed  bool
	)
	err := s.db.InTx(ctx, func(tx *sql.Tx) error {
		// The reservation row goes first: it settles which of several
		// racing calls for one order moves stock.
		res, err := tx.ExecContext(ctx, s.insertReservation, r.OrderID, string(r.Status),
			r.CreateTime.UnixMicro(), r.UpdateTime.UnixMicro())
		if err != nil {
			return fmt.Errorf("store: insert reservation: %w", err)
		}
		if n, err := res.RowsAffected(); err != nil {
			return fmt.Errorf("store: insert reservation: %w", err)
		} else if n == 0 {
			existed = true
			existing, err = s.reservation(ctx, tx, r.OrderID, "")
			return err
		}
		if err := s.take(ctx, tx, r); err != nil {
			return err
		}
		for i, l := range r.Lines {
			if _, err := tx.ExecContext(ctx, s.insertLine, r.OrderID, i, l.SKU, l.Quantity); err != nil {
				return fmt.Errorf("store: insert reservation line: %w", err)
			}
		}
		return nil
	})
	if err != nil {
		return domain.Reservation{}, false, storeError(err)
	}
	if existed {
		return existing, true, nil
	}
	return r, false, nil
}

// take moves the quantities of r's lines from available to reserved, in sku
// order, each with a guarded UPDATE. When a line cannot be covered it keeps
// going without writing, to report every short or unknown sku at once; the
// caller's transaction then rolls back what was moved.
func (s *Store) take(ctx context.Context, tx *sql.Tx, r domain.Reservation) error {
	var (
		missing []domain.MissingProduct
		short   []domain.Shortage
	)
	now := r.UpdateTime.UnixMicro()
	for _, i := range bySKU(r.Lines) {
		l := r.Lines[i]
		if len(missing) == 0 && len(short) == 0 {
			res, err := tx.ExecContext(ctx, s.reserve, l.Quantity, l.Quantity, now, now, l.SKU, l.Quantity)
			if err != nil {
				return fmt.Errorf("store: reserve %s: %w", l.SKU, err)
			}
			if n, err := res.RowsAffected(); err != nil {
				return fmt.Errorf("store: reserve %s: %w", l.SKU, err)
			} else if n == 1 {
				continue
			}
		}
		// The guard held (or an earlier line failed): find out why.
		var available int64
		err := tx.QueryRowContext(ctx, s.availableOf, l.SKU).Scan(&available)
		switch {
		case errors.Is(err, sql.ErrNoRows):
			missing = append(missing, domain.MissingProduct{Index: i, SKU: l.SKU})
		case err != nil:
			return fmt.Errorf("store: read stock of %s: %w", l.SKU, err)
		case available < l.Quantity:
			short = append(short, domain.Shortage{Index: i, SKU: l.SKU, Requested: l.Quantity, Available: available})
		case len(missing) == 0 && len(short) == 0:
			// The guarded update of this very line failed, yet the stock is
			// there now: a concurrent release came in between (PostgreSQL).
			// Start over rather than report a shortage that is not one.
			return domain.ErrConflict
		}
	}
	if len(missing) > 0 {
		slices.SortFunc(missing, func(a, b domain.MissingProduct) int { return cmp.Compare(a.Index, b.Index) })
		return &domain.ProductsNotFoundError{Missing: missing}
	}
	if len(short) > 0 {
		slices.SortFunc(short, func(a, b domain.Shortage) int { return cmp.Compare(a.Index, b.Index) })
		return &domain.OutOfStockError{Shortages: short}
	}
	return nil
}

// bySKU returns the indexes of lines in sku order: the order rows are
// locked in, the same in every transaction, so none waits for another in a
// cycle.
func bySKU(lines []domain.Line) []int {
	idx := make([]int, len(lines))
	for i := range idx {
		idx[i] = i
	}
	slices.SortFunc(idx, func(a, b int) int { return cmp.Compare(lines[a].SKU, lines[b].SKU) })
	return idx
}

// UpdateReservation changes the reservation of orderID through fn and moves
// stock as fn says; see domain.Repository.
func (s *Store) UpdateReservation(ctx context.Context, orderID string, create *domain.Reservation,
	fn func(*domain.Reservation) (domain.StockMove, error)) (domain.Reservation, error) {
	var out domain.Reservation
	err := s.db.InTx(ctx, func(tx *sql.Tx) error {
		if create != nil {
			res, err := tx.ExecContext(ctx, s.insertReservation, orderID, string(create.Status),
				create.CreateTime.UnixMicro(), create.UpdateTime.UnixMicro())
			if err != nil {
				return fmt.Errorf("store: insert reservation: %w", err)
			}
			if n, err := res.RowsAffected(); err != nil {
				return fmt.Errorf("store: insert reservation: %w", err)
			} else if n == 1 {
				out = *create
				out.Lines = nil // a created reservation holds no stock
				return nil
			}
		}
		r, err := s.reservation(ctx, tx, orderID, s.forUpdate)
		if err != nil {
			return err
		}
		move, err := fn(&r)
		if err != nil {
			return err
		}
		if move != domain.MoveNone {
			if err := s.move(ctx, tx, r, move); err != nil {
				return err
			}
			if _, err := tx.ExecContext(ctx, s.setStatus, string(r.Status), r.UpdateTime.UnixMicro(), orderID); err != nil {
				return fmt.Errorf("store: update reservation: %w", err)
			}
		}
		out = r
		return nil
	})
	if err != nil {
		return domain.Reservation{}, storeError(err)
	}
	return out, nil
}

// move carries out a committed or released reservation's stock move, line
// by line in sku order, each guarded so reserved cannot go below zero.
func (s *Store) move(ctx context.Context, tx *sql.Tx, r domain.Reservation, move domain.StockMove) error {
	now := r.UpdateTime.UnixMicro()
	for _, i := range bySKU(r.Lines) {
		l := r.Lines[i]
		var (
			res sql.Result
			err error
		)
		switch move {
		case domain.MoveCommit:
			res, err = tx.ExecContext(ctx, s.commit, l.Quantity, now, now, l.SKU, l.Quantity)
		case domain.MoveRelease:
			res, err = tx.ExecContext(ctx, s.release, l.Quantity, l.Quantity, now, now, l.SKU, l.Quantity)
		default:
			return fmt.Errorf("store: unknown stock move %d", move)
		}
		if err != nil {
			return fmt.Errorf("store: move stock of %s: %w", l.SKU, err)
		}
		if n, err := res.RowsAffected(); err != nil {
			return fmt.Errorf("store: move stock of %s: %w", l.SKU, err)
		} else if n != 1 {
			// Reserved units always cover a live reservation's lines; if
			// they do not, the data is corrupt and nothing must be written.
			return fmt.Errorf("store: reservation %s: %s has fewer units reserved than the reservation holds", r.OrderID, l.SKU)
		}
	}
	return nil
}

// Reservation returns the reservation of orderID, or
// domain.ErrReservationNotFound.
func (s *Store) Reservation(ctx context.Context, orderID string) (domain.Reservation, error) {
	var out domain.Reservation
	// A transaction, so the lines are read from the same state as the status.
	err := s.db.InTx(ctx, func(tx *sql.Tx) error {
		var err error
		out, err = s.reservation(ctx, tx, orderID, "")
		return err
	})
	if err != nil {
		return domain.Reservation{}, storeError(err)
	}
	return out, nil
}

// reservation reads the reservation of orderID and its lines, with suffix
// (such as FOR UPDATE) appended to the read of the reservation row.
func (s *Store) reservation(ctx context.Context, tx *sql.Tx, orderID, suffix string) (domain.Reservation, error) {
	r := domain.Reservation{OrderID: orderID}
	var (
		status                 string
		createTime, updateTime int64
	)
	err := tx.QueryRowContext(ctx, s.getReservation+suffix, orderID).Scan(&status, &createTime, &updateTime)
	if errors.Is(err, sql.ErrNoRows) {
		return domain.Reservation{}, domain.ErrReservationNotFound
	}
	if err != nil {
		return domain.Reservation{}, fmt.Errorf("store: read reservation: %w", err)
	}
	r.Status = domain.ReservationStatus(status)
	r.CreateTime = time.UnixMicro(createTime).UTC()
	r.UpdateTime = time.UnixMicro(updateTime).UTC()
	rows, err := tx.QueryContext(ctx, s.getLines, orderID)
	if err != nil {
		return domain.Reservation{}, fmt.Errorf("store: read reservation lines: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var l domain.Line
		if err := rows.Scan(&l.SKU, &l.Quantity); err != nil {
			return domain.Reservation{}, fmt.Errorf("store: read reservation lines: %w", err)
		}
		r.Lines = append(r.Lines, l)
	}
	if err := rows.Err(); err != nil {
		return domain.Reservation{}, fmt.Errorf("store: read reservation lines: %w", err)
	}
	return r, nil
}

// ApplyStock runs fn over skus and stores what it returns, in one
// transaction; see domain.Repository.
func (s *Store) ApplyStock(ctx context.Context, skus []string,
	fn func(sku string, current *domain.Product) (*domain.Product, error), record func() domain.StoredImport) error {
	err := s.db.InTx(ctx, func(tx *sql.Tx) error {
		for chunk := range slices.Chunk(skus, lookupChunk) {
			// Lock the chunk's products (in sku order) before deciding on
			// them, so what fn sees is what its result replaces.
			found := make(map[string]domain.Product, len(chunk))
			if err := s.lookup(ctx, tx, chunk, s.forUpdate, found); err != nil {
				return err
			}
			var inserts, updates []domain.Product
			for _, sku := range chunk {
				var current *domain.Product
				if p, ok := found[sku]; ok {
					current = &p
				}
				next, err := fn(sku, current)
				switch {
				case err != nil:
					return err
				case next == nil:
				case current == nil:
					inserts = append(inserts, *next)
				default:
					updates = append(updates, *next)
				}
			}
			// One statement per chunk and kind: a large import costs a few
			// hundred round trips to the database, not one per product.
			if err := s.insertProducts(ctx, tx, inserts); err != nil {
				return err
			}
			if err := s.updateProducts(ctx, tx, updates); err != nil {
				return err
			}
		}
		if record != nil {
			return s.insertImport(ctx, tx, record())
		}
		return nil
	})
	return storeError(err)
}

// storedRejection is a domain.Rejection as stock_imports.rejections keeps
// it: the stored names do not follow the Go ones.
type storedRejection struct {
	Line    int64  `json:"line"`
	SKU     string `json:"sku"`
	Reason  string `json:"reason"`
	Message string `json:"message"`
}

// insertImport stores imp, or returns domain.ErrImportIDTaken.
func (s *Store) insertImport(ctx context.Context, tx *sql.Tx, imp domain.StoredImport) error {
	stored := make([]storedRejection, len(imp.Summary.Rejections))
	for i, r := range imp.Summary.Rejections {
		stored[i] = storedRejection(r)
	}
	rejections, err := json.Marshal(stored)
	if err != nil {
		return fmt.Errorf("store: encode the import's rejections: %w", err)
	}
	_, err = tx.ExecContext(ctx, s.db.Rebind(`INSERT INTO stock_imports
		(import_id, fingerprint, received, applied, rejected, rejections, create_time) VALUES (?, ?, ?, ?, ?, ?, ?)`),
		imp.ID, imp.Fingerprint, imp.Summary.Received, imp.Summary.Applied, imp.Summary.Rejected, string(rejections), imp.CreateTime.UnixMicro())
	if sqldb.IsUniqueViolation(err) {
		return domain.ErrImportIDTaken
	}
	if err != nil {
		return fmt.Errorf("store: insert import: %w", err)
	}
	return nil
}

// PurgeImports deletes up to limit of the imports applied before before,
// the oldest first, and returns how many it deleted: their ids are
// forgotten, so the same id sent again is a new import. inventory.Open
// runs it every minute for the service's Config.ImportRetention.
func (s *Store) PurgeImports(ctx context.Context, before time.Time, limit int) (int64, error) {
	res, err := s.db.ExecContext(ctx, s.db.Rebind(`DELETE FROM stock_imports WHERE import_id IN (
		SELECT import_id FROM stock_imports WHERE create_time < ?
		ORDER BY create_time LIMIT ?)`), before.UnixMicro(), limit)
	if err != nil {
		return 0, fmt.Errorf("store: purge imports: %w", err)
	}
	return res.RowsAffected()
}

// ImportByID implements domain.Repository.
func (s *Store) ImportByID(ctx context.Context, id string) (domain.StoredImport, error) {
	var (
		imp        = domain.StoredImport{ID: id, Summary: domain.ImportSummary{ImportID: id}}
		rejections string
		createTime int64
	)
	err := s.db.QueryRowContext(ctx, s.db.Rebind(`SELECT fingerprint, received, applied, rejected, rejections, create_time
		FROM stock_imports WHERE import_id = ?`), id).Scan(
		&imp.Fingerprint, &imp.Summary.Received, &imp.Summary.Applied, &imp.Summary.Rejected, &rejections, &createTime)
	if errors.Is(err, sql.ErrNoRows) {
		return domain.StoredImport{}, domain.ErrImportNotFound
	}
	if err != nil {
		return domain.StoredImport{}, fmt.Errorf("store: read import: %w", err)
	}
	var stored []storedRejection
	if err := json.Unmarshal([]byte(rejections), &stored); err != nil {
		return domain.StoredImport{}, fmt.Errorf("store: decode the import's rejections: %w", err)
	}
	imp.Summary.Rejections = make([]domain.Rejection, len(stored))
	for i, r := range stored {
		imp.Summary.Rejections[i] = domain.Rejection(r)
	}
	imp.CreateTime = time.UnixMicro(createTime).UTC()
	return imp, nil
}

// insertProducts inserts products with one multi-row INSERT.
func (s *Store) insertProducts(ctx context.Context, tx *sql.Tx, products []domain.Product) error {
	if len(products) == 0 {
		return nil
	}
	const row = "(?, ?, ?, ?, ?, ?, ?, ?)"
	args := make([]any, 0, 8*len(products))
	for _, p := range products {
		args = append(args, productArgs(p)...)
	}
	query := "INSERT INTO products (" + productColumns + ") VALUES " + row + strings.Repeat(", "+row, len(products)-1)
	_, err := tx.ExecContext(ctx, s.db.Rebind(query), args...)
	if sqldb.IsUniqueViolation(err) {
		// Another import created one of them since the lookup.
		return domain.ErrConflict
	}
	if err != nil {
		return fmt.Errorf("store: insert products: %w", err)
	}
	return nil
}

// updateProducts writes the name, price, available units and update time of
// products with one UPDATE … FROM (VALUES …), which both SQLite (3.33 and
// later) and PostgreSQL understand; a VALUES list names its columns
// column1, column2, … in both. The casts give PostgreSQL the column types
// it cannot infer from bare parameters.
func (s *Store) updateProducts(ctx context.Context, tx *sql.Tx, products []domain.Product) error {
	if len(products) == 0 {
		return nil
	}
	const row = "(?, ?, ?, CAST(? AS BIGINT), CAST(? AS BIGINT), CAST(? AS BIGINT))"
	args := make([]any, 0, 6*len(products))
	for _, p := range products {
		args = append(args, p.SKU, p.Name, p.Price.Currency, p.Price.Units, p.Available, p.UpdateTime.UnixMicro())
	}
	query := "UPDATE products SET name = v.column2, currency = v.column3, price_units = v.column4," +
		" available = v.column5, update_time = v.column6" +
		" FROM (VALUES " + row + strings.Repeat(", "+row, len(products)-1) + ") AS v" +
		" WHERE products.sku = v.column1"
	res, err := tx.ExecContext(ctx, s.db.Rebind(query), args...)
	if err != nil {
		return fmt.Errorf("store: update products: %w", err)
	}
	if n, err := res.RowsAffected(); err != nil {
		return fmt.Errorf("store: update products: %w", err)
	} else if n != int64(len(products)) {
		return fmt.Errorf("store: updated %d products, want %d", n, len(products))
	}
	return nil
}

// storeError turns PostgreSQL's "try again" failures (deadlock detected,
// serialisation failure) into domain.ErrConflict, which the domain retries.
func storeError(err error) error {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && (pgErr.Code == "40P01" || pgErr.Code == "40001") {
		return fmt.Errorf("%w: %w", domain.ErrConflict, err)
	}
	return err
}

// scanProduct reads one product row.
func scanProduct(row interface{ Scan(...any) error }) (domain.Product, error) {
	var (
		p                      domain.Product
		createTime, updateTime int64
	)
	err := row.Scan(&p.SKU, &p.Name, &p.Price.Currency, &p.Price.Units, &p.Available, &p.Reserved, &createTime, &updateTime)
	if errors.Is(err, sql.ErrNoRows) {
		return domain.Product{}, err
	}
	if err != nil {
		return domain.Product{}, fmt.Errorf("store: read product: %w", err)
	}
	p.CreateTime = time.UnixMicro(createTime).UTC()
	p.UpdateTime = time.UnixMicro(updateTime).UTC()
	return p, nil
}
