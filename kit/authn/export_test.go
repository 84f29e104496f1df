package authn

import "context"

// Reload reads the file again as the reading goroutine does at a tick. It
// shares the goroutine's state unguarded: call it only on a Verifier whose
// Refresh is longer than the test.
func (v *Verifier) Reload(ctx context.Context) { v.file.Check(ctx) }

// Remembered says whether token is remembered as verified.
func (v *Verifier) Remembered(token string) bool {
	_, ok := v.remembered.Load(token)
	return ok
}

// Forget forgets every token verified.
func (v *Verifier) Forget() {
	v.remembered.Clear()
	v.count.Store(0)
}

// MaxRemembered is how many verdicts are remembered at most.
const MaxRemembered = maxRemembered

// RememberedCount is how many verdicts are remembered.
func (v *Verifier) RememberedCount() int {
	n := 0
	v.remembered.Range(func(any, any) bool { n++; return true })
	return n
}
