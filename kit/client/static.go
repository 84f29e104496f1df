package client

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"

	"google.golang.org/grpc/resolver"
)

// StaticScheme is the target scheme of a fixed list of a peer's replicas:
// "static:///10.0.0.7:9091,10.0.0.8:9091". Calls are balanced over the
// ones that are up and report SERVING, as over the addresses a dns:///
// target resolves to; for replicas with no DNS name resolving to them
// all (VMs, a compose file's fixed addresses). A host name in the list is
// looked up when its connection is made, and only its first address
// used. Each replica is its own TLS server name: with mutual TLS its
// certificate must name the host its entry gives. Importing this package
// registers the scheme with grpc-go (the last registration of a scheme
// wins: a program that registers a "static" of its own replaces this one).
const StaticScheme = "static"

func init() { resolver.Register(staticBuilder{}) }

// StaticAddresses returns the host:port addresses of a static target's
// endpoint (what follows "static:///"), or an error naming the first one
// that is empty or not host:port with a port's number. An address given
// twice is an error too, however it is spelled ("10.0.0.7:9091" and
// "10.0.0.7:09091", "Host:1" and "host:1", two forms of one IPv6
// address): likely a typo for another replica, and calls balanced over
// the list would send that replica twice its share.
func StaticAddresses(endpoint string) ([]string, error) {
	if strings.TrimSpace(endpoint) == "" {
		return nil, errors.New("a static target needs at least one host:port")
	}
	var addrs []string
	seen := map[string]bool{}
	for _, a := range strings.Split(endpoint, ",") {
		a = strings.TrimSpace(a)
		if a == "" {
			return nil, errors.New("a static target has an empty entry (two commas, or one at an end)")
		}
		host, port, err := net.SplitHostPort(a)
		n, perr := strconv.Atoi(port)
		if err != nil || host == "" || strings.ContainsAny(host, " \t") || perr != nil || n < 1 || n > 65535 {
			return nil, fmt.Errorf("static target address %q: want host:port, with the port's number", a)
		}
		key := sameAddress(host, n)
		if seen[key] {
			return nil, fmt.Errorf("static target address %q is given twice", a)
		}
		seen[key] = true
		addrs = append(addrs, a)
	}
	return addrs, nil
}

// sameAddress is the one spelling of host and port that StaticAddresses
// compares entries by: an IP address in its canonical form (an IPv4
// address in IPv6's mapped form as IPv4), a name in lower case (DNS names
// are case-insensitive), the port as its number.
func sameAddress(host string, port int) string {
	if ip, err := netip.ParseAddr(host); err == nil {
		host = ip.Unmap().String()
	} else {
		// "host." stays apart from "host": only the second may be
		// completed with the resolver's search domains.
		host = strings.ToLower(host)
	}
	return net.JoinHostPort(host, strconv.Itoa(port))
}

// staticBuilder resolves static targets, once: the list never changes.
type staticBuilder struct{}

func (staticBuilder) Scheme() string { return StaticScheme }

func (staticBuilder) Build(target resolver.Target, cc resolver.ClientConn, _ resolver.BuildOptions) (resolver.Resolver, error) {
	addrs, err := StaticAddresses(target.Endpoint())
	if err != nil {
		return nil, err
	}
	state := resolver.State{}
	for _, a := range addrs {
		// Its own authority and TLS server name: the channel's would be
		// the whole list, which no certificate names.
		addr := resolver.Address{Addr: a, ServerName: a}
		state.Addresses = append(state.Addresses, addr)
		state.Endpoints = append(state.Endpoints, resolver.Endpoint{Addresses: []resolver.Address{addr}})
	}
	// An error here asks for the target to be resolved again, which
	// would give the same list: there is nothing to do with it.
	_ = cc.UpdateState(state)
	return staticResolver{}, nil
}

// staticResolver has nothing to resolve again.
type staticResolver struct{}

func (staticResolver) ResolveNow(resolver.ResolveNowOptions) {}
func (staticResolver) Close()                                {}
