package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"time"

	"google.golang.org/grpc"

	inventoryv1 "github.com/duetkit/duet/gen/duet/inventory/v1"
	orderv1 "github.com/duetkit/duet/gen/duet/order/v1"
	"github.com/duetkit/duet/internal/system"
	"github.com/duetkit/duet/kit/apierr"
	"github.com/duetkit/duet/kit/client"
	"github.com/duetkit/duet/services/inventory/stockimport"
)

// stockCmd runs `duet stock import FILE.csv`.
func stockCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("stock", "duet stock import [flags] FILE.csv   (CSV columns: "+strings.Join(stockimport.Header, ",")+")", stderr)
	target := fs.String("inventory-target", system.DefaultInventoryAddr, "inventory service address")
	var tls tlsFlags
	tls.register(fs)
	var bearer bearerFlag
	bearer.register(fs, "importing stock takes one with the duet:admin scope")
	importID := fs.String("import-id", "", "make the import idempotent: sent again with the same id (its answer lost, say), it applies nothing and prints the first one's summary; 1 to 128 characters, a new one per import meant to apply; the service forgets an id after its --import-retention, 30 days by default")
	if len(args) > 0 && isHelp(args[0]) {
		fs.Usage()
		return flag.ErrHelp
	}
	if len(args) == 0 || args[0] != "import" {
		fs.Usage()
		return errors.New("stock needs a subcommand: import")
	}
	file, err := parseWithArg(fs, args[1:], "FILE.csv")
	if err != nil {
		return err
	}
	f, err := os.Open(file)
	if err != nil {
		return err
	}
	defer f.Close()
	conn, closeTLS, err := dialTool(ctx, "inventory-target", *target, &tls, &bearer, stderr)
	if err != nil {
		return err
	}
	defer closeTLS()
	defer conn.Close()

	last := time.Now()
	progress := func(sent int) {
		if time.Since(last) >= 200*time.Millisecond {
			fmt.Fprintf(stderr, "\rsent %d records", sent)
			last = time.Now()
		}
	}
	sum, err := stockimport.Import(ctx, inventoryv1.NewInventoryServiceClient(conn), f, stockimport.Options{ImportID: *importID, Progress: progress})
	fmt.Fprint(stderr, "\r")
	if err != nil {
		return fmt.Errorf("import: %w", err)
	}
	if sum.GetReplayed() {
		fmt.Fprintf(stdout, "import %q was applied before; nothing was applied now. Its summary:\n", *importID)
	}
	fmt.Fprintf(stdout, "received %d, applied %d, rejected %d\n", sum.GetReceived(), sum.GetApplied(), sum.GetRejected())
	for _, r := range sum.GetRejections() {
		fmt.Fprintf(stdout, "  line %d (%s): %s: %s\n", r.GetLine(), r.GetSku(), r.GetReason(), r.GetMessage())
	}
	if n := sum.GetRejected(); n > 0 {
		// A script must see that its stock did not all go in: the
		// records applied stay applied, the rejected ones are listed.
		return fmt.Errorf("import: %d of %d records rejected", n, sum.GetReceived())
	}
	return nil
}

