package main

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestREADMETokenExample runs README's `duet token` block verbatim, with
// ./duet this test binary and localhost:8080 a gateway the test starts
// as the block's comment says (every service and the gateway given the
// development issuer's key set; here the user service and the gateway,
// all the block calls): a user reads their own record with their token,
// is refused the list of users, and an admin's token lists them.
func TestREADMETokenExample(t *testing.T) {
	if _, err := exec.LookPath("curl"); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("curl not installed") // CI must run the README, not pass it by
		}
		t.Skip("curl not installed")
	}
	readme, err := os.ReadFile(filepath.Join("..", "..", "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	_, block, ok := strings.Cut(string(readme), "To try it without an identity provider")
	_, block, ok2 := strings.Cut(block, "```sh\n")
	block, _, ok3 := strings.Cut(block, "```")
	if !ok || !ok2 || !ok3 {
		t.Fatal("README has no duet token example")
	}
	// The block's first line makes the issuer; the commented lines say
	// what to start; the rest calls the gateway.
	first, rest, _ := strings.Cut(block, "\n")
	var calls []string
	for _, line := range strings.Split(rest, "\n") {
		if line != "" && !strings.HasPrefix(line, "#") {
			calls = append(calls, line)
		}
	}
	if !strings.HasPrefix(first, "./duet token ") || len(calls) < 4 {
		t.Fatalf("the example is not an issuer line and calls:\n%s", block)
	}

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	wrapper := "#!/bin/sh\nDUET_TEST_AS_DUET=1 exec '" + exe + "' \"$@\"\n"
	if err := os.WriteFile(filepath.Join(dir, "duet"), []byte(wrapper), 0o755); err != nil {
		t.Fatal(err)
	}
	bash := func(script string) string {
		t.Helper()
		cmd := exec.CommandContext(ctx, "bash", "-euo", "pipefail", "-c", script)
		cmd.Dir = dir
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		if err := cmd.Run(); err != nil {
			t.Fatalf("%v:\n%s\n%s", err, script, out.String())
		}
		return out.String()
	}
	bash(first)
	auth := []string{"--auth-keys", filepath.Join(dir, "certs", "issuer", "jwks.json"), "--auth-issuer", "duet-dev"}
	if !strings.Contains(block, strings.Join(auth[2:], " ")) || !strings.Contains(block, "--auth-keys certs/issuer/jwks.json") {
		t.Fatalf("the example's comment does not give the flags the test uses (%v):\n%s", auth, block)
	}
	user := startComponent(t, ctx, "user", append([]string{"--data-dir", t.TempDir()}, auth...)...)
	gateway := startComponent(t, ctx, "gateway", append([]string{"--user-target", user.addr, "--order-target", user.addr,
		"--payment-target", user.addr}, auth...)...)
	out := bash(strings.ReplaceAll(strings.Join(calls, "\n"), "localhost:8080", gateway.addr))

	// The answers in the order of the comments: a 401, the user, a 403,
	// the list.
	rest = strings.Join(strings.Fields(out), "")
	for i, want := range []string{`"TOKEN_MISSING"`, `"email":"me@example.com"`, `"NOT_PERMITTED"`, `"users":[{`} {
		at := strings.Index(rest, want)
		if at < 0 {
			t.Fatalf("answer %d lacks %s; the answers:\n%s", i+1, want, out)
		}
		rest = rest[at+len(want):]
	}
}
