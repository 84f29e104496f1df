package pagetoken_test

import (
	"errors"
	"fmt"
	"time"

	"github.com/duetkit/duet/kit/pagetoken"
)

func Example() {
	// The last user on this page; the next page starts after it.
	last := pagetoken.Cursor{
		Scope: "users",
		Time:  time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC),
		ID:    "5f0c3c9e-8a51-4f5e-9c1b-2d8a3f3f2a10",
	}
	next := pagetoken.Encode(last)

	// On the next request, the handler decodes it for the same listing.
	c, err := pagetoken.Decode(next, "users")
	fmt.Println(c.Time.Format(time.RFC3339), c.ID, err)

	// A token presented to another listing is refused.
	_, err = pagetoken.Decode(next, "orders:5f0c3c9e-8a51-4f5e-9c1b-2d8a3f3f2a10")
	fmt.Println(errors.Is(err, pagetoken.ErrInvalid))
	// Output:
	// 2026-03-01T12:00:00Z 5f0c3c9e-8a51-4f5e-9c1b-2d8a3f3f2a10 <nil>
	// true
}
