package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"strings"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/local"

	"github.com/duetkit/duet/internal/system"
)

// bearerFlag is the --token flag of the commands that call a service
// (`duet stock import`, `duet order watch`): the end user's token the
// call carries, for services that check tokens (`duet up` or `duet
// serve` with --auth-keys). Under `duet serve` with mutual TLS an
// operator's certificate named in --auth-trusted needs none, and a token
// sent beside it is checked all the same: it decides the call.
type bearerFlag struct {
	token string
}

func (b *bearerFlag) register(fs *flag.FlagSet, needs string) {
	fs.StringVar(&b.token, "token", "", "an end user's token (the JWT alone, as `duet token` prints it), sent as \"authorization: Bearer\" with each call, for services that check tokens (--auth-keys); "+needs+"; a token sent is checked even from a certificate --auth-trusted names; in plaintext it goes only to a loopback address or a unix socket, elsewhere it needs the --tls-* flags; prefer the environment variable, which ps does not show")
}

// check refuses a token that could not be one, or that would cross the
// network in plaintext to target; withTLS says whether the --tls-* flags
// were given. It trims the token.
func (b *bearerFlag) check(target string, withTLS bool) error {
	if b.token == "" {
		return nil
	}
	b.token = strings.TrimSpace(b.token)
	switch {
	case b.token == "":
		return errors.New("--token (or DUET_TOKEN) is blank")
	case strings.HasPrefix(strings.ToLower(b.token), "bearer "):
		return errors.New(`--token takes the token alone, without "Bearer "`)
	case strings.ContainsFunc(b.token, func(r rune) bool { return r < ' ' || r == 0x7f }):
		return errors.New("--token has a control character")
	case strings.ContainsFunc(b.token, func(r rune) bool { return r == ' ' || r > '~' }):
		// A JWT is base64url and dots; anything else would be refused by
		// the service, or by HTTP/2 itself with a less helpful message.
		return errors.New("--token has a space or a character beyond ASCII, which no token has")
	case !withTLS && !system.LocalTarget(target):
		return fmt.Errorf("--token to %s over plaintext would show the token to the network: use the --tls-* flags, a loopback address or a unix socket", target)
	}
	return nil
}

// apply returns the transport credentials and dial options of a
// connection that carries the token check accepted, given the
// credentials the --tls-* flags made (nil: none). In plaintext they are
// grpc-go's local credentials, which refuse a connection to anything but
// a loopback address or a unix socket: a target's name (localhost) could
// resolve elsewhere, and the token goes with every call, health checks
// included.
func (b *bearerFlag) apply(creds credentials.TransportCredentials) (credentials.TransportCredentials, []grpc.DialOption) {
	if b.token == "" {
		return creds, nil
	}
	tlsGiven := creds != nil
	if !tlsGiven {
		creds = local.NewCredentials()
	}
	return creds, []grpc.DialOption{grpc.WithPerRPCCredentials(bearerCreds{header: "Bearer " + b.token, requireTLS: tlsGiven})}
}

// bearerCreds sends one token with every call (grpc-go's
// credentials.PerRPCCredentials). Its oauth package's equivalents
// demand a transport that grpc-go deems secure, which loopback TCP under
// local credentials is not; apply decides where plaintext is acceptable.
type bearerCreds struct {
	header     string
	requireTLS bool
}

// GetRequestMetadata returns the call's authorization header.
func (c bearerCreds) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return map[string]string{"authorization": c.header}, nil
}

// RequireTransportSecurity is true over TLS: grpc-go then refuses to send
// the token on a connection that does not report it.
func (c bearerCreds) RequireTransportSecurity() bool { return c.requireTLS }
