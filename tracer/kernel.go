package tracer

import (
	"bufio"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"strings"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/btf"
	"golang.org/x/sys/unix"
)

// fexitProgram picks the fexit variant that matches inet_csk_accept's
// signature in the running kernel: 4 parameters before 6.10, 2 from 6.10.
func fexitProgram(cache *btf.Cache) (string, error) {
	// Locked-down kernels refuse tracing programs with EPERM, and the
	// loader's "MEMLOCK may be too low" hint would then mislead: try a
	// minimal fexit program first.
	if err := probeFexit(cache); err != nil {
		return "", fmt.Errorf("kernel refuses fentry/fexit programs (lockdown or a security policy; the capabilities are there): %w", err)
	}
	kernel, err := cache.Kernel()
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

// probeFexit loads an empty fexit program on inet_csk_accept, with the
// shared kernel BTF (features.HaveProgramType would parse it again).
func probeFexit(cache *btf.Cache) error {
	spec := &ebpf.CollectionSpec{Programs: map[string]*ebpf.ProgramSpec{"probe": {
		Type:         ebpf.Tracing,
		AttachType:   ebpf.AttachTraceFExit,
		AttachTo:     "inet_csk_accept",
		Instructions: asm.Instructions{asm.Mov.Imm(asm.R0, 0), asm.Return()},
		License:      "GPL",
	}}}
	coll, err := ebpf.NewCollectionWithOptions(spec, ebpf.CollectionOptions{Cache: cache})
	if err != nil {
		var errno unix.Errno
		if errors.As(err, &errno) {
			return fmt.Errorf("loading a fexit program: %w", errno)
		}
		return err
	}
	coll.Close()
	return nil
}

// tracepointPrograms picks the tracepoint variant: one program at the exit
// of accept() reading the listening descriptor from the saved registers
// (bpf_task_pt_regs, 5.15+), with direct loads through bpf_rdonly_cast where
// the kernel has that kfunc (6.2+), or on older kernels an entry program too.
func tracepointPrograms(cache *btf.Cache) ([]string, error) {
	kernel, err := cache.Kernel()
	if err != nil {
		return nil, fmt.Errorf("reading kernel BTF: %w", err)
	}
	var helpers *btf.Enum
	if err := kernel.TypeByName("bpf_func_id", &helpers); err != nil {
		return nil, fmt.Errorf("finding the BPF helper list in kernel BTF: %w", err)
	}
	for _, v := range helpers.Values {
		if v.Name == "BPF_FUNC_task_pt_regs" {
			var cast *btf.Func
			if kernel.TypeByName("bpf_rdonly_cast", &cast) == nil {
				return []string{tracepointCast}, nil
			}
			return []string{tracepointProbeRead}, nil
		}
	}
	return []string{"aw_tp_enter_old", "aw_tp_accept_old"}, nil
}

// The tracepoint programs of 5.15+ kernels: with bpf_rdonly_cast, and the
// one that reads through bpf_probe_read_kernel (also the fallback).
const (
	tracepointCast      = "aw_tp_accept_btf"
	tracepointProbeRead = "aw_tp_accept"
)

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

// ensureTracefs finds tracefs (or debugfs, which holds it) and mounts
// tracefs at its usual place when neither is mounted: classic tracepoints
// are found by name there. dir is where the events are.
func ensureTracefs() (dir string, mounted bool, _ error) {
	const usual = "/sys/kernel/tracing"
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return "", false, fmt.Errorf("reading mounts: %w", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	debugfs := ""
	for sc.Scan() {
		// Fields: id parent major:minor root mountpoint ... - fstype source options.
		before, after, ok := strings.Cut(sc.Text(), " - ")
		if !ok {
			continue
		}
		fields := strings.Fields(before)
		if len(fields) < 5 {
			continue
		}
		switch fstype, _, _ := strings.Cut(after, " "); fstype {
		case "tracefs":
			return fields[4], false, nil
		case "debugfs":
			debugfs = fields[4] + "/tracing"
		}
	}
	if debugfs != "" {
		return debugfs, false, nil
	}
	if err := unix.Mount("nodev", usual, "tracefs", 0, ""); err != nil {
		if errors.Is(err, unix.EPERM) && !hasCap(capSysAdmin) {
			return "", false, &CapabilityError{Missing: []string{capSysAdmin.name},
				For: "tracefs is not mounted, and tracepoint mode needs it: mount it (mount -t tracefs nodev " + usual + "; systemd does at boot) or grant CAP_SYS_ADMIN"}
		}
		return "", false, fmt.Errorf("tracefs is not mounted and mounting it on %s failed: %w", usual, err)
	}
	return usual, true, nil
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
