package inventory_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"go.uber.org/goleak"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	inventoryv1 "github.com/duetkit/duet/gen/duet/inventory/v1"
	typev1 "github.com/duetkit/duet/gen/duet/type/v1"
	"github.com/duetkit/duet/kit/apierr"
	"github.com/duetkit/duet/kit/apierr/apierrtest"
	"github.com/duetkit/duet/kit/pagetoken"
	"github.com/duetkit/duet/kit/server"
	"github.com/duetkit/duet/kit/server/servertest"
	"github.com/duetkit/duet/kit/sqldb/sqldbtest"
	"github.com/duetkit/duet/services/inventory"
	"github.com/duetkit/duet/services/inventory/domain"
	"github.com/duetkit/duet/services/inventory/store"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		// OpenTelemetry's process-wide worker is not ours.
		goleak.IgnoreTopFunction("go.opencensus.io/stats/view.(*worker).start"),
	)
}

// start opens the inventory service on the database at url, serves it
// through kit/server on a loopback port (with interceptors added closest to
// the handler) and returns a client over kit/client.
func start(t *testing.T, url string, interceptors ...grpc.StreamServerInterceptor) inventoryv1.InventoryServiceClient {
	t.Helper()
	return startConfig(t, inventory.Config{DatabaseURL: url}, interceptors...)
}

