package tracer

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/btf"
	"github.com/cilium/ebpf/link"
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
	} else if err := e.attachSynCounter(spec, opts, logf); err != nil {
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
// older PROG_ATTACH interface would outlive a killed acceptwatch.
func (e *extras) attachSynCounter(spec *ebpf.CollectionSpec, opts ebpf.CollectionOptions, logf func(string, ...any)) error {
	root, note, err := cgroup2Root()
	if err != nil {
		return err
	}
	defer root.Close()
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
		return fmt.Errorf("attaching to the cgroup v2 root %s: %w", root.Name(), err)
	}
	e.colls = append(e.colls, coll)
	e.links = append(e.links, l)
	e.syn = SynCgroup
	e.drops = append(e.drops, DropsSyn)
	logf("SYN counter: cgroup_skb/ingress on the cgroup v2 root %s%s; also SYNs dropped for a full accept queue", root.Name(), note)
	return nil
}

// cgroup2Root opens the root of the cgroup v2 hierarchy: a cgroup2 mount
// from mountinfo wherever it is (/sys/fs/cgroup, or /sys/fs/cgroup/unified
// on hybrid systems), else a mount of its own made for the moment of opening.
// note says when what was found is not the hierarchy's root (a cgroup
// namespace or a bind mount): then only sockets below it are seen.
func cgroup2Root() (_ *os.File, note string, _ error) {
	mnt, root, err := findCgroup2()
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

// findCgroup2 returns the mount point of a cgroup2 file system and the path
// of the hierarchy it shows (mountinfo's fourth field), preferring a mount
// of the whole hierarchy; "" if there is none.
func findCgroup2() (mnt, root string, _ error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return "", "", fmt.Errorf("reading mounts: %w", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		before, after, ok := strings.Cut(sc.Text(), " - ")
		if !ok {
			continue
		}
		if fstype, _, _ := strings.Cut(after, " "); fstype != "cgroup2" {
			continue
		}
		// ID parent major:minor root mountpoint options...
		fields := strings.Fields(before)
		if len(fields) < 5 {
			continue
		}
		r, m := unescapeMount(fields[3]), unescapeMount(fields[4])
		if mnt == "" || (root != "/" && r == "/") {
			mnt, root = m, r
		}
	}
	if err := sc.Err(); err != nil {
		return "", "", fmt.Errorf("reading mounts: %w", err)
	}
	return mnt, root, nil
}

// unescapeMount undoes mountinfo's octal escapes (\040 for a space).
func unescapeMount(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			var v byte
			ok := true
			for _, c := range []byte(s[i+1 : i+4]) {
				if c < '0' || c > '7' {
					ok = false
					break
				}
				v = v*8 + c - '0'
			}
			if ok {
				b.WriteByte(v)
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}
