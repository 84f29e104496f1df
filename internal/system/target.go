package system

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"strconv"
	"strings"

	"google.golang.org/grpc/resolver"
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
// listen on 443), "passthrough:///host:port", "unix:path" and the like.
func CheckTarget(flag, target string) error {
	if target == "" {
		return fmt.Errorf("--%s: an address is required", flag)
	}
	_, _, err := targetHost(target)
	switch {
	case errors.Is(err, errUnknownScheme):
		return fmt.Errorf("--%s %q: unknown scheme (want host:port or dns:///host:port)", flag, target)
	case err != nil:
		return fmt.Errorf("--%s %q: want host:port or dns:///host:port, with the port's number", flag, target)
	}
	return nil
}

// LocalTarget reports whether a target CheckTarget accepts reaches only
// this machine: a loopback address, "localhost", or a unix socket. A
// command sends an end user's token over plaintext only to such a target.
func LocalTarget(target string) bool {
	host, unix, err := targetHost(target)
	switch {
	case err != nil:
		return false
	case unix:
		return true
	case host == "localhost":
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

var errUnknownScheme = errors.New("unknown scheme")

// targetHost returns the host a target dials; unix is true for a unix
// socket, whose host is empty. A resolver of the caller's own has no host
// known here: host "" and unix false.
func targetHost(target string) (host string, unix bool, err error) {
	endpoint := target
	if u, err := url.Parse(target); err == nil && u.Scheme != "" && resolver.Get(u.Scheme) != nil {
		switch u.Scheme {
		case "dns", "passthrough":
			endpoint = strings.TrimPrefix(u.Path, "/")
			if u.Opaque != "" {
				endpoint = u.Opaque
			}
		case "unix", "unix-abstract":
			return "", true, nil
		default:
			return "", false, nil // resolvers of the caller's own
		}
	} else if strings.Contains(target, "://") {
		return "", false, errUnknownScheme
	}
	host, port, err := net.SplitHostPort(endpoint)
	if n, perr := strconv.Atoi(port); err != nil || host == "" || perr != nil || n < 1 || n > 65535 {
		return "", false, errors.New("not host:port")
	}
	return host, false, nil
}
