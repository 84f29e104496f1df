package user_test

import (
	"io"
	"net"
	neturl "net/url"
	"sync"
	"testing"

	"google.golang.org/grpc/codes"

	userv1 "github.com/duetkit/duet/gen/duet/user/v1"
	"github.com/duetkit/duet/kit/apierr"
	"github.com/duetkit/duet/kit/apierr/apierrtest"
	"github.com/duetkit/duet/kit/sqldb/sqldbtest"
)

// tcpProxy forwards loopback connections to a database until cut, which
// stands for the database going down: every connection drops and new
// ones are refused.
type tcpProxy struct {
	ln     net.Listener
	target string
	wg     sync.WaitGroup

	mu     sync.Mutex
	conns  []net.Conn
	closed bool
}

func startProxy(t *testing.T, target string) *tcpProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &tcpProxy{ln: ln, target: target}
	p.wg.Go(p.accept)
	t.Cleanup(p.cut)
	return p
}

func (p *tcpProxy) accept() {
	for {
		down, err := p.ln.Accept()
		if err != nil {
			return
		}
		up, err := net.Dial("tcp", p.target)
		if err != nil {
			_ = down.Close()
			continue
		}
		if !p.track(down, up) {
			return
		}
		p.wg.Go(func() { _, _ = io.Copy(up, down); _ = up.Close() })
		p.wg.Go(func() { _, _ = io.Copy(down, up); _ = down.Close() })
	}
}

// track keeps conns for cut; false (with conns closed) once cut.
func (p *tcpProxy) track(conns ...net.Conn) bool {
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

// cut closes the listener and every connection, and waits for the
// forwarding goroutines.
func (p *tcpProxy) cut() {
	p.mu.Lock()
	p.closed = true
	for _, c := range p.conns {
		_ = c.Close()
	}
	p.conns = nil
	p.mu.Unlock()
	_ = p.ln.Close()
	p.wg.Wait()
}

// TestDatabaseOutage: with its PostgreSQL gone (down, restarting, failing
// over), the service answers UNAVAILABLE with a retry delay, which
// clients and balancers retry and alerts read as an outage. It answered
// INTERNAL, which says "a bug" and is not retried.
func TestDatabaseOutage(t *testing.T) {
	pg, ok := sqldbtest.URLs(t)["postgres"]
	if !ok {
		t.Skipf("%s is not set", sqldbtest.PostgresEnv)
	}
	u, err := neturl.Parse(pg)
	if err != nil {
		t.Fatal(err)
	}
	proxy := startProxy(t, u.Host)
	u.Host = proxy.ln.Addr().String()
	c := start(t, u.String())
	created, err := c.CreateUser(t.Context(), &userv1.CreateUserRequest{Email: "outage@example.com", Name: "Out"})
	if err != nil {
		t.Fatal(err)
	}
	proxy.cut()
	calls := map[string]func() error{
		"GetUser": func() error {
			_, err := c.GetUser(t.Context(), &userv1.GetUserRequest{Id: created.GetUser().GetId()})
			return err
		},
		"CreateUser": func() error {
			_, err := c.CreateUser(t.Context(), &userv1.CreateUserRequest{Email: "later@example.com", Name: "Later"})
			return err
		},
		"ListUsers": func() error {
			_, err := c.ListUsers(t.Context(), &userv1.ListUsersRequest{})
			return err
		},
	}
	for name, call := range calls {
		t.Run(name, func(t *testing.T) {
			err := call()
			apierrtest.Check(t, err, codes.Unavailable, apierr.ReasonUnavailable, "")
			if d, ok := apierr.RetryDelay(err); !ok || d <= 0 {
				t.Errorf("no retry delay: %v", err)
			}
		})
	}
}
