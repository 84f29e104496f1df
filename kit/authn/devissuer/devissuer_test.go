package devissuer_test

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"testing"

	"github.com/duetkit/duet/kit/authn"
	"github.com/duetkit/duet/kit/authn/devissuer"
)

// TestSaveLoad: an issuer saved and loaded signs tokens the key set it
// saved accepts, and its key file is the owner's alone.
func TestSaveLoad(t *testing.T) {
	dir := t.TempDir()
	keyFile, keysFile := filepath.Join(dir, "key.jwk"), filepath.Join(dir, "jwks.json")
	iss, err := devissuer.New("https://id.test", "k1")
	if err != nil {
		t.Fatal(err)
	}
	if err := iss.Save(keyFile, keysFile); err != nil {
		t.Fatal(err)
	}
	if info, err := os.Stat(keyFile); err != nil || info.Mode().Perm() != 0o600 {
		t.Fatalf("key file: %v, %v; want mode 0600", info, err)
	}
	loaded, err := devissuer.Load("https://id.test", keyFile)
	if err != nil {
		t.Fatal(err)
	}
	token, err := loaded.Sign(devissuer.Claims{Subject: "u", Audience: []string{"a"}})
	if err != nil {
		t.Fatal(err)
	}
	v, err := authn.Load(context.Background(), authn.Config{KeysFile: keysFile, Issuer: "https://id.test", Audience: "a", Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close()
	if id, err := v.Verify(token); err != nil || id.Subject != "u" {
		t.Fatalf("a loaded issuer's token: %+v, %v", id, err)
	}
	// The public key set is no key to load.
	if _, err := devissuer.Load("https://id.test", keysFile); err == nil {
		t.Fatal("Load took the public key set as a key")
	}
}
