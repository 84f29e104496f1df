package main

import (
	"bytes"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/duetkit/duet/kit/authn"
	"github.com/duetkit/duet/kit/authn/devissuer"
	"github.com/duetkit/duet/kit/mtls/mtlstest"
)

// TestToken: duet token makes a development issuer once and signs tokens
// that kit/authn accepts with the key set it wrote; a second run reuses
// the issuer, so the first run's key set accepts its tokens too.
func TestToken(t *testing.T) {
	dir := t.TempDir()
	var stdout, stderr bytes.Buffer
	if err := run(t.Context(), []string{"token", "--dir", dir, "--scope", "orders:read,admin", "user-1"}, &stdout, &stderr); err != nil {
		t.Fatal(err)
	}
	keys := filepath.Join(dir, "issuer", "jwks.json")
	if !strings.Contains(stderr.String(), "--auth-keys "+keys+" --auth-issuer duet-dev") {
		t.Errorf("the first run does not say how to use the issuer:\n%s", stderr.String())
	}
	if info, err := os.Stat(filepath.Join(dir, "issuer", "key.jwk")); err != nil || info.Mode().Perm() != 0o600 {
		t.Errorf("the issuer's key file: %v, %v; want mode 0600", info, err)
	}
	first := strings.TrimSpace(stdout.String())
	stdout.Reset()
	stderr.Reset()
	if err := run(t.Context(), []string{"token", "--dir", dir, "--ttl", "5m", "user-2"}, &stdout, &stderr); err != nil {
		t.Fatal(err)
	}
	if stderr.Len() != 0 {
		t.Errorf("the second run made an issuer again: %s", stderr.String())
	}
	second := strings.TrimSpace(stdout.String())

	v, err := authn.Load(t.Context(), authn.Config{KeysFile: keys, Issuer: "duet-dev", Audience: "duet", Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close()
	for token, want := range map[string]string{first: "user-1", second: "user-2"} {
		id, err := v.Verify(token)
		if err != nil || id.Subject != want {
			t.Fatalf("token for %s: %+v, %v", want, id, err)
		}
		if want == "user-1" && !(id.HasScope("orders:read") && id.HasScope("admin")) {
			t.Errorf("scopes %v, want orders:read and admin", id.Scopes)
		}
		if want == "user-2" && time.Until(id.Expiry) > 5*time.Minute {
			t.Errorf("a 5m token expires at %v", id.Expiry)
		}
	}

	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"token", "--dir", dir}, "one subject"},
		{[]string{"token", "--dir", dir, "a", "b"}, "one subject"},
		{[]string{"token", "--dir", dir, " a"}, "blanks"},
		{[]string{"token", "--dir", dir, ""}, "must not be empty"},
		{[]string{"token", "--dir", dir, "--ttl", "48h", "a"}, "--ttl"},
		{[]string{"token", "--dir", dir, "--audience", " ", "a"}, "must not be empty"},
	} {
		if err := run(t.Context(), c.args, &stdout, &stderr); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%v: %v, want an error saying %q", c.args, err, c.want)
		}
	}
}

// TestTokenIssuerKeptWhole: duet token notices an issuer directory that
// lost a file or whose key set is not its key's, and first runs at once
// agree on one key.
func TestTokenIssuerKeptWhole(t *testing.T) {
	newIssuer := func(t *testing.T) (dir, keyFile, keysFile string) {
		dir = t.TempDir()
		var out bytes.Buffer
		if err := run(t.Context(), []string{"token", "--dir", dir, "a"}, &out, &out); err != nil {
			t.Fatal(err)
		}
		return dir, filepath.Join(dir, "issuer", "key.jwk"), filepath.Join(dir, "issuer", "jwks.json")
	}
	token := func(t *testing.T, dir string) (string, string, error) {
		var stdout, stderr bytes.Buffer
		err := run(t.Context(), []string{"token", "--dir", dir, "a"}, &stdout, &stderr)
		return strings.TrimSpace(stdout.String()), stderr.String(), err
	}
	verify := func(t *testing.T, keysFile, tok string) {
		t.Helper()
		v, err := authn.Load(t.Context(), authn.Config{KeysFile: keysFile, Issuer: "duet-dev", Audience: "duet", Logger: slog.New(slog.DiscardHandler)})
		if err != nil {
			t.Fatal(err)
		}
		defer v.Close()
		if _, err := v.Verify(tok); err != nil {
			t.Fatalf("a token against the key set: %v", err)
		}
	}

	t.Run("key set lost", func(t *testing.T) {
		dir, _, keysFile := newIssuer(t)
		if err := os.Remove(keysFile); err != nil {
			t.Fatal(err)
		}
		tok, said, err := token(t, dir)
		if err != nil || !strings.Contains(said, "again") {
			t.Fatalf("%v; said %q", err, said)
		}
		verify(t, keysFile, tok)
	})
	t.Run("key lost", func(t *testing.T) {
		dir, keyFile, _ := newIssuer(t)
		if err := os.Remove(keyFile); err != nil {
			t.Fatal(err)
		}
		if _, _, err := token(t, dir); err == nil || !strings.Contains(err.Error(), "has no key.jwk") {
			t.Fatalf("%v, want a refusal saying the key is missing", err)
		}
	})
	t.Run("key set of another key", func(t *testing.T) {
		dir, _, keysFile := newIssuer(t)
		other, err := devissuer.New("duet-dev", "")
		if err != nil {
			t.Fatal(err)
		}
		set, err := other.KeySet()
		if err != nil {
			t.Fatal(err)
		}
		mtlstest.WriteFile(t, keysFile, set)
		if _, _, err := token(t, dir); err == nil || !strings.Contains(err.Error(), "does not publish") {
			t.Fatalf("%v, want a refusal saying the key set does not publish the key", err)
		}
	})
	t.Run("first runs at once", func(t *testing.T) {
		for range 20 { // a lost race is rare in any one round
			dir := t.TempDir()
			tokens := make([]string, 8)
			errs := make([]error, 8)
			var wg sync.WaitGroup
			for i := range tokens {
				wg.Go(func() { tokens[i], _, errs[i] = token(t, dir) })
			}
			wg.Wait()
			for i := range tokens {
				if errs[i] != nil {
					t.Fatalf("run %d: %v", i, errs[i])
				}
				verify(t, filepath.Join(dir, "issuer", "jwks.json"), tokens[i])
			}
			if left, _ := filepath.Glob(filepath.Join(dir, ".issuer-*")); len(left) != 0 {
				t.Fatalf("left behind: %v", left)
			}
		}
	})
}
