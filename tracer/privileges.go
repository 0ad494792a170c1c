package tracer

import (
	"errors"
	"fmt"
	"os"
	"strings"

	"golang.org/x/sys/unix"
)

// Capabilities: what tracing needs, and what for. Root has them all; a
// service can run as any user that holds these (README: Always on).
//
//	CAP_BPF              maps and programs
//	CAP_PERFMON          tracing programs, kernel reads, perf events (kprobes, tracepoints)
//	CAP_DAC_READ_SEARCH  tracepoint mode: event ids in tracefs, a root-only (0700) directory
//
// Kernels before 5.11 also charge BPF maps to RLIMIT_MEMLOCK: raise it
// (LimitMEMLOCK=infinity) or add CAP_SYS_RESOURCE.
var (
	capBPF           = capability{unix.CAP_BPF, "CAP_BPF"}
	capPerfmon       = capability{unix.CAP_PERFMON, "CAP_PERFMON"}
	capDacReadSearch = capability{unix.CAP_DAC_READ_SEARCH, "CAP_DAC_READ_SEARCH"}
	capSysAdmin      = capability{unix.CAP_SYS_ADMIN, "CAP_SYS_ADMIN"}
)

type capability struct {
	bit  uint
	name string
}

// CapabilityError says which capabilities the process lacks.
type CapabilityError struct {
	Missing []string
	For     string // what they are needed for
}

func (e *CapabilityError) Error() string {
	s := "s"
	if len(e.Missing) == 1 {
		s = ""
	}
	return fmt.Sprintf("missing capability%s %s: %s", s, strings.Join(e.Missing, ", "), e.For)
}

// effectiveCaps reads the process's effective capability set; ok is false
// if it cannot be read (then the kernel decides).
func effectiveCaps() (set [2]uint32, ok bool) {
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData
	if err := unix.Capget(&hdr, &data[0]); err != nil {
		return set, false
	}
	return [2]uint32{data[0].Effective, data[1].Effective}, true
}

func hasCap(c capability) bool {
	set, ok := effectiveCaps()
	return !ok || set[c.bit/32]&(1<<(c.bit%32)) != 0
}

// checkCapabilities fails early, naming what is missing, when the process
// plainly cannot load tracing programs. CAP_SYS_ADMIN stands in for CAP_BPF
// and CAP_PERFMON, as in the kernel.
func checkCapabilities() error {
	if hasCap(capSysAdmin) {
		return nil
	}
	var missing []string
	for _, c := range []capability{capBPF, capPerfmon} {
		if !hasCap(c) {
			missing = append(missing, c.name)
		}
	}
	if len(missing) == 0 {
		return nil
	}
	return &CapabilityError{Missing: missing, For: "tracing needs CAP_BPF and CAP_PERFMON (and CAP_DAC_READ_SEARCH in tracepoint mode): run with sudo or grant them"}
}

// memlockErr is why RLIMIT_MEMLOCK could not be raised, if it could not.
var memlockErr error

// mapsError explains a refusal to create the maps.
func mapsError(err error) error {
	if errors.Is(err, unix.EPERM) && memlockErr != nil {
		return fmt.Errorf("%w: this kernel charges BPF maps to RLIMIT_MEMLOCK (%d bytes here) and it could not be raised without CAP_SYS_RESOURCE: raise it (ulimit -l unlimited, LimitMEMLOCK=infinity) or grant CAP_SYS_RESOURCE", err, memlockCur())
	}
	return err
}

func memlockCur() uint64 {
	var r unix.Rlimit
	_ = unix.Getrlimit(unix.RLIMIT_MEMLOCK, &r)
	return r.Cur
}

// tracefsError explains why an event id in tracefs cannot be read.
func tracefsError(dir string, err error) error {
	if errors.Is(err, os.ErrPermission) {
		return &CapabilityError{Missing: []string{capDacReadSearch.name},
			For: fmt.Sprintf("tracepoint mode reads event ids in tracefs (%s), which only root can read", dir)}
	}
	if errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("kernel has no syscall tracepoints (%s/events/syscalls): %w", dir, err)
	}
	return err
}

// perfEventError explains a perf event the kernel refused (tracepoint and
// kretprobe modes attach through perf events). Debian's and Ubuntu's
// kernels add kernel.perf_event_paranoid=3 (their default), where
// perf_event_open wants CAP_SYS_ADMIN, not CAP_PERFMON.
func perfEventError(err error) error {
	if !errors.Is(err, unix.EACCES) && !errors.Is(err, unix.EPERM) || hasCap(capSysAdmin) {
		return err
	}
	b, rerr := os.ReadFile("/proc/sys/kernel/perf_event_paranoid")
	level := strings.TrimSpace(string(b))
	if rerr == nil && level >= "3" && len(level) == 1 {
		return &CapabilityError{Missing: []string{capSysAdmin.name},
			For: "kernel.perf_event_paranoid is " + level + ", where this kernel opens perf events (for tracepoints and kprobes) only with CAP_SYS_ADMIN: grant it, or set kernel.perf_event_paranoid=2 (then CAP_PERFMON suffices)"}
	}
	return err
}
