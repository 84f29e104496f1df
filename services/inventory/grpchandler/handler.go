// Package grpchandler serves duet.inventory.v1.InventoryService over gRPC:
// it turns requests into domain calls, and domain results and errors into
// responses and status errors with details.
package grpchandler

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"runtime/debug"
	"strconv"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	inventoryv1 "github.com/duetkit/duet/gen/duet/inventory/v1"
	typev1 "github.com/duetkit/duet/gen/duet/type/v1"
	"github.com/duetkit/duet/kit/apierr"
	"github.com/duetkit/duet/kit/pagetoken"
	"github.com/duetkit/duet/kit/sqldb"
	"github.com/duetkit/duet/services/inventory/domain"
)

// Reasons (ErrorInfo.reason) specific to the inventory service. Published:
// never change them.
const (
	// ReasonProductNotFound: NOT_FOUND from GetProduct and BatchGetProducts,
	// FAILED_PRECONDITION from ReserveStock. Metadata "sku" names the
	// (first) unknown sku.
	ReasonProductNotFound = "PRODUCT_NOT_FOUND"
	// ReasonSKUTaken: ALREADY_EXISTS from CreateProduct.
	ReasonSKUTaken = "SKU_TAKEN"
	// ReasonOutOfStock: FAILED_PRECONDITION from ReserveStock, with a
	// PreconditionFailure violation (type STOCK, subject products/<sku>)
	// per short sku.
	ReasonOutOfStock = "OUT_OF_STOCK"
	// ReasonReservationNotFound: NOT_FOUND from CommitStock.
	ReasonReservationNotFound = "RESERVATION_NOT_FOUND"
	// ReasonReservationReleased: FAILED_PRECONDITION from CommitStock, and
	// from ReserveStock for an order that was released.
	ReasonReservationReleased = "RESERVATION_RELEASED"
	// ReasonReservationCommitted: FAILED_PRECONDITION from ReleaseStock.
	ReasonReservationCommitted = "RESERVATION_COMMITTED"
	// ReasonReservationMismatch: FAILED_PRECONDITION from ReserveStock when
	// the order holds a reservation with other lines.
	ReasonReservationMismatch = "RESERVATION_MISMATCH"
	// ReasonImportTooLarge: RESOURCE_EXHAUSTED from ImportStock when the
	// stream sends more records than one import takes; nothing is applied.
	ReasonImportTooLarge = "IMPORT_TOO_LARGE"
	// ReasonImportsBusy: RESOURCE_EXHAUSTED from ImportStock when
	// MaxConcurrentImports imports are running already; RetryInfo says
	// when to try again. Nothing was applied.
	ReasonImportsBusy = "IMPORTS_BUSY"
	// ReasonImportIdle: DEADLINE_EXCEEDED from ImportStock when the client
	// sent nothing for ImportIdleTimeout; nothing was applied.
	ReasonImportIdle = "IMPORT_IDLE"
	// ReasonImportTimeout: DEADLINE_EXCEEDED from ImportStock when the
	// client's stream was still open ImportTimeout after it began; nothing
	// was applied.
	ReasonImportTimeout = "IMPORT_TIMEOUT"
	// ReasonImportIDReused: FAILED_PRECONDITION from ImportStock when an
	// import with the same import_id but other records was applied
	// before; nothing was applied now.
	ReasonImportIDReused = "IDEMPOTENCY_KEY_REUSED"
)

// ImportIdleTimeout is how long an import waits for its client's next
// record (or the end of its stream) before it gives up and frees its slot.
const ImportIdleTimeout = 30 * time.Second

// importIdleTimeout is ImportIdleTimeout, a variable for tests.
var importIdleTimeout = ImportIdleTimeout

// ImportTimeout bounds a whole import, from when it takes its slot to its
// client closing the stream. The idle bound alone let a client sending a
// record every 29 s hold a slot, and the records it sent, for weeks (a
// hundred thousand records at that pace); the largest import streams in
// seconds.
const ImportTimeout = 10 * time.Minute