// startConfig is start with the service's whole configuration; its Logger
// is replaced by one that discards.
func startConfig(t *testing.T, cfg inventory.Config, interceptors ...grpc.StreamServerInterceptor) inventoryv1.InventoryServiceClient {
	t.Helper()
	logger := slog.New(slog.DiscardHandler)
	cfg.Logger = logger
	svc, err := inventory.Open(t.Context(), cfg)
	if err != nil {
		t.Fatalf("inventory.Open: %v", err)
	}
	t.Cleanup(func() { // after the server has drained: cleanups run last-in first-out
		if err := svc.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return inventoryv1.NewInventoryServiceClient(servertest.Start(t,
		server.Config{Name: "inventory", Logger: logger, StreamInterceptors: interceptors}, svc.Register))
}

// preconditions returns the subjects of err's PreconditionFailure
// violations of type typ.
func preconditions(err error, typ string) []string {
	var subjects []string
	for _, d := range status.Convert(err).Details() {
		if pf, ok := d.(*errdetails.PreconditionFailure); ok {
			for _, v := range pf.GetViolations() {
				if v.GetType() == typ {
					subjects = append(subjects, v.GetSubject())
				}
			}
		}
	}
	return subjects
}

func eur(units int64) *typev1.Money { return &typev1.Money{CurrencyCode: "EUR", Units: units} }

func createProduct(t *testing.T, c inventoryv1.InventoryServiceClient, sku string, stock int64) *inventoryv1.Product {
	t.Helper()
	resp, err := c.CreateProduct(t.Context(), &inventoryv1.CreateProductRequest{Sku: sku, Name: "Product " + sku, Price: eur(500), Stock: stock})
	if err != nil {
		t.Fatalf("CreateProduct(%s): %v", sku, err)
	}
	return resp.GetProduct()
}

func getProduct(t *testing.T, c inventoryv1.InventoryServiceClient, sku string) *inventoryv1.Product {
	t.Helper()
	resp, err := c.GetProduct(t.Context(), &inventoryv1.GetProductRequest{Sku: sku})
	if err != nil {
		t.Fatalf("GetProduct(%s): %v", sku, err)
	}
	return resp.GetProduct()
}

func TestProducts(t *testing.T) {
	sqldbtest.Run(t, func(t *testing.T, url string) {
		c := start(t, url)
		ctx := t.Context()
		mug := createProduct(t, c, "MUG", 4)
		if mug.GetSku() != "MUG" || mug.GetName() != "Product MUG" || mug.GetPrice().GetUnits() != 500 ||
			mug.GetAvailable() != 4 || mug.GetReserved() != 0 || mug.GetCreateTime() == nil ||
			!mug.GetCreateTime().AsTime().Equal(mug.GetUpdateTime().AsTime()) {
			t.Fatalf("created %v", mug)
		}
		createProduct(t, c, "CUP", 1)

		tests := []struct {
			name   string
			call   func() error
			code   codes.Code
			reason string
			field  string
		}{
			{name: "create taken", code: codes.AlreadyExists, reason: "SKU_TAKEN", field: "sku", call: func() error {
				_, err := c.CreateProduct(ctx, &inventoryv1.CreateProductRequest{Sku: "MUG", Name: "Mug", Price: eur(1)})
				return err
			}},
			{name: "create bad sku", code: codes.InvalidArgument, reason: apierr.ReasonInvalidArgument, field: "sku", call: func() error {
				_, err := c.CreateProduct(ctx, &inventoryv1.CreateProductRequest{Sku: "a b", Name: "Mug", Price: eur(1)})
				return err
			}},
			{name: "create free", code: codes.InvalidArgument, reason: apierr.ReasonInvalidArgument, field: "price.units", call: func() error {
				_, err := c.CreateProduct(ctx, &inventoryv1.CreateProductRequest{Sku: "FREE", Name: "Free", Price: eur(0)})
				return err
			}},
			{name: "create without price", code: codes.InvalidArgument, reason: apierr.ReasonInvalidArgument, field: "price", call: func() error {
				_, err := c.CreateProduct(ctx, &inventoryv1.CreateProductRequest{Sku: "NOPRICE", Name: "No price"})
				return err
			}},
			{name: "create negative stock", code: codes.InvalidArgument, reason: apierr.ReasonInvalidArgument, field: "stock", call: func() error {
				_, err := c.CreateProduct(ctx, &inventoryv1.CreateProductRequest{Sku: "NEG", Name: "Neg", Price: eur(1), Stock: -1})
				return err
			}},
			{name: "get missing", code: codes.NotFound, reason: "PRODUCT_NOT_FOUND", call: func() error {
				_, err := c.GetProduct(ctx, &inventoryv1.GetProductRequest{Sku: "NOPE"})
				if got := apierr.Info(err).GetMetadata()["sku"]; got != "NOPE" {
					t.Errorf("metadata sku = %q, want NOPE", got)
				}
				return err
			}},
			{name: "get bad sku", code: codes.InvalidArgument, reason: apierr.ReasonInvalidArgument, field: "sku", call: func() error {
				_, err := c.GetProduct(ctx, &inventoryv1.GetProductRequest{Sku: "x/y"})
				return err
			}},
			{name: "batch in request order", code: codes.OK, call: func() error {
				resp, err := c.BatchGetProducts(ctx, &inventoryv1.BatchGetProductsRequest{Skus: []string{"MUG", "CUP"}})
				if err == nil && (len(resp.GetProducts()) != 2 || resp.GetProducts()[0].GetSku() != "MUG" || resp.GetProducts()[1].GetSku() != "CUP") {
					return fmt.Errorf("BatchGetProducts = %v", resp.GetProducts())
				}
				return err
			}},
			{name: "batch with unknown sku", code: codes.NotFound, reason: "PRODUCT_NOT_FOUND", field: "skus[1]", call: func() error {
				_, err := c.BatchGetProducts(ctx, &inventoryv1.BatchGetProductsRequest{Skus: []string{"CUP", "GHOST", "MUG"}})
				if got := apierr.Info(err).GetMetadata()["sku"]; got != "GHOST" {
					t.Errorf("metadata sku = %q, want GHOST", got)
				}
				return err
			}},
			{name: "batch with a sku twice", code: codes.InvalidArgument, reason: apierr.ReasonInvalidArgument, field: "skus", call: func() error {
				_, err := c.BatchGetProducts(ctx, &inventoryv1.BatchGetProductsRequest{Skus: []string{"CUP", "CUP"}})
				return err
			}},
			{name: "list bad token", code: codes.InvalidArgument, reason: apierr.ReasonInvalidArgument, field: "page_token", call: func() error {
				_, err := c.ListProducts(ctx, &inventoryv1.ListProductsRequest{PageToken: "garbage"})
				return err
			}},
			// A well-formed token with a NUL in its sku: PostgreSQL fails
			// any query given one (INTERNAL), so it must not get that far.
			{name: "list forged token", code: codes.InvalidArgument, reason: apierr.ReasonInvalidArgument, field: "page_token", call: func() error {
				tok := pagetoken.Encode(pagetoken.Cursor{Scope: "products", ID: "CUP\x00"})
				_, err := c.ListProducts(ctx, &inventoryv1.ListProductsRequest{PageToken: tok})
				return err
			}},
			{name: "list bad page size", code: codes.InvalidArgument, reason: apierr.ReasonInvalidArgument, field: "page_size", call: func() error {
				_, err := c.ListProducts(ctx, &inventoryv1.ListProductsRequest{PageSize: 101})
				return err
			}},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) { apierrtest.Check(t, tt.call(), tt.code, tt.reason, tt.field) })
		}
	})
}

