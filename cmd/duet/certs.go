package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/duetkit/duet/kit/mtls/devca"
)

// certsCmd runs `duet certs NAME...`: a development CA and a certificate
// per name, for trying `duet serve` with mutual TLS.
func certsCmd(_ context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("certs", "duet certs [flags] NAME...   (a certificate per name: user, order, …, gateway, operator)", stderr)
	dir := fs.String("dir", "certs", "directory to write into: DIR/ca/ holds the CA (made once, reused), DIR/NAME/ each name's cert.pem, key.pem and ca.pem")
	days := fs.Int("days", 30, "how long a new CA and the certificates are valid, in days")
	if len(args) > 0 && isHelp(args[0]) {
		fs.Usage()
		return flag.ErrHelp
	}
	var names []string
	for len(args) > 0 {
		if err := fs.Parse(args); err != nil {
			return err
		}
		if args = fs.Args(); len(args) > 0 {
			names, args = append(names, args[0]), args[1:]
		}
	}
	if err := parse(fs, nil); err != nil {
		return err
	}
	if len(names) == 0 {
		fs.Usage()
		return errors.New("certs needs at least one name")
	}
	if *days < 1 {
		return fmt.Errorf("--days must be at least 1, got %d", *days)
	}
	lifetime := time.Duration(*days) * 24 * time.Hour
	caDir := filepath.Join(*dir, "ca")
	caCert, caKey := filepath.Join(caDir, "cert.pem"), filepath.Join(caDir, "key.pem")
	ca, err := devca.Load(caCert, caKey)
	switch {
	case errors.Is(err, os.ErrNotExist):
		if ca, err = devca.New("duet development CA", lifetime); err != nil {
			return err
		}
		if err := os.MkdirAll(caDir, 0o700); err != nil {
			return err
		}
		if err := ca.Save(caCert, caKey); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "made a CA in %s\n", caDir)
	case err != nil:
		return fmt.Errorf("the CA in %s: %w", caDir, err)
	}
	for _, name := range names {
		if name == "ca" || name != filepath.Base(name) || name == "." || name == ".." {
			return fmt.Errorf("%q cannot name a certificate's directory", name)
		}
		cert, key, err := ca.Issue(devca.Leaf{
			Names:    []string{name, "localhost", "127.0.0.1", "::1"},
			NotAfter: time.Now().Add(lifetime),
		})
		if err != nil {
			return err
		}
		out := filepath.Join(*dir, name)
		if err := os.MkdirAll(out, 0o700); err != nil {
			return err
		}
		// The key first: a process re-reading the three files meanwhile
		// refuses a certificate with the old key, and reads them again.
		for _, f := range []struct {
			name string
			data []byte
		}{{"key.pem", key}, {"cert.pem", cert}, {"ca.pem", ca.PEM()}} {
			if err := devca.WriteFile(filepath.Join(out, f.name), f.data); err != nil {
				return err
			}
		}
		fmt.Fprintf(stdout, "%s: %s/{cert,key,ca}.pem (names %s, localhost, 127.0.0.1, ::1)\n", name, out, name)
	}
	return nil
}
