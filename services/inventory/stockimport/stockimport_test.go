package stockimport_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"

	inventoryv1 "github.com/duetkit/duet/gen/duet/inventory/v1"
	typev1 "github.com/duetkit/duet/gen/duet/type/v1"
	"github.com/duetkit/duet/kit/apierr"
	"github.com/duetkit/duet/kit/server"
	"github.com/duetkit/duet/kit/server/servertest"
	"github.com/duetkit/duet/services/inventory"
	"github.com/duetkit/duet/services/inventory/stockimport"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		goleak.IgnoreTopFunction("go.opencensus.io/stats/view.(*worker).start"),
	)
}

// serve registers services on a kit/server on a loopback port and returns
// a client of the inventory service there.
func serve(t *testing.T, register func(grpc.ServiceRegistrar), interceptors ...grpc.StreamServerInterceptor) inventoryv1.InventoryServiceClient {
	t.Helper()
	return inventoryv1.NewInventoryServiceClient(servertest.Start(t,
		server.Config{Logger: slog.New(slog.DiscardHandler), StreamInterceptors: interceptors}, register))
}

// start runs the real inventory service on a fresh SQLite database.
func start(t *testing.T, interceptors ...grpc.StreamServerInterceptor) inventoryv1.InventoryServiceClient {
	t.Helper()
	svc, err := inventory.Open(t.Context(), inventory.Config{
		DatabaseURL: "sqlite:" + filepath.Join(t.TempDir(), "inventory.db"),
		Logger:      slog.New(slog.DiscardHandler),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = svc.Close() }) // runs after the server's cleanup
	return serve(t, svc.Register, interceptors...)
}

func product(t *testing.T, c inventoryv1.InventoryServiceClient, sku string) *inventoryv1.Product {
	t.Helper()
	resp, err := c.GetProduct(t.Context(), &inventoryv1.GetProductRequest{Sku: sku})
	if err != nil {
		return nil
	}
	return resp.GetProduct()
}

func TestImport(t *testing.T) {
	c := start(t)
	if _, err := c.CreateProduct(t.Context(), &inventoryv1.CreateProductRequest{
		Sku: "MUG", Name: "Mug", Price: &typev1.Money{CurrencyCode: "EUR", Units: 900}, Stock: 4}); err != nil {
		t.Fatal(err)
	}
	const file = "\ufeffSKU, Name ,price,currency,stock\n" + // line 1: header, BOM and odd spacing allowed
		"TEE,\"T-shirt, size M\",1999,EUR,25\n" + // 2
		"TEE,,,,5\n" + // 3: accumulates
		"MUG,,,,-3\n" + // 4
		"\n" + // 5: blank, skipped
		"MUG,Big mug,,,\n" + // 6
		"BAD,Bad,19.99,EUR,1\n" + // 7: price not in minor units
		"BAD,Bad,1999,EUR,lots\n" + // 8: stock not a number
		"BAD,Bad,1999\n" + // 9: too few columns
		"BAD,Bad,1999,,1\n" + // 10: price without currency
		"BAD,Bad,,EUR,1\n" + // 11: currency without price
		"MUG,,,,-2\n" + // 12: the service rejects: only 1 left
		"GHOST,,,,7\n" + // 13: the service rejects: no such product
		"bad sku,Bad,100,EUR,1\n" + // 14: the service rejects the sku
		"LOW,Low,100,eur,1\n" + // 15: the service rejects the currency
		" CAP , Cap ,  250 , EUR , 3 \n" + // 16: spaces around fields
		"QUOTE,\"broken\"quote,1,EUR,1\n" + // 17: bad quoting
		"LAST,Last,100,EUR,0\n" // 18
	var progress []int
	resp, err := stockimport.Import(t.Context(), c, strings.NewReader(file), stockimport.Options{Progress: func(sent int) { progress = append(progress, sent) }})
	if err != nil {
		t.Fatal(err)
	}
	wantReasons := map[int64]string{
		7: stockimport.ReasonMalformedRow, 8: stockimport.ReasonMalformedRow, 9: stockimport.ReasonMalformedRow,
		10: stockimport.ReasonMalformedRow, 11: stockimport.ReasonMalformedRow, 17: stockimport.ReasonMalformedRow,
		12: "STOCK_BELOW_ZERO", 13: "UNKNOWN_PRODUCT", 14: "INVALID_SKU", 15: "INVALID_PRICE",
	}
	if resp.GetReceived() != 16 || resp.GetApplied() != 6 || resp.GetRejected() != 10 {
		t.Errorf("summary received %d applied %d rejected %d; want 16, 6, 10", resp.GetReceived(), resp.GetApplied(), resp.GetRejected())
	}
	var lines []int64
	for _, r := range resp.GetRejections() {
		lines = append(lines, r.GetLine())
		if wantReasons[r.GetLine()] != r.GetReason() || r.GetMessage() == "" {
			t.Errorf("line %d (%q): %s %q; want %s", r.GetLine(), r.GetSku(), r.GetReason(), r.GetMessage(), wantReasons[r.GetLine()])
		}
	}
	if !slices.Equal(lines, []int64{7, 8, 9, 10, 11, 12, 13, 14, 15, 17}) {
		t.Errorf("rejected lines = %v, want every bad line in order", lines)
	}
	if want := []int{1, 2, 3, 4, 5, 6, 7, 8, 9, 10}; !slices.Equal(progress, want) {
		t.Errorf("progress = %v, want %v", progress, want)
	}

	for _, tt := range []struct {
		sku, name string
		units     int64
		available int64
	}{
		{sku: "TEE", name: "T-shirt, size M", units: 1999, available: 30},
		{sku: "MUG", name: "Big mug", units: 900, available: 1},
		{sku: "CAP", name: "Cap", units: 250, available: 3},
		{sku: "LAST", name: "Last", units: 100, available: 0},
	} {
		p := product(t, c, tt.sku)
		if p.GetName() != tt.name || p.GetPrice().GetUnits() != tt.units || p.GetAvailable() != tt.available {
			t.Errorf("%s = %v; want %q, %d units, %d available", tt.sku, p, tt.name, tt.units, tt.available)
		}
	}
	for _, sku := range []string{"BAD", "GHOST", "LOW", "QUOTE"} {
		if p := product(t, c, sku); p != nil {
			t.Errorf("rejected %s was created: %v", sku, p)
		}
	}
}

