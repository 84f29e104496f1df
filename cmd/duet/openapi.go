package main

import (
	"context"
	"io"

	"github.com/duetkit/duet/internal/system"
)

// openAPICmd runs `duet openapi`: the REST API's OpenAPI document of all
// five services, as `duet up`'s gateway serves it at /openapi.json
// (validation rules included), on stdout, to generate or check a client
// without running the system.
func openAPICmd(_ context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("openapi", "duet openapi [flags] > openapi.json   (the REST API's OpenAPI document of all five services, as duet up serves it at /openapi.json)", stderr)
	tokens := fs.Bool("tokens", false, "declare the end users' tokens every call but the public ones needs, as a gateway with --auth-keys does")
	if err := parse(fs, args); err != nil {
		return err
	}
	doc, err := system.OpenAPI(*tokens)
	if err != nil {
		return err
	}
	// As served, without a newline of its own: cmp with a curl of
	// /openapi.json holds.
	_, err = stdout.Write(doc)
	return err
}
