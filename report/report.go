// Package report formats acceptwatch output: live lines for accepted TCP
// connections and per-remote-address summaries, as text or as JSON lines.
//
// Writers are not safe for concurrent use; callers serialise Event and
// Summary calls. Every Event and Summary call issues exactly one Write on
// the underlying io.Writer and returns its error unchanged, so a caller can
// detect EPIPE on a closed stdout and stop quietly.
package report

import (
	"cmp"
	"net/netip"
	"slices"
	"strconv"
	"time"
)

// Event is one accepted connection.
type Event struct {
	Time       time.Time
	PID        uint32
	NetNS      uint32     // the accepted socket's network namespace (inode)
	CgroupID   uint64     // the acceptor's cgroup v2 id; 0: unknown
	Cgroup     string     // its path below the cgroup2 mount, "" if unknown
	Container  string     // the container or unit that path names, "" if none
	Comm       string     // raw from the kernel: may hold control chars/invalid UTF-8
	LocalAddr  netip.Addr // already normalised: IPv4 clients of dual-stack listeners arrive as 4-byte addrs, but Normalize anyway
	LocalPort  uint16
	RemoteAddr netip.Addr
	RemotePort uint16
	QueueWait  time.Duration // handshake to accept(); valid if HasWait
	HasWait    bool
	Backlog    uint32 // listener's queue when taken, this one included
	BacklogMax uint32 // listener's limit; both valid if HasBacklog
	HasBacklog bool
	ClientGone bool   // the client had closed or reset before accept()
	State      string // TCP state of the accepted socket, e.g. ESTABLISHED, CLOSE_WAIT
}

// Wait summarises queue waits (handshake completed to accept()). The kernel
// keeps histograms, not every wait, so a percentile is known as a range.
type Wait struct {
	Count    uint64
	P50, P99 Quantile
	// Smallest and largest wait: exact for a whole run; for an --interval
	// window, the run's values narrowed to the window's lowest and highest
	// bucket (bounds).
	Min, Max time.Duration
}

// Quantile is a percentile (nearest rank) that lies in [Lo, Hi]: the range of
// its histogram bucket narrowed by the smallest and largest wait. Per port
// the buckets are log-linear (Hi-Lo at most 1/16 of Lo); per address log2.
type Quantile struct{ Lo, Hi time.Duration }

// Est is the middle of the range: within (Hi-Lo)/2 of the true value.
func (q Quantile) Est() time.Duration { return q.Lo + (q.Hi-q.Lo)/2 }

// Precise says whether Est is within 5 % of the true value.
func (q Quantile) Precise() bool { return q.Hi-q.Lo <= q.Est()/10 }

// AddrStats is one remote address's counts over a summary window.
type AddrStats struct {
	Addr       netip.Addr
	NetNS      uint32 // network namespace (inode) the counts are from; 0: unknown
	Accepted   uint64
	Handshakes uint64
	First      time.Time // zero if unknown
	Last       time.Time
	// Accept-queue view.
	NotAccepted   uint64 // handshake completed, closed before any accept()
	ClientGone    uint64 // accepted after the client had closed or reset
	SynackRetrans uint64 // SYN-ACKs resent: handshakes the client did not finish
	Syns          uint64 // SYNs that reached a listener; see Summary.SynCounter
	Drops         uint64 // SYNs and final ACKs dropped for a full accept queue; see Summary.DropCounters
	Wait          Wait
	// Connections from the address now, from the snapshot taken when the
	// summary was made (see Summary.Now).
	Open    uint64 // ESTABLISHED
	SynRecv uint64 // half-open
}

// PortStats is one listening port's accept-queue view over a window.
type PortStats struct {
	Port          uint16
	NetNS         uint32 // network namespace (inode)
	Accepted      uint64
	NotAccepted   uint64
	SynackRetrans uint64
	Syns          uint64
	Drops         uint64
	BacklogMax    uint32 // most connections queued at one accept (0: unknown)
	BacklogLimit  uint32
	Wait          Wait
}

// KernelCounter is the change of one TcpExt counter over a window.
type KernelCounter struct {
	Name  string
	Delta uint64
}