func TestListProductsPages(t *testing.T) {
	sqldbtest.Run(t, func(t *testing.T, url string) {
		c := start(t, url)
		var want []string
		for i := range 25 {
			sku := fmt.Sprintf("SKU-%02d", 24-i) // created out of sku order
			createProduct(t, c, sku, 1)
			want = append(want, sku)
		}
		slices.Sort(want)
		for _, tt := range []struct {
			pageSize  int32
			wantSizes []int
		}{
			{pageSize: 0, wantSizes: []int{20, 5}},
			{pageSize: 7, wantSizes: []int{7, 7, 7, 4}},
			{pageSize: 25, wantSizes: []int{25}},
		} {
			t.Run(fmt.Sprint("page size ", tt.pageSize), func(t *testing.T) {
				var (
					got   []string
					sizes []int
					tok   string
				)
				for range 10 {
					resp, err := c.ListProducts(t.Context(), &inventoryv1.ListProductsRequest{PageSize: tt.pageSize, PageToken: tok})
					if err != nil {
						t.Fatal(err)
					}
					sizes = append(sizes, len(resp.GetProducts()))
					for _, p := range resp.GetProducts() {
						got = append(got, p.GetSku())
					}
					if tok = resp.GetNextPageToken(); tok == "" {
						break
					}
				}
				if !slices.Equal(sizes, tt.wantSizes) || !slices.Equal(got, want) {
					t.Errorf("pages %v of %v; want pages %v of %v", sizes, got, tt.wantSizes, want)
				}
			})
		}
	})
}

func line(sku string, qty int32) *inventoryv1.StockLine {
	return &inventoryv1.StockLine{Sku: sku, Quantity: qty}
}

func TestReservations(t *testing.T) {
	sqldbtest.Run(t, func(t *testing.T, url string) {
		c := start(t, url)
		ctx := t.Context()
		createProduct(t, c, "A", 10)
		createProduct(t, c, "B", 3)
		sold, released, ghost := uuid.NewString(), uuid.NewString(), uuid.NewString()
		reserve := func(id string, lines ...*inventoryv1.StockLine) (*inventoryv1.Reservation, error) {
			resp, err := c.ReserveStock(ctx, &inventoryv1.ReserveStockRequest{OrderId: id, Lines: lines})
			return resp.GetReservation(), err
		}
		commit := func(id string) (*inventoryv1.Reservation, error) {
			resp, err := c.CommitStock(ctx, &inventoryv1.CommitStockRequest{OrderId: id})
			return resp.GetReservation(), err
		}
		release := func(id string) (*inventoryv1.Reservation, error) {
			resp, err := c.ReleaseStock(ctx, &inventoryv1.ReleaseStockRequest{OrderId: id})
			return resp.GetReservation(), err
		}
		status := func(want inventoryv1.ReservationStatus, lines int) func(*inventoryv1.Reservation, error) error {
			return func(r *inventoryv1.Reservation, err error) error {
				if err == nil && (r.GetStatus() != want || len(r.GetLines()) != lines) {
					return fmt.Errorf("reservation = %v, want %v with %d lines", r, want, lines)
				}
				return err
			}
		}
		const (
			reserved  = inventoryv1.ReservationStatus_RESERVATION_STATUS_RESERVED
			committed = inventoryv1.ReservationStatus_RESERVATION_STATUS_COMMITTED
			rel       = inventoryv1.ReservationStatus_RESERVATION_STATUS_RELEASED
		)

		// Each step runs in order on the same data; want gives A's and B's
		// available and reserved units afterwards.
		steps := []struct {
			name   string
			call   func() error
			code   codes.Code
			reason string
			field  string
			want   [4]int64
		}{
			{name: "reserve", want: [4]int64{8, 2, 2, 1},
				call: func() error { return status(reserved, 2)(reserve(sold, line("A", 2), line("B", 1))) }},
			{name: "reserve again", want: [4]int64{8, 2, 2, 1},
				call: func() error { return status(reserved, 2)(reserve(sold, line("B", 1), line("A", 2))) }},
			{name: "reserve again with other lines", code: codes.FailedPrecondition, reason: "RESERVATION_MISMATCH", want: [4]int64{8, 2, 2, 1},
				call: func() error { _, err := reserve(sold, line("A", 3)); return err }},
			{name: "out of stock on two lines", code: codes.FailedPrecondition, reason: "OUT_OF_STOCK", want: [4]int64{8, 2, 2, 1},
				call: func() error {
					_, err := reserve(uuid.NewString(), line("A", 9), line("B", 3))
					if got := preconditions(err, "STOCK"); !slices.Equal(got, []string{"products/A", "products/B"}) {
						t.Errorf("STOCK violations = %v, want products/A and products/B", got)
					}
					return err
				}},
			{name: "unknown sku", code: codes.FailedPrecondition, reason: "PRODUCT_NOT_FOUND", want: [4]int64{8, 2, 2, 1},
				call: func() error {
					_, err := reserve(uuid.NewString(), line("A", 1), line("NOPE", 1))
					if got := apierr.Info(err).GetMetadata()["sku"]; got != "NOPE" {
						t.Errorf("metadata sku = %q, want NOPE", got)
					}
					return err
				}},
			{name: "a sku twice", code: codes.InvalidArgument, reason: apierr.ReasonInvalidArgument, field: "lines", want: [4]int64{8, 2, 2, 1},
				call: func() error { _, err := reserve(uuid.NewString(), line("A", 1), line("A", 1)); return err }},
			{name: "zero quantity", code: codes.InvalidArgument, reason: apierr.ReasonInvalidArgument, field: "lines[0].quantity", want: [4]int64{8, 2, 2, 1},
				call: func() error { _, err := reserve(uuid.NewString(), line("A", 0)); return err }},
			{name: "bad order id", code: codes.InvalidArgument, reason: apierr.ReasonInvalidArgument, field: "order_id", want: [4]int64{8, 2, 2, 1},
				call: func() error { _, err := reserve("order-1", line("A", 1)); return err }},
			{name: "commit", want: [4]int64{8, 0, 2, 0},
				call: func() error { return status(committed, 2)(commit(sold)) }},
			{name: "commit again", want: [4]int64{8, 0, 2, 0},
				call: func() error { return status(committed, 2)(commit(sold)) }},
			{name: "release committed", code: codes.FailedPrecondition, reason: "RESERVATION_COMMITTED", want: [4]int64{8, 0, 2, 0},
				call: func() error { _, err := release(sold); return err }},
			{name: "reserve to release", want: [4]int64{3, 5, 2, 0},
				call: func() error { return status(reserved, 1)(reserve(released, line("A", 5))) }},
			{name: "release", want: [4]int64{8, 0, 2, 0},
				call: func() error { return status(rel, 1)(release(released)) }},
			{name: "release again", want: [4]int64{8, 0, 2, 0},
				call: func() error { return status(rel, 1)(release(released)) }},
			{name: "commit released", code: codes.FailedPrecondition, reason: "RESERVATION_RELEASED", want: [4]int64{8, 0, 2, 0},
				call: func() error { _, err := commit(released); return err }},
			{name: "reserve released", code: codes.FailedPrecondition, reason: "RESERVATION_RELEASED", want: [4]int64{8, 0, 2, 0},
				call: func() error { _, err := reserve(released, line("A", 5)); return err }},
			{name: "release before reserve", want: [4]int64{8, 0, 2, 0},
				call: func() error { return status(rel, 0)(release(ghost)) }},
			{name: "late reserve", code: codes.FailedPrecondition, reason: "RESERVATION_RELEASED", want: [4]int64{8, 0, 2, 0},
				call: func() error { _, err := reserve(ghost, line("A", 1)); return err }},
			{name: "commit unknown", code: codes.NotFound, reason: "RESERVATION_NOT_FOUND", want: [4]int64{8, 0, 2, 0},
				call: func() error { _, err := commit(uuid.NewString()); return err }},
		}
		for _, st := range steps {
			t.Run(st.name, func(t *testing.T) {
				apierrtest.Check(t, st.call(), st.code, st.reason, st.field)
				a, b := getProduct(t, c, "A"), getProduct(t, c, "B")
				if got := [4]int64{a.GetAvailable(), a.GetReserved(), b.GetAvailable(), b.GetReserved()}; got != st.want {
					t.Errorf("A, B available/reserved = %v, want %v", got, st.want)
				}
			})
		}
	})
}