// importTimeout is ImportTimeout, a variable for tests.
var importTimeout = ImportTimeout

// MaxConcurrentImports bounds the stock imports running at once. Each
// keeps up to 100,000 records in memory until its client closes the
// stream, and a client may take its time doing so: without a bound, a few
// clients could hold gigabytes. An import may not stand idle (one whose
// client sends nothing for ImportIdleTimeout ends) nor last longer than
// ImportTimeout, so clients that open imports and send nothing, or next
// to nothing, hold the slots only that long.
const MaxConcurrentImports = 4

// importsBusyRetry is the RetryInfo delay of IMPORTS_BUSY.
const importsBusyRetry = 5 * time.Second

// listScope is the page-token scope of ListProducts.
const listScope = "products"

// Handler implements inventoryv1.InventoryServiceServer over a
// domain.Service.
type Handler struct {
	inventoryv1.UnimplementedInventoryServiceServer
	inv *domain.Service
	log *slog.Logger
	// imports holds a token for each import running (MaxConcurrentImports).
	imports chan struct{}
	// importIdle and importLimit are importIdleTimeout and importTimeout
	// when the Handler was made.
	importIdle, importLimit time.Duration
}

var _ inventoryv1.InventoryServiceServer = (*Handler)(nil)

// New returns a Handler for inv. Unexpected errors are logged to logger
// (nil means slog.Default()) and answered with a bare INTERNAL.
func New(inv *domain.Service, logger *slog.Logger) *Handler {
	if logger == nil {
		logger = slog.Default()
	}
	return &Handler{inv: inv, log: logger, imports: make(chan struct{}, MaxConcurrentImports),
		importIdle: importIdleTimeout, importLimit: importTimeout}
}

// CreateProduct adds a product.
func (h *Handler) CreateProduct(ctx context.Context, req *inventoryv1.CreateProductRequest) (*inventoryv1.CreateProductResponse, error) {
	if req.GetPrice() == nil {
		return nil, apierr.InvalidField("price", "is required")
	}
	p, err := h.inv.CreateProduct(ctx, domain.NewProduct{
		SKU: req.GetSku(), Name: req.GetName(), Price: money(req.GetPrice()), Stock: req.GetStock(),
	})
	if err != nil {
		return nil, h.error(ctx, err, call{sku: req.GetSku()})
	}
	return &inventoryv1.CreateProductResponse{Product: productToProto(p)}, nil
}

// GetProduct returns one product.
func (h *Handler) GetProduct(ctx context.Context, req *inventoryv1.GetProductRequest) (*inventoryv1.GetProductResponse, error) {
	p, err := h.inv.GetProduct(ctx, req.GetSku())
	if err != nil {
		return nil, h.error(ctx, err, call{sku: req.GetSku()})
	}
	return &inventoryv1.GetProductResponse{Product: productToProto(p)}, nil
}

// ListProducts returns one page of products in sku order.
func (h *Handler) ListProducts(ctx context.Context, req *inventoryv1.ListProductsRequest) (*inventoryv1.ListProductsResponse, error) {
	var after string
	if tok := req.GetPageToken(); tok != "" {
		c, err := pagetoken.Decode(tok, listScope)
		if err != nil || c.ID == "" {
			return nil, apierr.InvalidField("page_token", "not a page token from a previous ListProducts response")
		}
		after = c.ID
	}
	page, err := h.inv.ListProducts(ctx, int(req.GetPageSize()), after)
	if err != nil {
		return nil, h.error(ctx, err, call{})
	}
	resp := &inventoryv1.ListProductsResponse{Products: make([]*inventoryv1.Product, 0, len(page.Products))}
	for _, p := range page.Products {
		resp.Products = append(resp.Products, productToProto(p))
	}
	if page.NextAfter != "" {
		resp.NextPageToken = pagetoken.Encode(pagetoken.Cursor{Scope: listScope, ID: page.NextAfter})
	}
	return resp, nil
}