// Summary covers one window ([Start, End]): the whole run, or one --interval.
type Summary struct {
	Start, End         time.Time
	AttachMode         string      // "fexit", "kretprobe", "tracepoint"
	Ports              []string    // as the user gave them, normalised: "80", "8000-8100"; empty = all ports
	Addresses          []AddrStats // any order; the writers sort
	TotalAccepted      uint64      // includes accepts that overflowed the address map
	TotalHandshakes    uint64
	LostEvents         uint64 // live events the kernel could not queue (ring buffer full)
	AddressOverflow    uint64 // accepts+handshakes not attributed to an address because the map was full
	MaxAddresses       uint32 // capacity of the address map (for the hint in the overflow line)
	TotalNotAccepted   uint64
	TotalClientGone    uint64
	TotalSynackRetrans uint64
	TotalSyns          uint64
	TotalDrops         uint64
	SynCounter         string          // where SYNs are counted: "cgroup_skb", "tcp_conn_request"; "": not counted
	DropCounters       []string        // accept-queue drops attributed: "syn", "final_ack"; none: only KernelCounters
	GroupByPrefix      bool            // summary rows per network (Prefix) instead of per address
	Prefix             PrefixLen       // network size for GroupByPrefix
	Listeners          []PortStats     // per listening port, sorted by port
	KernelCounters     []KernelCounter // fixed order, zeros included
	Findings           []string        // one line each: what looks wrong
	Final              bool            // true for the end-of-run summary, false for --interval windows
	// Connections to the watched ports when the summary was made (a
	// sock_diag snapshot of NetNS); nil: none was taken.
	Now   *ConnStates
	NetNS uint64
	// NetNSNames labels namespaces ("host", /run/netns names); rows of
	// others show their inode.
	NetNSNames map[uint32]string
	// CountersNetNS is the namespace KernelCounters are of (0: not said).
	CountersNetNS uint32
	// Cgroup is the cgroup the counts are of (--cgroup): its path, "" for
	// every cgroup. KernelCounters are every cgroup's.
	Cgroup string
}

// NetNSLabel names namespace inode ns for a column: its label in names,
// else the inode; 0 is a count whose namespace could not be told.
func NetNSLabel(names map[uint32]string, ns uint32) string {
	if ns == 0 {
		return "unknown"
	}
	if n := names[ns]; n != "" {
		return Sanitize(n)
	}
	return strconv.FormatUint(uint64(ns), 10)
}

// Namespaces counts the distinct network namespaces of the summary's rows.
func (s *Summary) Namespaces() int {
	seen := map[uint32]bool{}
	for _, a := range s.Addresses {
		seen[a.NetNS] = true
	}
	for _, p := range s.Listeners {
		seen[p.NetNS] = true
	}
	return len(seen)
}

// SynsCounted says whether the Syns fields hold counts.
func (s *Summary) SynsCounted() bool { return s.SynCounter != "" }

// DropsCounted says whether the Drops fields hold counts.
func (s *Summary) DropsCounted() bool { return len(s.DropCounters) > 0 }

// Writer receives live events and summaries.
type Writer interface {
	Event(Event) error
	Summary(Summary) error
}

// Normalize unmaps IPv4-mapped IPv6 addresses (::ffff:a.b.c.d -> a.b.c.d)
// and drops any IPv6 zone. The zero Addr is returned unchanged.
func Normalize(a netip.Addr) netip.Addr {
	return a.Unmap().WithZone("")
}

// family returns 4 or 6 for the normalised address, 0 if it is invalid.
func family(a netip.Addr) int {
	switch {
	case a.Is4():
		return 4
	case a.Is6():
		return 6
	}
	return 0
}

// SortAddresses sorts in place by Accepted descending, then Handshakes
// descending, then Open descending, then address ascending, so ties are
// deterministic.
func SortAddresses(s []AddrStats) {
	slices.SortStableFunc(s, func(a, b AddrStats) int {
		if c := cmp.Compare(b.Accepted, a.Accepted); c != 0 {
			return c
		}
		if c := cmp.Compare(b.Handshakes, a.Handshakes); c != 0 {
			return c
		}
		if c := cmp.Compare(b.Open+b.SynRecv, a.Open+a.SynRecv); c != 0 {
			return c
		}
		return cmp.Or(a.Addr.Compare(b.Addr), cmp.Compare(a.NetNS, b.NetNS))
	})
}

// prepare returns a sorted copy of addrs with every address normalised.
// Addresses are unique: the kernel counts IPv4 clients of dual-stack
// listeners under their IPv4 address. The caller's slice is not modified.
func prepare(addrs []AddrStats) []AddrStats {
	out := slices.Clone(addrs)
	for i := range out {
		out[i].Addr = Normalize(out[i].Addr)
	}
	SortAddresses(out)
	return out
}

// sortBy sorts by key descending, then address ascending.
func sortBy(s []AddrStats, key func(AddrStats) uint64) {
	slices.SortStableFunc(s, func(a, b AddrStats) int {
		if c := cmp.Compare(key(b), key(a)); c != 0 {
			return c
		}
		return a.Addr.Compare(b.Addr)
	})
}
