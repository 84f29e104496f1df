package gateway

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// TestDefaultBodyLimit: by default the largest valid order, even with every
// character of its values \u-escaped and a price on every line, gets
// through, while a body of 200 KB is refused before it is decoded (the old
// 1 MiB bound let a list of empty items allocate 94 MB on its way to the
// order service).
func TestDefaultBodyLimit(t *testing.T) {
	srv := httptest.NewServer(quietGateway(t, nil, nil))
	defer srv.Close()
	escaped := func(s string) string {
		var b strings.Builder
		for _, r := range s {
			fmt.Fprintf(&b, `\u%04x`, r)
		}
		return b.String()
	}
	var lines []string
	for i := range 100 {
		sku := fmt.Sprintf("%064d", i)
		lines = append(lines, fmt.Sprintf(`{"sku": "%s", "quantity": 10000, "unitPrice": {"currencyCode": "%s", "units": "%s"}}`,
			escaped(sku), escaped("USD"), escaped("100000000000")))
	}
	largestValid := `{"userId": "` + escaped("0b7f5b4e-8a1e-4f57-9d7e-0d4b8f3e2a11") + `", "items": [` + strings.Join(lines, ", ") +
		`], "paymentToken": "` + escaped(strings.Repeat("t", 128)) + `", "idempotencyKey": "` + escaped(strings.Repeat("k", 128)) + `"}`
	emptyItems := `{"items": [` + strings.Repeat("{},", 70_000) + `{}]}`
	tests := []struct {
		name     string
		body     string
		tooLarge bool
	}{
		{"largest valid order, escaped", largestValid, false},
		{"200 KB of empty items", emptyItems, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, err := http.Post(srv.URL+"/v1/orders", "application/json", strings.NewReader(tt.body))
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			var body struct {
				Details []struct {
					Reason string `json:"reason"`
				} `json:"details"`
			}
			_ = json.NewDecoder(resp.Body).Decode(&body)
			if len(tt.body) > DefaultMaxBodyBytes != tt.tooLarge {
				t.Fatalf("a %d-byte body for a case that is too large: %v", len(tt.body), tt.tooLarge)
			}
			if got := resp.StatusCode == http.StatusRequestEntityTooLarge; got != tt.tooLarge {
				t.Errorf("%d-byte body: HTTP %d, want 413: %v", len(tt.body), resp.StatusCode, tt.tooLarge)
			}
			if tt.tooLarge && (len(body.Details) == 0 || body.Details[0].Reason != "REQUEST_TOO_LARGE") {
				t.Errorf("413 body %+v, want reason REQUEST_TOO_LARGE", body)
			}
		})
	}
}