// BatchGetProducts returns the named products in request order.
func (h *Handler) BatchGetProducts(ctx context.Context, req *inventoryv1.BatchGetProductsRequest) (*inventoryv1.BatchGetProductsResponse, error) {
	products, err := h.inv.BatchGetProducts(ctx, req.GetSkus())
	if err != nil {
		return nil, h.error(ctx, err, call{})
	}
	resp := &inventoryv1.BatchGetProductsResponse{Products: make([]*inventoryv1.Product, 0, len(products))}
	for _, p := range products {
		resp.Products = append(resp.Products, productToProto(p))
	}
	return resp, nil
}

// ReserveStock holds stock for an order, all lines or none.
func (h *Handler) ReserveStock(ctx context.Context, req *inventoryv1.ReserveStockRequest) (*inventoryv1.ReserveStockResponse, error) {
	lines := make([]domain.Line, len(req.GetLines()))
	for i, l := range req.GetLines() {
		lines[i] = domain.Line{SKU: l.GetSku(), Quantity: int64(l.GetQuantity())}
	}
	r, err := h.inv.ReserveStock(ctx, req.GetOrderId(), lines)
	if err != nil {
		return nil, h.error(ctx, err, call{orderID: req.GetOrderId(), reserve: true})
	}
	return &inventoryv1.ReserveStockResponse{Reservation: reservationToProto(r)}, nil
}

// CommitStock makes an order's reservation final.
func (h *Handler) CommitStock(ctx context.Context, req *inventoryv1.CommitStockRequest) (*inventoryv1.CommitStockResponse, error) {
	r, err := h.inv.CommitStock(ctx, req.GetOrderId())
	if err != nil {
		return nil, h.error(ctx, err, call{orderID: req.GetOrderId()})
	}
	return &inventoryv1.CommitStockResponse{Reservation: reservationToProto(r)}, nil
}

// ReleaseStock returns an order's reserved units to stock.
func (h *Handler) ReleaseStock(ctx context.Context, req *inventoryv1.ReleaseStockRequest) (*inventoryv1.ReleaseStockResponse, error) {
	r, err := h.inv.ReleaseStock(ctx, req.GetOrderId())
	if err != nil {
		return nil, h.error(ctx, err, call{orderID: req.GetOrderId()})
	}
	return &inventoryv1.ReleaseStockResponse{Reservation: reservationToProto(r)}, nil
}

