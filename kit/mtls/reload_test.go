package mtls_test

import (
	"crypto/tls"
	"log/slog"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/duetkit/duet/internal/logbuffer"
	"github.com/duetkit/duet/kit/metrics"
	"github.com/duetkit/duet/kit/mtls"
	"github.com/duetkit/duet/kit/mtls/mtlstest"
)

// TestReloadSays: what each reading of the files logs, step by step: a
// set refused is said once while it stays, again when it comes back; a
// set refused for a time (not valid yet) is taken when it is; a failure
// to read is said once; the expiry of the certificate in use is said
// once, whatever the files hold.
func TestReloadSays(t *testing.T) {
	ca := mtlstest.NewCA(t, "duet")
	dir := t.TempDir()
	// Refresh an hour: the test's readings are the only ones.
	cfg := ca.Write(t, dir, time.Hour, []string{"127.0.0.1"})
	var logs logbuffer.Buffer
	cfg.Logger = slog.New(slog.NewTextHandler(&logs, nil))
	c, err := mtls.Load(t.Context(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	now := time.Now()
	read := func(path string) []byte {
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	goodCert, goodKey := read(cfg.CertFile), read(cfg.KeyFile)
	_, otherKey := ca.Issue(t, mtlstest.Leaf{Names: []string{"127.0.0.1"}})
	_, anotherKey := ca.Issue(t, mtlstest.Leaf{Names: []string{"127.0.0.1"}})
	laterCert, laterKey := ca.Issue(t, mtlstest.Leaf{Names: []string{"127.0.0.1"}, NotBefore: now.Add(time.Hour), NotAfter: now.Add(72 * time.Hour)})
	put := func(cert, key []byte) func() {
		return func() {
			mtlstest.WriteFile(t, cfg.KeyFile, key)
			mtlstest.WriteFile(t, cfg.CertFile, cert)
		}
	}

	steps := []struct {
		name   string
		change func()
		at     time.Time
		counts map[string]int // lines saying each text, so far
	}{
		{"a key of another certificate", put(goodCert, otherKey), now, map[string]int{"private key does not match": 1}},
		{"another such key", put(goodCert, anotherKey), now, map[string]int{"private key does not match": 2}},
		{"the good set back", put(goodCert, goodKey), now, map[string]int{"private key does not match": 2, "reloaded": 0}},
		{"the other key again", put(goodCert, anotherKey), now, map[string]int{"private key does not match": 3}},
		{"the certificate in use expires", func() {}, now.Add(48 * time.Hour), map[string]int{"has expired": 1, "private key does not match": 3}},
		{"a CA file gone", func() {
			if err := os.Rename(cfg.CAFile, cfg.CAFile+".moved"); err != nil {
				t.Fatal(err)
			}
		}, now.Add(48 * time.Hour), map[string]int{"not read": 1, "has expired": 1}},
		{"the CA file back, a certificate not valid yet", func() {
			if err := os.Rename(cfg.CAFile+".moved", cfg.CAFile); err != nil {
				t.Fatal(err)
			}
			put(laterCert, laterKey)()
		}, now, map[string]int{"not valid before": 1, "reloaded": 0}},
		{"the same, valid now", func() {}, now.Add(2 * time.Hour), map[string]int{"not valid before": 1, "reloaded": 1}},
	}
	for _, step := range steps {
		step.change()
		for range 3 {
			c.ReloadAt(t.Context(), step.at)
		}
		for text, want := range step.counts {
			if got := strings.Count(logs.String(), text); got != want {
				t.Fatalf("after %s: %d lines saying %q, want %d:\n%s", step.name, got, text, want, logs.String())
			}
		}
	}
}

// TestExpiryMetric: ExpiryMetric shows when the certificate in use
// expires, follows a rotation, and is gone after Close.
func TestExpiryMetric(t *testing.T) {
	ca := mtlstest.NewCA(t, "duet")
	cfg := ca.Write(t, t.TempDir(), time.Hour, []string{"127.0.0.1"})
	cfg.Logger, cfg.Metrics = slog.New(slog.DiscardHandler), metrics.New()
	expiry := func() (float64, bool) {
		families, err := cfg.Metrics.Registry.Gather()
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range families {
			for _, m := range f.GetMetric() {
				if f.GetName() == mtls.ExpiryMetric && len(m.GetLabel()) == 1 && m.GetLabel()[0].GetValue() == cfg.CertFile {
					return m.GetGauge().GetValue(), true
				}
			}
		}
		return 0, false
	}
	notAfter := func() int64 {
		pair, err := tls.LoadX509KeyPair(cfg.CertFile, cfg.KeyFile)
		if err != nil {
			t.Fatal(err)
		}
		return pair.Leaf.NotAfter.Unix()
	}
	c, err := mtls.Load(t.Context(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	if got, ok := expiry(); !ok || int64(got) != notAfter() {
		t.Fatalf("after Load: %v (%v), want %d", got, ok, notAfter())
	}
	cert, key := ca.Issue(t, mtlstest.Leaf{Names: []string{"127.0.0.1"}, NotAfter: time.Now().Add(72 * time.Hour)})
	mtlstest.WriteFile(t, cfg.KeyFile, key)
	mtlstest.WriteFile(t, cfg.CertFile, cert)
	c.ReloadAt(t.Context(), time.Now())
	if got, ok := expiry(); !ok || int64(got) != notAfter() {
		t.Fatalf("after a rotation: %v (%v), want %d", got, ok, notAfter())
	}
	c.Close()
	if got, ok := expiry(); ok {
		t.Fatalf("after Close the series is still there: %v", got)
	}
}
