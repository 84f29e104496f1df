package main

import (
	"bytes"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/duetkit/duet/kit/authn"
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

	for _, args := range [][]string{{"token", "--dir", dir}, {"token", "--dir", dir, "a", "b"}, {"token", "--dir", dir, " a"},
		{"token", "--dir", dir, "--ttl", "48h", "a"}, {"token", "--dir", dir, "--audience", "", "a"}} {
		if err := run(t.Context(), args, &stdout, &stderr); err == nil {
			t.Errorf("%v succeeded", args)
		}
	}
	// A half issuer is not replaced: tokens it signed would stop passing.
	if err := os.Remove(filepath.Join(dir, "issuer", "key.jwk")); err != nil {
		t.Fatal(err)
	}
	if err := run(t.Context(), []string{"token", "--dir", dir, "a"}, &stdout, &stderr); err == nil || !strings.Contains(err.Error(), "remove") {
		t.Errorf("with the key gone: %v, want a refusal naming the directory to remove", err)
	}
}
