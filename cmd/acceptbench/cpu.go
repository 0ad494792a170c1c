package main

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"
)

// What a user pays: the machine's busy CPU (/proc/stat) per accepted
// connection of a saturating storm, for each way of tracing it, in rounds
// that run every row once in a rotating order, so that slow drift of the
// machine falls on every row alike.

// tracing is something that runs during a round: an acceptwatch or
// bpftrace process, or empty programs held by this process.
type tracing interface {
	cpuTime() time.Duration // CPU time of its own process so far (0: none)
	finish() error
}

// cpuRow is one line of the table. Adding a variant of acceptwatch is one
// awRow line in cpuRows.
type cpuRow struct {
	id    string // what targets and the attribution refer to; "" for none
	name  string
	start func(port int) (tracing, error) // nil: nothing traced
	skip  string                          // why this row cannot run here
	probe bool                            // try it once first: it may not work on this kernel

	// Per round: machine busy CPU and own CPU (storm, tracer, kernel
	// threads) per connection, both minus "nothing traced" in the round;
	// conn/s; the tracer process's CPU per connection.
	machine, own, addedMachine, addedOwn, rate, tracer []float64
	lines, accepted                                    uint64 // live lines the tracer wrote, if it says; connections then
}

// lineCounter is a tracing that can say how many live lines it wrote.
type lineCounter interface{ liveLines() int }

// cpuRows lists the rows for the attach mode under test.
func (b *bench) cpuRows() []*cpuRow {
	rows := []*cpuRow{
		{id: "none", name: "nothing traced"},
		b.awRow("quiet", "acceptwatch -q", "-q"),
		b.awRow("quiet-nosyn", "acceptwatch -q --no-syn-counter", "-q", "--no-syn-counter"),
		// The cgroup v2 root (its mount) holds every socket: each event pays
		// the filter's reads of the socket's cgroup ancestry and passes.
		b.awRow("quiet-cgroup", "acceptwatch -q --cgroup ROOT (the cgroup filter on every event)", "-q", "--cgroup", "."),
		b.awRow("live", "acceptwatch, live lines to a file", "-o", "text"),
		b.awRow("json", "acceptwatch -o json, live lines to a file", "-o", "json"),
		b.bpftraceRow("bpftrace", "bpftrace script (cmd/acceptbench/testdata/accept.bt), live lines to a file"),
	}
	hooks, err := hooksOf(b.o.attachMode())
	if err != nil {
		rows = append(rows, &cpuRow{name: "empty programs", skip: err.Error()})
	} else {
		for _, h := range hooks {
			rows = append(rows, emptyRow("empty:"+h.name, "empty program on "+h.name, []hook{h}))
		}
		rows = append(rows, emptyRow("empty:all", "empty programs on all of these hooks", hooks))
	}
	if b.o.cpuRows == "" {
		return rows
	}
	// "nothing traced" always runs: every other row is measured against it.
	keep := strings.Split("none,"+b.o.cpuRows, ",")
	return slices.DeleteFunc(rows, func(r *cpuRow) bool { return !slices.Contains(keep, r.id) })
}

// awRow runs acceptwatch with args on the round's port.
func (b *bench) awRow(id, name string, args ...string) *cpuRow {
	return &cpuRow{id: id, name: name, start: func(port int) (tracing, error) {
		w, err := startWatch(b.bin, b.dir, append([]string{"--attach", b.o.attachMode(), "--port", strconv.Itoa(port)}, args...)...)
		if err != nil {
			return nil, err
		}
		return watchTracing{w, new(int)}, nil
	}}
}

type watchTracing struct {
	*watch
	lines *int
}

func (w watchTracing) finish() error {
	st, err := w.stop()
	*w.lines = st.lines
	return err
}

func (w watchTracing) liveLines() int { return *w.lines }

func emptyRow(id, name string, hooks []hook) *cpuRow {
	return &cpuRow{id: id, name: name, probe: true, start: func(int) (tracing, error) {
		e, err := attachEmpty(hooks)
		if err != nil {
			return nil, err // not a typed nil in the interface
		}
		return e, nil
	}}
}

