package report

import (
	"bytes"
	"cmp"
	"fmt"
	"io"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"
)

// ConnStates counts connections to this machine's listening ports now, by
// TCP state.
type ConnStates struct {
	Established uint64
	SynRecv     uint64 // half-open: SYN received, handshake not completed
	CloseWait   uint64 // the client closed, the server has not
	TimeWait    uint64
	FinWait     uint64 // FIN_WAIT1 and FIN_WAIT2
	Other       uint64 // LAST_ACK, CLOSING, SYN_SENT, CLOSE
}

// Total is the count over every state.
func (c ConnStates) Total() uint64 {
	return c.Established + c.SynRecv + c.CloseWait + c.TimeWait + c.FinWait + c.Other
}

// Add adds o to c.
func (c *ConnStates) Add(o ConnStates) {
	c.Established += o.Established
	c.SynRecv += o.SynRecv
	c.CloseWait += o.CloseWait
	c.TimeWait += o.TimeWait
	c.FinWait += o.FinWait
	c.Other += o.Other
}

// SnapAddr is one remote address's connections now.
type SnapAddr struct {
	Addr netip.Addr
	ConnStates
}

// SnapPort is one watched local port now.
type SnapPort struct {
	Port uint16
	ConnStates
	Listeners  int    // listening sockets on the port (0: none now)
	Queue      uint64 // connections waiting in their accept queues now (ss -lnt Recv-Q)
	QueueLimit uint64 // the sum of their limits (Send-Q)
	QueueFull  bool   // a listener's queue is over its limit: handshakes are being dropped
}

// StateCount is the number of connections in one kernel TCP state.
type StateCount struct {
	Name  string // ESTABLISHED, SYN_RECV, ...
	Count uint64
}

// Snapshot is the connections to this machine's listening ports at one
// moment (acceptwatch --snapshot).
type Snapshot struct {
	Time      time.Time
	NetNS     uint64       // inode of the network namespace read
	Ports     []string     // as the user gave them; empty: every listening port
	Cgroup    string       // --cgroup: only its listeners' ports ("": every cgroup)
	Addresses []SnapAddr   // any order; the writers sort by total
	States    []StateCount // every state in kernel order, zeros included
	Listeners []SnapPort   // by port
	Total     ConnStates
	Findings  []string
}

// SnapshotThresholds say when a snapshot's numbers are worth a finding.
type SnapshotThresholds struct {
	SynRecvShare float64 // share (0-1) of a port's connections in SYN_RECV
	AddressShare float64 // share (0-1) of all connections held by one address
	CloseWait    uint64  // CLOSE_WAIT connections on one port
}

// Below these counts a share says nothing (3 of 4 connections half-open is
// not a flood).
const (
	minSynRecvFinding = 10
	minAddressFinding = 20
)

// SnapshotFindings lists, one line each, what in s looks wrong now: a
// full accept queue, many half-open connections (a SYN flood?), one
// address holding most connections, CLOSE_WAIT piling up.
func SnapshotFindings(s Snapshot, th SnapshotThresholds) []string {
	var out []string
	for _, p := range s.Listeners {
		if p.QueueFull {
			out = append(out, fmt.Sprintf("port %d: accept queue full now (%d/%d): the server is not accepting; new handshakes are dropped",
				p.Port, p.Queue, p.QueueLimit))
		}
		if t := p.Total(); th.SynRecvShare > 0 && p.SynRecv >= minSynRecvFinding && float64(p.SynRecv) >= th.SynRecvShare*float64(t) {
			out = append(out, fmt.Sprintf("port %d: %d of %d connections (%s) are half-open (SYN_RECV): a SYN flood, or clients that cannot finish the handshake",
				p.Port, p.SynRecv, t, pct(p.SynRecv, t)))
		}
		if th.CloseWait > 0 && p.CloseWait >= th.CloseWait {
			out = append(out, fmt.Sprintf("port %d: %d connections in CLOSE_WAIT: the clients closed them and the server has not (a socket leak?)",
				p.Port, p.CloseWait))
		}
	}
	if t := s.Total.Total(); th.AddressShare > 0 && t >= minAddressFinding {
		addrs := sortedSnap(s.Addresses)
		if len(addrs) > 0 && float64(addrs[0].Total()) >= th.AddressShare*float64(t) {
			out = append(out, fmt.Sprintf("%s holds %d of %d connections (%s)", addrs[0].Addr, addrs[0].Total(), t, pct(addrs[0].Total(), t)))
		}
	}
	return out
}

func pct(n, of uint64) string {
	return strconv.FormatFloat(100*float64(n)/float64(of), 'f', 0, 64) + "%"
}

// sortedSnap returns the addresses normalised and sorted by total, then
// established, then address.
func sortedSnap(addrs []SnapAddr) []SnapAddr {
	out := slices.Clone(addrs)
	for i := range out {
		out[i].Addr = Normalize(out[i].Addr)
	}
	slices.SortStableFunc(out, func(a, b SnapAddr) int {
		if c := cmp.Compare(b.Total(), a.Total()); c != 0 {
			return c
		}
		if c := cmp.Compare(b.Established, a.Established); c != 0 {
			return c
		}
		return a.Addr.Compare(b.Addr)
	})
	return out
}

func stateCells(c ConnStates) []string {
	return []string{num(c.Total()), num(c.Established), num(c.SynRecv), num(c.CloseWait), num(c.TimeWait), num(c.FinWait), num(c.Other)}
}

var stateHeader = []string{"TOTAL", "ESTABLISHED", "SYN_RECV", "CLOSE_WAIT", "TIME_WAIT", "FIN_WAIT", "OTHER"}