func TestImportBadHeader(t *testing.T) {
	c := start(t)
	for _, file := range []string{
		"",
		"\n\n",
		"sku,name,price,currency\nA,A,1,EUR\n",
		"sku,name,currency,price,stock\nA,A,EUR,1,1\n",
		"A,A,1,EUR,1\n",
		"sku;name;price;currency;stock\n",
	} {
		t.Run(fmt.Sprintf("%q", file), func(t *testing.T) {
			if _, err := stockimport.Import(t.Context(), c, strings.NewReader(file), stockimport.Options{}); err == nil {
				t.Error("Import succeeded, want a header error")
			}
		})
	}
	if p := product(t, c, "A"); p != nil {
		t.Errorf("a file with a bad header was imported: %v", p)
	}
}

// gate is a server stream interceptor that tells when the service has
// received a number of records.
type gate struct {
	want     int64
	received atomic.Int64
	reached  chan struct{}
}

func (g *gate) intercept(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	if info.FullMethod != inventoryv1.InventoryService_ImportStock_FullMethodName {
		return handler(srv, ss) // the client's health Watch, say: its request is no record
	}
	return handler(srv, &gatedStream{ServerStream: ss, g: g})
}

type gatedStream struct {
	grpc.ServerStream
	g *gate
}

func (s *gatedStream) RecvMsg(m any) error {
	err := s.ServerStream.RecvMsg(m)
	if err == nil && s.g.received.Add(1) == s.g.want {
		close(s.g.reached)
	}
	return err
}

// failingReader yields data, then waits until the service has received the
// records in it, then fails: the import must be abandoned, not half applied.
type failingReader struct {
	data    io.Reader
	reached <-chan struct{}
}

var errDisk = errors.New("disk read error")

func (r *failingReader) Read(p []byte) (int, error) {
	n, err := r.data.Read(p)
	if errors.Is(err, io.EOF) {
		select {
		case <-r.reached:
		case <-time.After(10 * time.Second):
		}
		return n, errDisk
	}
	return n, err
}

func TestImportReadErrorAppliesNothing(t *testing.T) {
	g := &gate{want: 3, reached: make(chan struct{})}
	c := start(t, g.intercept)
	file := "sku,name,price,currency,stock\nA,A,100,EUR,1\nB,B,100,EUR,1\nC,C,100,EUR,1\n"
	_, err := stockimport.Import(t.Context(), c, &failingReader{data: strings.NewReader(file), reached: g.reached}, stockimport.Options{})
	if !errors.Is(err, errDisk) {
		t.Fatalf("Import = %v, want the read error", err)
	}
	select {
	case <-g.reached:
	default:
		t.Fatal("the service never received the records; the test proves nothing")
	}
	for _, sku := range []string{"A", "B", "C"} {
		if p := product(t, c, sku); p != nil {
			t.Errorf("%s was imported from a file that failed to read: %v", sku, p)
		}
	}
}

func TestImportCanceledContext(t *testing.T) {
	c := start(t)
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	_, err := stockimport.Import(ctx, c, strings.NewReader("sku,name,price,currency,stock\nA,A,100,EUR,1\n"), stockimport.Options{})
	if apierr.Code(err) != codes.Canceled && !errors.Is(err, context.Canceled) {
		t.Errorf("Import = %v, want canceled", err)
	}
	if p := product(t, c, "A"); p != nil {
		t.Errorf("a canceled import applied: %v", p)
	}
}

