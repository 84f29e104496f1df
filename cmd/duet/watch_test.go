package main

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/duetkit/duet/internal/system"
	"github.com/duetkit/duet/services/order"

	"github.com/duetkit/duet/internal/logbuffer"
)

// TestOrderWatchOutlivesARestart: `duet order watch` follows an order
// across a restart of the order service: the stream that ends with
// UNAVAILABLE SHUTTING_DOWN is reopened after its retry delay, on the
// restarted service, and the watch ends when the order does. It used to
// print the error and exit 1.
func TestOrderWatchOutlivesARestart(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cfg := loopbackSystem(t)
	// The payment provider is down, so the order stays PENDING for a few
	// seconds, then is cancelled: long enough for the restart to begin
	// while it is PENDING on a loaded machine.
	cfg.Saga = order.SagaConfig{StepTimeout: 8 * time.Second, InitialBackoff: 50 * time.Millisecond, MaxBackoff: 200 * time.Millisecond}
	first, err := system.Start(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	post := func(path, body string) map[string]any {
		t.Helper()
		resp, err := testClient.Post("http://"+first.HTTPAddr+path, "application/json", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var m map[string]any
		if err := json.NewDecoder(resp.Body).Decode(&m); err != nil || resp.StatusCode != 200 {
			t.Fatalf("POST %s: %d %v %v", path, resp.StatusCode, m, err)
		}
		return m
	}
	post("/v1/products", `{"sku":"R","name":"R","price":{"currencyCode":"USD","units":"5"},"stock":10}`)
	user, _ := post("/v1/users", `{"email":"restart@example.com","name":"R"}`)["user"].(map[string]any)
	created, _ := post("/v1/orders", `{"userId":"`+user["id"].(string)+`","items":[{"sku":"R","quantity":1}],"paymentToken":"tok_unavailable","idempotencyKey":"restart-1"}`)["order"].(map[string]any)
	id, _ := created["id"].(string)

	var stdout, stderr logbuffer.Buffer
	watched := make(chan error, 1)
	go func() {
		watched <- run(ctx, []string{"order", "watch", "--order-target", first.OrderAddr, id}, &stdout, &stderr)
	}()
	waitForText := func(what string, b *logbuffer.Buffer, text string) {
		t.Helper()
		deadline := time.Now().Add(20 * time.Second)
		for !strings.Contains(b.String(), text) {
			if time.Now().After(deadline) {
				t.Fatalf("no %s; stdout:\n%s\nstderr:\n%s", what, stdout.String(), stderr.String())
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	waitForText("first line", &stdout, "PENDING")

	// Restart on the same data and the same order address.
	if err := first.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	waitForText("notice of the restart", &stderr, "reopening the watch")
	cfg.OrderAddr = first.OrderAddr
	second, err := system.Start(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer second.Shutdown(context.WithoutCancel(ctx))

	select {
	case err := <-watched:
		if err != nil {
			t.Fatalf("watch: %v\nstdout:\n%s\nstderr:\n%s", err, stdout.String(), stderr.String())
		}
	case <-ctx.Done():
		t.Fatalf("the watch never ended; stdout:\n%s", stdout.String())
	}
	out := stdout.String()
	if !strings.Contains(out, "CANCELLED") || strings.Count(out, "\n") < 2 {
		t.Errorf("watch printed:\n%s\nwant the order through to CANCELLED", out)
	}
}