// WriteSnapshotText writes s as tables, in one Write: per remote address
// (opt.Top rows), per state, per port with its accept queue, then findings.
func WriteSnapshotText(w io.Writer, s Snapshot, opt TextOptions) error {
	if opt.Location == nil {
		opt.Location = time.Local
	}
	var b bytes.Buffer
	ports := "all listening ports"
	if len(s.Ports) > 0 {
		ports = "ports " + Sanitize(strings.Join(s.Ports, ","))
	}
	if s.Cgroup != "" {
		ports += " of cgroup " + Sanitize(s.Cgroup)
	}
	fmt.Fprintf(&b, "--- acceptwatch snapshot: %s, connections to %s, netns %d ---\n",
		s.Time.In(opt.Location).Format(dateFmt), ports, s.NetNS)

	addrs := sortedSnap(s.Addresses)
	shown := addrs
	if opt.Top > 0 && len(shown) > opt.Top {
		shown = shown[:opt.Top]
	}
	at := table{align: "lrrrrrrr"}
	at.add(append([]string{"REMOTE"}, stateHeader...)...)
	for _, a := range shown {
		at.add(append([]string{a.Addr.String()}, stateCells(a.ConnStates)...)...)
	}
	if rest := addrs[len(shown):]; len(rest) > 0 {
		var m uint64
		for _, a := range rest {
			m += a.Total()
		}
		at.line(fmt.Sprintf("… and %d more addresses (%d connections)", len(rest), m))
	}
	if len(addrs) == 0 {
		at.line("no connections")
	}
	at.add(append([]string{"TOTAL"}, stateCells(s.Total)...)...)
	at.write(&b)

	st := table{align: "lr"}
	st.add("STATE", "COUNT")
	for _, c := range s.States {
		if c.Count > 0 {
			st.add(c.Name, num(c.Count))
		}
	}
	if len(st.rows) > 1 {
		st.write(&b)
	}

	if len(s.Listeners) > 0 {
		pt := table{align: "rrrrrrrrrr"}
		pt.add(append(append([]string{"PORT", "LISTENERS"}, stateHeader...), "ACCEPT_QUEUE")...)
		for _, p := range s.Listeners {
			q := "-"
			if p.Listeners > 0 {
				q = fmt.Sprintf("%d/%d", p.Queue, p.QueueLimit)
			}
			pt.add(append(append([]string{strconv.Itoa(int(p.Port)), strconv.Itoa(p.Listeners)}, stateCells(p.ConnStates)...), q)...)
		}
		pt.write(&b)
	} else {
		b.WriteString("no listening ports\n")
	}
	for _, f := range s.Findings {
		fmt.Fprintf(&b, "finding: %s\n", Sanitize(f))
	}
	_, err := w.Write(b.Bytes())
	return err
}

type jsonStates struct {
	Total       uint64 `json:"total"`
	Established uint64 `json:"established"`
	SynRecv     uint64 `json:"syn_recv"`
	CloseWait   uint64 `json:"close_wait"`
	TimeWait    uint64 `json:"time_wait"`
	FinWait     uint64 `json:"fin_wait"`
	Other       uint64 `json:"other"`
}

func statesJSON(c ConnStates) jsonStates {
	return jsonStates{c.Total(), c.Established, c.SynRecv, c.CloseWait, c.TimeWait, c.FinWait, c.Other}
}

type jsonSnapPort struct {
	Port       uint16 `json:"port"`
	Listeners  int    `json:"listeners"`
	Queue      uint64 `json:"accept_queue"`
	QueueLimit uint64 `json:"accept_queue_limit"`
	QueueFull  bool   `json:"accept_queue_full"`
	jsonStates
}

type jsonSnapAddr struct {
	Addr string `json:"addr"`
	jsonStates
}

type jsonSnapshot struct {
	Type      string            `json:"type"`
	Time      string            `json:"time"`
	NetNS     uint64            `json:"netns"`
	Ports     []string          `json:"ports"`
	Cgroup    string            `json:"cgroup,omitempty"`
	Total     jsonStates        `json:"connections"`
	States    map[string]uint64 `json:"states"`
	Findings  []string          `json:"findings"`
	Listeners []jsonSnapPort    `json:"listeners"`
	Addresses []jsonSnapAddr    `json:"addresses"`
}

// WriteSnapshotJSON writes s as one JSON object on one line, every address
// included.
func WriteSnapshotJSON(w io.Writer, s Snapshot) error {
	out := jsonSnapshot{
		Type:      "snapshot",
		Time:      s.Time.Format(time.RFC3339Nano),
		NetNS:     s.NetNS,
		Ports:     s.Ports,
		Cgroup:    s.Cgroup,
		Total:     statesJSON(s.Total),
		States:    map[string]uint64{},
		Findings:  []string{},
		Listeners: []jsonSnapPort{},
		Addresses: []jsonSnapAddr{},
	}
	if out.Ports == nil {
		out.Ports = []string{}
	}
	for _, c := range s.States {
		out.States[c.Name] = c.Count
	}
	for _, f := range s.Findings {
		out.Findings = append(out.Findings, Sanitize(f))
	}
	for _, p := range s.Listeners {
		out.Listeners = append(out.Listeners, jsonSnapPort{Port: p.Port, Listeners: p.Listeners, Queue: p.Queue,
			QueueLimit: p.QueueLimit, QueueFull: p.QueueFull, jsonStates: statesJSON(p.ConnStates)})
	}
	for _, a := range sortedSnap(s.Addresses) {
		out.Addresses = append(out.Addresses, jsonSnapAddr{Addr: a.Addr.String(), jsonStates: statesJSON(a.ConnStates)})
	}
	return NewJSON(w).(*jsonWriter).write(out)
}
