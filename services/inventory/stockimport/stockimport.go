// Package stockimport is the client side of InventoryService.ImportStock:
// it reads stock records from a CSV file and streams them to the service,
// which applies them all in one transaction when the file has been sent.
// `duet stock import FILE.csv` is built on it.
//
// # File format
//
// The first row is the header, exactly these five columns in this order
// (letter case and surrounding spaces do not matter):
//
//	sku,name,price,currency,stock
//	TSHIRT-M,"T-shirt, size M",1999,EUR,25
//	MUG,,,,-3
//	MUG,Coffee mug,,,
//
// Each following row is one record, applied in file order:
//
//   - sku names the product; a sku the shop does not have yet creates a
//     product, which then needs a name and a price.
//   - name is the display name; empty keeps the current one.
//   - price is the price of one unit in minor units (1999 EUR is €19.99);
//     empty keeps the current one. price and currency go together: give
//     both or neither. A product's currency never changes.
//   - stock is the number of units added to the available stock; negative
//     removes units, empty adds none. Stock never goes below zero.
//
// Rows of the same sku accumulate: two rows with stock 5 add 10. Fields are
// standard CSV (RFC 4180): quote a field that holds a comma. Blank lines are
// skipped.
//
// # Rejections
//
// A row that cannot be parsed (a wrong number of columns, a price or stock
// that is not a whole number, a price without a currency or the other way
// round, broken quoting) is rejected here, with reason MALFORMED_ROW and
// its line number, and not sent. The service rejects rows that parse but
// break its rules, with reasons such as INVALID_SKU, UNKNOWN_PRODUCT,
// MISSING_NAME, INVALID_PRICE, CURRENCY_MISMATCH and STOCK_BELOW_ZERO. A
// rejected row does not stop the import; every other row is applied.
//
// A quoted field whose closing quote is missing is different: CSV lets a
// quoted field run over several lines, so the rows after it are read as
// part of it, and the rows it took can no longer be told apart. Applying
// the rest of the file would leave them out without a word (and once the
// file is mended and imported again, add the other rows' stock twice), so
// when a row that cannot be parsed spans lines, Import returns an error
// naming them and the service applies nothing. A missing quote on the
// file's last row rejects only that row.
//
// If reading the file fails, or ctx ends, before the whole file is sent,
// Import cancels the stream and the service applies nothing.
package stockimport

import (
	"cmp"
	"context"
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"

	inventoryv1 "github.com/duetkit/duet/gen/duet/inventory/v1"
	typev1 "github.com/duetkit/duet/gen/duet/type/v1"
	"github.com/duetkit/duet/services/inventory/domain"
)

// ReasonMalformedRow is the rejection reason of a CSV row that could not be
// parsed into a record, and so was never sent.
const ReasonMalformedRow = "MALFORMED_ROW"

// Header is the header row the file must start with.
var Header = []string{"sku", "name", "price", "currency", "stock"}

// maxRejections is how many rejections a summary lists, as the service does.
const maxRejections = 1000

// Options tune an Import.
type Options struct {
	// ImportID, when set, makes the import idempotent: the service applies
	// an import under an id once while it remembers the id (30 days by
	// default: its --import-retention), and answers the same file sent again
	// (its answer lost, say) with the first one's summary, Replayed set;
	// another file under the same id is refused (FAILED_PRECONDITION,
	// reason IDEMPOTENCY_KEY_REUSED). 1 to 128 characters.
	ImportID string
	// Progress, when set, is called after each record sent with how many
	// have been.
	Progress func(sent int)
}

