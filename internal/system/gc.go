package system

import (
	"os"
	"runtime/debug"
)

// DefaultGCPercent is the garbage collector's target (GOGC) that duet's
// processes run with unless the GOGC environment variable sets one.
//
// Why not Go's 100: the shop's live heap is small (tens of MB) and its
// allocation rate high (every request, SQL statement and event allocates),
// so at 100 the collector runs often and takes a tenth of the CPU under
// load. At 200 it runs half as often: in the bench's order scenario that
// was 5–7 % less CPU per order and 5–7 % more orders/s, for about 40 MB
// more RSS at saturation and little more at idle (bench/README.md).
const DefaultGCPercent = 200

// TuneGC sets the collector's target to DefaultGCPercent unless GOGC is set
// in the environment, which wins (GOGC=100 restores Go's default). It
// returns the target in effect; -1 means the collector is off.
func TuneGC() int {
	if _, set := os.LookupEnv("GOGC"); set {
		p := debug.SetGCPercent(100)
		debug.SetGCPercent(p)
		return p
	}
	debug.SetGCPercent(DefaultGCPercent)
	return DefaultGCPercent
}