// TestConcurrentOrdersForTheLastUnits: N orders race over gRPC for the last
// M units; exactly M get them and stock ends at zero.
func TestConcurrentOrdersForTheLastUnits(t *testing.T) {
	sqldbtest.Run(t, func(t *testing.T, url string) {
		c := start(t, url)
		const n, m = 20, 6
		createProduct(t, c, "LAST", m)
		var (
			wg       sync.WaitGroup
			won, oos atomic.Int64
		)
		for range n {
			wg.Go(func() {
				_, err := c.ReserveStock(t.Context(), &inventoryv1.ReserveStockRequest{OrderId: uuid.NewString(), Lines: []*inventoryv1.StockLine{line("LAST", 1)}})
				switch {
				case err == nil:
					won.Add(1)
				case apierr.Is(err, "OUT_OF_STOCK"):
					oos.Add(1)
				default:
					t.Errorf("ReserveStock: %v", err)
				}
			})
		}
		wg.Wait()
		p := getProduct(t, c, "LAST")
		if won.Load() != m || oos.Load() != n-m || p.GetAvailable() != 0 || p.GetReserved() != m {
			t.Errorf("%d won, %d out of stock, available %d, reserved %d; want %d, %d, 0, %d",
				won.Load(), oos.Load(), p.GetAvailable(), p.GetReserved(), m, n-m, m)
		}
	})
}

