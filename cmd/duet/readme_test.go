package main

import (
	"bufio"
	"bytes"
	"context"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/duetkit/duet/internal/logbuffer"
)

// TestREADMETokenExample runs README's `duet token` block verbatim, with
// ./duet this test binary and localhost:8080 the gateway of the `duet
// up` the block's comment starts (its addresses, here, free ports): a
// user reads their own record with their token, is refused the list of
// users, and an admin's token lists them.
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
	const upLine = "./duet up --auth-keys certs/issuer/jwks.json --auth-issuer duet-dev"
	if !strings.Contains(block, "# start "+upLine+"\n") {
		t.Fatalf("the example's comment does not start %q:\n%s", upLine, block)
	}
	args := strings.Fields(strings.TrimPrefix(upLine, "./duet "))
	for _, flag := range []string{"--http-addr", "--user-addr", "--order-addr", "--payment-addr", "--inventory-addr", "--notification-addr"} {
		args = append(args, flag, "127.0.0.1:0")
	}
	up := exec.Command(exe, append(args, "--data-dir", t.TempDir())...) // stopped below, by SIGINT
	up.Dir = dir
	up.Env = append(os.Environ(), "DUET_TEST_AS_DUET=1")
	stdout, err := up.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	upLog := &logbuffer.Buffer{}
	up.Stderr = upLog
	if err := up.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = up.Process.Signal(os.Interrupt)
		exited := make(chan error, 1)
		go func() { exited <- up.Wait() }()
		select {
		case err := <-exited:
			if err != nil {
				t.Errorf("duet up: %v\n%s", err, upLog.String())
			}
		case <-time.After(30 * time.Second):
			_ = up.Process.Kill()
			<-exited
			t.Errorf("duet up did not stop on SIGINT within 30 s:\n%s", upLog.String())
		}
	})
	// "REST gateway   http://ADDR" once it serves.
	var gateway string
	sc := bufio.NewScanner(stdout)
	for sc.Scan() {
		if f := strings.Fields(sc.Text()); len(f) >= 3 && f[0] == "REST" && f[1] == "gateway" {
			gateway = strings.TrimPrefix(f[2], "http://")
			break
		}
	}
	if gateway == "" {
		t.Fatalf("duet up said no gateway address:\n%s", upLog.String())
	}
	go io.Copy(io.Discard, stdout)
	out := bash(strings.ReplaceAll(strings.Join(calls, "\n"), "localhost:8080", gateway))

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