// ImportStock buffers the streamed records and applies them in one
// transaction when the client closes its side of the stream. At most
// MaxConcurrentImports run at once; one more is refused at once. A stream that
// ends any other way (the client cancels, the deadline passes, the
// connection drops, too many records, ImportIdleTimeout without a
// record, ImportTimeout in all) applies nothing.
//
// A record that breaks the contract's own rules (a malformed price, say)
// is rejected like any other bad record rather than failing the stream:
// kit/server's validation reports it from RecvMsg, with the record already
// decoded, and the import goes on.
func (h *Handler) ImportStock(stream grpc.ClientStreamingServer[inventoryv1.ImportStockRequest, inventoryv1.ImportStockResponse]) error {
	ctx := stream.Context()
	select {
	case h.imports <- struct{}{}:
		defer func() { <-h.imports }()
	default:
		return apierr.New(codes.ResourceExhausted, ReasonImportsBusy,
			fmt.Sprintf("%d stock imports are running; nothing was applied: try again when one has finished", MaxConcurrentImports),
			apierr.RetryAfter(importsBusyRetry))
	}
	imp := h.inv.NewImport()
	first := true
	msgs, stop := receiveImports(stream)
	defer stop()
	idle := time.NewTimer(h.importIdle)
	defer idle.Stop()
	limit := time.NewTimer(h.importLimit)
	defer limit.Stop()
	for {
		var r received
		select {
		case r = <-msgs:
		case <-idle.C:
			return apierr.New(codes.DeadlineExceeded, ReasonImportIdle,
				fmt.Sprintf("no record for %v; nothing was applied", h.importIdle))
		case <-limit.C:
			return apierr.New(codes.DeadlineExceeded, ReasonImportTimeout,
				fmt.Sprintf("the import was still open after %v; nothing was applied: send the records faster, or fewer at a time", h.importLimit))
		}
		if r.panicked != nil {
			// Raised again here, where kit/server's recovery turns it
			// into INTERNAL, as when RecvMsg ran on this goroutine.
			panic(r.panicked)
		}
		idle.Reset(h.importIdle)
		req, err := r.req, r.err
		if errors.Is(err, io.EOF) {
			break
		}
		var invalid *apierr.Error
		if err != nil {
			var ok bool
			if invalid, ok = apierr.As(err); !ok || invalid.Code() != codes.InvalidArgument {
				return h.recvError(ctx, err)
			}
		}
		// A record the contract refused still names the import.
		if err := importID(imp, req, first); err != nil {
			return h.error(ctx, err, call{})
		}
		first = false
		rec := recordFromProto(req)
		if invalid != nil {
			err = imp.Reject(rec, domain.RejectInvalidRecord, invalid.GRPCStatus().Message())
		} else {
			err = imp.Add(rec)
		}
		if errors.Is(err, domain.ErrImportTooLarge) {
			return apierr.New(codes.ResourceExhausted, ReasonImportTooLarge,
				fmt.Sprintf("a stock import takes at most %d records; nothing was applied: split the input", imp.Received()),
				apierr.Metadata("max_records", strconv.FormatInt(imp.Received(), 10)))
		}
		if err != nil {
			return h.error(ctx, err, call{})
		}
	}
	sum, err := imp.Apply(ctx)
	if err != nil {
		return h.error(ctx, err, call{importID: imp.ID()})
	}
	return stream.SendAndClose(summaryToProto(sum))
}

// importID reads the import's id from its first record, and checks that
// the others carry the same or none. Read from a record the contract
// refused too: its id still names the import.
func importID(imp *domain.Import, req *inventoryv1.ImportStockRequest, first bool) error {
	id := req.GetImportId()
	switch {
	case first:
		return imp.SetID(id)
	case id != "" && id != imp.ID():
		return &domain.ValidationError{Field: "import_id", Description: "must be empty or the first record's import_id"}
	}
	return nil
}

// received is one RecvMsg's result, or the panic it raised.
type received struct {
	req      *inventoryv1.ImportStockRequest
	err      error
	panicked any
}

// receiveImports receives the stream's messages on a goroutine of its own,
// so the import can wait for the next with a timeout; it stops at the
// first error that ends the stream (io.EOF included: not a record's
// INVALID_ARGUMENT, after which the import goes on) or when stop is
// called. A receive still blocked then ends when the handler returns,
// which ends the stream.
func receiveImports(stream grpc.ClientStreamingServer[inventoryv1.ImportStockRequest, inventoryv1.ImportStockResponse]) (<-chan received, func()) {
	msgs, done := make(chan received), make(chan struct{})
	go func() {
		// A panic in RecvMsg (an interceptor's, the codec's) goes to the
		// handler's goroutine: here nothing would recover it, and it
		// would take the process down.
		defer func() {
			if p := recover(); p != nil {
				select {
				// With the receive's stack: re-raised on the handler's
				// goroutine, the recovery's log would show only that one.
				case msgs <- received{panicked: fmt.Sprintf("%v (in RecvMsg)\n%s", p, debug.Stack())}:
				case <-done:
				}
			}
		}()
		for {
			req := new(inventoryv1.ImportStockRequest)
			err := stream.RecvMsg(req)
			select {
			case msgs <- received{req: req, err: err}:
			case <-done:
				return
			}
			if err != nil && apierr.Code(err) != codes.InvalidArgument {
				return
			}
		}
	}()
	return msgs, func() { close(done) }
}

