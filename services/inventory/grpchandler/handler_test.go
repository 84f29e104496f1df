package grpchandler_test

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"

	inventoryv1 "github.com/duetkit/duet/gen/duet/inventory/v1"
	typev1 "github.com/duetkit/duet/gen/duet/type/v1"
	"github.com/duetkit/duet/kit/apierr"
	"github.com/duetkit/duet/kit/client"
	"github.com/duetkit/duet/kit/pagetoken"
	"github.com/duetkit/duet/kit/server"
	"github.com/duetkit/duet/kit/server/servertest"
	"github.com/duetkit/duet/services/inventory/domain"
	"github.com/duetkit/duet/services/inventory/grpchandler"
	"github.com/duetkit/duet/services/inventory/store"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		goleak.IgnoreTopFunction("go.opencensus.io/stats/view.(*worker).start"),
	)
}

// serve runs a handler over a fresh SQLite store behind kit/server with
// protovalidate switched off, so these tests see what the handler itself
// answers to input the contract's rules would normally have stopped.
func serve(t *testing.T, opts ...domain.Option) inventoryv1.InventoryServiceClient {
	t.Helper()
	c, _ := serveHandler(t, opts...)
	return c
}

// serveHandler is serve, returning the handler too.
func serveHandler(t *testing.T, opts ...domain.Option) (inventoryv1.InventoryServiceClient, *grpchandler.Handler) {
	t.Helper()
	return serveWith(t, server.Config{}, opts...)
}

// serveWith is serveHandler on a server configured by cfg (its logger
// discarded, validation off).
func serveWith(t *testing.T, cfg server.Config, opts ...domain.Option) (inventoryv1.InventoryServiceClient, *grpchandler.Handler) {
	t.Helper()
	db, err := store.Open(t.Context(), "sqlite::memory:")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = db.Close() })
	h := grpchandler.New(domain.NewService(store.New(db), opts...), slog.New(slog.DiscardHandler))
	cfg.Logger, cfg.DisableValidation = slog.New(slog.DiscardHandler), true
	srv := servertest.NewServer(t, cfg,
		func(r grpc.ServiceRegistrar) { inventoryv1.RegisterInventoryServiceServer(r, h) })
	return inventoryv1.NewInventoryServiceClient(srv.Dial(t, client.Config{DisableRetries: true})), h
}

