package devissuer_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/json"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"testing"

	"github.com/go-jose/go-jose/v4"

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
}

// TestLoadRefuses: Load takes only the key Save writes.
func TestLoadRefuses(t *testing.T) {
	p256, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	other, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	p384, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	// A private key whose d is another key's, as a file could hold it.
	mine, err := json.Marshal(jose.JSONWebKey{Key: p256, KeyID: "k"})
	if err != nil {
		t.Fatal(err)
	}
	theirs, err := json.Marshal(jose.JSONWebKey{Key: other, KeyID: "k"})
	if err != nil {
		t.Fatal(err)
	}
	var mixed, donor map[string]any
	if err := json.Unmarshal(mine, &mixed); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(theirs, &donor); err != nil {
		t.Fatal(err)
	}
	mixed["d"] = donor["d"]
	tests := []struct {
		name string
		key  any // a jose.JSONWebKey, or its JSON as a map
	}{
		{"public", jose.JSONWebKey{Key: &p256.PublicKey, KeyID: "k"}},
		{"P-384", jose.JSONWebKey{Key: p384, KeyID: "k"}},
		{"symmetric", jose.JSONWebKey{Key: []byte("0123456789abcdef0123456789abcdef"), KeyID: "k"}},
		{"no kid", jose.JSONWebKey{Key: p256}},
		{"for ES384", jose.JSONWebKey{Key: p256, KeyID: "k", Algorithm: string(jose.ES384)}},
		{"for encryption", jose.JSONWebKey{Key: p256, KeyID: "k", Use: "enc"}},
		{"private part of another key", mixed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, err := json.Marshal(tt.key)
			if err != nil {
				t.Fatal(err)
			}
			file := filepath.Join(t.TempDir(), "key.jwk")
			if err := os.WriteFile(file, b, 0o600); err != nil {
				t.Fatal(err)
			}
			if _, err := devissuer.Load("https://id.test", file); !errors.Is(err, devissuer.ErrNotAKey) {
				t.Fatalf("Load = %v, want ErrNotAKey", err)
			}
		})
	}
	good, err := json.Marshal(jose.JSONWebKey{Key: p256, KeyID: "k"})
	if err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(t.TempDir(), "key.jwk")
	if err := os.WriteFile(file, good, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := devissuer.Load("https://id.test", file); err != nil {
		t.Fatalf("a good key: %v", err)
	}
}
