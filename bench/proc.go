package main

import (
	"bufio"
	"os"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// selfCPU is the user plus system CPU time this process has used, from
// getrusage (microsecond resolution).
func selfCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// rssKB returns VmRSS of process pid in KiB, or -1.
func rssKB(pid int) int64 { return procStatusKB(pid, "VmRSS:") }

// hwmKB returns VmHWM (peak RSS) of process pid in KiB, or -1.
func hwmKB(pid int) int64 { return procStatusKB(pid, "VmHWM:") }

func procStatusKB(pid int, key string) int64 {
	f, err := os.Open("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return -1
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), key); ok {
			fields := strings.Fields(rest)
			if len(fields) > 0 {
				n, err := strconv.ParseInt(fields[0], 10, 64)
				if err == nil {
					return n
				}
			}
		}
	}
	return -1
}

// Machine describes where a run happened.
type Machine struct {
	CPUs       int               `json:"cpus"`
	GOMAXPROCS int               `json:"gomaxprocs"`
	CPUModel   string            `json:"cpu_model"`
	Kernel     string            `json:"kernel"`
	GoVersion  string            `json:"go_version"`
	OSArch     string            `json:"os_arch"`
	MemTotalKB int64             `json:"mem_total_kb"`
	LoadStart  string            `json:"loadavg_start"`
	LoadEnd    string            `json:"loadavg_end,omitempty"`
	Libraries  map[string]string `json:"libraries"`
	// Calibration is the machine's yardstick, taken at the start.
	Calibration Calibration `json:"calibration"`
}

// keyLibraries are the modules whose versions decide the numbers.
var keyLibraries = []string{
	"google.golang.org/grpc",
	"google.golang.org/protobuf",
	"github.com/grpc-ecosystem/grpc-gateway/v2",
	"github.com/grpc-ecosystem/go-grpc-middleware/v2",
	"github.com/prometheus/client_golang",
	"go.opentelemetry.io/otel/sdk",
	"go.opentelemetry.io/contrib/instrumentation/google.golang.org/grpc/otelgrpc",
	"buf.build/go/protovalidate",
	"modernc.org/sqlite",
	"github.com/jackc/pgx/v5",
	"github.com/nats-io/nats-server/v2",
	"golang.org/x/net",
}

func machine() Machine {
	m := Machine{
		CPUs:       runtime.NumCPU(),
		GOMAXPROCS: runtime.GOMAXPROCS(0),
		GoVersion:  runtime.Version(),
		OSArch:     runtime.GOOS + "/" + runtime.GOARCH,
		LoadStart:  loadAvg(),
		Libraries:  map[string]string{},
		MemTotalKB: procMeminfoKB("MemTotal:"),
	}
	m.Calibration = calibrate()
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.Kernel = strings.TrimSpace(string(b))
	}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for line := range strings.Lines(string(b)) {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
				m.CPUModel = strings.TrimSpace(v)
				break
			}
		}
	}
	if bi, ok := debug.ReadBuildInfo(); ok {
		want := map[string]bool{}
		for _, l := range keyLibraries {
			want[l] = true
		}
		for _, d := range bi.Deps {
			if want[d.Path] {
				v := d.Version
				if d.Replace != nil {
					v += " => " + d.Replace.Path + " " + d.Replace.Version
				}
				m.Libraries[d.Path] = v
			}
		}
	}
	return m
}

// loadAvg is the first three fields of /proc/loadavg.
func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return ""
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return ""
	}
	return strings.Join(f[:3], " ")
}

func procMeminfoKB(key string) int64 {
	b, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		return -1
	}
	for line := range strings.Lines(string(b)) {
		if rest, ok := strings.CutPrefix(line, key); ok {
			f := strings.Fields(rest)
			if len(f) > 0 {
				n, _ := strconv.ParseInt(f[0], 10, 64)
				return n
			}
		}
	}
	return -1
}
