package system_test

import (
	"strings"
	"testing"

	"github.com/duetkit/duet/internal/system"
)

func TestCheckTarget(t *testing.T) {
	tests := []struct {
		target string
		ok     bool
	}{
		{"127.0.0.1:9091", true},
		{"localhost:9091", true},
		{"[::1]:9091", true},
		{"dns:///user.internal:9091", true},
		{"dns://10.0.0.2:53/user.internal:9091", true},
		{"passthrough:///127.0.0.1:9091", true},
		{"unix:///run/duet/user.sock", true},
		{"unix:user.sock", true},
		{"static:///10.0.0.7:9091,10.0.0.8:9091", true},
		{"static:///[::1]:9091", true},
		{"", false},
		{"static:///", false},
		{"static:///10.0.0.7:9091,10.0.0.8", false}, // a port missing
		{"static:///10.0.0.7:9091,10.0.0.7:9091", false},
		{"static:///10.0.0.7:9091,,10.0.0.8:9091", false},
		{"static://[::1]:9091,[::1]:9092", false}, // one slash short: not a URL
		{"usersvc", false},                        // port 443, grpc's DNS default
		{"dns:///usersvc", false},                 // the same
		{":9091", false},                          // no host
		{"127.0.0.1:", false},                     // no port
		{"http://user:9091", false},               // resolved as a host named "http://user:9091"
		{"grpc://user:9091", false},               // no such resolver
		{"passthrough:///no-port", false},         // dials port nothing
		{"dns:///user:9091/extra", false},         // not a host:port
		{"user:99999", false},
		{"user:grpc", false},
	}
	for _, tt := range tests {
		err := system.CheckTarget("user-target", tt.target)
		if (err == nil) != tt.ok {
			t.Errorf("CheckTarget(%q) = %v, want ok %v", tt.target, err, tt.ok)
		}
		if err != nil && !strings.Contains(err.Error(), "--user-target") {
			t.Errorf("CheckTarget(%q) = %v, want the flag named", tt.target, err)
		}
	}
}

func TestLocalTarget(t *testing.T) {
	tests := []struct {
		target string
		local  bool
	}{
		{"127.0.0.1:9091", true},
		{"127.9.9.9:9091", true},
		{"localhost:9091", true},
		{"[::1]:9091", true},
		{"dns:///localhost:9091", true},
		{"passthrough:///127.0.0.1:9091", true},
		{"unix:///run/duet/user.sock", true},
		{"unix:user.sock", true},
		{"static:///127.0.0.1:9091,localhost:9191", true},
		{"static:///127.0.0.1:9091,10.0.0.2:9091", false}, // one remote
		{"static:///[::1]:1,127.0.0.1:2", true},
		{"static:///[::1]:1,[::]:2", false},
		{"10.0.0.2:9091", false},
		{"[::]:9091", false},
		{"0.0.0.0:9091", false},
		{"user.internal:9091", false},
		{"localhost.example.com:9091", false},
		{"dns:///user.internal:9091", false},
		{"dns://127.0.0.1:53/user.internal:9091", false}, // a local DNS server, a remote host
		{"usersvc", false},
		{"http://localhost:9091", false},
		{"", false},
	}
	for _, tt := range tests {
		if got := system.LocalTarget(tt.target); got != tt.local {
			t.Errorf("LocalTarget(%q) = %v, want %v", tt.target, got, tt.local)
		}
	}
}

// TestCheckTargetNamesTheStaticListsMistake: what is wrong with a static
// list is said as it is, not as a generic shape.
func TestCheckTargetNamesTheStaticListsMistake(t *testing.T) {
	err := system.CheckTarget("user-target", "static:///10.0.0.7:9091,10.0.0.7:9091")
	if err == nil || !strings.Contains(err.Error(), "given twice") {
		t.Errorf("CheckTarget of a list with a duplicate = %v, want it named", err)
	}
}
