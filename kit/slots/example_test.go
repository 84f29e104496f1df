package slots_test

import (
	"errors"
	"fmt"

	"github.com/duetkit/duet/kit/slots"
)

// A server bounds its watch streams: two per order, three in all. Each
// Take that succeeds is matched by a Release when the stream ends.
func Example() {
	watches := slots.New(slots.Limits{PerKey: 2, Total: 3})
	for _, order := range []string{"o1", "o1", "o1", "o2", "o3"} {
		switch err := watches.Take(order); {
		case errors.Is(err, slots.ErrKeyFull):
			fmt.Println(order, "refused: too many watches of this order")
		case errors.Is(err, slots.ErrFull):
			fmt.Println(order, "refused: too many watches; try again later")
		default:
			fmt.Println(order, "watched")
		}
	}
	watches.Release("o1")
	fmt.Println("o3", watches.Take("o3") == nil)
	// Output:
	// o1 watched
	// o1 watched
	// o1 refused: too many watches of this order
	// o2 watched
	// o3 refused: too many watches; try again later
	// o3 true
}
