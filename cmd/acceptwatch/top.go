package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	tea "github.com/charmbracelet/bubbletea"
	"github.com/charmbracelet/lipgloss"
	"github.com/charmbracelet/x/term"
	"github.com/muesli/termenv"

	"github.com/acceptwatch/acceptwatch/report"
	"github.com/acceptwatch/acceptwatch/report/top"
	"github.com/acceptwatch/acceptwatch/tracer"
	"github.com/acceptwatch/acceptwatch/tracer/sockdiag"
)

// runTop draws the live table (-o top) until q, Ctrl-C, SIGINT, SIGTERM or
// --duration, then prints the normal final summary on the normal screen.
// bubbletea restores the terminal on every way out, a panic included.
func runTop(ctx context.Context, l *loop, stdout *os.File) error {
	o, t := l.o, l.t
	src := newTopSource(l)
	m := top.New(src, top.Options{
		Mode:    t.Mode(),
		Ports:   o.portsLabel(),
		Refresh: o.refresh,
		Start:   t.Started(),
		// stdout is a terminal (checked before): WithTTY keeps termenv from
		// turning colour off because CI is set in the environment.
		Styles: top.StylesFor(lipgloss.NewRenderer(stdout, termenv.WithTTY(true))),
	})
	// Signals come through ctx (main's handler), so that SIGTERM ends like q.
	// 20 frames a second answer a key at once; the default 60 wake the
	// process three times as often for a table that changes once a second.
	p := tea.NewProgram(m, tea.WithOutput(stdout), tea.WithAltScreen(), tea.WithoutSignalHandler(), tea.WithFPS(20))
	if o.duration > 0 {
		// From when tracing began, as for the other outputs: the summary
		// then covers exactly --duration.
		var cancel context.CancelFunc
		ctx, cancel = context.WithDeadline(ctx, t.Started().Add(o.duration))
		defer cancel()
	}
	done := make(chan struct{})
	go func() {
		select {
		case <-ctx.Done():
			p.Quit()
		case <-done:
		}
	}()
	_, err := p.Run()
	close(done)
	src.stop()
	if err != nil {
		return fmt.Errorf("terminal: %w", err)
	}
	if err := m.Err(); err != nil {
		return err
	}
	l.out = bufio.NewWriterSize(stdout, 64<<10)
	l.w = report.NewText(l.out, report.TextOptions{Top: o.top, Quiet: true})
	_, err = l.summary(true)
	return err
}

func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(f.Fd())
}

// topSource feeds the live table from the tracer: one pass over the address
// map per refresh, keeping only the rows the screen has room for.
type topSource struct {
	t    *tracer.Tracer
	o    *options
	l    *loop // the run's findings (thresholds, baseline)
	live *tracer.Live

	mu      sync.Mutex // one reader of the maps at a time; the summary waits for it
	stopped bool
	best    top.Best
	groups  map[netip.Prefix]*netRow // with g: the networks of this refresh

	// The findings compare each address with the rest (flood findings):
	// they need every address, so they are made from a list of them all,
	// kept for the next time (memory bounded by --max-addresses), when due.
	all      []report.AddrStats
	findings []string
	findTime time.Time
	findCost time.Duration

	// Connections now (OPEN, BACKLOG_NOW), from the sock_diag snapshot.
	now      *connectionsNow
	open     map[netip.Addr]nowAddr
	nowPorts map[uint16]sockdiag.Port
	nowNS    uint32        // the snapshot's network namespace: OPEN is only its rows'
	nowTime  time.Time     // of the last snapshot; zero: none yet
	nowCost  time.Duration // what it took
	nowErr   error
}

// nowAddr is one address in the snapshot: established connections, and
// whether the pass over the counters met it (for a sort by OPEN).
type nowAddr struct {
	open uint64
	seen bool
}

// snapshotShare bounds the snapshot's cost: it is taken again only after ten
// times its own duration (a dump of 100,000 connections takes about 0.2 s),
// so it never takes more than a tenth of the time.
const snapshotShare = 10

// snapshot refreshes the connections now when due.
func (s *topSource) snapshot(now time.Time) {
	if s.now.err != nil || (!s.nowTime.IsZero() && now.Sub(s.nowTime) < snapshotShare*s.nowCost) {
		return
	}
	snap, err := s.now.d.Snapshot(s.o.snapshotFilter())
	if s.nowErr = err; err != nil {
		return
	}
	s.nowTime, s.nowCost, s.nowNS = snap.Time, snap.Dumped, uint32(snap.NetNS)
	if s.open == nil {
		s.open, s.nowPorts = map[netip.Addr]nowAddr{}, map[uint16]sockdiag.Port{}
	}
	clear(s.open)
	clear(s.nowPorts)
	for _, a := range snap.Addrs {
		if n := a.States.Open(); n > 0 {
			s.open[a.Addr] = nowAddr{open: uint64(n)}
		}
	}
	for _, p := range snap.Ports {
		s.nowPorts[p.Port] = p
	}
}