// holdImports opens MaxConcurrentImports imports of one record each, for
// skus prefix0, prefix1 and so on, and leaves them open; it returns once
// every one holds a slot of h.
func holdImports(t *testing.T, ctx context.Context, c inventoryv1.InventoryServiceClient, h *grpchandler.Handler,
	prefix string) []grpc.ClientStreamingClient[inventoryv1.ImportStockRequest, inventoryv1.ImportStockResponse] {
	t.Helper()
	var held []grpc.ClientStreamingClient[inventoryv1.ImportStockRequest, inventoryv1.ImportStockResponse]
	for i := range grpchandler.MaxConcurrentImports {
		stream, err := c.ImportStock(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if err := stream.Send(&inventoryv1.ImportStockRequest{Sku: fmt.Sprint(prefix, i), Name: "Held", Price: eur(1), StockDelta: 1}); err != nil {
			t.Fatal(err)
		}
		held = append(held, stream)
	}
	waitImportsRunning(t, h, grpchandler.MaxConcurrentImports)
	return held
}

// waitImportsRunning waits until h runs n imports.
func waitImportsRunning(t *testing.T, h *grpchandler.Handler, n int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for h.ImportsRunning() != n {
		if time.Now().After(deadline) {
			t.Fatalf("%d imports running, want %d", h.ImportsRunning(), n)
		}
		time.Sleep(time.Millisecond)
	}
}

func eur(units int64) *typev1.Money { return &typev1.Money{CurrencyCode: "EUR", Units: units} }

func TestHandlerValidatesWithoutProtovalidate(t *testing.T) {
	c := serve(t)
	ctx := t.Context()
	if _, err := c.CreateProduct(ctx, &inventoryv1.CreateProductRequest{Sku: "A", Name: "A", Price: eur(1), Stock: 1}); err != nil {
		t.Fatal(err)
	}
	orderID := uuid.NewString()
	otherScope := pagetoken.Encode(pagetoken.Cursor{Scope: "users", ID: "A"})
	tests := []struct {
		name  string
		call  func() error
		field string
	}{
		{name: "create empty sku", field: "sku", call: func() error {
			_, err := c.CreateProduct(ctx, &inventoryv1.CreateProductRequest{Name: "X", Price: eur(1)})
			return err
		}},
		{name: "create long name", field: "name", call: func() error {
			_, err := c.CreateProduct(ctx, &inventoryv1.CreateProductRequest{Sku: "X", Name: strings.Repeat("x", 201), Price: eur(1)})
			return err
		}},
		{name: "create without price", field: "price", call: func() error {
			_, err := c.CreateProduct(ctx, &inventoryv1.CreateProductRequest{Sku: "X", Name: "X"})
			return err
		}},
		{name: "create bad currency", field: "price.currency_code", call: func() error {
			_, err := c.CreateProduct(ctx, &inventoryv1.CreateProductRequest{Sku: "X", Name: "X", Price: &typev1.Money{CurrencyCode: "eur", Units: 1}})
			return err
		}},
		{name: "create huge stock", field: "stock", call: func() error {
			_, err := c.CreateProduct(ctx, &inventoryv1.CreateProductRequest{Sku: "X", Name: "X", Price: eur(1), Stock: 1 << 40})
			return err
		}},
		{name: "get bad sku", field: "sku", call: func() error {
			_, err := c.GetProduct(ctx, &inventoryv1.GetProductRequest{Sku: "a/b"})
			return err
		}},
		{name: "list negative page size", field: "page_size", call: func() error {
			_, err := c.ListProducts(ctx, &inventoryv1.ListProductsRequest{PageSize: -1})
			return err
		}},
		{name: "list token of another listing", field: "page_token", call: func() error {
			_, err := c.ListProducts(ctx, &inventoryv1.ListProductsRequest{PageToken: otherScope})
			return err
		}},
		{name: "batch empty", field: "skus", call: func() error {
			_, err := c.BatchGetProducts(ctx, &inventoryv1.BatchGetProductsRequest{})
			return err
		}},
		{name: "batch bad sku", field: "skus[1]", call: func() error {
			_, err := c.BatchGetProducts(ctx, &inventoryv1.BatchGetProductsRequest{Skus: []string{"A", "?"}})
			return err
		}},
		{name: "batch duplicate", field: "skus[1]", call: func() error {
			_, err := c.BatchGetProducts(ctx, &inventoryv1.BatchGetProductsRequest{Skus: []string{"A", "A"}})
			return err
		}},
		{name: "reserve bad order id", field: "order_id", call: func() error {
			_, err := c.ReserveStock(ctx, &inventoryv1.ReserveStockRequest{OrderId: "1", Lines: []*inventoryv1.StockLine{{Sku: "A", Quantity: 1}}})
			return err
		}},
		{name: "reserve no lines", field: "lines", call: func() error {
			_, err := c.ReserveStock(ctx, &inventoryv1.ReserveStockRequest{OrderId: orderID})
			return err
		}},
		{name: "reserve negative quantity", field: "lines[0].quantity", call: func() error {
			_, err := c.ReserveStock(ctx, &inventoryv1.ReserveStockRequest{OrderId: orderID, Lines: []*inventoryv1.StockLine{{Sku: "A", Quantity: -1}}})
			return err
		}},
		{name: "reserve duplicate sku", field: "lines", call: func() error {
			_, err := c.ReserveStock(ctx, &inventoryv1.ReserveStockRequest{OrderId: orderID,
				Lines: []*inventoryv1.StockLine{{Sku: "A", Quantity: 1}, {Sku: "A", Quantity: 2}}})
			return err
		}},
		{name: "commit empty order id", field: "order_id", call: func() error {
			_, err := c.CommitStock(ctx, &inventoryv1.CommitStockRequest{})
			return err
		}},
		{name: "release bad order id", field: "order_id", call: func() error {
			_, err := c.ReleaseStock(ctx, &inventoryv1.ReleaseStockRequest{OrderId: "nope"})
			return err
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.call()
			if apierr.Code(err) != codes.InvalidArgument || apierr.Reason(err) != apierr.ReasonInvalidArgument {
				t.Fatalf("err = %v, want INVALID_ARGUMENT", err)
			}
			var fields []string
			for _, v := range apierr.FieldViolations(err) {
				fields = append(fields, v.Field)
			}
			if !slices.Equal(fields, []string{tt.field}) {
				t.Errorf("field violations = %v, want [%s]", fields, tt.field)
			}
		})
	}
}

// TestImportTooLarge: a stream past the record limit fails with
// RESOURCE_EXHAUSTED and applies none of its records.
func TestImportTooLarge(t *testing.T) {
	c := serve(t, domain.WithImportLimit(3))
	ctx := t.Context()
	send := func(n int) error {
		stream, err := c.ImportStock(ctx)
		if err != nil {
			return err
		}
		for i := range n {
			if err := stream.Send(&inventoryv1.ImportStockRequest{Sku: "NEW", Name: "New", Price: eur(1), StockDelta: int64(i + 1)}); err != nil {
				break // the service ended the stream; CloseAndRecv says why
			}
		}
		_, err = stream.CloseAndRecv()
		return err
	}
	err := send(4)
	if apierr.Code(err) != codes.ResourceExhausted || apierr.Reason(err) != grpchandler.ReasonImportTooLarge ||
		apierr.Info(err).GetMetadata()["max_records"] != "3" {
		t.Fatalf("4 records = %v, want RESOURCE_EXHAUSTED IMPORT_TOO_LARGE with max_records 3", err)
	}
	if _, err := c.GetProduct(ctx, &inventoryv1.GetProductRequest{Sku: "NEW"}); !apierr.Is(err, grpchandler.ReasonProductNotFound) {
		t.Errorf("a refused import applied records: %v", err)
	}
	if err := send(3); err != nil {
		t.Errorf("3 records = %v", err)
	}
	p, err := c.GetProduct(ctx, &inventoryv1.GetProductRequest{Sku: "NEW"})
	if err != nil || p.GetProduct().GetAvailable() != 6 {
		t.Errorf("NEW = %v, %v; want 6 available", p.GetProduct(), err)
	}
}

// TestConcurrentImportsBounded: MaxConcurrentImports imports may be open
// at once, each holding its records until its client closes it; one more
// is refused with RESOURCE_EXHAUSTED IMPORTS_BUSY and a retry delay, and
// goes through once one of them has finished.
func TestConcurrentImportsBounded(t *testing.T) {
	c, h := serveHandler(t)
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	// Every held import has reached the service: probing earlier, an
	// empty import could take a slot first and have a held one refused.
	open := holdImports(t, ctx, c, h, "HELD-")
	empty := func() error {
		stream, err := c.ImportStock(ctx)
		if err != nil {
			return err
		}
		_, err = stream.CloseAndRecv()
		return err
	}
	err := empty()
	if d, ok := apierr.RetryDelay(err); apierr.Reason(err) != grpchandler.ReasonImportsBusy || apierr.Code(err) != codes.ResourceExhausted || !ok || d <= 0 {
		t.Fatalf("import beside %d open ones: %v (retry delay %v, %v); want RESOURCE_EXHAUSTED IMPORTS_BUSY with a retry delay", len(open), err, d, ok)
	}
	if _, err := open[0].CloseAndRecv(); err != nil {
		t.Fatal(err)
	}
	for {
		err := empty()
		if err == nil {
			break
		}
		if apierr.Reason(err) != grpchandler.ReasonImportsBusy || ctx.Err() != nil {
			t.Fatalf("import after one finished: %v", err)
		}
	}
	for _, s := range open[1:] {
		if _, err := s.CloseAndRecv(); err != nil {
			t.Fatal(err)
		}
	}
}

// TestIdleImportsFreeTheirSlots: an import whose client sends nothing for
// ImportIdleTimeout ends with DEADLINE_EXCEEDED IMPORT_IDLE and applies
// nothing, so clients that open imports and go quiet cannot hold every slot
// for as long as they keep their streams; an import that keeps sending is
// not cut off however long it lasts.
func TestIdleImportsFreeTheirSlots(t *testing.T) {
	// Records come 200 ms apart; a pause of 3 s, which ends an import,
	// takes more than a loaded machine's hiccup under -race.
	defer grpchandler.SetImportIdleTimeout(3 * time.Second)()
	c, h := serveHandler(t)
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	idle := holdImports(t, ctx, c, h, "IDLE-")
	for _, s := range idle {
		// The answer, without closing the stream: the client stays quiet.
		if err := s.RecvMsg(new(inventoryv1.ImportStockResponse)); apierr.Code(err) != codes.DeadlineExceeded || apierr.Reason(err) != grpchandler.ReasonImportIdle {
			t.Errorf("idle import = %v, want DEADLINE_EXCEEDED IMPORT_IDLE", err)
		}
	}
	if _, err := c.GetProduct(ctx, &inventoryv1.GetProductRequest{Sku: "IDLE-0"}); !apierr.Is(err, grpchandler.ReasonProductNotFound) {
		t.Errorf("an idle import applied its record: %v", err)
	}
	waitImportsRunning(t, h, 0)
	// A slow but steady import, well past the idle timeout in all, with
	// an invalid record on the way, goes through.
	stream, err := c.ImportStock(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 20 {
		req := &inventoryv1.ImportStockRequest{Sku: "STEADY", Name: "Steady", Price: eur(1), StockDelta: 1}
		if i == 3 {
			req.Price = &typev1.Money{CurrencyCode: "??", Units: 1}
		}
		if err := stream.Send(req); err != nil {
			t.Fatal(err)
		}
		time.Sleep(200 * time.Millisecond) // a slow client, not a wait for the service
	}
	sum, err := stream.CloseAndRecv()
	if err != nil || sum.GetApplied() != 19 || sum.GetRejected() != 1 {
		t.Fatalf("steady import = %v, %v; want 19 applied, 1 rejected", sum, err)
	}
}

// TestImportTimeout: an import still open ImportTimeout after it began
// ends with DEADLINE_EXCEEDED IMPORT_TIMEOUT and applies nothing, however
// steadily its client sends: a record every 29 s kept the idle bound from
// firing and held a slot for as long as the client liked.
func TestImportTimeout(t *testing.T) {
	defer grpchandler.SetImportTimeout(2 * time.Second)()
	c, h := serveHandler(t)
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	stream, err := c.ImportStock(ctx)
	if err != nil {
		t.Fatal(err)
	}
	// A record every 100 ms (a trickle, under the idle bound) until the
	// service ends the stream; Send fails only then.
	for i := 0; ; i++ {
		if i == 150 {
			t.Fatal("the import was not cut off after 15 s of records")
		}
		if err := stream.Send(&inventoryv1.ImportStockRequest{Sku: "TRICKLE", Name: "Trickle", Price: eur(1), StockDelta: 1}); err != nil {
			break
		}
		time.Sleep(100 * time.Millisecond) // the client's pace, not a wait for the service
	}
	if err := stream.RecvMsg(new(inventoryv1.ImportStockResponse)); apierr.Code(err) != codes.DeadlineExceeded || apierr.Reason(err) != grpchandler.ReasonImportTimeout {
		t.Errorf("trickling import = %v, want DEADLINE_EXCEEDED IMPORT_TIMEOUT", err)
	}
	if _, err := c.GetProduct(ctx, &inventoryv1.GetProductRequest{Sku: "TRICKLE"}); !apierr.Is(err, grpchandler.ReasonProductNotFound) {
		t.Errorf("a timed-out import applied its records: %v", err)
	}
	waitImportsRunning(t, h, 0)
}

// panickyStream panics in RecvMsg on a record for the sku "PANIC".
type panickyStream struct{ grpc.ServerStream }

func (s panickyStream) RecvMsg(m any) error {
	err := s.ServerStream.RecvMsg(m)
	if r, ok := m.(*inventoryv1.ImportStockRequest); ok && err == nil && r.GetSku() == "PANIC" {
		panic("receiving a record")
	}
	return err
}

// TestImportPanicWhileReceiving: a panic while an import receives (an
// interceptor's, the codec's) is the call's INTERNAL, as on any other
// call, not the end of the process: the import receives on a goroutine of
// its own, where nothing else would recover it.
func TestImportPanicWhileReceiving(t *testing.T) {
	c, _ := serveWith(t, server.Config{StreamInterceptors: []grpc.StreamServerInterceptor{
		func(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
			return handler(srv, panickyStream{ss})
		},
	}})
	stream, err := c.ImportStock(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.Send(&inventoryv1.ImportStockRequest{Sku: "PANIC", Name: "P", Price: eur(1), StockDelta: 1}); err != nil {
		t.Fatal(err)
	}
	if _, err := stream.CloseAndRecv(); apierr.Code(err) != codes.Internal {
		t.Errorf("import = %v, want INTERNAL", err)
	}
	if _, err := c.GetProduct(t.Context(), &inventoryv1.GetProductRequest{Sku: "PANIC"}); !apierr.Is(err, grpchandler.ReasonProductNotFound) {
		t.Errorf("after the panic: %v, want the service up and nothing applied", err)
	}
}