// importRecords streams records and returns the summary.
func importRecords(t *testing.T, c inventoryv1.InventoryServiceClient, records ...*inventoryv1.ImportStockRequest) *inventoryv1.ImportStockResponse {
	t.Helper()
	resp, err := sendImport(t, c, records...)
	if err != nil {
		t.Fatalf("import: %v", err)
	}
	return resp
}

// sendImport runs one import of records and returns its outcome; it may
// run on any goroutine.
func sendImport(t *testing.T, c inventoryv1.InventoryServiceClient, records ...*inventoryv1.ImportStockRequest) (*inventoryv1.ImportStockResponse, error) {
	t.Helper()
	stream, err := c.ImportStock(t.Context())
	if err != nil {
		return nil, err
	}
	for _, r := range records {
		if err := stream.Send(r); err != nil {
			break // the service ended the stream; CloseAndRecv says why
		}
	}
	return stream.CloseAndRecv()
}

func TestImportStock(t *testing.T) {
	sqldbtest.Run(t, func(t *testing.T, url string) {
		c := start(t, url)
		createProduct(t, c, "MUG", 5)
		resp := importRecords(t, c,
			&inventoryv1.ImportStockRequest{Line: 2, Sku: "TEE", Name: "T-shirt", Price: eur(1999), StockDelta: 10},
			&inventoryv1.ImportStockRequest{Line: 3, Sku: "TEE", StockDelta: 5},
			&inventoryv1.ImportStockRequest{Line: 4, Sku: "MUG", StockDelta: -2, Name: "Mug"},
			&inventoryv1.ImportStockRequest{Line: 5, Sku: "MUG", StockDelta: -4},
			// Breaks the contract's own Money rules: rejected, not fatal.
			&inventoryv1.ImportStockRequest{Line: 6, Sku: "LOWER", Name: "Lower", Price: &typev1.Money{CurrencyCode: "eur", Units: 5}},
			&inventoryv1.ImportStockRequest{Line: 7, Sku: "NEGPRICE", Name: "Neg", Price: eur(-5)},
			&inventoryv1.ImportStockRequest{Line: 8, Sku: "bad sku"},
			&inventoryv1.ImportStockRequest{Line: 9, Sku: "GHOST", StockDelta: 1},
			&inventoryv1.ImportStockRequest{Line: 10, Sku: "MUG", Price: &typev1.Money{CurrencyCode: "USD", Units: 1}},
			&inventoryv1.ImportStockRequest{Line: 11, Sku: "NEW", Name: "New", Price: eur(100)},
		)
		want := map[int64]string{5: "STOCK_BELOW_ZERO", 6: "INVALID_PRICE", 7: "INVALID_PRICE", 8: "INVALID_SKU",
			9: "UNKNOWN_PRODUCT", 10: "CURRENCY_MISMATCH"}
		if resp.GetReceived() != 10 || resp.GetApplied() != 4 || resp.GetRejected() != 6 || len(resp.GetRejections()) != 6 {
			t.Errorf("summary = %v", resp)
		}
		for _, r := range resp.GetRejections() {
			if want[r.GetLine()] != r.GetReason() || r.GetMessage() == "" {
				t.Errorf("line %d (%s): %s %q, want %s", r.GetLine(), r.GetSku(), r.GetReason(), r.GetMessage(), want[r.GetLine()])
			}
		}
		if p := getProduct(t, c, "TEE"); p.GetAvailable() != 15 || p.GetName() != "T-shirt" || p.GetPrice().GetUnits() != 1999 {
			t.Errorf("TEE = %v", p)
		}
		if p := getProduct(t, c, "MUG"); p.GetAvailable() != 3 || p.GetName() != "Mug" {
			t.Errorf("MUG = %v", p)
		}
		if p := getProduct(t, c, "NEW"); p.GetAvailable() != 0 {
			t.Errorf("NEW = %v", p)
		}
		for _, sku := range []string{"LOWER", "NEGPRICE", "GHOST"} {
			_, err := c.GetProduct(t.Context(), &inventoryv1.GetProductRequest{Sku: sku})
			apierrtest.Check(t, err, codes.NotFound, "PRODUCT_NOT_FOUND", "")
		}
		// An empty import is fine and changes nothing.
		if resp := importRecords(t, c); resp.GetReceived() != 0 {
			t.Errorf("empty import = %v", resp)
		}
	})
}

