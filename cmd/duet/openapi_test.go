package main

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"

	"github.com/duetkit/duet/gateway"
)

// TestOpenAPICommand: duet openapi prints the document a gateway of every
// service serves, with --tokens the one it serves checking tokens (the
// token scheme declared, CreateUser public), and refuses arguments and an
// environment variable for --tokens.
func TestOpenAPICommand(t *testing.T) {
	want, err := gateway.Document(gateway.Services(), nil)
	if err != nil {
		t.Fatal(err)
	}
	var stdout, stderr bytes.Buffer
	if err := run(t.Context(), []string{"openapi"}, &stdout, &stderr); err != nil {
		t.Fatal(err)
	}
	if stdout.String() != string(want) {
		t.Errorf("duet openapi printed %d bytes, not the gateway's document (%d)", stdout.Len(), len(want))
	}

	t.Setenv("DUET_TOKENS", "true") // no such variable: --tokens is the command line's
	stdout.Reset()
	if err := run(t.Context(), []string{"openapi"}, &stdout, &stderr); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(stdout.String(), "securityDefinitions") {
		t.Error("DUET_TOKENS declared tokens")
	}
	stdout.Reset()
	if err := run(t.Context(), []string{"openapi", "--tokens"}, &stdout, &stderr); err != nil {
		t.Fatal(err)
	}
	var doc struct {
		SecurityDefinitions map[string]json.RawMessage `json:"securityDefinitions"`
		Paths               map[string]map[string]struct {
			Security *[]json.RawMessage `json:"security"`
		} `json:"paths"`
	}
	if err := json.Unmarshal(stdout.Bytes(), &doc); err != nil {
		t.Fatal(err)
	}
	if create := doc.Paths["/v1/users"]["post"].Security; len(doc.SecurityDefinitions) == 0 || create == nil || len(*create) != 0 {
		t.Errorf("with --tokens: security definitions %v, CreateUser's security %v; want the scheme, and none needed for CreateUser", doc.SecurityDefinitions, create)
	}
	if err := run(t.Context(), []string{"openapi", "extra"}, &stdout, &stderr); err == nil {
		t.Error("an argument was taken")
	}
}