// recvError answers a stream whose Recv failed: the client cancelled, the
// deadline passed or the transport broke. Its status already says which.
func (h *Handler) recvError(ctx context.Context, err error) error {
	if _, ok := status.FromError(err); ok {
		h.log.DebugContext(ctx, "stock import abandoned; nothing applied", "error", err)
		return err
	}
	return h.error(ctx, err, call{})
}

// call describes the request an error answers, for its details.
type call struct {
	// sku is the product the request named.
	sku string
	// orderID is the order the request named.
	orderID string
	// reserve marks ReserveStock, where an unknown sku is a failed
	// precondition of the order rather than a missing resource.
	reserve bool
	// importID is the stock import's id.
	importID string
}

// error maps a domain error to a status error.
func (h *Handler) error(ctx context.Context, err error, c call) error {
	var (
		invalid  *domain.ValidationError
		missing  *domain.ProductsNotFoundError
		shortage *domain.OutOfStockError
	)
	switch {
	case errors.As(err, &invalid):
		return apierr.InvalidField(invalid.Field, invalid.Description)
	case errors.As(err, &missing) && c.reserve:
		details := []apierr.Detail{apierr.Metadata("sku", missing.Missing[0].SKU, "order_id", c.orderID)}
		for _, m := range missing.Missing {
			details = append(details, apierr.Precondition("PRODUCT", "products/"+m.SKU, "no product has this sku"))
		}
		return apierr.New(codes.FailedPrecondition, ReasonProductNotFound, missing.Error(), details...)
	case errors.As(err, &missing): // BatchGetProducts: the skus are request fields
		details := []apierr.Detail{apierr.Metadata("sku", missing.Missing[0].SKU)}
		for _, m := range missing.Missing {
			details = append(details, apierr.Field(fmt.Sprintf("skus[%d]", m.Index), fmt.Sprintf("no product has sku %q", m.SKU)))
		}
		return apierr.New(codes.NotFound, ReasonProductNotFound, missing.Error(), details...)
	case errors.Is(err, domain.ErrProductNotFound):
		return apierr.New(codes.NotFound, ReasonProductNotFound, fmt.Sprintf("product %q not found", c.sku),
			apierr.Metadata("sku", c.sku))
	case errors.As(err, &shortage):
		details := []apierr.Detail{apierr.Metadata("sku", shortage.Shortages[0].SKU, "order_id", c.orderID)}
		for _, s := range shortage.Shortages {
			details = append(details, apierr.Precondition("STOCK", "products/"+s.SKU,
				fmt.Sprintf("requested %d, %d available", s.Requested, s.Available)))
		}
		return apierr.New(codes.FailedPrecondition, ReasonOutOfStock, shortage.Error(), details...)
	case errors.Is(err, domain.ErrImportIDReused):
		return apierr.New(codes.FailedPrecondition, ReasonImportIDReused,
			"an import with this import_id but other records was applied before; nothing was applied: use a new import_id",
			apierr.Precondition("IMPORT_ID", c.importID, "already used with other records"))
	case errors.Is(err, domain.ErrSKUTaken):
		return apierr.New(codes.AlreadyExists, ReasonSKUTaken, fmt.Sprintf("a product with sku %q already exists", c.sku),
			apierr.Metadata("sku", c.sku), apierr.Field("sku", "already in use by another product"))
	case errors.Is(err, domain.ErrReservationNotFound):
		return apierr.New(codes.NotFound, ReasonReservationNotFound, fmt.Sprintf("order %q has no reservation", c.orderID),
			apierr.Metadata("order_id", c.orderID))
	case errors.Is(err, domain.ErrReservationReleased):
		return reservationError(ReasonReservationReleased, c.orderID, "the order's reservation was released")
	case errors.Is(err, domain.ErrReservationCommitted):
		return reservationError(ReasonReservationCommitted, c.orderID, "the order's reservation is committed: its units are sold")
	case errors.Is(err, domain.ErrReservationMismatch):
		return reservationError(ReasonReservationMismatch, c.orderID,
			"the order already holds a reservation with other lines; reservations do not change")
	case errors.Is(err, context.DeadlineExceeded) || errors.Is(ctx.Err(), context.DeadlineExceeded):
		// Drivers do not always wrap the context's error, so the context
		// itself is asked too: a call that ran out of time is not a bug.
		return apierr.New(codes.DeadlineExceeded, apierr.ReasonDeadline, "deadline exceeded")
	case errors.Is(err, context.Canceled) || errors.Is(ctx.Err(), context.Canceled):
		return apierr.New(codes.Canceled, apierr.ReasonCanceled, "request canceled")
	}
	if errors.Is(err, domain.ErrConflict) || sqldb.IsConflict(err) {
		// Still losing after the domain's own retries.
		return apierr.Conflict()
	}
	if sqldb.IsUnavailable(err) {
		h.log.WarnContext(ctx, "inventory service: database unavailable", "error", err)
		return apierr.StoreUnavailable()
	}
	h.log.ErrorContext(ctx, "inventory service: unexpected error", "error", err)
	return apierr.Internal()
}

