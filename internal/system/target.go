package system

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"strconv"
	"strings"

	"google.golang.org/grpc/resolver"

	"github.com/duetkit/duet/kit/client"
)

// CheckTarget refuses a peer target that grpc.NewClient would take and
// then fail with at every call, or dial somewhere nobody meant: flag names
// the setting in the error. grpc.NewClient resolves nothing until the
// first call, so without this `duet serve order --user-target usersvc`
// starts, reports ready, and dials port 443 (the DNS resolver's default),
// and `--user-target http://host:9091` resolves "http://host:9091" as a
// host name; either way every order is rejected after the saga's step
// timeout.
//
// A target is "host:port", or a URL of a resolver linked into the binary:
// "dns:///host:port" (a port is required here too: Duet's services do not
// listen on 443), "static:///host:port,host:port" (kit/client's list of
// replicas), "passthrough:///host:port", "unix:path" and the like.
func CheckTarget(flag, target string) error {
	if target == "" {
		return fmt.Errorf("--%s: an address is required", flag)
	}
	_, _, err := targetHosts(target)
	var list *staticError
	switch {
	case errors.As(err, &list):
		return fmt.Errorf("--%s %q: %w", flag, target, list.err)
	case errors.Is(err, errUnknownScheme):
		return fmt.Errorf("--%s %q: unknown scheme (want host:port, dns:///host:port or static:///host:port,host:port)", flag, target)
	case err != nil:
		return fmt.Errorf("--%s %q: want host:port, dns:///host:port or static:///host:port,host:port, with the ports' numbers", flag, target)
	}
	return nil
}

// LocalTarget reports whether a target CheckTarget accepts reaches only
// this machine: a loopback address, "localhost", or a unix socket (every
// address of a static list). A command sends an end user's token over
// plaintext only to such a target.
func LocalTarget(target string) bool {
	hosts, unix, err := targetHosts(target)
	switch {
	case err != nil || (len(hosts) == 0 && !unix):
		return false
	case unix:
		return true
	}
	for _, host := range hosts {
		if ip := net.ParseIP(host); host != "localhost" && (ip == nil || !ip.IsLoopback()) {
			return false
		}
	}
	return true
}

var errUnknownScheme = errors.New("unknown scheme")

// staticError is what is wrong with a static:/// target's list, which
// CheckTarget passes on as it is.
type staticError struct{ err error }

func (e *staticError) Error() string { return e.err.Error() }

// targetHosts returns the hosts a target dials; unix is true for a unix
// socket, whose host is empty. A resolver of the caller's own has no host
// known here: none, and unix false.
func targetHosts(target string) (hosts []string, unix bool, err error) {
	endpoint := target
	if u, err := url.Parse(target); err == nil && u.Scheme != "" && resolver.Get(u.Scheme) != nil {
		endpoint = strings.TrimPrefix(u.Path, "/")
		if u.Opaque != "" {
			endpoint = u.Opaque
		}
		switch u.Scheme {
		case "dns", "passthrough":
		case client.StaticScheme:
			addrs, err := client.StaticAddresses(endpoint)
			if err != nil {
				return nil, false, &staticError{err}
			}
			for _, a := range addrs {
				host, _, _ := net.SplitHostPort(a)
				hosts = append(hosts, host)
			}
			return hosts, false, nil
		case "unix", "unix-abstract":
			return nil, true, nil
		default:
			return nil, false, nil // resolvers of the caller's own
		}
	} else if err != nil && strings.Contains(target, "://") {
		return nil, false, errors.New("not a URL") // "static://[::1]:1,[::1]:2", say
	} else if strings.Contains(target, "://") {
		return nil, false, errUnknownScheme
	}
	host, port, err := net.SplitHostPort(endpoint)
	if n, perr := strconv.Atoi(port); err != nil || host == "" || perr != nil || n < 1 || n > 65535 {
		return nil, false, errors.New("not host:port")
	}
	return []string{host}, false, nil
}
