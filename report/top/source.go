// Package top is acceptwatch's live table (-o top): a terminal view,
// redrawn every refresh, of who is connecting most right now. It reads a
// Source once per refresh and keeps only what it shows; the terminal is
// driven by bubbletea and styled with lipgloss.
package top

import (
	"net/netip"
	"time"

	"github.com/acceptwatch/acceptwatch/report"
)

// Source is where the view's numbers come from (the command implements it
// from the tracer). Refresh is called from one goroutine at a time.
type Source interface {
	// Caps says which data the source has; what it lacks shows as "-".
	Caps() Caps
	// Refresh reads the counters now. With advance, the next frame's
	// per-address rates start from now (a regular refresh); without, they
	// keep counting from the previous advancing refresh (a redraw for a new
	// sort order or size).
	Refresh(q Query, advance bool) (*Frame, error)
}

// Caps are the optional data a source may have.
type Caps struct {
	Syns       bool   // SYNs per address and in total (the SYNS columns)
	SynsWhy    string // why not, for the help screen
	Drops      bool   // connection attempts dropped for a full accept queue, per address and port (DROPS)
	DropsWhat  string // which: "SYNs and final ACKs"
	Open       bool   // connections open now per address (OPEN)
	BacklogNow bool   // each listener's accept queue now (BACKLOG_NOW)
	NowWhy     string // why neither, for the help screen
	Group      bool   // rows per prefix (the g key)
	GroupBy    string // the prefix lengths, for the help screen: "/24 and /64"
}

// Query is what the view asks for.
type Query struct {
	Sort  Column
	Rows  int  // address rows the screen has room for
	Group bool // rows per prefix instead of per address (needs Caps.Group)
}

// Frame is one refresh's numbers: exact counters since the start (the view
// differences successive frames for the header's rates) and the busiest rows.
type Frame struct {
	Time     time.Time
	Interval time.Duration // rate window of Rows: since the previous advancing refresh
	Totals   Totals
	Ports    []Port // sorted by port
	Rows     []Row  // at most Query.Rows, in Query.Sort order
	Grouped  bool   // Rows are prefixes
	Findings []string
	// Whether Rows' Open and Ports' BacklogNow are known in this frame
	// (Caps.Open, Caps.BacklogNow), and when they were read: a source may
	// take its socket snapshot less often than it refreshes.
	NowKnown bool
	NowTime  time.Time
}

// Totals are the run's counters since the start.
type Totals struct {
	Accepted, Handshakes, Syns, SynackRetrans uint64
	ListenOverflows, Syncookies               uint64 // TcpExt ListenOverflows, SyncookiesSent
	LostEvents                                uint64
	Addresses                                 int    // distinct addresses counted
	AddressOverflow                           uint64 // events not attributed: address map full
	MaxAddresses                              uint32
}

// Port is one listening port since the start.
type Port struct {
	Port          uint16
	NetNS         uint32 // network namespace (inode)
	NetNSLabel    string // shown beside the port when several namespaces have rows; "" otherwise
	Accepted      uint64
	NotAccepted   uint64
	SynackRetrans uint64
	Drops         uint64 // with Caps.Drops
	BacklogNow    uint32 // queued now over NowLimit: valid with Caps.BacklogNow and HasNow
	NowLimit      uint32
	HasNow        bool
	BacklogMax    uint32 // most queued at one accept (0: not seen)
	BacklogLimit  uint32
	WaitP99       report.Quantile // the range it lies in, as in the summary
	HasWait       bool
}

// Row is one remote address (or prefix) since the start, with its rate over
// the frame's Interval.
type Row struct {
	Addr          netip.Addr   // zero for a prefix row
	NetNS         uint32       // the address's network namespace (inode)
	NetNSLabel    string       // shown beside the address when several namespaces have rows; "" otherwise
	Prefix        netip.Prefix // valid when Frame.Grouped
	Members       int          // addresses in the prefix
	New           uint64       // accepts in the frame's Interval (RATE/s = New/Interval)
	Accepted      uint64
	Syns          uint64
	Handshakes    uint64
	NotAccepted   uint64
	SynackRetrans uint64
	Drops         uint64          // valid with Caps.Drops
	Open          uint64          // valid with Caps.Open
	WaitP99       report.Quantile // the range it lies in, as in the summary
	HasWait       bool
	Last          time.Time // zero: unknown
}

// Label is the row's first cell.
func (r *Row) Label() string {
	if r.Prefix.IsValid() {
		return r.Prefix.String()
	}
	if r.NetNSLabel != "" {
		return r.Addr.String() + " " + report.Sanitize(r.NetNSLabel)
	}
	return r.Addr.String()
}

// Column is an address-table column; every one but REMOTE can be the sort key.
type Column int

const (
	ColRate Column = iota
	ColAccepted
	ColSyns
	ColHandshakes
	ColNotAccepted
	ColSynackRetrans
	ColDrops
	ColOpen
	ColWaitP99
	ColLast
	numColumns
)

var columnNames = [numColumns]string{"RATE/s", "ACCEPTED", "SYNS", "HANDSHAKES", "NOT_ACC", "SYNACK_RT", "DROPS", "OPEN", "WAIT_P99", "LAST"}

func (c Column) String() string {
	if c < 0 || c >= numColumns {
		return "?"
	}
	return columnNames[c]
}

// available says whether the source fills column c.
func (c Column) available(caps Caps) bool {
	switch c {
	case ColSyns:
		return caps.Syns
	case ColDrops:
		return caps.Drops
	case ColOpen:
		return caps.Open
	}
	return true
}

// next is the sort column after c that the source fills.
func (c Column) next(caps Caps) Column { return c.step(caps, 1) }

// prev is the sort column before c that the source fills.
func (c Column) prev(caps Caps) Column { return c.step(caps, int(numColumns)-1) }

func (c Column) step(caps Caps, by int) Column {
	n := c
	for range numColumns {
		n = Column((int(n) + by) % int(numColumns))
		if n.available(caps) {
			return n
		}
	}
	return ColRate
}

// Key is a row's sort key for column c: larger sorts first. The second value
// breaks ties (then the address, ascending).
func (r *Row) Key(c Column) (uint64, uint64) {
	switch c {
	case ColAccepted:
		return r.Accepted, r.New
	case ColSyns:
		return r.Syns, r.New
	case ColHandshakes:
		return r.Handshakes, r.New
	case ColNotAccepted:
		return r.NotAccepted, r.New
	case ColSynackRetrans:
		return r.SynackRetrans, r.New
	case ColDrops:
		return r.Drops, r.New
	case ColOpen:
		return r.Open, r.New
	case ColWaitP99:
		return uint64(r.WaitP99.Est()), r.New
	case ColLast:
		if r.Last.IsZero() {
			return 0, r.New
		}
		return uint64(r.Last.UnixNano()), r.New
	}
	return r.New, r.Accepted
}

// PortKey identifies a port's row: the same port in two namespaces is two rows.
type PortKey struct {
	NetNS uint32
	Port  uint16
}
