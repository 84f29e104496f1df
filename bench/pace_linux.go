package main

import (
	"encoding/binary"
	"fmt"
	"os"
	"time"

	"golang.org/x/sys/unix"
)

// timerfdPacer paces with a periodic Linux timerfd read through Go's
// network poller: the kernel wakes the poller when the timer expires, to
// the microsecond, where a Go timer would wait for epoll_wait's
// millisecond timeout. A read returns how many intervals have expired
// since the last one, so a late read loses no send.
type timerfdPacer struct {
	f   *os.File
	due int64
	buf [8]byte
}

// startPacer starts pacing sends every interval, the first one now, and
// returns the pacer and the time send 0 is due. Without a timerfd it
// falls back to sleeping.
func startPacer(interval time.Duration) (pacer, time.Time) {
	if p, start, err := startTimerfd(interval); err == nil {
		return p, start
	}
	start := time.Now()
	return &sleepPacer{start: start, interval: interval}, start
}

func startTimerfd(interval time.Duration) (*timerfdPacer, time.Time, error) {
	fd, err := unix.TimerfdCreate(unix.CLOCK_MONOTONIC, unix.TFD_NONBLOCK|unix.TFD_CLOEXEC)
	if err != nil {
		return nil, time.Time{}, err
	}
	// A non-blocking descriptor makes a File the network poller waits on.
	f := os.NewFile(uintptr(fd), "timerfd")
	spec := unix.ItimerSpec{
		Interval: unix.NsecToTimespec(interval.Nanoseconds()),
		Value:    unix.NsecToTimespec(1), // zero would disarm it: fire at once
	}
	start := time.Now()
	if err := unix.TimerfdSettime(fd, 0, &spec, nil); err != nil {
		f.Close()
		return nil, time.Time{}, err
	}
	return &timerfdPacer{f: f}, start, nil
}

func (p *timerfdPacer) wait() (int64, error) {
	n, err := p.f.Read(p.buf[:])
	if err != nil {
		return p.due, fmt.Errorf("pacer: read timerfd: %w", err)
	}
	if n != len(p.buf) {
		return p.due, fmt.Errorf("pacer: read %d bytes of a timerfd's 8", n)
	}
	p.due += int64(binary.NativeEndian.Uint64(p.buf[:]))
	return p.due, nil
}

func (p *timerfdPacer) close() { p.f.Close() }