// cpu runs the rounds and tabulates them.
func (b *bench) cpu() (*table, error) {
	rows := b.cpuRows()
	var run []*cpuRow
	for _, r := range rows {
		if r.probe && r.skip == "" {
			// Probe once: a row that cannot start here (no bpftrace, a
			// hook the kernel refuses) is shown with the reason.
			srv, err := listen(b.o.acceptors)
			if err != nil {
				return nil, err
			}
			tr, err := r.start(srv.port)
			srv.close()
			if err != nil {
				r.skip = oneLine(err.Error())
				continue
			}
			if err := tr.finish(); err != nil {
				return nil, err
			}
		}
		if r.skip == "" {
			run = append(run, r)
		}
	}
	// Warm up the kernel's and the Go runtime's caches.
	if _, _, err := b.cpuRound(run[0]); err != nil {
		return nil, err
	}
	var others []float64 // share of the machine's busy CPU not ours, per storm
	for i := range b.o.cpuRounds {
		order := slices.Clone(run)
		k := i % len(order) // rotate: no row always follows the same one
		order = append(order[k:], order[:k]...)
		var base stormResult
		res := map[*cpuRow]stormResult{}
		for _, r := range order {
			if err := b.ctx.Err(); err != nil {
				return nil, err
			}
			rr, tracer, err := b.cpuRound(r)
			if err != nil {
				return nil, fmt.Errorf("%s: %w", r.name, err)
			}
			res[r] = rr
			r.machine = append(r.machine, rr.busyPerConn())
			r.own = append(r.own, rr.ownPerConn())
			r.rate = append(r.rate, rr.rate())
			r.tracer = append(r.tracer, tracer)
			others = append(others, max(0, 1-float64(rr.cpu+rr.kthreads)/float64(rr.busy)))
			if r.id == "none" {
				base = rr
			}
		}
		for _, r := range run {
			r.addedMachine = append(r.addedMachine, res[r].busyPerConn()-base.busyPerConn())
			r.addedOwn = append(r.addedOwn, res[r].ownPerConn()-base.ownPerConn())
		}
		b.logf("cpu round %d/%d (own µs/conn): %s", i+1, b.o.cpuRounds, roundLine(run, res))
	}

	t := &table{
		title: fmt.Sprintf("CPU per connection, %d rounds of %s, --attach %s", b.o.cpuRounds, b.o.cpuRound, b.o.attachMode()),
		header: []string{"run", "machine µs/conn", "added", "own µs/conn", "added", "× nothing traced (own)",
			"conn/s", "tracer process µs/conn"},
	}
	var none *cpuRow
	byID := map[string]*cpuRow{}
	for _, r := range rows {
		byID[r.id] = r
		if r.id == "none" {
			none = r
		}
	}
	for _, r := range rows {
		if r.skip != "" {
			t.add(r.name, "not run: "+r.skip, "", "", "", "", "", "")
			continue
		}
		addedM, addedO, tracer := "–", "–", "–"
		if r.id != "none" {
			addedM, addedO = medRange(r.addedMachine, 2), medRange(r.addedOwn, 2)
		}
		if r.start != nil && medianF(r.tracer) > 0 {
			tracer = fmt.Sprintf("%.2f", medianF(r.tracer))
		}
		t.add(r.name, medRange(r.machine, 1), addedM, medRange(r.own, 1), addedO,
			fmt.Sprintf("%.3f", medianF(r.own)/medianF(none.own)), fmt.Sprintf("%.0f", medianF(r.rate)), tracer)
	}
	t.notes = append(t.notes,
		"each cell: median (min–max) over the rounds; a round runs every row once, in a rotating order; each row's storm is measured after a 200 ms warm-up",
		"machine = user+nice+system+irq+softirq of every CPU (/proc/stat) per connection the bench server accepted: everything the machine did, other work on it included",
		"own = CPU time of the bench process (the storm's clients and server), the tracer process and the kernel's threads (schedstat), per connection: the same, without other processes on the machine",
		"added = the row minus \"nothing traced\" of the same round",
		fmt.Sprintf("other processes took %.0f%% (median; %.0f–%.0f%%) of the machine's busy CPU during the storms: the machine columns carry that noise",
			100*medianF(others), 100*slices.Min(others), 100*slices.Max(others)),
		"tracer process = CPU time of the acceptwatch or bpftrace process over the storm (its user space and its own syscalls); empty programs are held by the bench process and run in the traced threads",
		"conn/s is secondary: on a shared 2-core machine it moves with other work, while CPU per connection barely does")
	for _, r := range rows {
		if r.accepted > 0 && (r.lines > 0 || r.id == "bpftrace") {
			t.notes = append(t.notes, fmt.Sprintf("%s: %d live lines for %d connections accepted over its rounds (a peer that skipped work would look cheap)", r.name, r.lines, r.accepted))
		}
	}
	b.hostRatio = map[string]float64{}
	for _, r := range rows {
		if r.skip == "" {
			b.hostRatio[r.id] = medianF(r.own) / medianF(none.own)
		}
	}
	b.cpuTargets(byID)
	if err := b.attribution(t, byID); err != nil {
		return nil, err
	}
	return t, nil
}