// refusingServer ends every import after two records, as the real service
// does past its record limit.
type refusingServer struct {
	inventoryv1.UnimplementedInventoryServiceServer
}

func (refusingServer) ImportStock(stream grpc.ClientStreamingServer[inventoryv1.ImportStockRequest, inventoryv1.ImportStockResponse]) error {
	for range 2 {
		if _, err := stream.Recv(); err != nil {
			return err
		}
	}
	return apierr.New(codes.ResourceExhausted, "IMPORT_TOO_LARGE", "too many records")
}

// TestImportServiceError: when the service ends the stream early, Import
// returns the service's error, not a bare EOF from Send.
func TestImportServiceError(t *testing.T) {
	c := serve(t, func(r grpc.ServiceRegistrar) { inventoryv1.RegisterInventoryServiceServer(r, refusingServer{}) })
	var b strings.Builder
	b.WriteString("sku,name,price,currency,stock\n")
	for i := range 5000 {
		fmt.Fprintf(&b, "SKU-%d,Name %d,100,EUR,1\n", i, i)
	}
	_, err := stockimport.Import(t.Context(), c, strings.NewReader(b.String()), stockimport.Options{})
	if apierr.Code(err) != codes.ResourceExhausted || apierr.Reason(err) != "IMPORT_TOO_LARGE" {
		t.Errorf("Import = %v, want RESOURCE_EXHAUSTED IMPORT_TOO_LARGE", err)
	}
}

// TestImportUnclosedQuote: a quote left open ran on into the rows after
// it, which were neither sent nor counted nor reported, while the rest of
// the file was applied; mending the row and importing the file again then
// added the other rows' stock twice.
func TestImportUnclosedQuote(t *testing.T) {
	const header = "sku,name,price,currency,stock\n"
	tests := []struct {
		name    string
		file    string
		wantErr string   // "" for an import that is applied
		applied []string // skus created
		absent  []string // skus not created
		lines   []int64  // rejected lines
	}{
		{
			name: "rows follow: nothing applied",
			file: header +
				"A,Apple,100,EUR,5\n" + // 2
				"B,\"Banana,100,EUR,5\n" + // 3: never closed
				"C,Cherry,100,EUR,5\n" + // 4
				"D,\"Date, dried\",100,EUR,5\n" + // 5: its quote closes B's field
				"E,Elder,100,EUR,5\n", // 6
			wantErr: "lines 3–5",
			absent:  []string{"A", "B", "C", "D", "E"},
		},
		{
			name: "to the end of the file: nothing applied",
			file: header +
				"A,Apple,100,EUR,5\n" +
				"B,\"Banana,100,EUR,5\n" +
				"C,Cherry,100,EUR,5\n",
			wantErr: "line 3",
			absent:  []string{"A", "B", "C"},
		},
		{
			name: "on the last row: only that row rejected",
			file: header +
				"A,Apple,100,EUR,5\n" +
				"B,\"Banana,100,EUR,5\n",
			applied: []string{"A"},
			absent:  []string{"B"},
			lines:   []int64{3},
		},
		{
			// The quote is closed by a later row's, whose next field
			// then has a bare quote: rows 4 and 5 were swallowed.
			name: "a bare quote after a runaway field: nothing applied",
			file: header +
				"A,Apple,100,EUR,5\n" + // 2
				"T,\"T-shirt,19.99,EUR,2\n" + // 3: never closed
				"B,Banana,100,EUR,5\n" + // 4
				"P,Pizza 12\",9\" base,EUR,5\n" + // 5: closes 3's field, then a bare quote
				"C,Cherry,100,EUR,5\n", // 6
			wantErr: "lines 3–5",
			absent:  []string{"A", "B", "C", "P", "T"},
		},
		{
			// The service refuses a name with a line break in it, but
			// the row reaches it, and the next row is read as a row.
			name: "a quoted field over two lines is data",
			file: header +
				"A,\"Apple,\nred\",100,EUR,5\n" +
				"B,Banana,100,EUR,5\n",
			applied: []string{"B"},
			absent:  []string{"A"},
			lines:   []int64{2},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := start(t)
			resp, err := stockimport.Import(t.Context(), c, strings.NewReader(tt.file), stockimport.Options{})
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Errorf("Import = %v, %v; want an error naming %s", resp, err, tt.wantErr)
				}
			} else if err != nil {
				t.Fatalf("Import: %v", err)
			} else {
				var lines []int64
				for _, r := range resp.GetRejections() {
					lines = append(lines, r.GetLine())
					if r.GetLine() == 2 && r.GetReason() == stockimport.ReasonMalformedRow {
						t.Errorf("line 2 rejected as %s (%s), want the service's rejection", r.GetReason(), r.GetMessage())
					}
				}
				if !slices.Equal(lines, tt.lines) || resp.GetApplied() != int64(len(tt.applied)) {
					t.Errorf("applied %d, rejected lines %v; want %d, %v", resp.GetApplied(), lines, len(tt.applied), tt.lines)
				}
			}
			for _, sku := range tt.applied {
				if product(t, c, sku) == nil {
					t.Errorf("%s was not imported", sku)
				}
			}
			for _, sku := range tt.absent {
				if p := product(t, c, sku); p != nil {
					t.Errorf("%s was imported: %v", sku, p)
				}
			}
		})
	}
}