// reservationError is a FAILED_PRECONDITION about the order's reservation.
func reservationError(reason, orderID, message string) error {
	return apierr.New(codes.FailedPrecondition, reason, message,
		apierr.Metadata("order_id", orderID),
		apierr.Precondition("RESERVATION", "reservations/"+orderID, message))
}

// money converts wire Money to domain Money.
func money(m *typev1.Money) domain.Money {
	return domain.Money{Currency: m.GetCurrencyCode(), Units: m.GetUnits()}
}

func recordFromProto(req *inventoryv1.ImportStockRequest) domain.StockRecord {
	rec := domain.StockRecord{Line: req.GetLine(), SKU: req.GetSku(), Name: req.GetName(), StockDelta: req.GetStockDelta()}
	if req.GetPrice() != nil {
		p := money(req.GetPrice())
		rec.Price = &p
	}
	return rec
}

func productToProto(p domain.Product) *inventoryv1.Product {
	return &inventoryv1.Product{
		Sku:        p.SKU,
		Name:       p.Name,
		Price:      &typev1.Money{CurrencyCode: p.Price.Currency, Units: p.Price.Units},
		Available:  p.Available,
		Reserved:   p.Reserved,
		CreateTime: timestamppb.New(p.CreateTime),
		UpdateTime: timestamppb.New(p.UpdateTime),
	}
}

func reservationToProto(r domain.Reservation) *inventoryv1.Reservation {
	out := &inventoryv1.Reservation{OrderId: r.OrderID, Status: statusToProto(r.Status),
		Lines: make([]*inventoryv1.StockLine, len(r.Lines))}
	for i, l := range r.Lines {
		out.Lines[i] = &inventoryv1.StockLine{Sku: l.SKU, Quantity: int32(l.Quantity)}
	}
	return out
}

func statusToProto(s domain.ReservationStatus) inventoryv1.ReservationStatus {
	switch s {
	case domain.StatusReserved:
		return inventoryv1.ReservationStatus_RESERVATION_STATUS_RESERVED
	case domain.StatusCommitted:
		return inventoryv1.ReservationStatus_RESERVATION_STATUS_COMMITTED
	case domain.StatusReleased:
		return inventoryv1.ReservationStatus_RESERVATION_STATUS_RELEASED
	}
	return inventoryv1.ReservationStatus_RESERVATION_STATUS_UNSPECIFIED
}

func summaryToProto(s domain.ImportSummary) *inventoryv1.ImportStockResponse {
	out := &inventoryv1.ImportStockResponse{Received: s.Received, Applied: s.Applied, Rejected: s.Rejected,
		Rejections: make([]*inventoryv1.ImportRejection, len(s.Rejections)), Replayed: s.Replayed, ImportId: s.ImportID}
	for i, r := range s.Rejections {
		out.Rejections[i] = &inventoryv1.ImportRejection{Line: r.Line, Sku: r.SKU, Reason: r.Reason, Message: r.Message}
	}
	return out
}
