package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/duetkit/duet/kit/authn/devissuer"
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
	case strings.TrimSpace(subjects[0]) != subjects[0] || subjects[0] == "":
		return fmt.Errorf("the subject %q has blanks at an end", subjects[0])
	case *ttl <= 0 || *ttl > maxTokenTTL:
		return fmt.Errorf("--ttl must be over 0 and at most %v, got %v", maxTokenTTL, *ttl)
	case *issuer == "" || strings.TrimSpace(*audience) == "":
		return errors.New("--issuer and --audience must not be empty")
	}
	issuerDir := filepath.Join(*dir, "issuer")
	keyFile, keysFile := filepath.Join(issuerDir, "key.jwk"), filepath.Join(issuerDir, "jwks.json")
	iss, err := devissuer.Load(*issuer, keyFile)
	switch {
	case errors.Is(err, os.ErrNotExist) && !exists(keyFile) && !exists(keysFile):
		if iss, err = devissuer.New(*issuer, "duet-dev-"+time.Now().UTC().Format("20060102")); err != nil {
			return err
		}
		if err := os.MkdirAll(issuerDir, 0o700); err != nil {
			return err
		}
		if err := iss.Save(keyFile, keysFile); err != nil {
			return err
		}
		fmt.Fprintf(stderr, "made a development token issuer in %s: give services --auth-keys %s --auth-issuer %s\n", issuerDir, keysFile, *issuer)
	case err != nil:
		return fmt.Errorf("%w (remove %s to make a new issuer; tokens it signed stop being accepted)", err, issuerDir)
	}
	token, err := iss.Sign(devissuer.Claims{Subject: subjects[0], Audience: []string{*audience},
		Scopes: strings.FieldsFunc(*scopes, func(r rune) bool { return r == ',' || r == ' ' }), Expiry: time.Now().Add(*ttl)})
	if err != nil {
		return err
	}
	fmt.Fprintln(stdout, token)
	return nil
}
