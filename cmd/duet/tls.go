package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"time"

	"google.golang.org/grpc/credentials"

	"github.com/duetkit/duet/kit/mtls"
)

// tlsFlags are the files of mutual TLS between components, for `duet
// serve` and for the commands that call a service.
type tlsFlags struct {
	cert, key, ca string
	refresh       time.Duration
}

func (t *tlsFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&t.cert, "tls-cert", "", "mutual TLS: PEM certificate (and intermediates) this process presents, to callers and to the services it calls; its DNS or IP names must match the addresses peers dial; with --tls-key and --tls-ca; none, plaintext gRPC")
	fs.StringVar(&t.key, "tls-key", "", "mutual TLS: PEM private key of --tls-cert")
	fs.StringVar(&t.ca, "tls-ca", "", "mutual TLS: PEM CA certificates that sign the peers' certificates (callers must present one)")
	fs.DurationVar(&t.refresh, "tls-refresh", mtls.DefaultRefresh, "mutual TLS: how often the three files are read again, so rotated certificates take effect without a restart (at least 1s)")
}

// given reports whether any of the three files is named: clientCreds
// then makes TLS credentials, or fails.
func (t *tlsFlags) given() bool {
	return !(mtls.Config{CertFile: t.cert, KeyFile: t.key, CAFile: t.ca}).IsZero()
}

// config returns the flags as kit/mtls takes them; zero when no file is
// named. With files, a refresh under a second is refused: they would be
// read in a loop.
func (t *tlsFlags) config() (mtls.Config, error) {
	cfg := mtls.Config{CertFile: t.cert, KeyFile: t.key, CAFile: t.ca, Refresh: t.refresh}
	if !cfg.IsZero() && t.refresh < time.Second {
		return mtls.Config{}, fmt.Errorf("--tls-refresh must be at least 1s, got %v", t.refresh)
	}
	return cfg, nil
}

// clientCreds loads the files for a command's one connection: nil (the
// default, plaintext) when none is named. The caller closes the
// credentials after the connection.
func (t *tlsFlags) clientCreds(ctx context.Context, log *slog.Logger) (credentials.TransportCredentials, func(), error) {
	cfg, err := t.config()
	if err != nil {
		return nil, nil, err
	}
	if cfg.IsZero() {
		return nil, func() {}, nil
	}
	cfg.Use, cfg.Logger = mtls.Call, log
	c, err := mtls.Load(ctx, cfg)
	if err != nil {
		return nil, nil, err
	}
	return c.Client(), c.Close, nil
}
