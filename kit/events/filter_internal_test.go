package events

import "testing"

func TestMultiFilterSupported(t *testing.T) {
	for _, tc := range []struct {
		version string
		want    bool
	}{
		{"2.9.10", false},
		{"2.2.0", false},
		{"v2.9.25", false},
		{"2.10.0", true},
		{"2.15.2", true},
		{"3.0.0", true},
		{"", true},         // unknown: assume current
		{"nonsense", true}, // likewise
		{"2.x.1", true},    // likewise
		{"1.4.1", false},
	} {
		if got := multiFilterSupported(tc.version); got != tc.want {
			t.Errorf("multiFilterSupported(%q) = %v, want %v", tc.version, got, tc.want)
		}
	}
}

func TestCovering(t *testing.T) {
	for _, tc := range []struct {
		filters []string
		want    string
	}{
		{[]string{"duet.order.confirmed", "duet.order.cancelled"}, "duet.order.>"},
		{[]string{"duet.order.*", "duet.payment.*"}, "duet.>"},
		{[]string{"duet.order", "duet.order.created"}, "duet.>"},
		{[]string{"duet.*.created", "duet.order.created"}, "duet.>"},
		{[]string{"duet.order.>", "duet.order.x.y"}, "duet.order.>"},
		{[]string{"a.b", "c.d"}, ""},
		{[]string{"*.b", "*.c"}, ""},
	} {
		got := covering(tc.filters)
		if got != tc.want {
			t.Errorf("covering(%q) = %q, want %q", tc.filters, got, tc.want)
		}
		// Whatever a filter matches, the covering filter matches too.
		for _, f := range tc.filters {
			if got != "" && !subjectMatches(got, literal(f)) {
				t.Errorf("covering(%q) = %q does not match %q", tc.filters, got, literal(f))
			}
		}
	}
}

// literal turns a filter into one subject it matches.
func literal(filter string) string {
	b := []byte(filter)
	for i, c := range b {
		if c == '*' || c == '>' {
			b[i] = 'x'
		}
	}
	return string(b)
}

func TestSubjectMatches(t *testing.T) {
	for _, tc := range []struct {
		filter, subject string
		want            bool
	}{
		{"a.b", "a.b", true},
		{"a.b", "a.c", false},
		{"a.b", "a.b.c", false},
		{"a.b.c", "a.b", false},
		{"a.*", "a.b", true},
		{"a.*", "a.b.c", false},
		{"a.*", "a", false},
		{"*.b", "a.b", true},
		{"a.>", "a.b", true},
		{"a.>", "a.b.c.d", true},
		{"a.>", "a", false},
		{">", "a.b", true},
		{"a.*.c", "a.b.c", true},
		{"a.*.c", "a.b.d", false},
		{"duet.order.*", "duet.orders.x", false},
	} {
		if got := subjectMatches(tc.filter, tc.subject); got != tc.want {
			t.Errorf("subjectMatches(%q, %q) = %v, want %v", tc.filter, tc.subject, got, tc.want)
		}
	}
}
