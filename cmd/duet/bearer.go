package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"strings"

	"google.golang.org/grpc"

	"github.com/duetkit/duet/internal/system"
)

// bearerFlag is the --token flag of the commands that call a service
// (`duet stock import`, `duet order watch`): the end user's token the
// call carries, for services that check tokens (`duet up` or `duet
// serve` with --auth-keys). Under `duet serve` with mutual TLS an
// operator's certificate named in --auth-trusted needs none.
type bearerFlag struct {
	token string
}

func (b *bearerFlag) register(fs *flag.FlagSet, needs string) {
	fs.StringVar(&b.token, "token", "", "an end user's token (the JWT alone, as `duet token` prints it), sent as \"authorization: Bearer\" with each call, for services that check tokens (--auth-keys); "+needs+"; sent in plaintext only to a loopback address or a unix socket, elsewhere it needs the --tls-* flags; prefer the environment variable, which ps does not show")
}

// dialOption checks the token and returns the option that sends it on a
// connection to target; nil when no token was given. withTLS says whether
// the connection is over TLS.
func (b *bearerFlag) dialOption(target string, withTLS bool) (grpc.DialOption, error) {
	token := strings.TrimSpace(b.token)
	switch {
	case b.token == "":
		return nil, nil
	case token == "":
		return nil, errors.New("--token is blank")
	case strings.HasPrefix(strings.ToLower(token), "bearer "):
		return nil, errors.New(`--token takes the token alone, without "Bearer "`)
	case strings.IndexFunc(token, func(r rune) bool { return r <= ' ' || r > '~' }) >= 0:
		// A JWT is base64url and dots; anything else would be refused by
		// the service, or by HTTP/2 itself with a less helpful message.
		return nil, errors.New("--token has a character no token has (a space, a control character or non-ASCII)")
	case !withTLS && !system.LocalTarget(target):
		return nil, fmt.Errorf("--token to %s over plaintext would show the token to the network: use the --tls-* flags, or a loopback address", target)
	}
	return grpc.WithPerRPCCredentials(bearerCreds{header: "Bearer " + token, requireTLS: withTLS}), nil
}

// bearerCreds sends one token with every call (grpc-go's
// credentials.PerRPCCredentials). Its oauth package's equivalents
// demand TLS for every connection, which a loopback `duet up` has not;
// dialOption decides where plaintext is acceptable.
type bearerCreds struct {
	header     string
	requireTLS bool
}

// GetRequestMetadata returns the call's authorization header.
func (c bearerCreds) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return map[string]string{"authorization": c.header}, nil
}

// RequireTransportSecurity holds the connection to what dialOption
// checked: over TLS, grpc-go then refuses to send the token on a
// connection that turned out otherwise.
func (c bearerCreds) RequireTransportSecurity() bool { return c.requireTLS }
