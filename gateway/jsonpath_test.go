package gateway

import (
	"strconv"
	"strings"
	"testing"
	"unicode/utf8"
)

// TestJSONPath: the position protojson gives for a decode error is turned
// into the path of the key or value there, in the body's own spelling.
func TestJSONPath(t *testing.T) {
	tests := []struct {
		name, body, at, leaf, want string
	}{
		{"top-level key", `{"nmae":"A"}`, `"nmae"`, "nmae", "nmae"},
		{"top-level value", `{"pageSize":"x"}`, `"x"`, "pageSize", "pageSize"},
		{"array element's key", `{"items":[{"sku":"A"},{"bogus":1}]}`, `"bogus"`, "bogus", "items[1].bogus"},
		{"deep value", `{"items":[{"sku":"A","unitPrice":{"units":"1"}},{"unitPrice":{"currencyCode":"E","units":"z"}}]}`, `"z"`, "units", "items[1].unitPrice.units"},
		{"after a nested array", `{"a":[[1,2],[3]],"b":{"c":true}}`, `true`, "c", "b.c"},
		{"in an array of arrays", `{"a":[[1,2],[3,"x"]]}`, `"x"`, "a", "a[1][1]"},
		{"multi-line", "{\n \"items\": [\n  {\"quantity\": \"q\"}\n ]\n}", `"q"`, "quantity", "items[0].quantity"},
		{"repeated scalar's element", `{"skus":["A",1]}`, `1`, "skus", "skus[1]"},
		{"leaf does not match", `{"items":[{"sku":5}]}`, `5`, "quantity", ""},
		{"position past the end", `{"a":1}`, "", "a", ""},
		{"after multi-byte text on the line", `{"idempotencyKey":"ééééééééé","items":[{"quantity":1},{"quantity":"x"}]}`, `"x"`, "quantity", "items[1].quantity"},
		{"white space before the value", "\n  {\"items\":[{\"quantity\":1},\n{\"quantity\":\"x\"}]}", `"x"`, "quantity", "items[1].quantity"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			msg := "invalid JSON body (line 99:1): x"
			if tt.at != "" {
				// As protojson counts: from the value, without the white
				// space before it, columns in runes.
				value := strings.TrimLeft(tt.body, " \t\r\n")
				i := strings.Index(value, tt.at)
				line := 1 + strings.Count(value[:i], "\n")
				col := 1 + utf8.RuneCountInString(value[strings.LastIndex(value[:i], "\n")+1:i])
				msg = "invalid JSON body (line " + strconv.Itoa(line) + ":" + strconv.Itoa(col) + "): x"
			}
			if got := jsonPath([]byte(tt.body), msg, tt.leaf); got != tt.want {
				t.Errorf("jsonPath(%q at %q) = %q, want %q", tt.body, tt.at, got, tt.want)
			}
		})
	}
}
