package main

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/link"

	"github.com/acceptwatch/acceptwatch/tracer/cgroups"
)

// hook is one place acceptwatch attaches programs. Empty programs (return 0)
// on it cost what merely hooking there costs: the bench's breakdown rows.
type hook struct {
	name   string
	attach func(prog *ebpf.Program) ([]link.Link, error)
	spec   ebpf.ProgramSpec // type and attach point of the program
}

func emptySpec(t ebpf.ProgramType, at ebpf.AttachType, to string) ebpf.ProgramSpec {
	return ebpf.ProgramSpec{
		Name: "aw_bench_empty", Type: t, AttachType: at, AttachTo: to, License: "GPL",
		Instructions: asm.Instructions{asm.Mov.Imm(asm.R0, 0), asm.Return()},
	}
}

func btfTracepoint(name string) hook {
	return hook{
		name: "tp_btf/" + name,
		spec: emptySpec(ebpf.Tracing, ebpf.AttachTraceRawTp, name),
		attach: func(p *ebpf.Program) ([]link.Link, error) {
			l, err := link.AttachTracing(link.TracingOptions{Program: p})
			return []link.Link{l}, err
		},
	}
}

func function(kind string, at ebpf.AttachType, fn string) hook {
	return hook{
		name: kind + "/" + fn,
		spec: emptySpec(ebpf.Tracing, at, fn),
		attach: func(p *ebpf.Program) ([]link.Link, error) {
			l, err := link.AttachTracing(link.TracingOptions{Program: p})
			return []link.Link{l}, err
		},
	}
}

func kprobe(ret bool, fn string) hook {
	name := "kprobe/" + fn
	if ret {
		name = "kretprobe/" + fn
	}
	return hook{
		name: name,
		spec: emptySpec(ebpf.Kprobe, ebpf.AttachNone, ""),
		attach: func(p *ebpf.Program) ([]link.Link, error) {
			var l link.Link
			var err error
			if ret {
				l, err = link.Kretprobe(fn, p, nil)
			} else {
				l, err = link.Kprobe(fn, p, nil)
			}
			return []link.Link{l}, err
		},
	}
}

// syscallExits is tracepoint mode's accept hook: the classic tracepoints at
// the exit of accept4() and accept().
var syscallExits = hook{
	name: "syscalls:sys_exit_accept{,4}",
	spec: emptySpec(ebpf.TracePoint, ebpf.AttachNone, ""),
	attach: func(p *ebpf.Program) ([]link.Link, error) {
		var ls []link.Link
		for _, name := range []string{"sys_exit_accept4", "sys_exit_accept"} {
			l, err := link.Tracepoint("syscalls", name, p, nil)
			if err != nil {
				return ls, err
			}
			ls = append(ls, l)
		}
		return ls, nil
	},
}

// cgroupIngress is the SYN counter's hook: cgroup_skb/ingress on the cgroup
// v2 root, which runs for every packet delivered to a socket. Its empty
// program returns 1 (0 would drop every packet), attached with a link
// beside any other program there.
var cgroupIngress = hook{
	name: "cgroup_skb/ingress (cgroup v2 root)",
	spec: ebpf.ProgramSpec{
		Name: "aw_bench_empty", Type: ebpf.CGroupSKB, AttachType: ebpf.AttachCGroupInetIngress, License: "GPL",
		Instructions: asm.Instructions{asm.Mov.Imm(asm.R0, 1), asm.Return()},
	},
	attach: func(p *ebpf.Program) ([]link.Link, error) {
		root, err := cgroups.Mount()
		if err != nil {
			return nil, err
		}
		l, err := link.AttachCgroup(link.CgroupOptions{Path: root, Attach: ebpf.AttachCGroupInetIngress, Program: p})
		return []link.Link{l}, err
	},
}

// tcpHooks are the hooks every attach mode loads: the BTF tracepoints of
// the TCP stack, the SYN counter and the drop counter (kfree_skb).
var tcpHooks = []hook{
	btfTracepoint("inet_sock_set_state"),
	btfTracepoint("tcp_destroy_sock"),
	btfTracepoint("tcp_retransmit_synack"),
	cgroupIngress,
	btfTracepoint("kfree_skb"),
}

// hooksOf lists the hooks of an attach mode, as tracer.openMode and
// tracer.openExtras attach them (tcp_conn_request, the SYN counter's
// fallback where the cgroup hook fails, is left out).
func hooksOf(mode string) ([]hook, error) {
	switch mode {
	case "tracepoint":
		return append([]hook{syscallExits}, tcpHooks...), nil
	case "fexit":
		return append([]hook{function("fexit", ebpf.AttachTraceFExit, "inet_csk_accept")}, tcpHooks...), nil
	case "kretprobe":
		return append([]hook{kprobe(false, "inet_csk_accept"), kprobe(true, "inet_csk_accept")}, tcpHooks...), nil
	}
	return nil, fmt.Errorf("no hooks known for attach mode %q (want fexit, kretprobe or tracepoint)", mode)
}

// emptyPrograms are loaded and attached in this process.
type emptyPrograms struct {
	progs []*ebpf.Program
	links []link.Link
}

// attachEmpty puts an empty program on each hook.
func attachEmpty(hooks []hook) (_ *emptyPrograms, err error) {
	e := &emptyPrograms{}
	defer func() {
		if err != nil {
			e.stop()
		}
	}()
	for _, h := range hooks {
		spec := h.spec
		p, err := ebpf.NewProgram(&spec)
		if err != nil {
			return nil, fmt.Errorf("loading an empty program for %s: %w", h.name, err)
		}
		e.progs = append(e.progs, p)
		ls, err := h.attach(p)
		for _, l := range ls {
			if l != nil {
				e.links = append(e.links, l)
			}
		}
		if err != nil {
			return nil, fmt.Errorf("attaching an empty program to %s: %w", h.name, err)
		}
	}
	return e, nil
}

// cpuTime is 0: the programs run in the traced processes' context, and
// this process holds them without doing any work for them.
func (e *emptyPrograms) cpuTime() time.Duration { return 0 }

func (e *emptyPrograms) finish() error { return e.stop() }

func (e *emptyPrograms) stop() error {
	var errs []error
	for _, l := range e.links {
		errs = append(errs, l.Close())
	}
	for _, p := range e.progs {
		errs = append(errs, p.Close())
	}
	e.links, e.progs = nil, nil
	return errors.Join(errs...)
}

func hookNames(hooks []hook) string {
	names := make([]string, len(hooks))
	for i, h := range hooks {
		names[i] = h.name
	}
	return strings.Join(names, " + ")
}
