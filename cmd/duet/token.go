package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"
	"unicode"

	"github.com/duetkit/duet/kit/authn/devissuer"
	"github.com/duetkit/duet/kit/mtls/devca"
)

// maxTokenTTL bounds `duet token --ttl`: a development token should not
// outlive the afternoon it was made for.
const maxTokenTTL = 24 * time.Hour

// tokenCmd runs `duet token SUBJECT`: an end user's token signed by a
// development issuer, made once in DIR/issuer and reused, for trying
// `duet serve --auth-keys` without an identity provider.
func tokenCmd(_ context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("token", "duet token [flags] SUBJECT   (an end user's token for `duet serve --auth-keys`; SUBJECT is its \"sub\")", stderr)
	dir := fs.String("dir", "certs", "directory to write into: DIR/issuer/ holds the development issuer's key (made once, reused) and its key set, jwks.json, for --auth-keys")
	issuer := fs.String("issuer", "duet-dev", "the token's \"iss\", for --auth-issuer")
	audience := fs.String("audience", "duet", "the token's \"aud\", for --auth-audience")
	scopes := fs.String("scope", "", "the token's \"scope\": names separated by commas or spaces")
	ttl := fs.Duration("ttl", time.Hour, "how long the token is valid (at most 24h)")
	subjects, err := parseInterleaved(fs, args)
	if err != nil {
		return err
	}
	switch {
	case len(subjects) != 1:
		fs.Usage()
		return errors.New("token needs one subject")
	case subjects[0] == "":
		return errors.New("the subject must not be empty")
	case strings.TrimSpace(subjects[0]) != subjects[0]:
		return fmt.Errorf("the subject %q has blanks at an end", subjects[0])
	case *ttl <= 0 || *ttl > maxTokenTTL:
		return fmt.Errorf("--ttl must be over 0 and at most %v, got %v", maxTokenTTL, *ttl)
	case strings.TrimSpace(*issuer) == "" || strings.TrimSpace(*audience) == "":
		return errors.New("--issuer and --audience must not be empty")
	}
	iss, err := openIssuer(*dir, strings.TrimSpace(*issuer), stderr)
	if err != nil {
		return err
	}
	token, err := iss.Sign(devissuer.Claims{Subject: subjects[0], Audience: []string{strings.TrimSpace(*audience)},
		Scopes: strings.FieldsFunc(*scopes, func(r rune) bool { return r == ',' || unicode.IsSpace(r) }), Expiry: time.Now().Add(*ttl)})
	if err != nil {
		return err
	}
	fmt.Fprintln(stdout, token)
	return nil
}

// openIssuer loads the development issuer in dir/issuer, making it the
// first time: in a directory of its own, renamed into place whole, so
// that runs at once agree on one key. It checks that the key set beside
// the key publishes that key, writing it again if it is missing.
func openIssuer(dir, name string, stderr io.Writer) (*devissuer.Issuer, error) {
	issuerDir := filepath.Join(dir, "issuer")
	keyFile, keysFile := filepath.Join(issuerDir, "key.jwk"), filepath.Join(issuerDir, "jwks.json")
	if !exists(issuerDir) {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return nil, err
		}
		tmp, err := os.MkdirTemp(dir, ".issuer-")
		if err != nil {
			return nil, err
		}
		defer os.RemoveAll(tmp) // gone once renamed; a loser's copy otherwise
		iss, err := devissuer.New(name, "")
		if err != nil {
			return nil, err
		}
		if err := iss.Save(filepath.Join(tmp, "key.jwk"), filepath.Join(tmp, "jwks.json")); err != nil {
			return nil, err
		}
		if err := os.Rename(tmp, issuerDir); err == nil {
			fmt.Fprintf(stderr, "made a development token issuer in %s: give duet up (or each duet serve) --auth-keys %s --auth-issuer %s\n", issuerDir, keysFile, name)
			return iss, nil
		} else if !exists(issuerDir) {
			return nil, err
		}
		// Another run made it first: use its key.
	}
	remake := fmt.Sprintf("remove %s to make a new issuer; tokens it signed stop being accepted", issuerDir)
	iss, err := devissuer.Load(name, keyFile)
	switch {
	case errors.Is(err, os.ErrNotExist):
		return nil, fmt.Errorf("%s has no key.jwk (%s)", issuerDir, remake)
	case errors.Is(err, devissuer.ErrNotAKey):
		return nil, fmt.Errorf("%w (%s)", err, remake)
	case err != nil:
		return nil, err
	}
	want, err := iss.KeySet()
	if err != nil {
		return nil, err
	}
	switch got, err := os.ReadFile(keysFile); {
	case errors.Is(err, os.ErrNotExist):
		if err := devca.WriteFile(keysFile, want); err != nil {
			return nil, err
		}
		fmt.Fprintf(stderr, "wrote %s again from the issuer's key\n", keysFile)
	case err != nil:
		return nil, err
	case !bytes.Equal(got, want):
		return nil, fmt.Errorf("%s does not publish the key in key.jwk, so services would refuse its tokens (%s)", keysFile, remake)
	}
	return iss, nil
}