// Import streams the stock records of the CSV file read from r through
// client and returns the summary of the import once the service has applied
// it, under opts.ImportID when set (see Options).
//
// A service that does not know import ids ignores one and applies the
// import as a new one; Import then returns an error saying so (the import
// was applied: sending it again would apply it again).
//
// The summary covers the whole file: Received counts every data row,
// Rejected and Rejections include the rows rejected here as malformed, and
// Rejections (at most 1000) are in line order.
//
// A file without the expected header is an error before anything is sent.
// Errors from the service (RESOURCE_EXHAUSTED, reason IMPORT_TOO_LARGE, for
// a file of more than 100000 rows, say) are returned as they come.
func Import(ctx context.Context, client inventoryv1.InventoryServiceClient, r io.Reader, opts Options) (*inventoryv1.ImportStockResponse, error) {
	cr := csv.NewReader(r)
	cr.FieldsPerRecord = -1 // column counts are checked per row, to reject just that row
	header, err := cr.Read()
	if errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("stockimport: empty file: want the header %q", strings.Join(Header, ","))
	}
	if err != nil {
		return nil, fmt.Errorf("stockimport: read header: %w", err)
	}
	if err := checkHeader(header); err != nil {
		return nil, err
	}

	// Cancelling the stream is how an import is abandoned: the service
	// applies nothing unless the stream is closed normally.
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := client.ImportStock(ctx)
	if err != nil {
		return nil, err
	}
	var (
		// local keeps the first maxRejections rows rejected here, the
		// most the summary can list, and nLocal counts them all, so that
		// a file of millions of bad rows takes no more memory than a
		// thousand.
		local  []*inventoryv1.ImportRejection
		nLocal int64
		sent   int
	)
	reject := func(line int64, sku, problem string) {
		nLocal++
		if len(local) < maxRejections {
			local = append(local, malformed(line, domain.EchoSKU(sku), problem))
		}
	}
	for {
		row, err := cr.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		var parseErr *csv.ParseError
		if errors.As(err, &parseErr) {
			if parseErr.Line > parseErr.StartLine {
				// Whether the rows between are part of a quoted field
				// or rows a missing quote swallowed, a parse error
				// cannot tell.
				return nil, fmt.Errorf("stockimport: lines %d–%d: %w: a quoted field opened on line %d runs on to line %d, and may have taken the rows between into it; nothing was imported",
					parseErr.StartLine, parseErr.Line, parseErr.Err, parseErr.StartLine, parseErr.Line)
			}
			reject(int64(parseErr.StartLine), "", parseErr.Err.Error())
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("stockimport: read file: %w", err)
		}
		line, _ := cr.FieldPos(0)
		rec, problem := parseRow(row, int64(line))
		if problem != "" {
			reject(int64(line), strings.TrimSpace(row[0]), problem)
			continue
		}
		if sent == 0 {
			rec.ImportId = opts.ImportID
		}
		if err := stream.Send(rec); err != nil {
			if errors.Is(err, io.EOF) {
				// The service ended the stream; its status says why.
				_, err = stream.CloseAndRecv()
			}
			return nil, err
		}
		sent++
		if opts.Progress != nil {
			opts.Progress(sent)
		}
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	resp, err := stream.CloseAndRecv()
	if err != nil {
		return nil, err
	}
	if sent > 0 && resp.GetImportId() != opts.ImportID {
		return nil, fmt.Errorf("stockimport: the service answered for import id %q, not %q: it does not know import ids, and applied the import as a new one (received %d, applied %d, rejected %d); do not send it again",
			resp.GetImportId(), opts.ImportID, resp.GetReceived(), resp.GetApplied(), resp.GetRejected())
	}
	return merge(resp, local, nLocal), nil
}

// checkHeader checks the header row against Header.
func checkHeader(header []string) error {
	got := make([]string, len(header))
	for i, h := range header {
		got[i] = strings.ToLower(strings.TrimSpace(h))
	}
	if len(got) > 0 {
		got[0] = strings.TrimPrefix(got[0], "\ufeff") // a byte order mark some editors write
	}
	if !slices.Equal(got, Header) {
		return fmt.Errorf("stockimport: the first row must be the header %q, not %q",
			strings.Join(Header, ","), strings.Join(header, ","))
	}
	return nil
}

// parseRow turns one data row into a record, or says why it cannot.
func parseRow(row []string, line int64) (*inventoryv1.ImportStockRequest, string) {
	if len(row) != len(Header) {
		return nil, fmt.Sprintf("want %d columns (%s), got %d", len(Header), strings.Join(Header, ","), len(row))
	}
	for i := range row {
		row[i] = strings.TrimSpace(row[i])
	}
	sku, name, price, currency, stock := row[0], row[1], row[2], row[3], row[4]
	rec := &inventoryv1.ImportStockRequest{Line: line, Sku: sku, Name: name}
	switch {
	case price != "" && currency != "":
		units, err := strconv.ParseInt(price, 10, 64)
		if err != nil {
			return nil, fmt.Sprintf("price %q is not a whole number of minor units (write 1999 for 19.99)", price)
		}
		rec.Price = &typev1.Money{CurrencyCode: currency, Units: units}
	case price != "":
		return nil, "a price needs a currency"
	case currency != "":
		return nil, "a currency needs a price"
	}
	if stock != "" {
		delta, err := strconv.ParseInt(stock, 10, 64)
		if err != nil {
			return nil, fmt.Sprintf("stock %q is not a whole number", stock)
		}
		rec.StockDelta = delta
	}
	return rec, ""
}

func malformed(line int64, sku, message string) *inventoryv1.ImportRejection {
	return &inventoryv1.ImportRejection{Line: line, Sku: sku, Reason: ReasonMalformedRow, Message: message}
}

// merge adds the n rows rejected here, the first of which are local, to
// the service's summary.
func merge(resp *inventoryv1.ImportStockResponse, local []*inventoryv1.ImportRejection, n int64) *inventoryv1.ImportStockResponse {
	if n == 0 {
		return resp
	}
	resp.Received += n
	resp.Rejected += n
	all := append(resp.GetRejections(), local...)
	// Records were sent in file order, so the service's rejections are in
	// line order already; a stable sort interleaves the local ones.
	slices.SortStableFunc(all, func(a, b *inventoryv1.ImportRejection) int { return cmp.Compare(a.GetLine(), b.GetLine()) })
	resp.Rejections = all[:min(len(all), maxRejections)]
	return resp
}
