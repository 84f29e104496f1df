// Package devissuer signs JSON Web Tokens for development and tests: the
// issuer an identity provider would be, with a key of its own (made in
// memory, and saved to files for `duet token`), so that kit/authn can be
// tried and tested without one.
//
// Production tokens come from an identity provider (Keycloak, Auth0,
// Dex, a cloud's); this package is not one: it has no users, no login
// and no revocation.
package devissuer

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"

	"github.com/duetkit/duet/kit/mtls/devca"
)

// Issuer signs tokens with one ES256 key.
type Issuer struct {
	// Name is the "iss" of the tokens it signs.
	Name   string
	key    jose.JSONWebKey
	signer jose.Signer
}

// New makes an issuer named name with a new key, whose "kid" is kid, or,
// when kid is empty, the key's own thumbprint (RFC 7638), so that no two
// keys share one.
func New(name, kid string) (*Issuer, error) {
	if name == "" {
		return nil, errors.New("devissuer: an issuer needs a name")
	}
	priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("devissuer: %w", err)
	}
	key := jose.JSONWebKey{Key: priv, KeyID: kid, Algorithm: string(jose.ES256), Use: "sig"}
	if kid == "" {
		thumb, err := key.Thumbprint(crypto.SHA256)
		if err != nil {
			return nil, fmt.Errorf("devissuer: %w", err)
		}
		key.KeyID = base64.RawURLEncoding.EncodeToString(thumb)
	}
	return withKey(name, key)
}

// withKey is an issuer signing with key.
func withKey(name string, key jose.JSONWebKey) (*Issuer, error) {
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: key}, (&jose.SignerOptions{}).WithType("JWT"))
	if err != nil {
		return nil, fmt.Errorf("devissuer: %w", err)
	}
	return &Issuer{Name: name, key: key, signer: signer}, nil
}

// Save writes the issuer's key, private, as a JSON Web Key to keyFile
// (mode 0600) and its public key set, as kit/authn reads it, to keysFile,
// each replaced by a rename.
func (i *Issuer) Save(keyFile, keysFile string) error {
	private, err := json.Marshal(i.key)
	if err != nil {
		return fmt.Errorf("devissuer: %w", err)
	}
	if err := devca.WriteFile(keyFile, private); err != nil {
		return fmt.Errorf("devissuer: %w", err)
	}
	return i.WriteKeySet(keysFile)
}

// WriteKeySet writes the issuer's public key set (KeySet) to file, for a
// verifier's Config.KeysFile (kit/authn) or --auth-keys, replacing it
// whole by a rename.
func (i *Issuer) WriteKeySet(file string) error {
	set, err := i.KeySet()
	if err != nil {
		return err
	}
	if err := devca.WriteFile(file, set); err != nil {
		return fmt.Errorf("devissuer: %w", err)
	}
	return nil
}

// ErrNotAKey is Load's error for a file that is not the key Save writes.
var ErrNotAKey = errors.New("not the private ES256 key, with a kid, that devissuer saves")

// Load reads an issuer's key that Save wrote; the issuer signs as name.
// It refuses anything else: a public key, another curve or algorithm, a
// key for encryption, a private part that does not match the public one.
func Load(name, keyFile string) (*Issuer, error) {
	if name == "" {
		return nil, errors.New("devissuer: an issuer needs a name")
	}
	b, err := os.ReadFile(keyFile)
	if err != nil {
		return nil, fmt.Errorf("devissuer: %w", err)
	}
	var key jose.JSONWebKey
	if err := key.UnmarshalJSON(b); err != nil {
		return nil, fmt.Errorf("devissuer: %s: %w: %w", keyFile, ErrNotAKey, err)
	}
	priv, ok := key.Key.(*ecdsa.PrivateKey)
	if !ok || key.KeyID == "" || priv.Curve != elliptic.P256() ||
		(key.Algorithm != "" && key.Algorithm != string(jose.ES256)) || (key.Use != "" && key.Use != "sig") {
		return nil, fmt.Errorf("devissuer: %s: %w", keyFile, ErrNotAKey)
	}
	// go-jose takes d, x and y as given: a d of another key would sign
	// what the published x and y do not verify.
	derived, err := priv.ECDH()
	if err != nil {
		return nil, fmt.Errorf("devissuer: %s: %w: %w", keyFile, ErrNotAKey, err)
	}
	given, err := priv.PublicKey.ECDH()
	if err != nil || !bytes.Equal(derived.PublicKey().Bytes(), given.Bytes()) {
		return nil, fmt.Errorf("devissuer: %s: %w: its private part is not its public key's", keyFile, ErrNotAKey)
	}
	key.Algorithm, key.Use = string(jose.ES256), "sig"
	return withKey(name, key)
}

// KeySet is the issuer's public JSON Web Key Set, as kit/authn reads it.
func (i *Issuer) KeySet() ([]byte, error) {
	return KeySet(i)
}

// KeySet is the public keys of issuers, in one JSON Web Key Set: the set
// a verifier reads while keys rotate.
func KeySet(issuers ...*Issuer) ([]byte, error) {
	var set jose.JSONWebKeySet
	for _, i := range issuers {
		set.Keys = append(set.Keys, i.key.Public())
	}
	return json.Marshal(set)
}

// Claims are what a token says.
type Claims struct {
	// Subject is the "sub": the user.
	Subject string
	// Audience is the "aud".
	Audience []string
	// Scopes go into "scope", joined by spaces.
	Scopes []string
	// NotBefore and Expiry bound the token's life; a zero NotBefore
	// means now, a zero Expiry an hour from NotBefore.
	NotBefore, Expiry time.Time
}

// Sign signs a token of c's claims.
func (i *Issuer) Sign(c Claims) (string, error) {
	nbf := c.NotBefore
	if nbf.IsZero() {
		nbf = time.Now()
	}
	exp := c.Expiry
	if exp.IsZero() {
		exp = nbf.Add(time.Hour)
	}
	registered := jwt.Claims{
		Issuer: i.Name, Subject: c.Subject, Audience: c.Audience,
		NotBefore: jwt.NewNumericDate(nbf), IssuedAt: jwt.NewNumericDate(nbf), Expiry: jwt.NewNumericDate(exp),
	}
	b := jwt.Signed(i.signer).Claims(registered)
	if len(c.Scopes) > 0 {
		b = b.Claims(map[string]any{"scope": strings.Join(c.Scopes, " ")})
	}
	token, err := b.Serialize()
	if err != nil {
		return "", fmt.Errorf("devissuer: %w", err)
	}
	return token, nil
}