var errStopped = errors.New("live table stopped")

func newTopSource(l *loop) *topSource {
	return &topSource{t: l.t, o: l.o, l: l, live: l.t.Live(), now: l.now, groups: map[netip.Prefix]*netRow{}}
}

// stop waits for a refresh under way and refuses later ones.
func (s *topSource) stop() {
	s.mu.Lock()
	s.stopped = true
	s.mu.Unlock()
}

func (s *topSource) Caps() top.Caps {
	c := top.Caps{Syns: s.t.SynCounter() != "", SynsWhy: "SYN counter off (--no-syn-counter) or unavailable (-v says why)",
		Group: true, GroupBy: fmt.Sprintf("/%d and /%d", s.o.prefixLen.V4, s.o.prefixLen.V6)}
	if d := s.t.DropCounters(); len(d) > 0 {
		c.Drops, c.DropsWhat = true, report.DropWhat(d)
	}
	c.Open, c.BacklogNow = s.now.err == nil, s.now.err == nil
	if s.now.err != nil {
		c.NowWhy = strings.Join(strings.Fields(s.now.err.Error()), " ")
	}
	return c
}

// findingsShare bounds what the findings cost: they compare every address
// with the rest, so with many addresses they are made again only after
// this many times their own duration.
const findingsShare = 10

func (s *topSource) Refresh(q top.Query, advance bool) (*top.Frame, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stopped {
		return nil, errStopped
	}
	start := time.Now()
	if advance {
		s.snapshot(start)
	}
	nowKnown := s.now.err == nil && s.nowErr == nil && !s.nowTime.IsZero()
	byOpen := q.Sort == top.ColOpen && nowKnown && !q.Group
	// The findings are made from every address, when due.
	find := advance && (s.findTime.IsZero() || start.Sub(s.findTime) >= findingsShare*s.findCost)
	s.all = s.all[:0]
	s.best.Reset(q.Sort, q.Rows)
	if q.Group {
		clear(s.groups)
	}
	tot, err := s.live.Read(advance, func(a *tracer.AddrSample) {
		r := top.Row{
			Addr: a.Addr(), NetNS: a.NetNS(), New: a.NewAccepted, Accepted: a.Accepted, Syns: a.Syns, Handshakes: a.Handshakes,
			NotAccepted: a.NotAccepted, SynackRetrans: a.SynackRetrans, Drops: a.Drops,
		}
		if find {
			s.all = append(s.all, report.AddrStats{Addr: r.Addr, NetNS: a.NetNS(), Accepted: r.Accepted, Handshakes: r.Handshakes,
				NotAccepted: r.NotAccepted, SynackRetrans: r.SynackRetrans, Syns: r.Syns, Drops: r.Drops})
		}
		if q.Group {
			s.addToGroup(&r, a)
			return
		}
		// The wait, the time and the snapshot cost most: only for a sort
		// by them or a row kept.
		full := func() {
			w := a.Wait()
			r.WaitP99, r.HasWait, r.Last = w.P99, w.Count > 0, a.Last()
			if nowKnown && !byOpen && a.NetNS() == s.nowNS {
				r.Open = s.open[r.Addr].open
			}
		}
		if byOpen && a.NetNS() == s.nowNS {
			if n, ok := s.open[r.Addr]; ok {
				r.Open = n.open
				s.open[r.Addr] = nowAddr{open: n.open, seen: true}
			}
		}
		if q.Sort == top.ColWaitP99 || q.Sort == top.ColLast {
			full()
			s.best.Offer(&r)
		} else if s.best.Admits(&r) {
			full()
			s.best.Offer(&r)
		}
	})
	if err != nil {
		return nil, err
	}
	switch {
	case q.Group:
		s.offerGroups(nowKnown)
	case byOpen:
		// Connected since before tracing began, and quiet since: a row too.
		for a, n := range s.open {
			if !n.seen {
				s.best.Offer(&top.Row{Addr: a, Open: n.open})
			} else {
				s.open[a] = nowAddr{open: n.open}
			}
		}
	}
	f := &top.Frame{
		Time:     tot.End,
		Interval: tot.Interval,
		NowKnown: nowKnown,
		NowTime:  s.nowTime,
		Rows:     s.best.Sorted(),
		Grouped:  q.Group,
		Totals: top.Totals{
			Accepted: tot.TotalAccepted, Handshakes: tot.TotalHandshakes, Syns: tot.TotalSyns,
			SynackRetrans: tot.TotalSynackRetrans, LostEvents: tot.LostEvents,
			Addresses: tot.AddressCount, AddressOverflow: tot.AddressOverflow, MaxAddresses: s.o.maxAddresses,
		},
	}
	for _, c := range tot.KernelCounters {
		switch c.Name {
		case "ListenOverflows":
			f.Totals.ListenOverflows = c.Delta
		case "SyncookiesSent":
			f.Totals.Syncookies = c.Delta
		}
	}
	f.Ports = s.ports(tot.Listeners)
	labelRows(f)
	if find {
		t0 := time.Now()
		s.findings = s.l.findings(report.Summary{
			Start: tot.Start, End: tot.End, Addresses: s.all,
			TotalAccepted: tot.TotalAccepted, TotalHandshakes: tot.TotalHandshakes, TotalSyns: tot.TotalSyns,
			TotalSynackRetrans: tot.TotalSynackRetrans, TotalNotAccepted: tot.TotalNotAccepted, TotalDrops: tot.TotalDrops,
			SynCounter: tot.SynCounter, DropCounters: tot.DropCounters, LostEvents: tot.LostEvents,
			AddressOverflow: tot.AddressOverflow, MaxAddresses: s.o.maxAddresses,
			Listeners: tot.Listeners, KernelCounters: tot.KernelCounters,
		}, &tot.Counts)
		s.findTime, s.findCost = start, time.Since(t0)
	}
	f.Findings = s.findings
	if s.nowErr != nil {
		f.Findings = append(slices.Clip(f.Findings), "connections now unknown: "+strings.Join(strings.Fields(s.nowErr.Error()), " "))
	}
	return f, nil
}

