package tracer

import (
	"errors"
	"fmt"
	"os"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/btf"
	"github.com/cilium/ebpf/link"

	"github.com/acceptwatch/acceptwatch/tracer/cgroups"
	"golang.org/x/sys/unix"
)

// Where SYNs are counted (Counts.SynCounter).
const (
	SynCgroup      = "cgroup_skb"       // every mode: cgroup_skb/ingress on the cgroup v2 root
	SynConnRequest = "tcp_conn_request" // fexit and kretprobe modes, where the cgroup hook cannot attach
)

// What the drop counters see (Counts.DropCounters).
const (
	DropsSyn      = "syn"       // SYNs to a listener whose accept queue is full (at the cgroup hook)
	DropsFinalAck = "final_ack" // final ACKs freed with the TCP_LISTEN_OVERFLOW drop reason
)

// extras are the programs every mode shares that may be missing on a kernel:
// the SYN counter on the cgroup v2 root and the accept-queue drop counter.
type extras struct {
	colls []*ebpf.Collection
	links []link.Link
	syn   string   // SynCgroup or "" (the mode may then count at tcp_conn_request)
	drops []string // DropsSyn, DropsFinalAck
}

func (e *extras) Close() {
	for _, l := range e.links {
		l.Close()
	}
	for _, c := range e.colls {
		c.Close()
	}
	e.links, e.colls = nil, nil
}

// openExtras loads and attaches the SYN counter (unless cfg turns it off)
// and the drop counter. Neither is required: what fails is said with -v
// and left out.
func openExtras(spec *ebpf.CollectionSpec, maps *ebpf.Collection, cache *btf.Cache, cfg Config) *extras {
	logf := cfg.Logf
	e := &extras{}
	opts := ebpf.CollectionOptions{MapReplacements: maps.Maps, Cache: cache}
	if cfg.NoSynCounter {
		logf("SYN counter: off (--no-syn-counter)")
	} else if err := e.attachSynCounter(spec, opts, cfg.Cgroup, logf); err != nil {
		logf("SYN counter: cgroup_skb/ingress unavailable: %s", oneLine(err.Error()))
	}
	if err := e.attachDropCounter(spec, opts, cache, logf); err != nil {
		logf("accept-queue drops per address: final ACKs not counted: %s", oneLine(err.Error()))
	}
	return e
}

// attachSynCounter puts aw_syn_skb on the cgroup v2 root's ingress through a
// bpf_link: links always allow other programs beside them (the kernel's
// BPF_F_ALLOW_MULTI), never replace one, and go away with the process however
// it ends. Without cgroup links (before 5.7) it is not attached at all: the
// older PROG_ATTACH interface would outlive a killed acceptwatch. With
// --cgroup it goes on that cgroup: the kernel runs it for its subtree only.
func (e *extras) attachSynCounter(spec *ebpf.CollectionSpec, opts ebpf.CollectionOptions, target cgroups.Target, logf func(string, ...any)) error {
	root, note, err := cgroup2Root()
	if err != nil {
		return err
	}
	defer root.Close()
	if target.ID != 0 {
		dir, err := os.Open(target.Dir)
		if err != nil {
			return fmt.Errorf("opening cgroup %s: %w", target.Path, err)
		}
		defer dir.Close()
		root, note = dir, " (--cgroup)"
	}
	coll, err := loadPrograms(spec, []string{"aw_syn_skb"}, opts)
	if err != nil {
		return fmt.Errorf("loading: %w", err)
	}
	l, err := link.AttachRawLink(link.RawLinkOptions{
		Target:  int(root.Fd()),
		Program: coll.Programs["aw_syn_skb"],
		Attach:  ebpf.AttachCGroupInetIngress,
	})
	if err != nil {
		coll.Close()
		if errors.Is(err, unix.EPERM) {
			err = fmt.Errorf("%w (a program attached there without multi-attach keeps others off)", err)
		}
		return fmt.Errorf("attaching to the cgroup %s: %w", root.Name(), err)
	}
	e.colls = append(e.colls, coll)
	e.links = append(e.links, l)
	e.syn = SynCgroup
	e.drops = append(e.drops, DropsSyn)
	logf("SYN counter: cgroup_skb/ingress on the cgroup %s%s; also SYNs dropped for a full accept queue", root.Name(), note)
	return nil
}

// cgroup2Root opens the root of the cgroup v2 hierarchy: a cgroup2 mount
// from mountinfo wherever it is (/sys/fs/cgroup, or /sys/fs/cgroup/unified
// on hybrid systems), else a mount of its own made for the moment of opening.
// note says when what was found is not the hierarchy's root (a cgroup
// namespace or a bind mount): then only sockets below it are seen.
func cgroup2Root() (_ *os.File, note string, _ error) {
	mnt, root, err := cgroups.Find()
	if err != nil {
		return nil, "", err
	}
	if mnt != "" {
		f, err := os.Open(mnt)
		if err != nil {
			return nil, "", fmt.Errorf("opening the cgroup v2 root: %w", err)
		}
		if root != "/" {
			note = fmt.Sprintf(" (mounted from %s: only sockets of cgroups below it are seen)", root)
		}
		return f, note, nil
	}
	// None mounted (a cgroup v1 only system): mount one where nobody
	// looks, open it, and unmount at once; the open directory keeps it.
	dir, err := os.MkdirTemp("", "acceptwatch-cgroup2-")
	if err != nil {
		return nil, "", fmt.Errorf("no cgroup v2 mount, and no directory to mount one: %w", err)
	}
	defer os.Remove(dir)
	if err := unix.Mount("cgroup2", dir, "cgroup2", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, ""); err != nil {
		return nil, "", fmt.Errorf("no cgroup v2 mount, and mounting one failed: %w", err)
	}
	defer unix.Unmount(dir, unix.MNT_DETACH)
	f, err := os.Open(dir)
	if err != nil {
		return nil, "", fmt.Errorf("opening the cgroup v2 root: %w", err)
	}
	return f, " (mounted for the moment of attaching)", nil
}