// cpuRound runs one storm with r tracing it; the result's cpu includes the
// tracer's process. The float is that process's CPU per connection.
func (b *bench) cpuRound(r *cpuRow) (stormResult, float64, error) {
	srv, err := listen(b.o.acceptors)
	if err != nil {
		return stormResult{}, 0, err
	}
	var tr tracing
	if r.start != nil {
		if tr, err = r.start(srv.port); err != nil {
			srv.close()
			return stormResult{}, 0, err
		}
	}
	var cpu0 time.Duration
	acc0 := srv.accepted.Load()
	if tr != nil {
		cpu0 = tr.cpuTime()
	}
	var other func() time.Duration
	if tr != nil {
		other = tr.cpuTime
	}
	res := storm(srv, b.o.clients, fewSources(b.o.sources), 200*time.Millisecond, b.o.cpuRound, 0, other)
	var own float64
	if tr != nil {
		own = float64((tr.cpuTime() - cpu0).Nanoseconds()) / 1e3 / float64(srv.accepted.Load()-acc0)
	}
	srv.close()
	if tr != nil {
		if err := tr.finish(); err != nil {
			return res, 0, err
		}
		if lc, ok := tr.(lineCounter); ok {
			r.lines += uint64(lc.liveLines())
			r.accepted += srv.accepted.Load()
		}
	}
	if res.accepted == 0 {
		return res, 0, fmt.Errorf("no connection accepted in %s", b.o.cpuRound)
	}
	return res, own, nil
}

func roundLine(rows []*cpuRow, res map[*cpuRow]stormResult) string {
	var s []string
	for _, r := range rows {
		s = append(s, fmt.Sprintf("%s %.1f", r.id, res[r].ownPerConn()))
	}
	return strings.Join(s, ", ")
}

// medRange prints "median (min–max)".
func medRange(v []float64, prec int) string {
	if len(v) == 0 {
		return "–"
	}
	return fmt.Sprintf("%.*f (%.*f–%.*f)", prec, medianF(v), prec, slices.Min(v), prec, slices.Max(v))
}

// cpuTargets checks the targets (tracepoint mode on the host).
func (b *bench) cpuTargets(byID map[string]*cpuRow) {
	if b.o.attachMode() != "tracepoint" || b.o.guest {
		return
	}
	q, live, bt := byID["quiet"], byID["live"], byID["bpftrace"]
	if q == nil || q.skip != "" {
		return
	}
	// Targets use the own-CPU columns (other work on a shared machine left
	// out); the machine columns are shown with them.
	qa := medianF(q.addedOwn)
	b.target("acceptwatch -q adds ≤ 5.0 µs per connection (tracepoint mode)",
		fmt.Sprintf("%.2f µs own (%.2f machine)", qa, medianF(q.addedMachine)), qa <= 5.0)
	if live != nil && live.skip == "" {
		d := medianF(live.addedOwn) - qa
		b.target("live lines to a file add ≤ 1.0 µs more than -q",
			fmt.Sprintf("%.2f µs more (%.2f added; machine: %.2f more)", d, medianF(live.addedOwn), medianF(live.addedMachine)-medianF(q.addedMachine)), d <= 1.0)
	}
	if bt != nil && bt.skip == "" {
		r := medianF(bt.addedOwn) / qa
		note := ""
		if live != nil && live.skip == "" {
			note = fmt.Sprintf("; live lines on both sides: %.1f×", medianF(bt.addedOwn)/medianF(live.addedOwn))
		}
		b.target("≥ 5× less added CPU than the bpftrace script (-q against the script)",
			fmt.Sprintf("%.1f× (bpftrace +%.2f µs, -q +%.2f µs%s)", r, medianF(bt.addedOwn), qa, note), r >= 5)
	}
}

