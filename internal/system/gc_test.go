package system_test

import (
	"os"
	"runtime/debug"
	"testing"

	"github.com/duetkit/duet/internal/system"
)

// TestTuneGC: without GOGC duet raises the collector's target; with GOGC
// set, the target the runtime took from it stays.
func TestTuneGC(t *testing.T) {
	orig := debug.SetGCPercent(100)
	t.Cleanup(func() { debug.SetGCPercent(orig) })
	tests := []struct {
		name  string
		gogc  string // "" unsets GOGC
		start int    // the target before TuneGC, as the runtime set it from GOGC
		want  int
	}{
		{"unset", "", 100, system.DefaultGCPercent},
		{"set", "150", 150, 150},
		{"off", "off", -1, -1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.gogc == "" {
				t.Setenv("GOGC", "")
				os.Unsetenv("GOGC")
			} else {
				t.Setenv("GOGC", tt.gogc)
			}
			debug.SetGCPercent(tt.start)
			if got := system.TuneGC(); got != tt.want {
				t.Errorf("TuneGC() = %d, want %d", got, tt.want)
			}
			if got := debug.SetGCPercent(tt.start); got != tt.want {
				t.Errorf("GC percent after TuneGC = %d, want %d", got, tt.want)
			}
		})
	}
}
