package sqldb

import (
	"net/url"
	"slices"
	"testing"
)

// TestWithCheckpointer: file databases get the writer's backstop threshold
// and a background checkpointer; in-memory ones and those whose URL sets
// wal_autocheckpoint itself get neither.
func TestWithCheckpointer(t *testing.T) {
	backstop := "wal_autocheckpoint(4000)"
	tests := []struct {
		name, path, query string
		want              bool
		wantPragmas       []string
	}{
		{"file", "/data/user.db", "", true, []string{backstop}},
		{"file with other pragmas", "user.db", "_pragma=cache_size(-8000)", true, []string{"cache_size(-8000)", backstop}},
		{"memory", ":memory:", "", false, nil},
		{"uri", "file:user.db", "mode=memory", false, nil},
		{"own threshold", "user.db", "_pragma=wal_autocheckpoint(0)", false, []string{"wal_autocheckpoint(0)"}},
		{"own threshold, other case", "user.db", "_pragma=WAL_AUTOCHECKPOINT(100)", false, []string{"WAL_AUTOCHECKPOINT(100)"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			params, err := url.ParseQuery(tt.query)
			if err != nil {
				t.Fatal(err)
			}
			if got := withCheckpointer(tt.path, params); got != tt.want {
				t.Errorf("withCheckpointer = %v, want %v", got, tt.want)
			}
			if got := params["_pragma"]; !slices.Equal(got, tt.wantPragmas) {
				t.Errorf("_pragma = %q, want %q", got, tt.wantPragmas)
			}
		})
	}
}
