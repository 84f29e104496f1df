// Package tcpproxy forwards loopback TCP connections to a server until it
// is cut: how tests take down, and bring back, a server that is not theirs
// to stop (the machine's PostgreSQL or NATS).
package tcpproxy

import (
	"io"
	"net"
	"sync"
	"testing"
)

// Proxy forwards the connections made to Addr to its upstream.
type Proxy struct {
	upstream string
	wg       sync.WaitGroup

	mu     sync.Mutex
	addr   string
	lis    net.Listener
	conns  []net.Conn
	closed bool
}

// Start listens on a free loopback port and forwards every connection to
// upstream ("host:port"); the proxy is cut when the test ends.
func Start(t testing.TB, upstream string) *Proxy {
	t.Helper()
	p := &Proxy{upstream: upstream}
	p.listen(t, "127.0.0.1:0")
	t.Cleanup(p.Cut)
	return p
}

// Addr is the address to connect to instead of upstream's.
func (p *Proxy) Addr() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.addr
}

// Cut stops listening, closes every connection made through the proxy and
// waits for its goroutines: to its clients, the server is down.
func (p *Proxy) Cut() {
	p.mu.Lock()
	p.closed = true
	if p.lis != nil {
		_ = p.lis.Close()
	}
	for _, c := range p.conns {
		_ = c.Close()
	}
	p.conns = nil
	p.mu.Unlock()
	p.wg.Wait()
}

// Restore listens again, on the same address, after Cut.
func (p *Proxy) Restore(t testing.TB) {
	t.Helper()
	p.listen(t, p.Addr())
}

func (p *Proxy) listen(t testing.TB, addr string) {
	t.Helper()
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	p.mu.Lock()
	p.lis, p.addr, p.closed = lis, lis.Addr().String(), false
	p.mu.Unlock()
	p.wg.Go(func() { p.accept(lis) })
}

func (p *Proxy) accept(lis net.Listener) {
	for {
		down, err := lis.Accept()
		if err != nil {
			return
		}
		up, err := net.Dial("tcp", p.upstream)
		if err != nil {
			_ = down.Close()
			continue
		}
		if !p.track(down, up) {
			return
		}
		p.wg.Go(func() { _, _ = io.Copy(up, down); _ = up.Close(); _ = down.Close() })
		p.wg.Go(func() { _, _ = io.Copy(down, up); _ = up.Close(); _ = down.Close() })
	}
}

// track keeps conns for Cut; false, with conns closed, once cut.
func (p *Proxy) track(conns ...net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		for _, c := range conns {
			_ = c.Close()
		}
		return false
	}
	p.conns = append(p.conns, conns...)
	return true
}
