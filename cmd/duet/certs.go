package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/duetkit/duet/kit/mtls/devca"
)

// caLifetime is how long a CA `duet certs` makes is valid: the
// certificates it issues (--days) are renewed under it, and none can
// outlive it.
const caLifetime = 10 * 365 * 24 * time.Hour

// maxDays bounds --days, within the CA's life.
const maxDays = 1825

// exists reports whether name is there (an error other than "not there"
// counts as there: certs then stops rather than replace a CA).
func exists(name string) bool {
	_, err := os.Stat(name)
	return !errors.Is(err, os.ErrNotExist)
}

// certsCmd runs `duet certs NAME...`: a development CA and a certificate
// per name, for trying `duet serve` with mutual TLS.
func certsCmd(_ context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("certs", "duet certs [flags] NAME...   (a certificate per name: user, order, …, gateway, operator)", stderr)
	dir := fs.String("dir", "certs", "directory to write into: DIR/ca/ holds the CA (made once, reused), DIR/NAME/ each name's cert.pem, key.pem and ca.pem")
	days := fs.Int("days", 30, "how long the certificates are valid, in days (the CA, made once, ten years)")
	names, err := parseInterleaved(fs, args)
	if err != nil {
		return err
	}
	if len(names) == 0 {
		fs.Usage()
		return errors.New("certs needs at least one name")
	}
	if *days < 1 || *days > maxDays {
		return fmt.Errorf("--days must be 1 to %d, got %d", maxDays, *days)
	}
	for _, name := range names {
		if strings.EqualFold(name, "ca") || name != filepath.Base(name) || name == "." || name == ".." {
			return fmt.Errorf("%q cannot name a certificate's directory", name)
		}
	}
	lifetime := time.Duration(*days) * 24 * time.Hour
	caDir := filepath.Join(*dir, "ca")
	caCert, caKey := filepath.Join(caDir, "cert.pem"), filepath.Join(caDir, "key.pem")
	ca, err := devca.Load(caCert, caKey)
	switch {
	case errors.Is(err, os.ErrNotExist) && !exists(caCert) && !exists(caKey):
		if ca, err = devca.New("duet development CA", caLifetime); err != nil {
			return err
		}
		if err := os.MkdirAll(caDir, 0o700); err != nil {
			return err
		}
		if err := ca.Save(caCert, caKey); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "made a CA in %s, valid until %s\n", caDir, ca.NotAfter().UTC().Format(time.DateOnly))
	case err != nil:
		return fmt.Errorf("the CA in %s: %w (remove the directory to make a new CA, then issue every name again)", caDir, err)
	case time.Until(ca.NotAfter()) < lifetime:
		return fmt.Errorf("the CA in %s expires at %s, before certificates of %d days would: remove the directory to make a new CA, then issue every name again",
			caDir, ca.NotAfter().UTC().Format(time.RFC3339), *days)
	}
	for _, name := range names {
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

// parseInterleaved parses a command's flags given before, between and
// after its arguments (duet certs --days 1 user order --dir x), then the
// environment's, and returns the arguments.
func parseInterleaved(fs *flag.FlagSet, args []string) ([]string, error) {
	if len(args) > 0 && isHelp(args[0]) {
		fs.Usage()
		return nil, flag.ErrHelp
	}
	var rest []string
	for len(args) > 0 {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		if args = fs.Args(); len(args) > 0 {
			rest, args = append(rest, args[0]), args[1:]
		}
	}
	return rest, parse(fs, nil)
}
