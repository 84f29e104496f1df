package events_test

import (
	"fmt"
	"strings"
	"testing"

	"github.com/duetkit/duet/kit/events"
)

func TestRedactURL(t *testing.T) {
	tests := []struct{ in, want string }{
		{"nats://127.0.0.1:4333", "nats://127.0.0.1:4333"},
		{"nats://alice:s3cret@127.0.0.1:4333", "nats://alice:xxxxx@127.0.0.1:4333"},
		{"nats://s3cret-token@127.0.0.1:4333", "nats://xxxxx@127.0.0.1:4333"},
		{"nats://a:s3cret@127.0.0.1:1,nats://b:s3cret@127.0.0.2:1", "nats://a:xxxxx@127.0.0.1:1,nats://b:xxxxx@127.0.0.2:1"},
		{"nats://a:s3cret%zz@127.0.0.1:1", "xxxxx@127.0.0.1:1"},
		{"alice:s3cret@127.0.0.1:4333", "nats://alice:xxxxx@127.0.0.1:4333"},
		{"127.0.0.1:4333", "127.0.0.1:4333"},
		{"", ""},
	}
	for _, tt := range tests {
		if got := events.RedactURL(tt.in); got != tt.want {
			t.Errorf("RedactURL(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

// Connect's error names the server it could not reach, never the
// credentials in its URL: `duet serve --nats-url` printed them.
func TestConnectErrorRedacts(t *testing.T) {
	_, err := events.Connect("nats://alice:s3cret@127.0.0.1:1", "test")
	if err == nil {
		t.Fatal("connected to port 1")
	}
	if strings.Contains(err.Error(), "s3cret") || !strings.Contains(err.Error(), "127.0.0.1:1") {
		t.Errorf("error = %v", err)
	}
}

// RedactURL makes a NATS URL fit to print.
func ExampleRedactURL() {
	fmt.Println(events.RedactURL("nats://alice:s3cret@127.0.0.1:4333,nats://token@127.0.0.1:4334"))
	// Output:
	// nats://alice:xxxxx@127.0.0.1:4333,nats://xxxxx@127.0.0.1:4334
}