// TestImportStockID: an import sent again under its import_id applies
// nothing and answers the first summary, replayed; the id with other
// records, or a later record naming another id, is refused and applies
// nothing.
func TestImportStockID(t *testing.T) {
	sqldbtest.Run(t, func(t *testing.T, url string) {
		c := start(t, url)
		createProduct(t, c, "MUG", 5)
		records := []*inventoryv1.ImportStockRequest{
			{Line: 2, Sku: "MUG", StockDelta: 3, ImportId: "restock-1"},
			{Line: 3, Sku: "GHOST", StockDelta: 1},
			{Line: 4, Sku: "MUG", StockDelta: 2, ImportId: "restock-1"},
		}
		first := importRecords(t, c, records...)
		if first.GetApplied() != 2 || first.GetRejected() != 1 || first.GetReplayed() {
			t.Fatalf("first import = %v", first)
		}
		again := importRecords(t, c, records...)
		if !again.GetReplayed() || again.GetApplied() != 2 || again.GetRejected() != 1 ||
			len(again.GetRejections()) != 1 || again.GetRejections()[0].GetReason() != "UNKNOWN_PRODUCT" {
			t.Fatalf("the same import again = %v, want the first summary, replayed", again)
		}
		if p := getProduct(t, c, "MUG"); p.GetAvailable() != 10 {
			t.Fatalf("MUG available %d, want 10: the import applied once", p.GetAvailable())
		}
		// A first record the contract refuses still names the import.
		refused := []*inventoryv1.ImportStockRequest{
			{Line: 2, Sku: "MUG", Price: &typev1.Money{CurrencyCode: "eur", Units: 5}, ImportId: "restock-9"},
			{Line: 3, Sku: "MUG", StockDelta: 1},
		}
		if got := importRecords(t, c, refused...); got.GetApplied() != 1 || got.GetRejected() != 1 || got.GetImportId() != "restock-9" {
			t.Fatalf("import with its first record refused = %v", got)
		}
		if got := importRecords(t, c, refused...); !got.GetReplayed() {
			t.Fatalf("the same import again = %v, want it replayed", got)
		}
		if p := getProduct(t, c, "MUG"); p.GetAvailable() != 11 {
			t.Fatalf("MUG available %d, want 11", p.GetAvailable())
		}
		tests := []struct {
			name    string
			records []*inventoryv1.ImportStockRequest
			code    codes.Code
			reason  string
			field   string
		}{
			{"the id with other records", []*inventoryv1.ImportStockRequest{{Line: 2, Sku: "MUG", StockDelta: 7, ImportId: "restock-1"}},
				codes.FailedPrecondition, "IDEMPOTENCY_KEY_REUSED", ""},
			{"a later record naming another id", []*inventoryv1.ImportStockRequest{
				{Line: 2, Sku: "MUG", StockDelta: 7, ImportId: "restock-2"}, {Line: 3, Sku: "MUG", StockDelta: 1, ImportId: "restock-3"}},
				codes.InvalidArgument, "INVALID_ARGUMENT", "import_id"},
			{"an id too long", []*inventoryv1.ImportStockRequest{{Line: 2, Sku: "MUG", StockDelta: 7, ImportId: strings.Repeat("x", 129)}},
				codes.InvalidArgument, "INVALID_ARGUMENT", "import_id"},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				_, err := sendImport(t, c, tt.records...)
				apierrtest.Check(t, err, tt.code, tt.reason, tt.field)
				if p := getProduct(t, c, "MUG"); p.GetAvailable() != 11 {
					t.Fatalf("MUG available %d, want 11: nothing applied", p.GetAvailable())
				}
			})
		}
	})
}

// TestImportStockIDForgotten: an import id is remembered for the
// service's ImportRetention, then forgotten: the same import sent again
// is applied again, while one applied since is still answered from the
// first summary.
func TestImportStockIDForgotten(t *testing.T) {
	sqldbtest.Run(t, func(t *testing.T, url string) {
		ctx := t.Context()
		cfg := inventory.Config{DatabaseURL: url, ImportRetention: time.Hour}
		c := startConfig(t, cfg)
		createProduct(t, c, "MUG", 5)
		old := &inventoryv1.ImportStockRequest{Line: 2, Sku: "MUG", StockDelta: 3, ImportId: "restock-old"}
		recent := &inventoryv1.ImportStockRequest{Line: 2, Sku: "MUG", StockDelta: 1, ImportId: "restock-recent"}
		importRecords(t, c, old)
		importRecords(t, c, recent)

		db, err := store.Open(ctx, url)
		if err != nil {
			t.Fatal(err)
		}
		defer db.Close()
		if _, err := db.ExecContext(ctx, db.Rebind("UPDATE stock_imports SET create_time = ? WHERE import_id = ?"),
			time.Now().Add(-2*time.Hour).UnixMicro(), "restock-old"); err != nil {
			t.Fatal(err)
		}
		// The service purges at start and every minute after: a second
		// one started on the database purges now.
		c = startConfig(t, cfg)
		deadline := time.Now().Add(20 * time.Second)
		for {
			var n int
			if err := db.QueryRowContext(ctx, "SELECT COUNT(*) FROM stock_imports").Scan(&n); err != nil {
				t.Fatal(err)
			}
			if n == 1 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%d imports stored 20 s after the start, want the recent one only", n)
			}
			time.Sleep(5 * time.Millisecond)
		}
		if got := importRecords(t, c, old); got.GetReplayed() || got.GetApplied() != 1 {
			t.Errorf("the import forgotten, sent again = %v; want it applied again", got)
		}
		if got := importRecords(t, c, recent); !got.GetReplayed() {
			t.Errorf("the recent import sent again = %v; want it replayed", got)
		}
		if p := getProduct(t, c, "MUG"); p.GetAvailable() != 12 {
			t.Errorf("MUG available %d, want 12: 5, the forgotten import's 3 twice and the recent one's 1 once", p.GetAvailable())
		}
	})
}

