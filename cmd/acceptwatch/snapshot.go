package main

// --snapshot, and the connections-now part of every tracing summary: who
// is connected to this machine's listening ports now, from the kernel's
// sock_diag dump (tracer/sockdiag). No BPF, no privileges.

import (
	"fmt"
	"io"
	"net/netip"
	"strings"
	"time"

	"github.com/spf13/pflag"

	"github.com/acceptwatch/acceptwatch/report"
	"github.com/acceptwatch/acceptwatch/tracer/sockdiag"
)

type snapshotOptions struct {
	on           bool
	synRecvShare float64 // percent
	addressShare float64 // percent
	closeWait    uint64
}

func snapshotFlags(fs *pflag.FlagSet, o *snapshotOptions) {
	fs.BoolVar(&o.on, "snapshot", false, "print the TCP connections to this machine's listening ports now (inbound only; with -port, exactly those ports) per remote address, state and port, and exit; needs no root; sees its own network namespace")
	fs.Float64Var(&o.synRecvShare, "syn-recv-share", 50, "--snapshot: finding when this `percent` of a port's connections are half-open (SYN_RECV), 10 or more")
	fs.Float64Var(&o.addressShare, "address-share", 50, "--snapshot: finding when one address holds this `percent` of the connections, 20 or more")
	fs.Uint64Var(&o.closeWait, "close-wait-threshold", 10, "--snapshot: finding when a port has this many connections in CLOSE_WAIT")
}

// Flags of the tracer that a snapshot has no use for, and the other way round.
var (
	tracingOnly = []string{"duration", "count", "interval", "attach", "quiet", "pid", "max-addresses", "wait-threshold", "half-open-threshold", "ready-file",
		"no-syn-counter", "prefix", "group-by", "flood-min", "flood-factor", "flood-share", "save-baseline", "baseline", "baseline-factor",
		"metrics", "metrics-addr", "metrics-top-addresses", "live"}
	snapshotOnly = []string{"syn-recv-share", "address-share", "close-wait-threshold"}
)

// checkSnapshotFlags refuses flags that make no sense with (or without)
// --snapshot rather than ignoring them.
func checkSnapshotFlags(fs *pflag.FlagSet, o *options) error {
	bad, why := tracingOnly, "with --snapshot (it traces nothing)"
	if !o.snapshot.on {
		bad, why = snapshotOnly, "without --snapshot"
	}
	for _, name := range bad {
		if fs.Changed(name) {
			return usagef("--%s makes no sense %s", name, why)
		}
	}
	for _, v := range []float64{o.snapshot.synRecvShare, o.snapshot.addressShare} {
		if v < 0 || v > 100 {
			return usagef("invalid share %g: a percentage is 0 to 100", v)
		}
	}
	return nil
}

func (o *options) snapshotFilter() sockdiag.Filter {
	f := sockdiag.Filter{Ports: o.portList}
	if o.ipv4 {
		f.Family = 4
	} else if o.ipv6 {
		f.Family = 6
	}
	if t, r := o.cgroupT, o.cgroupPaths; t.ID != 0 {
		f.Cgroup = func(id uint64) bool { return id == t.ID || t.Contains(r.Path(id)) }
	}
	return f
}

func runSnapshot(o *options, stdout, stderr io.Writer) error {
	// --netns: the namespace's sockets (entering it needs CAP_SYS_ADMIN).
	d, err := sockdiag.OpenIn(o.netnsPath)
	if err != nil {
		return fmt.Errorf("snapshot: %w", err)
	}
	defer d.Close()
	snap, err := d.Snapshot(o.snapshotFilter())
	if err != nil {
		return fmt.Errorf("snapshot: %w", err)
	}
	rs := toReport(snap, o.portNames)
	rs.Cgroup = o.cgroupT.Path
	rs.Findings = report.SnapshotFindings(rs, report.SnapshotThresholds{
		SynRecvShare: o.snapshot.synRecvShare / 100,
		AddressShare: o.snapshot.addressShare / 100,
		CloseWait:    o.snapshot.closeWait,
	})
	if o.verbose {
		fmt.Fprintf(stderr, "acceptwatch: snapshot of network namespace %d: %d ports, %d connections from %d addresses, dumped in %s\n",
			snap.NetNS, len(snap.Ports), snap.States.Total(), len(snap.Addrs), snap.Dumped.Round(time.Microsecond))
		if snap.Dropped > 0 {
			fmt.Fprintf(stderr, "acceptwatch: %d sockets on ports between the watched ones dropped (too many port ranges for one kernel filter)\n", snap.Dropped)
		}
	}
	if o.output == "json" {
		err = report.WriteSnapshotJSON(stdout, rs)
	} else {
		err = report.WriteSnapshotText(stdout, rs, report.TextOptions{Top: o.top})
	}
	if isClosedPipe(err) {
		return nil
	}
	return err
}