// TestImportManyMalformedRows: the rows rejected here were all kept, each
// with its whole first field, however many and however long.
func TestImportManyMalformedRows(t *testing.T) {
	c := start(t)
	var file strings.Builder
	file.WriteString("sku,name,price,currency,stock\n")
	long := strings.Repeat("é", 5000) // 10,000 bytes
	const bad = 1500
	for range bad {
		file.WriteString(long + ",x,no price,EUR,1\n")
	}
	file.WriteString("OK,Fine,100,EUR,1\n")
	resp, err := stockimport.Import(t.Context(), c, strings.NewReader(file.String()), stockimport.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if resp.GetReceived() != bad+1 || resp.GetRejected() != bad || resp.GetApplied() != 1 || len(resp.GetRejections()) != 1000 {
		t.Fatalf("received %d, rejected %d, applied %d, %d rejections listed; want %d, %d, 1, 1000",
			resp.GetReceived(), resp.GetRejected(), resp.GetApplied(), len(resp.GetRejections()), bad+1, bad)
	}
	for _, r := range resp.GetRejections() {
		if len(r.GetSku()) > 64+len("…") || !strings.HasSuffix(r.GetSku(), "…") {
			t.Fatalf("line %d: sku echoed as %d bytes, want at most 64 and an ellipsis", r.GetLine(), len(r.GetSku()))
		}
	}
}

// TestImportID: the import id goes with the first record sent, a
// malformed first row notwithstanding, so the same file imported again
// applies nothing and gets the first summary, replayed.
func TestImportID(t *testing.T) {
	c := start(t)
	const file = "sku,name,price,currency,stock\n" +
		"BAD,Bad,19.99,EUR,1\n" + // malformed: not sent
		"CUP,Cup,500,EUR,3\n"
	opts := stockimport.Options{ImportID: "restock-1"}
	first, err := stockimport.Import(t.Context(), c, strings.NewReader(file), opts)
	if err != nil || first.GetApplied() != 1 || first.GetRejected() != 1 || first.GetReplayed() {
		t.Fatalf("first import = %v, %v", first, err)
	}
	again, err := stockimport.Import(t.Context(), c, strings.NewReader(file), opts)
	if err != nil || !again.GetReplayed() || again.GetApplied() != 1 || again.GetRejected() != 1 || again.GetImportId() != "restock-1" {
		t.Fatalf("the same file again = %v, %v; want the first summary, replayed", again, err)
	}
	if p := product(t, c, "CUP"); p.GetAvailable() != 3 {
		t.Fatalf("CUP = %v, want 3 available: imported once", p)
	}
}

// idBlindService answers imports as a service from before import ids did:
// applied, with no id echoed.
type idBlindService struct {
	inventoryv1.UnimplementedInventoryServiceServer
}

func (idBlindService) ImportStock(stream grpc.ClientStreamingServer[inventoryv1.ImportStockRequest, inventoryv1.ImportStockResponse]) error {
	var n int64
	for {
		if _, err := stream.Recv(); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			return err
		}
		n++
	}
	return stream.SendAndClose(&inventoryv1.ImportStockResponse{Received: n, Applied: n})
}

// TestImportIDIgnored: a service that does not echo the import id applied
// the import as a new one; Import says so rather than report a success a
// retry would repeat.
func TestImportIDIgnored(t *testing.T) {
	c := serve(t, func(r grpc.ServiceRegistrar) { inventoryv1.RegisterInventoryServiceServer(r, idBlindService{}) })
	const file = "sku,name,price,currency,stock\nCUP,Cup,500,EUR,3\n"
	if _, err := stockimport.Import(t.Context(), c, strings.NewReader(file), stockimport.Options{ImportID: "restock-1"}); err == nil ||
		!strings.Contains(err.Error(), "does not know import ids") {
		t.Fatalf("Import with an id the service ignores = %v, want an error saying so", err)
	}
	if _, err := stockimport.Import(t.Context(), c, strings.NewReader(file), stockimport.Options{}); err != nil {
		t.Fatalf("Import without an id = %v", err)
	}
}
