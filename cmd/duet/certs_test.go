package main

import (
	"bytes"
	"crypto/tls"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/duetkit/duet/kit/mtls"
	"github.com/duetkit/duet/kit/mtls/devca"
)

// TestCerts: `duet certs` makes a CA once and a certificate per name that
// kit/mtls loads, serving and calling, under the names peers dial; run
// again it keeps the CA and issues new certificates (a rotation the
// running processes pick up).
func TestCerts(t *testing.T) {
	dir := t.TempDir()
	var out bytes.Buffer
	if err := run(t.Context(), []string{"certs", "--dir", dir, "user", "gateway"}, &out, &out); err != nil {
		t.Fatalf("%v\n%s", err, out.String())
	}
	read := func(name string) []byte {
		b, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	for _, name := range []string{"user", "gateway"} {
		cfg := mtls.Config{
			CertFile: filepath.Join(dir, name, "cert.pem"), KeyFile: filepath.Join(dir, name, "key.pem"),
			CAFile: filepath.Join(dir, name, "ca.pem"),
		}
		c, err := mtls.Load(t.Context(), cfg)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		c.Close()
		pair, err := tls.LoadX509KeyPair(cfg.CertFile, cfg.KeyFile)
		if err != nil {
			t.Fatal(err)
		}
		if names := pair.Leaf.DNSNames; !slices.Contains(names, name) || !slices.Contains(names, "localhost") || len(pair.Leaf.IPAddresses) != 2 {
			t.Errorf("%s's certificate names %v %v", name, names, pair.Leaf.IPAddresses)
		}
		if info, err := os.Stat(cfg.KeyFile); err != nil {
			t.Error(err)
		} else if info.Mode().Perm() != 0o600 {
			t.Errorf("%s's key file has mode %v", name, info.Mode())
		}
	}
	ca, cert := read("ca/cert.pem"), read("user/cert.pem")

	if err := run(t.Context(), []string{"certs", "--dir", dir, "user"}, &out, &out); err != nil {
		t.Fatalf("again: %v\n%s", err, out.String())
	}
	if !bytes.Equal(read("ca/cert.pem"), ca) || !bytes.Equal(read("user/ca.pem"), ca) {
		t.Error("run again, certs made a new CA")
	}
	if bytes.Equal(read("user/cert.pem"), cert) {
		t.Error("run again, certs kept the old certificate")
	}

	out.Reset()
	if err := run(t.Context(), []string{"help", "certs"}, &out, &out); (err != nil && !errors.Is(err, flag.ErrHelp)) || !strings.Contains(out.String(), "--dir  [command line only]") {
		t.Errorf("help certs: %v\n%s", err, out.String())
	}
	for _, args := range [][]string{{"certs", "--dir", dir}, {"certs", "--dir", dir, "../x"}, {"certs", "--dir", dir, "CA"},
		{"certs", "--dir", dir, "--days", "0", "x"}, {"certs", "--dir", dir, "--days", "200000", "x"}} {
		if err := run(t.Context(), args, &out, &out); err == nil {
			t.Errorf("duet %s succeeded", strings.Join(args, " "))
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "x")); err == nil {
		t.Error("a refused run wrote a certificate")
	}
}

// TestCertsKeepsTheCA: certs never replaces a CA it cannot use: half of
// one (its key gone), or one that expires before the certificates would.
func TestCertsKeepsTheCA(t *testing.T) {
	tests := []struct {
		name  string
		setup func(t *testing.T, caDir string)
		want  string
	}{
		{"key gone", func(t *testing.T, caDir string) {
			if err := os.Remove(filepath.Join(caDir, "key.pem")); err != nil {
				t.Fatal(err)
			}
		}, "key.pem"},
		{"expiring", func(t *testing.T, caDir string) {
			ca, err := devca.New("short", 24*time.Hour)
			if err != nil {
				t.Fatal(err)
			}
			if err := ca.Save(filepath.Join(caDir, "cert.pem"), filepath.Join(caDir, "key.pem")); err != nil {
				t.Fatal(err)
			}
		}, "expires"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			var out bytes.Buffer
			if err := run(t.Context(), []string{"certs", "--dir", dir, "user"}, &out, &out); err != nil {
				t.Fatal(err)
			}
			caDir := filepath.Join(dir, "ca")
			tt.setup(t, caDir)
			before, _ := os.ReadFile(filepath.Join(caDir, "cert.pem"))
			err := run(t.Context(), []string{"certs", "--dir", dir, "order"}, &out, &out)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("certs: %v, want an error saying %q", err, tt.want)
			}
			if after, _ := os.ReadFile(filepath.Join(caDir, "cert.pem")); !bytes.Equal(before, after) {
				t.Error("certs replaced the CA")
			}
		})
	}
}
