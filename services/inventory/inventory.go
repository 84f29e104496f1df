// Package inventory is the inventory service as a component: Open it with a
// database URL, Register it on a gRPC server, Close it on the way out.
// cmd/duet runs it embedded next to the other services or on its own; tests
// start it for real.
//
// The service keeps the shop's products, their prices and stock, and the
// stock reservations of orders (duet.inventory.v1.InventoryService). Its
// rules live in services/inventory/domain, its SQL in
// services/inventory/store and its gRPC mapping in
// services/inventory/grpchandler; services/inventory/stockimport is the
// client side of ImportStock, reading a CSV file.
package inventory

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"google.golang.org/grpc"

	inventoryv1 "github.com/duetkit/duet/gen/duet/inventory/v1"
	"github.com/duetkit/duet/kit/retention"
	"github.com/duetkit/duet/kit/sqldb"
	"github.com/duetkit/duet/services/inventory/domain"
	"github.com/duetkit/duet/services/inventory/grpchandler"
	"github.com/duetkit/duet/services/inventory/store"
)

// DefaultImportRetention is the default of Config.ImportRetention: a
// client that lost an import's answer sends it again within minutes, a
// nightly job's retries within days.
const DefaultImportRetention = 30 * 24 * time.Hour

// importPurgeChunk is the most imports one statement of the purge
// deletes: each keeps up to 1,000 rejections, and a statement deleting a
// year of them would hold SQLite's only connection, and every call of the
// service, until it ended.
const importPurgeChunk = 100

// Config configures the inventory service.
type Config struct {
	// DatabaseURL is the service's own database: "sqlite:PATH" or
	// "postgres://…" (see kit/sqldb.Open). Required.
	DatabaseURL string
	// ImportRetention is how long the service remembers a stock import
	// applied under an import_id (its summary, for the same import sent
	// again), at least: the ones older are deleted every minute, so the
	// table holds about a retention's worth of imports rather than every
	// one ever sent. Default DefaultImportRetention; negative remembers
	// them for ever, as the service did before it had this setting.
	ImportRetention time.Duration
	// Logger receives migration and error logs; nil means slog.Default().
	Logger *slog.Logger
}

// Service is a running inventory service: an open, migrated database and
// the gRPC handler over it.
type Service struct {
	db      *sqldb.DB
	handler *grpchandler.Handler
	// stopPurge ends the purge of old imports.
	stopPurge func()
}

// Open connects to the database, applies pending migrations, builds the
// service and starts the purge of imports older than cfg.ImportRetention.
// Close it when done.
func Open(ctx context.Context, cfg Config) (*Service, error) {
	if cfg.DatabaseURL == "" {
		return nil, errors.New("inventory: Config.DatabaseURL is required")
	}
	logger := cfg.Logger
	if logger == nil {
		logger = slog.Default()
	}
	logger = logger.With("service", "inventory")
	db, err := store.Open(ctx, cfg.DatabaseURL, sqldb.WithLogger(logger))
	if err != nil {
		return nil, err
	}
	st := store.New(db)
	keep := cfg.ImportRetention
	if keep == 0 {
		keep = DefaultImportRetention
	}
	stop := retention.Start(ctx, retention.Config{Retention: keep, Chunk: importPurgeChunk, Name: "stock imports", Logger: logger}, st.PurgeImports)
	return &Service{db: db, handler: grpchandler.New(domain.NewService(st), logger), stopPurge: stop}, nil
}

// Register adds InventoryService to r, typically a *server.Server from
// kit/server.
func (s *Service) Register(r grpc.ServiceRegistrar) {
	inventoryv1.RegisterInventoryServiceServer(r, s.handler)
}

// Close stops the purge and closes the database. Stop the gRPC server
// first so no call is still using it.
func (s *Service) Close() error {
	s.stopPurge()
	return s.db.Close()
}
