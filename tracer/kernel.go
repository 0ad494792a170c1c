package tracer

import (
	"bufio"
	"fmt"
	"net/netip"
	"os"
	"strings"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/btf"
	"github.com/cilium/ebpf/features"
	"golang.org/x/sys/unix"
)

// fexitProgram picks the fexit variant that matches inet_csk_accept's
// signature in the running kernel: 4 parameters before 6.10, 2 from 6.10.
func fexitProgram() (string, error) {
	// Locked-down kernels refuse tracing programs with EPERM, and the
	// loader's "MEMLOCK may be too low" hint would then mislead.
	if err := features.HaveProgramType(ebpf.Tracing); err != nil {
		return "", fmt.Errorf("kernel refuses fentry/fexit programs: %w", err)
	}
	kernel, err := btf.LoadKernelSpec()
	if err != nil {
		return "", fmt.Errorf("reading kernel BTF: %w", err)
	}
	var fn *btf.Func
	if err := kernel.TypeByName("inet_csk_accept", &fn); err != nil {
		return "", fmt.Errorf("finding inet_csk_accept in kernel BTF: %w", err)
	}
	proto, ok := fn.Type.(*btf.FuncProto)
	if !ok {
		return "", fmt.Errorf("inet_csk_accept has no prototype in kernel BTF")
	}
	switch n := len(proto.Params); n {
	case 4:
		return "aw_fexit_acc4", nil
	case 2:
		return "aw_fexit_acc2", nil
	default:
		return "", fmt.Errorf("inet_csk_accept has %d parameters, expected 2 or 4", n)
	}
}

// haveKprobes fails fast where the kernel has no kprobes (no kprobe PMU and
// no kprobe_events), before the programs are loaded for nothing.
func haveKprobes() error {
	for _, p := range []string{
		"/sys/bus/event_source/devices/kprobe/type",
		"/sys/kernel/tracing/kprobe_events",
		"/sys/kernel/debug/tracing/kprobe_events",
	} {
		if _, err := os.Stat(p); err == nil {
			return nil
		}
	}
	return fmt.Errorf("kernel has no kprobe support (no kprobe PMU, no kprobe_events)")
}

// ensureTracefs mounts tracefs at its usual place when neither tracefs nor
// debugfs is mounted: classic tracepoints are found by name there.
func ensureTracefs() (mounted bool, _ error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return false, fmt.Errorf("reading mounts: %w", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		// Fields after the " - " separator: fstype source options.
		_, after, ok := strings.Cut(sc.Text(), " - ")
		if !ok {
			continue
		}
		if fstype, _, _ := strings.Cut(after, " "); fstype == "tracefs" || fstype == "debugfs" {
			return false, nil
		}
	}
	if err := unix.Mount("nodev", "/sys/kernel/tracing", "tracefs", 0, ""); err != nil {
		return false, fmt.Errorf("tracefs is not mounted and mounting it on /sys/kernel/tracing failed: %w", err)
	}
	return true, nil
}

// monotonicNow reads CLOCK_MONOTONIC (bpf_ktime_get_ns) and the wall clock
// together, to turn kernel timestamps into wall-clock times.
func monotonicNow() (time.Duration, time.Time) {
	var ts unix.Timespec
	_ = unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts)
	return time.Duration(ts.Nano()), time.Now()
}

func addrFrom16(b [16]byte, family uint8) netip.Addr {
	a := netip.AddrFrom16(b)
	if family == 4 {
		return a.Unmap()
	}
	return a
}
