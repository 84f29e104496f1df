// Package watchfile reads a file again every so often and hands contents
// that changed to the code that uses them, so a policy or a key set
// rotates without a restart. What it could not read, and contents the
// code refused, it logs once while they stay, keeping the last good
// contents in use.
package watchfile

import (
	"bytes"
	"cmp"
	"context"
	"log/slog"
	"os"
	"time"
)

// Config says what to watch and who takes it.
type Config struct {
	// File is read again every Every.
	File  string
	Every time.Duration
	// FileKey is the log attribute that names File; empty means "file".
	FileKey string
	// Package and Noun name the contents in log lines, as in "access:
	// new policy not used".
	Package, Noun string
	// Logger receives the lines.
	Logger *slog.Logger
	// Take checks contents that changed and, if they are good, starts
	// using them; its error keeps the last good ones in use and is
	// logged.
	Take func(contents []byte) error
}

// Watcher reads its file until Close.
type Watcher struct {
	cfg  Config
	stop context.CancelFunc
	done chan struct{}

	// Kept by the reading goroutine alone: the contents in use, and the
	// last ones refused or the last failure to read the file.
	used, refused []byte
	readErr       string
}

// Start reads cfg.File every cfg.Every from now on; used are the
// contents in use, read before. Close stops it: ctx's cancellation does
// not (its values reach the log lines).
func Start(ctx context.Context, cfg Config, used []byte) *Watcher {
	w := &Watcher{cfg: cfg, used: used, done: make(chan struct{})}
	var watch context.Context
	watch, w.stop = context.WithCancel(context.WithoutCancel(ctx))
	go w.watch(watch)
	return w
}

// Close stops reading and waits for the reader to end.
func (w *Watcher) Close() {
	w.stop()
	<-w.done
}

func (w *Watcher) watch(ctx context.Context) {
	defer close(w.done)
	t := time.NewTicker(w.cfg.Every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			w.Check(ctx)
		}
	}
}

// Check reads the file once, as at a tick, and hands it to Take if it
// changed. It shares the reading goroutine's state unguarded: tests call
// it on a Watcher whose Every is longer than they last.
func (w *Watcher) Check(ctx context.Context) {
	log := w.cfg.Logger.With(cmp.Or(w.cfg.FileKey, "file"), w.cfg.File)
	contents, err := os.ReadFile(w.cfg.File)
	if err != nil {
		if err.Error() != w.readErr {
			w.readErr = err.Error()
			log.ErrorContext(ctx, w.cfg.Package+": "+w.cfg.Noun+" file not read; the last good "+w.cfg.Noun+" is still used", "error", err)
		}
		return
	}
	w.readErr = ""
	switch {
	case bytes.Equal(contents, w.used):
		w.refused = nil
		return
	case w.refused != nil && bytes.Equal(contents, w.refused):
		return // said already
	}
	if err := w.cfg.Take(contents); err != nil {
		w.refused = contents
		log.ErrorContext(ctx, w.cfg.Package+": new "+w.cfg.Noun+" not used; the last good one still is", "error", err)
		return
	}
	w.used, w.refused = contents, nil
	log.InfoContext(ctx, w.cfg.Package+": "+w.cfg.Noun+" reloaded")
}
