package events

import (
	"strconv"
	"strings"
)

// multiFilterSupported reports whether a NATS server of version (as
// nats.Conn.ConnectedServerVersion gives it) takes several filter subjects
// on one consumer: nats-server 2.10 and later. Older servers ignore the
// field and would deliver the whole stream. An unknown version is taken to
// be a current one.
func multiFilterSupported(version string) bool {
	parts := strings.SplitN(strings.TrimPrefix(version, "v"), ".", 3)
	if len(parts) < 2 {
		return true
	}
	major, err1 := strconv.Atoi(parts[0])
	minor, err2 := strconv.Atoi(parts[1])
	if err1 != nil || err2 != nil {
		return true
	}
	return major > 2 || (major == 2 && minor >= 10)
}

// covering returns one filter subject that matches every subject the
// filters match: their longest common run of literal leading tokens,
// short of the shortest filter, followed by ">". It is what a consumer
// asks an older server for when it wants several filters; the consumer
// then drops what none of them matches (subjectMatches). "" (no filter:
// the whole stream) when the filters share no literal first token.
func covering(filters []string) string {
	split := make([][]string, len(filters))
	shortest := -1
	for i, f := range filters {
		split[i] = strings.Split(f, ".")
		if shortest < 0 || len(split[i]) < shortest {
			shortest = len(split[i])
		}
	}
	n := 0
	for ; n < shortest-1; n++ {
		tok := split[0][n]
		if tok == "*" || tok == ">" {
			break
		}
		same := true
		for _, s := range split[1:] {
			if s[n] != tok {
				same = false
				break
			}
		}
		if !same {
			break
		}
	}
	if n == 0 {
		return ""
	}
	return strings.Join(split[0][:n], ".") + ".>"
}

// subjectMatches reports whether the literal subject matches filter, which
// may hold the wildcards "*" (one token) and ">" (one or more, last).
func subjectMatches(filter, subject string) bool {
	for {
		ftok, frest, fmore := strings.Cut(filter, ".")
		stok, srest, smore := strings.Cut(subject, ".")
		switch {
		case ftok == ">":
			return true
		case ftok != "*" && ftok != stok:
			return false
		case !fmore || !smore:
			return fmore == smore
		}
		filter, subject = frest, srest
	}
}