// netRow is one network's row being added up.
type netRow struct {
	row  top.Row
	wait tracer.WaitSum
}

func (s *topSource) addToGroup(r *top.Row, a *tracer.AddrSample) {
	p := s.o.prefixLen.Of(r.Addr)
	g := s.groups[p]
	if g == nil {
		g = &netRow{row: top.Row{Prefix: p}}
		s.groups[p] = g
	}
	g.row.Members++
	g.row.New += r.New
	g.row.Accepted += r.Accepted
	g.row.Syns += r.Syns
	g.row.Handshakes += r.Handshakes
	g.row.NotAccepted += r.NotAccepted
	g.row.SynackRetrans += r.SynackRetrans
	g.row.Drops += r.Drops
	if last := a.Last(); last.After(g.row.Last) {
		g.row.Last = last
	}
	g.wait.Add(a)
}

// offerGroups offers the networks as rows, with their connections now.
func (s *topSource) offerGroups(nowKnown bool) {
	if nowKnown {
		for a, n := range s.open {
			p := s.o.prefixLen.Of(a)
			g := s.groups[p]
			if g == nil {
				g = &netRow{row: top.Row{Prefix: p}}
				s.groups[p] = g
			}
			g.row.Open += n.open
		}
	}
	for _, g := range s.groups {
		w := g.wait.Wait()
		g.row.WaitP99, g.row.HasWait = w.P99, w.Count > 0
		s.best.Offer(&g.row)
	}
}

// labelRows names each address row's namespace, as port rows are named,
// when the frame has rows of several: the same client in two containers is
// two rows, which must not read as one shown twice.
func labelRows(f *top.Frame) {
	multi := false
	for _, p := range f.Ports {
		multi = multi || p.NetNSLabel != ""
	}
	for _, r := range f.Rows {
		multi = multi || (!f.Grouped && r.NetNS != f.Rows[0].NetNS)
	}
	if !multi || f.Grouped {
		return
	}
	for i := range f.Rows {
		f.Rows[i].NetNSLabel = netnsLabel(f.Rows[i].NetNS)
	}
}

// maxNamedPorts: ports named on the command line get a row from the start
// (zeros until their first connection), when they are this few.
const maxNamedPorts = 16

func (s *topSource) ports(ls []report.PortStats) []top.Port {
	out := make([]top.Port, 0, len(ls))
	multi := (&report.Summary{Listeners: ls}).Namespaces() > 1
	for _, p := range ls {
		label := ""
		if multi {
			label = netnsLabel(p.NetNS)
		}
		out = append(out, top.Port{
			Port: p.Port, NetNS: p.NetNS, NetNSLabel: label, Accepted: p.Accepted, NotAccepted: p.NotAccepted, SynackRetrans: p.SynackRetrans, Drops: p.Drops,
			BacklogMax: p.BacklogMax, BacklogLimit: p.BacklogLimit, WaitP99: p.Wait.P99, HasWait: p.Wait.Count > 0,
		})
	}
	if len(s.o.portList) <= maxNamedPorts {
		for _, port := range s.o.portList {
			if !slices.ContainsFunc(out, func(p top.Port) bool { return p.Port == port }) {
				out = append(out, top.Port{Port: port})
			}
		}
		slices.SortFunc(out, func(a, b top.Port) int { return int(a.Port) - int(b.Port) })
	}
	for i := range out {
		// The snapshot is of one namespace (the first row of a port is
		// it when only one namespace has rows).
		if p, ok := s.nowPorts[out[i].Port]; ok && len(p.Listeners) > 0 && (!multi || out[i].NetNS == s.nowNS) {
			q, limit := p.Queue()
			out[i].BacklogNow, out[i].NowLimit, out[i].HasNow = uint32(q), uint32(limit), true
		}
	}
	return out
}