// TestImportStockIDRace: imports with the same id sent at once apply
// once; the others answer its summary, replayed (on PostgreSQL the losers'
// inserts of the id wait for the winner's transaction).
func TestImportStockIDRace(t *testing.T) {
	sqldbtest.Run(t, func(t *testing.T, url string) {
		c := start(t, url)
		createProduct(t, c, "MUG", 5)
		records := []*inventoryv1.ImportStockRequest{
			{Line: 2, Sku: "MUG", StockDelta: 3, ImportId: "race-1"},
			{Line: 3, Sku: "NEWCUP", Name: "New cup", Price: eur(300), StockDelta: 4},
		}
		const n = 4
		resps := make([]*inventoryv1.ImportStockResponse, n)
		errs := make([]error, n)
		var wg sync.WaitGroup
		for i := range n {
			wg.Go(func() { resps[i], errs[i] = sendImport(t, c, records...) })
		}
		wg.Wait()
		applied := 0
		for i := range n {
			if errs[i] != nil {
				t.Fatalf("import %d: %v", i, errs[i])
			}
			if resps[i].GetApplied() != 2 || resps[i].GetImportId() != "race-1" {
				t.Errorf("import %d answered %v, want both records applied", i, resps[i])
			}
			if !resps[i].GetReplayed() {
				applied++
			}
		}
		if applied != 1 {
			t.Errorf("%d of %d imports applied, want one (the others replayed)", applied, n)
		}
		if p := getProduct(t, c, "MUG"); p.GetAvailable() != 8 {
			t.Errorf("MUG available %d, want 8: the import applied once", p.GetAvailable())
		}
		if p := getProduct(t, c, "NEWCUP"); p.GetAvailable() != 4 {
			t.Errorf("NEWCUP available %d, want 4", p.GetAvailable())
		}
	})
}

// TestImportStockLongSKUs: an import whose rejected records carry huge
// skus still gets its summary. Echoed whole, a thousand 4.3 KB skus made a
// summary over the 4 MB reply limit, so the client got RESOURCE_EXHAUSTED
// for an import already applied, and the rejections were kept in memory
// whole meanwhile.
func TestImportStockLongSKUs(t *testing.T) {
	sqldbtest.Run(t, func(t *testing.T, url string) {
		c := start(t, url)
		long := "x" + strings.Repeat("é", 2150) // 4,301 bytes; byte 64 is mid-rune
		records := []*inventoryv1.ImportStockRequest{{Line: 1, Sku: "TEE", Name: "T-shirt", Price: eur(1999), StockDelta: 10}}
		for i := range domain.MaxRejections {
			records = append(records, &inventoryv1.ImportStockRequest{Line: int64(i + 2), Sku: long})
		}
		resp := importRecords(t, c, records...)
		if resp.GetApplied() != 1 || resp.GetRejected() != domain.MaxRejections || len(resp.GetRejections()) != domain.MaxRejections {
			t.Fatalf("summary: applied %d, rejected %d, %d listed", resp.GetApplied(), resp.GetRejected(), len(resp.GetRejections()))
		}
		// Cut on a rune boundary: a reply with broken UTF-8 would not marshal.
		want := "x" + strings.Repeat("é", (domain.MaxSKULen-1)/2) + "…"
		for _, r := range resp.GetRejections() {
			if r.GetSku() != want || r.GetReason() != "INVALID_SKU" {
				t.Fatalf("line %d: sku %q (%d bytes), reason %s; want %q, INVALID_SKU", r.GetLine(), r.GetSku(), len(r.GetSku()), r.GetReason(), want)
			}
		}
		if p := getProduct(t, c, "TEE"); p.GetAvailable() != 10 {
			t.Errorf("TEE = %v", p)
		}
	})
}