// orderCmd runs `duet order watch ID`.
func orderCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("order", "duet order watch [flags] ORDER_ID", stderr)
	target := fs.String("order-target", system.DefaultOrderAddr, "order service address")
	var tls tlsFlags
	tls.register(fs)
	var bearer bearerFlag
	bearer.register(fs, "watching an order takes its owner's, or one with the duet:admin scope")
	if len(args) > 0 && isHelp(args[0]) {
		fs.Usage()
		return flag.ErrHelp
	}
	if len(args) == 0 || args[0] != "watch" {
		fs.Usage()
		return errors.New("order needs a subcommand: watch")
	}
	id, err := parseWithArg(fs, args[1:], "ORDER_ID")
	if err != nil {
		return err
	}
	conn, closeTLS, err := dialTool(ctx, "order-target", *target, &tls, &bearer, stderr)
	if err != nil {
		return err
	}
	defer closeTLS()
	defer conn.Close()
	client := orderv1.NewOrderServiceClient(conn)
	var last string
	for reopen := false; ; reopen = true {
		err := watchOnce(ctx, client, id, stdout, &last, reopen)
		if err == nil || !apierr.Is(err, apierr.ReasonShuttingDown) {
			return err
		}
		// The service is stopping (a restart, a deploy) and says when to
		// come back: the watch is reopened, as the README asks of every
		// client of such a stream, and goes on from the order as it is.
		// The delay is the server's, kept within bounds so that a
		// server answering 0 cannot make this a busy loop.
		delay, ok := apierr.RetryDelay(err)
		if !ok {
			delay = time.Second
		}
		delay = min(max(delay, 100*time.Millisecond), 30*time.Second)
		fmt.Fprintf(stderr, "order service shutting down; reopening the watch in %v\n", delay)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(delay):
		}
	}
}

// watchOnce prints the order's changes from one WatchOrder stream until it
// ends; last is the line printed last, which a reopened stream's first
// message repeats and is then not printed again. A reopened watch that
// cannot start because the service is unreachable waits for it (the order
// service is restarting), until ctx ends.
func watchOnce(ctx context.Context, client orderv1.OrderServiceClient, id string, stdout io.Writer, last *string, reopen bool) error {
	stream, err := client.WatchOrder(ctx, &orderv1.WatchOrderRequest{Id: id}, grpc.WaitForReady(reopen))
	if err != nil {
		return err
	}
	for {
		resp, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		o := resp.GetOrder()
		line := fmt.Sprintf("%s  %-9s step=%s", o.GetUpdateTime().AsTime().Format(time.RFC3339Nano),
			strings.TrimPrefix(o.GetStatus().String(), "ORDER_STATUS_"), strings.TrimPrefix(o.GetStep().String(), "ORDER_STEP_"))
		if o.GetFailureReason() != "" {
			line += " reason=" + o.GetFailureReason()
		}
		if line == *last {
			continue
		}
		*last = line
		fmt.Fprintln(stdout, line)
	}
}

// parseWithArg parses flags around exactly one positional argument, so
// both `watch ID --flag` and `watch --flag ID` work.
func parseWithArg(fs *flag.FlagSet, args []string, name string) (string, error) {
	var pos []string
	for len(args) > 0 {
		if err := fs.Parse(args); err != nil {
			return "", err
		}
		args = fs.Args()
		if len(args) > 0 {
			pos = append(pos, args[0])
			args = args[1:]
		}
	}
	if len(pos) != 1 {
		fs.Usage()
		return "", fmt.Errorf("want exactly one %s, got %d", name, len(pos))
	}
	if err := parse(fs, nil); err != nil {
		return "", err
	}
	return pos[0], nil
}

// dialTool connects a command to the service its flag --name addresses,
// over mutual TLS when tls names files (a rotation refused is said on
// stderr), each call carrying bearer's token if one was given. The caller
// closes the connection, then calls the function returned.
func dialTool(ctx context.Context, name, target string, tls *tlsFlags, bearer *bearerFlag, stderr io.Writer) (*grpc.ClientConn, func(), error) {
	if err := system.CheckTarget(name, target); err != nil {
		return nil, nil, err
	}
	if err := bearer.check(target, tls.given()); err != nil {
		return nil, nil, err
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	creds, closeTLS, err := tls.clientCreds(ctx, log)
	if err != nil {
		return nil, nil, err
	}
	creds, opts := bearer.apply(creds)
	conn, err := client.New(target, client.Config{Creds: creds, Options: opts})
	if err != nil {
		closeTLS()
		return nil, nil, err
	}
	return conn, closeTLS, nil
}

// isHelp reports whether arg asks for a command's flags (`duet help CMD`
// passes --help) rather than naming its subcommand.
func isHelp(arg string) bool {
	return arg == "-h" || arg == "-help" || arg == "--help" || arg == "--h"
}