// attribution splits acceptwatch -q's added CPU into hooking (the empty
// programs), the programs' own run time (BPF statistics, one more round),
// acceptwatch's process, and what is left.
func (b *bench) attribution(t *table, byID map[string]*cpuRow) error {
	q, all := byID["quiet"], byID["empty:all"]
	if q == nil || q.skip != "" || all == nil || all.skip != "" {
		return nil
	}
	stats, err := ebpf.EnableStats(uint32(unix.BPF_STATS_RUN_TIME))
	if err != nil {
		t.notes = append(t.notes, "attribution: BPF statistics unavailable: "+oneLine(err.Error()))
		return nil
	}
	defer stats.Close()
	srv, err := listen(b.o.acceptors)
	if err != nil {
		return err
	}
	w, err := startWatch(b.bin, b.dir, "--attach", b.o.attachMode(), "--port", strconv.Itoa(srv.port), "-q")
	if err != nil {
		srv.close()
		return err
	}
	before, err := progStats(w.cmd.Process.Pid)
	if err != nil {
		srv.close()
		w.stop()
		return err
	}
	acc0 := srv.accepted.Load()
	storm(srv, b.o.clients, fewSources(b.o.sources), 200*time.Millisecond, b.o.cpuRound, 0, nil)
	after, err := progStats(w.cmd.Process.Pid)
	srv.close()
	if _, err2 := w.stop(); err == nil {
		err = err2
	}
	if err != nil {
		return err
	}
	conns := float64(srv.accepted.Load() - acc0)
	var runNs float64
	var parts []string
	for i, p := range after {
		ns := float64((p.runtime - before[i].runtime).Nanoseconds()) / conns
		runNs += ns
		if ns >= 1 {
			parts = append(parts, fmt.Sprintf("%s %.2f", p.name, ns/1e3))
		}
	}
	added := medianF(q.addedOwn)
	hooks := medianF(all.addedOwn)
	own := medianF(q.tracer)
	rest := added - hooks - runNs/1e3 - own
	var single []string
	var sum float64
	for _, r := range b.cpuRowsByPrefix(byID, "empty:") {
		if r.id == "empty:all" || r.skip != "" {
			continue
		}
		sum += medianF(r.addedOwn)
		single = append(single, fmt.Sprintf("%s %+.2f", strings.TrimPrefix(r.id, "empty:"), medianF(r.addedOwn)))
	}
	t.notes = append(t.notes, fmt.Sprintf(
		"where acceptwatch -q's +%.2f µs/conn goes: hooking (empty programs on all its hooks) %+.2f µs [each alone: %s; sum %+.2f]; "+
			"its programs' own run time %.2f µs (BPF statistics, one more round: %s; includes the statistics' clock reads); "+
			"its process %.2f µs; not accounted for %+.2f µs",
		added, hooks, strings.Join(single, ", "), sum, runNs/1e3, strings.Join(parts, ", "), own, rest))
	return nil
}

func (b *bench) cpuRowsByPrefix(byID map[string]*cpuRow, prefix string) []*cpuRow {
	var out []*cpuRow
	for id, r := range byID {
		if strings.HasPrefix(id, prefix) {
			out = append(out, r)
		}
	}
	slices.SortFunc(out, func(a, b *cpuRow) int { return strings.Compare(a.id, b.id) })
	return out
}

func oneLine(s string) string { return strings.Join(strings.Fields(s), " ") }