// group folds kernel states into the columns users read.
func group(c *sockdiag.StateCounts) report.ConnStates {
	return report.ConnStates{
		Established: uint64(c.Get(sockdiag.StateEstablished)),
		SynRecv:     uint64(c.Get(sockdiag.StateSynRecv)),
		CloseWait:   uint64(c.Get(sockdiag.StateCloseWait)),
		TimeWait:    uint64(c.Get(sockdiag.StateTimeWait)),
		FinWait:     uint64(c.Get(sockdiag.StateFinWait1)) + uint64(c.Get(sockdiag.StateFinWait2)),
		Other: uint64(c.Get(sockdiag.StateSynSent)) + uint64(c.Get(sockdiag.StateClose)) +
			uint64(c.Get(sockdiag.StateLastAck)) + uint64(c.Get(sockdiag.StateClosing)),
	}
}

func toReport(s *sockdiag.Snapshot, ports []string) report.Snapshot {
	rs := report.Snapshot{Time: s.Time, NetNS: s.NetNS, Ports: ports, Total: group(&s.States)}
	for _, st := range sockdiag.States() {
		if st != sockdiag.StateListen {
			rs.States = append(rs.States, report.StateCount{Name: st.String(), Count: uint64(s.States.Get(st))})
		}
	}
	for _, a := range s.Addrs {
		rs.Addresses = append(rs.Addresses, report.SnapAddr{Addr: a.Addr, ConnStates: group(&a.States)})
	}
	for _, p := range s.Ports {
		sp := report.SnapPort{Port: p.Port, ConnStates: group(&p.States), Listeners: len(p.Listeners)}
		sp.Queue, sp.QueueLimit = p.Queue()
		for _, l := range p.Listeners {
			// The kernel's own test (sk_acceptq_is_full): one more than
			// the limit fits.
			sp.QueueFull = sp.QueueFull || l.Queue > l.Limit
		}
		rs.Listeners = append(rs.Listeners, sp)
	}
	return rs
}

// connectionsNow adds OPEN and SYN_RECV per address, and the state counts,
// to tracing summaries. It keeps one sock_diag socket for the whole run.
type connectionsNow struct {
	d   *sockdiag.Dumper
	err error
}

// openConnectionsNow reads the namespace at nsPath ("": acceptwatch's).
func openConnectionsNow(nsPath string) *connectionsNow {
	d, err := sockdiag.OpenIn(nsPath)
	return &connectionsNow{d: d, err: err}
}

func (c *connectionsNow) Close() {
	if c.d != nil {
		c.d.Close()
	}
}

// add takes a snapshot of the watched ports and merges it into s; if that
// fails, a finding says why and the columns are left out.
func (c *connectionsNow) add(s *report.Summary, o *options) {
	var snap *sockdiag.Snapshot
	err := c.err
	if err == nil {
		snap, err = c.d.Snapshot(o.snapshotFilter())
	}
	if err != nil {
		s.Findings = append(s.Findings, "connections now unknown: "+strings.Join(strings.Fields(err.Error()), " "))
		return
	}
	now := group(&snap.States)
	s.Now, s.NetNS = &now, snap.NetNS
	// The snapshot is of one namespace: only its rows get its counts.
	ns := uint32(snap.NetNS)
	at := make(map[netip.Addr]int, len(s.Addresses))
	for i, a := range s.Addresses {
		if a.NetNS == ns {
			at[report.Normalize(a.Addr)] = i
		}
	}
	for _, a := range snap.Addrs {
		i, ok := at[a.Addr]
		if !ok && a.States.Open()+a.States.Get(sockdiag.StateSynRecv) == 0 {
			continue // only closing connections (TIME_WAIT, ...): in the state line
		}
		if !ok {
			i = len(s.Addresses)
			s.Addresses = append(s.Addresses, report.AddrStats{Addr: a.Addr, NetNS: ns})
		}
		s.Addresses[i].Open = uint64(a.States.Open())
		s.Addresses[i].SynRecv = uint64(a.States.Get(sockdiag.StateSynRecv))
	}
}
