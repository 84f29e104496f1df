package events

import (
	"io"
	"log/slog"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/duetkit/duet/internal/await"
)

// TestInProcessConnectionReconnects: an in-process connection the embedded
// server closes while it keeps running (a slow consumer, missed pings, an
// operator's kick) comes back, instead of leaving the process off the bus.
func TestInProcessConnectionReconnects(t *testing.T) {
	s, err := StartServer(ServerConfig{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Shutdown()
	nc, err := s.Connect("reconnect-test")
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	id, err := nc.GetClientID()
	if err != nil {
		t.Fatal(err)
	}
	if err := s.ns.DisconnectClientByID(id); err != nil {
		t.Fatal(err)
	}
	if !await.Within(10*time.Second, func() bool { return nc.Stats().Reconnects > 0 && nc.IsConnected() }) {
		t.Fatalf("not reconnected: status %v, %d reconnects", nc.Status(), nc.Stats().Reconnects)
	}
	if err := nc.Flush(); err != nil {
		t.Errorf("Flush after reconnecting: %v", err)
	}
}

// TestStoreDirectoryLocked: a second server on a store directory in use is
// refused, before it touches the store; once the first has shut down, the
// directory is free again.
func TestStoreDirectoryLocked(t *testing.T) {
	dir := t.TempDir()
	first, err := StartServer(ServerConfig{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	if second, err := StartServer(ServerConfig{Dir: dir}); err == nil {
		second.Shutdown()
		first.Shutdown()
		t.Fatal("a second server started on a store directory in use")
	} else if !strings.Contains(err.Error(), "in use by another process") {
		t.Errorf("second server: %v, want the directory named in use", err)
	}
	first.Shutdown()
	again, err := StartServer(ServerConfig{Dir: dir})
	if err != nil {
		t.Fatalf("after the first shut down: %v", err)
	}
	again.Shutdown()
}

// TestServerLogsToSlog: the embedded server's errors reach the process's
// log, named as the server's; with its own logging off they went nowhere.
func TestServerLogsToSlog(t *testing.T) {
	// A file: the handler writes it from the server's goroutines, the
	// test reads it back, and the kernel orders the two.
	logFile, err := os.Create(filepath.Join(t.TempDir(), "log"))
	if err != nil {
		t.Fatal(err)
	}
	defer logFile.Close()
	logged := func() string {
		b, _ := os.ReadFile(logFile.Name())
		return string(b)
	}
	log := slog.New(slog.NewJSONHandler(logFile, &slog.HandlerOptions{Level: slog.LevelInfo}))
	s, err := StartServer(ServerConfig{Dir: t.TempDir(), Listen: "127.0.0.1:0", Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Shutdown()
	u, err := url.Parse(s.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	c, err := net.Dial("tcp", u.Host)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	// A client that breaks the protocol: the server answers -ERR, closes
	// the connection and logs an error.
	if _, err := io.WriteString(c, "CONNECT {\"verbose\":false}\r\nBOGUS\r\n"); err != nil {
		t.Fatal(err)
	}
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	_, _ = io.Copy(io.Discard, c) // until the server closes it
	if !await.Within(10*time.Second, func() bool { return strings.Contains(logged(), `"level":"ERROR","msg":"nats-server: `) }) {
		t.Fatalf("no error from the server in the log:\n%s", logged())
	}
	if strings.Contains(logged(), `"level":"INFO"`) {
		t.Errorf("the server's notices are logged at info level:\n%s", logged())
	}
}
