package system

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"

	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/test/bufconn"

	"github.com/duetkit/duet/kit/mtls"
)

// inprocCreds name the caller of `duet up`'s in-memory connections, as
// mutual TLS names a component between processes, so that kit/authn can
// trust the order saga's calls without an end user's token
// (TrustedPeers) there too. Only code in this process can dial an
// in-memory listener, so a name the dialer gives is as good as a
// certificate the CA signed: the client side writes its name before
// HTTP/2 starts, and the server side reads it from connections that came
// through an in-memory listener (inprocListener) only. Connections from
// the TCP listeners are plaintext and nameless, as without these
// credentials.
type inprocCreds struct {
	// name is the client side's: the component calling. Empty, the
	// connection is nameless (the gateway's, which passes end users'
	// calls on with their tokens).
	name string
}

// maxInprocName bounds a name on the wire: one length byte.
const maxInprocName = 255

// inprocInfo is the AuthInfo of a connection these credentials made.
type inprocInfo struct {
	credentials.CommonAuthInfo
	// name is the caller's, on the server side of an in-memory
	// connection; empty otherwise.
	name string
}

// AuthType implements credentials.AuthInfo.
func (inprocInfo) AuthType() string { return "inproc" }

func (c inprocCreds) ClientHandshake(_ context.Context, _ string, conn net.Conn) (net.Conn, credentials.AuthInfo, error) {
	if len(c.name) > maxInprocName {
		return nil, nil, fmt.Errorf("in-process name %q is too long", c.name)
	}
	if _, err := conn.Write(append([]byte{byte(len(c.name))}, c.name...)); err != nil {
		return nil, nil, err
	}
	return conn, inprocInfo{CommonAuthInfo: credentials.CommonAuthInfo{SecurityLevel: credentials.NoSecurity}}, nil
}

func (c inprocCreds) ServerHandshake(conn net.Conn) (net.Conn, credentials.AuthInfo, error) {
	info := inprocInfo{CommonAuthInfo: credentials.CommonAuthInfo{SecurityLevel: credentials.NoSecurity}}
	if _, ok := conn.(inprocConn); !ok {
		return conn, info, nil // TCP: nameless
	}
	var n [1]byte
	if _, err := io.ReadFull(conn, n[:]); err != nil {
		return nil, nil, err
	}
	name := make([]byte, n[0])
	if _, err := io.ReadFull(conn, name); err != nil {
		return nil, nil, err
	}
	info.name = string(name)
	return conn, info, nil
}

func (c inprocCreds) Info() credentials.ProtocolInfo {
	return credentials.ProtocolInfo{SecurityProtocol: "inproc"}
}

func (c inprocCreds) Clone() credentials.TransportCredentials { return c }

// OverrideServerName implements credentials.TransportCredentials (a
// deprecated method grpc-go no longer calls).
func (c inprocCreds) OverrideServerName(string) error {
	return errors.New("inproc credentials name no server")
}

// inprocListener marks the connections of an in-memory listener, so
// inprocCreds reads a name from them and from no others.
type inprocListener struct{ *bufconn.Listener }

// Accept implements net.Listener.
func (l inprocListener) Accept() (net.Conn, error) {
	conn, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return inprocConn{conn}, nil
}

// inprocConn is a connection an in-memory listener accepted.
type inprocConn struct{ net.Conn }

// inprocPeerNames reads a call's caller's names: the name of an
// in-memory connection's dialer, else those of its mutual-TLS
// certificate.
func inprocPeerNames(ctx context.Context) []string {
	if p, ok := peer.FromContext(ctx); ok {
		if info, ok := p.AuthInfo.(inprocInfo); ok {
			if info.name == "" {
				return nil
			}
			return []string{info.name}
		}
	}
	return mtls.PeerNames(ctx)
}