// recvGate is a server stream interceptor that tells the test when the
// handler has received a number of messages, and when it has returned.
type recvGate struct {
	want     int64
	received atomic.Int64
	reached  chan struct{}
	returned chan error
}

func newRecvGate(want int64) *recvGate {
	return &recvGate{want: want, reached: make(chan struct{}), returned: make(chan error, 1)}
}

func (g *recvGate) intercept(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	if info.FullMethod != inventoryv1.InventoryService_ImportStock_FullMethodName {
		return handler(srv, ss) // the client's health Watch, say: its request is no record
	}
	err := handler(srv, &gatedStream{ServerStream: ss, g: g})
	g.returned <- err
	return err
}

type gatedStream struct {
	grpc.ServerStream
	g *recvGate
}

func (s *gatedStream) RecvMsg(m any) error {
	err := s.ServerStream.RecvMsg(m)
	if err == nil && s.g.received.Add(1) == s.g.want {
		close(s.g.reached)
	}
	return err
}

// TestImportStockCancel: a client that cancels mid-stream, after the
// service has taken its records, applies none of them.
func TestImportStockCancel(t *testing.T) {
	sqldbtest.Run(t, func(t *testing.T, url string) {
		const sent = 50
		gate := newRecvGate(sent)
		c := start(t, url, gate.intercept)
		createProduct(t, c, "MUG", 5)

		ctx, cancel := context.WithCancel(t.Context())
		defer cancel()
		stream, err := c.ImportStock(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for i := range sent {
			rec := &inventoryv1.ImportStockRequest{Line: int64(i + 2), Sku: fmt.Sprintf("NEW-%02d", i), Name: "New", Price: eur(100), StockDelta: 1}
			if i == 0 {
				rec = &inventoryv1.ImportStockRequest{Line: 1, Sku: "MUG", StockDelta: 100}
			}
			if err := stream.Send(rec); err != nil {
				t.Fatalf("Send: %v", err)
			}
		}
		deadline := time.After(10 * time.Second)
		select {
		case <-gate.reached:
		case <-deadline:
			t.Fatal("the service did not receive the records")
		}
		cancel()
		select {
		case err := <-gate.returned:
			if status.Code(err) != codes.Canceled {
				t.Errorf("handler returned %v, want CANCELED", err)
			}
		case <-deadline:
			t.Fatal("the handler did not return after the cancel")
		}
		if _, err := stream.CloseAndRecv(); status.Code(err) != codes.Canceled {
			t.Errorf("CloseAndRecv = %v, want CANCELED", err)
		}
		if p := getProduct(t, c, "MUG"); p.GetAvailable() != 5 {
			t.Errorf("MUG available %d after a cancelled import, want 5", p.GetAvailable())
		}
		resp, err := c.ListProducts(t.Context(), &inventoryv1.ListProductsRequest{PageSize: 100})
		if err != nil || len(resp.GetProducts()) != 1 {
			t.Errorf("after a cancelled import: %d products, %v; want only MUG", len(resp.GetProducts()), err)
		}
	})
}

// TestImportStockDeadline: a stream that runs out of time before the client
// closes it applies nothing either.
func TestImportStockDeadline(t *testing.T) {
	sqldbtest.Run(t, func(t *testing.T, url string) {
		gate := newRecvGate(1)
		c := start(t, url, gate.intercept)
		ctx, cancel := context.WithTimeout(t.Context(), time.Second)
		defer cancel()
		stream, err := c.ImportStock(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if err := stream.Send(&inventoryv1.ImportStockRequest{Sku: "NEW", Name: "New", Price: eur(1), StockDelta: 1}); err != nil {
			t.Fatal(err)
		}
		select {
		case <-gate.reached:
		case <-ctx.Done():
			t.Fatal("the service did not receive the record before the deadline")
		}
		<-ctx.Done()
		select {
		case <-gate.returned:
		case <-time.After(10 * time.Second):
			t.Fatal("the handler did not return after the deadline")
		}
		_, err = c.GetProduct(t.Context(), &inventoryv1.GetProductRequest{Sku: "NEW"})
		apierrtest.Check(t, err, codes.NotFound, "PRODUCT_NOT_FOUND", "")
		if _, err := stream.CloseAndRecv(); err == nil || errors.Is(err, io.EOF) {
			t.Errorf("CloseAndRecv = %v, want the deadline", err)
		}
	})
}

func TestOpenErrors(t *testing.T) {
	for _, url := range []string{"", "mysql://nope", "sqlite:" + t.TempDir()} {
		if svc, err := inventory.Open(t.Context(), inventory.Config{DatabaseURL: url}); err == nil {
			_ = svc.Close()
			t.Errorf("Open(%q) succeeded, want error", url)
		}
	}
}
