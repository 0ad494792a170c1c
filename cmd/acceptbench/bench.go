package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"
)

// bench holds what every part of the benchmark shares.
type bench struct {
	ctx     context.Context
	o       *options
	bin     string // acceptwatch
	dir     string // temporary files
	log     io.Writer
	targets *table
	notes   []string
	extra   []*table // more tables of the section that just ran
	// The cpu section's "× nothing traced" (own CPU) per row id, when it
	// ran on this host: cpu-vm compares its tracepoint VM with it.
	hostRatio map[string]float64
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	o, err := parseFlags(args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return nil
	}
	if err != nil {
		return err
	}
	dir, err := os.MkdirTemp("", "acceptbench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	b := &bench{ctx: ctx, o: o, bin: o.acceptwatch, dir: dir, log: stderr,
		targets: &table{title: "Targets", header: []string{"target", "measured", "result"}}}
	if b.bin == "" {
		b.bin = dir + "/acceptwatch"
		fmt.Fprintf(stderr, "building acceptwatch into %s\n", b.bin)
		cmd := exec.CommandContext(ctx, "go", "build", "-ldflags", "-X main.buildCommit="+describeCommit(), "-o", b.bin, "github.com/acceptwatch/acceptwatch/cmd/acceptwatch")
		cmd.Stdout, cmd.Stderr = stderr, stderr
		if err := cmd.Run(); err != nil {
			return fmt.Errorf("building acceptwatch: %w", err)
		}
	}

	started := time.Now()
	load0 := loadAvg()
	parts := map[string]func() (*table, error){
		"startup": b.startup, "cpu": b.cpu, "cpu-vm": b.cpuVM, "kernel": b.kernel, "throughput": b.throughput, "scale": b.scale,
		"snapshot": b.snapshot,
	}
	var tables []*table
	for _, name := range strings.Split(o.sections, ",") {
		part, ok := parts[strings.TrimSpace(name)]
		if !ok {
			return fmt.Errorf("unknown section %q (want some of %s)", name, allSections)
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		t, err := part()
		if err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		tables = append(tables, t)
		tables = append(tables, b.extra...)
		b.extra = nil
	}
	if o.tablesJSON {
		for _, t := range tables {
			fmt.Fprintln(stdout, t.jsonLine())
		}
		return nil
	}
	tables = append(tables, b.targets)
	b.notes = append(b.notes, fmt.Sprintf("benchmark took %s; load average %s at start, %s at end; acceptwatch programs of other processes loaded at the end: %d",
		time.Since(started).Round(time.Second), load0, loadAvg(), foreignPrograms(0)))

	head := b.header()
	fmt.Fprintln(stdout, "# "+head[0])
	for _, l := range head[1:] {
		fmt.Fprintln(stdout, l)
	}
	for _, t := range tables {
		t.text(stdout)
	}
	fmt.Fprintln(stdout)
	for _, n := range b.notes {
		fmt.Fprintf(stdout, "* %s\n", n)
	}
	if o.markdown == "" {
		return nil
	}
	var md bytes.Buffer
	fmt.Fprintf(&md, "# %s\n\n", head[0])
	for _, l := range head[1:] {
		fmt.Fprintf(&md, "- %s\n", l)
	}
	for _, t := range tables {
		t.markdown(&md)
	}
	md.WriteString("\n")
	for _, n := range b.notes {
		fmt.Fprintf(&md, "- %s\n", n)
	}
	return os.WriteFile(o.markdown, md.Bytes(), 0o644)
}

// describeCommit names the work tree's commit (with -dirty), as make build
// does, for the report's header: Go stamps no commit in a git worktree.
func describeCommit() string {
	out, _ := exec.Command("git", "describe", "--always", "--dirty", "--abbrev=12", "--exclude", "*").Output()
	return strings.TrimSpace(string(out))
}

func (b *bench) logf(format string, args ...any) {
	fmt.Fprintf(b.log, "acceptbench: "+format+"\n", args...)
}

func (b *bench) target(name, measured string, met bool) {
	res := "met"
	if !met {
		res = "MISSED"
	}
	b.targets.add(name, measured, res)
}

// header names the date, the machine and the acceptwatch version.
func (b *bench) header() []string {
	var u unix.Utsname
	_ = unix.Uname(&u)
	model := "unknown CPU"
	if cpuinfo, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, l := range strings.Split(string(cpuinfo), "\n") {
			if k, v, ok := strings.Cut(l, ":"); ok && strings.TrimSpace(k) == "model name" {
				model = strings.TrimSpace(v)
				break
			}
		}
	}
	ctx, cancel := context.WithTimeout(b.ctx, 5*time.Second)
	defer cancel()
	ver, _ := exec.CommandContext(ctx, b.bin, "--version").Output()
	return []string{
		"acceptwatch benchmark, " + time.Now().Format("2006-01-02 15:04 MST"),
		fmt.Sprintf("machine: Linux %s (%s), %s, %d cores", unix.ByteSliceToString(u.Release[:]),
			unix.ByteSliceToString(u.Machine[:]), model, runtime.NumCPU()),
		"acceptwatch: " + strings.TrimSpace(string(ver)),
		fmt.Sprintf("load: %d client threads dialing 127.0.0.1 (blocking connect, SO_LINGER 0), %d server threads accepting and closing, at most %d connections waiting in the accept queue",
			b.o.clients, b.o.acceptors, maxInFlight),
	}
}

func loadAvg() string {
	b, _ := os.ReadFile("/proc/loadavg")
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "?"
	}
	return strings.Join(f[:3], "/")
}

// startup measures exec to the "tracing" line.
func (b *bench) startup() (*table, error) {
	t := &table{
		title:  fmt.Sprintf("Start-up: exec to %q on stderr, %d starts per attach setting", readyLine, b.o.starts),
		header: []string{"tracer", "median", "min", "max"},
	}
	for _, mode := range []string{"auto", "tracepoint"} {
		var ds []time.Duration
		for range b.o.starts {
			w, err := startWatch(b.bin, b.dir, "--attach", mode, "-q", "--port", "1")
			if err != nil {
				return nil, err
			}
			ds = append(ds, w.startup)
			if _, err := w.stop(); err != nil {
				return nil, err
			}
		}
		slices.Sort(ds)
		med := median(ds)
		t.add("acceptwatch --attach "+mode, ms(med), ms(ds[0]), ms(ds[len(ds)-1]))
		b.logf("start-up with --attach %s: median %s", mode, ms(med))
		if mode == "auto" {
			b.target("start-up median ≤ 50 ms (--attach auto)", ms(med), med <= 50*time.Millisecond)
		}
	}
	// The peer: exec to the script's BEGIN line, printed once every probe
	// is attached (bpftrace compiles the script with LLVM first).
	if _, err := b.findBpftrace(); err != nil {
		t.add("bpftrace script", "not run: "+oneLine(err.Error()), "", "")
		return t, nil
	}
	var ds []time.Duration
	for range min(b.o.starts, 10) {
		r, err := b.startBpftrace(1)
		if err != nil {
			return nil, err
		}
		ds = append(ds, r.startup)
		if err := r.finish(); err != nil {
			return nil, err
		}
	}
	slices.Sort(ds)
	t.add(fmt.Sprintf("bpftrace script (%d starts)", len(ds)), ms(median(ds)), ms(ds[0]), ms(ds[len(ds)-1]))
	t.notes = append(t.notes, "bpftrace: exec of bpftrace cmd/acceptbench/testdata/accept.bt to its BEGIN line, which bpftrace runs once every probe is attached")
	return t, nil
}

// kernel measures the programs' own run time, per attach mode, with the
// kernel's BPF statistics enabled (they cost a little per run, so the
// throughput rounds run without them).
func (b *bench) kernel() (*table, error) {
	t := &table{
		title:  "Kernel-side cost per event (BPF run-time statistics, one storm round per row group)",
		header: []string{"attach", "output", "program", "runs", "runs/conn", "ns/run", "ns/conn"},
	}
	stats, err := ebpf.EnableStats(uint32(unix.BPF_STATS_RUN_TIME))
	if err != nil {
		return nil, fmt.Errorf("enabling BPF statistics: %w", err)
	}
	defer stats.Close()
	for _, mode := range []string{"fexit", "kretprobe", "tracepoint"} {
		for _, quiet := range []bool{true, false} {
			srv, err := listen(b.o.acceptors)
			if err != nil {
				return nil, err
			}
			args := []string{"--attach", mode, "--port", strconv.Itoa(srv.port)}
			output := "live lines"
			if quiet {
				args, output = append(args, "-q"), "summary only"
			}
			w, err := startWatch(b.bin, b.dir, args...)
			if err != nil {
				srv.close()
				t.add(mode, "-", "not available (see below)", "", "", "", "")
				t.notes = append(t.notes, mode+" not available: "+unavailable(err))
				break
			}
			r := storm(srv, b.o.clients, fewSources(b.o.sources), 0, b.o.round, 0, nil)
			ps, err := progStats(w.cmd.Process.Pid)
			srv.close()
			if _, err2 := w.stop(); err == nil {
				err = err2
			}
			if err != nil {
				return nil, err
			}
			var total float64 // ns per connection, all programs
			for _, p := range ps {
				if p.runs == 0 {
					t.add(mode, output, p.name, 0, "", "", "")
					continue
				}
				nsRun := float64(p.runtime.Nanoseconds()) / float64(p.runs)
				runsConn := float64(p.runs) / float64(r.accepted)
				total += nsRun * runsConn
				t.add(mode, output, p.name, p.runs, fmt.Sprintf("%.1f", runsConn),
					fmt.Sprintf("%.0f", nsRun), fmt.Sprintf("%.0f", nsRun*runsConn))
			}
			t.add(mode, output, "all programs", "", "", "", fmt.Sprintf("%.0f", total))
			b.logf("kernel cost: %s %s: %d connections", mode, output, r.accepted)
		}
	}
	t.notes = append(t.notes,
		"runs/conn divides all runs (any process, any port: filtering happens inside the program) by the bench server's accepts",
		"aw_handshake runs on every TCP state change of the machine and returns early for all but SYN_RECV→ESTABLISHED on a watched port",
		"ns/run includes the statistics' own clock reads (a few tens of ns a run); the throughput rounds run without statistics")
	return t, nil
}

// unavailable shortens acceptwatch's "no attach mode works" error to the
// mode's own reason.
func unavailable(err error) string {
	s := strings.Join(strings.Fields(err.Error()), " ")
	if _, rest, ok := strings.Cut(s, "no attach mode works on this kernel ("); ok {
		s = strings.TrimSuffix(rest, ")")
	}
	return s
}

// throughputMode is one way of running acceptwatch in the throughput rounds.
type throughputMode struct {
	name           string
	args           []string
	target         float64   // 0: a control row, "with" rounds run no acceptwatch
	without, with  []float64 // connections/s per round
	ratios         []float64 // with/without conn/s per pair
	effRatios      []float64 // with/without connections per CPU-second per pair
	cpuPerConn     []float64 // acceptwatch CPU µs per accepted connection
	lost, overflow uint64
	lines          uint64
	inexact        []string
	foreign        int // most acceptwatch programs of other processes seen
	failed, rounds int
}

// throughput alternates rounds without and with acceptwatch.
func (b *bench) throughput() (*table, error) {
	modes := []*throughputMode{
		{name: "summary only (-q)", args: []string{"-q"}, target: 0.98},
		{name: "live lines to a file", target: 0.95},
		{name: "control: none in either round"},
	}
	// Warm up the kernel's and the Go runtime's caches.
	if _, err := b.round(&throughputMode{}, false); err != nil {
		return nil, err
	}
	for p := range b.o.pairs {
		for _, m := range modes {
			order := []bool{false, true}
			if p%2 == 1 {
				order = []bool{true, false} // ABBA: neither side always goes first
			}
			var res [2]stormResult
			for _, with := range order {
				if err := b.ctx.Err(); err != nil {
					return nil, err
				}
				r, err := b.round(m, with)
				if err != nil {
					return nil, err
				}
				if with {
					res[1] = r
					m.with = append(m.with, r.rate())
				} else {
					res[0] = r
					m.without = append(m.without, r.rate())
				}
			}
			m.ratios = append(m.ratios, res[1].rate()/res[0].rate())
			m.effRatios = append(m.effRatios, res[1].efficiency()/res[0].efficiency())
			b.logf("throughput pair %d/%d, %s: without %.0f/s, with %.0f/s, ratio %.3f (per CPU-second: %.3f)",
				p+1, b.o.pairs, m.name, res[0].rate(), res[1].rate(), m.ratios[p], m.effRatios[p])
		}
	}

	t := &table{
		title: fmt.Sprintf("Accept throughput: %d alternating pairs of %s rounds per mode, %d source addresses, --attach auto",
			b.o.pairs, b.o.round, b.o.sources),
		header: []string{"acceptwatch", "without conn/s", "with conn/s", "ratio per pair", "median ratio",
			"per-CPU-s ratio per pair", "median", "aw CPU µs/conn", "live lines", "lost events", "addr overflow", "summary exact"},
	}
	var lost uint64
	exact := true
	for _, m := range modes {
		med, effMed := medianF(m.ratios), medianF(m.effRatios)
		inexact := "yes, all rounds"
		if m.target == 0 {
			inexact = "-"
		} else if len(m.inexact) > 0 {
			inexact, exact = "NO: "+strings.Join(m.inexact, "; "), false
		}
		t.add(m.name, fmt.Sprintf("%.0f", medianF(m.without)), fmt.Sprintf("%.0f", medianF(m.with)),
			ratios(m.ratios), fmt.Sprintf("%.3f", med), ratios(m.effRatios), fmt.Sprintf("%.3f", effMed),
			fmt.Sprintf("%.2f", medianF(m.cpuPerConn)), m.lines, m.lost, m.overflow, inexact)
		if m.target > 0 {
			b.target(fmt.Sprintf("throughput ratio ≥ %.2f, %s", m.target, m.name),
				fmt.Sprintf("%.3f conn/s ratio, %.3f per CPU-second (medians of %d pairs)", med, effMed, len(m.ratios)), med >= m.target)
		}
		if m.foreign > 0 {
			t.notes = append(t.notes, fmt.Sprintf("%s: up to %d acceptwatch programs of other processes were loaded during the rounds (their cost falls on both sides)", m.name, m.foreign))
		}
		if m.failed > 0 {
			t.notes = append(t.notes, fmt.Sprintf("%s: %d client dials failed (timed out or reset) over %d rounds", m.name, m.failed, m.rounds))
		}
		lost += m.lost
	}
	b.target("0 lost events at the maximum rate (all with-rounds)", fmt.Sprintf("%d lost", lost), lost == 0)
	b.target("summary exact (total and per address = bench server's accepts)", yesNo(exact), exact)
	t.notes = append(t.notes,
		fmt.Sprintf("conn/s of a round = median of its %s slices; ratio = with/without of one adjacent pair, the order inside a pair alternates", sliceLen),
		"per-CPU-s = accepted connections per CPU-second used by the benchmark process and acceptwatch together (kernel work in their context included); "+
			"it does not move when other work on this shared machine takes CPU away, and equals the throughput ratio on a dedicated saturated machine",
		"aw CPU = CPU time of all acceptwatch threads while the storm ran (/proc/PID/task/*/schedstat)",
		"live lines: -o json to a file on disk; the count is parsed back from the file",
		"control: both rounds of each pair run without acceptwatch; its spread is this machine's noise floor")
	return t, nil
}

func ratios(f []float64) string {
	s := make([]string, len(f))
	for i, r := range f {
		s[i] = fmt.Sprintf("%.3f", r)
	}
	return strings.Join(s, " ")
}

// round runs one storm on a fresh listener, with acceptwatch if with is set.
func (b *bench) round(m *throughputMode, with bool) (stormResult, error) {
	srv, err := listen(b.o.acceptors)
	if err != nil {
		return stormResult{}, err
	}
	src := fewSources(b.o.sources)
	m.rounds++
	if !with || m.target == 0 {
		r := storm(srv, b.o.clients, src, 0, b.o.round, 0, nil)
		m.foreign = max(m.foreign, foreignPrograms(0))
		srv.close()
		m.failed += int(r.failed)
		return r, nil
	}
	w, err := startWatch(b.bin, b.dir, append([]string{"--port", strconv.Itoa(srv.port)}, m.args...)...)
	if err != nil {
		srv.close()
		return stormResult{}, err
	}
	r := storm(srv, b.o.clients, src, 0, b.o.round, 0, w.cpuTime)
	awCPU := w.cpuTime()
	m.foreign = max(m.foreign, foreignPrograms(w.cmd.Process.Pid))
	perAddr := srv.close()
	st, err := w.stop()
	if err != nil {
		return stormResult{}, err
	}
	m.failed += int(r.failed)
	accepted := srv.accepted.Load()
	// Start-up CPU is not the storm's: count from when the storm began.
	m.cpuPerConn = append(m.cpuPerConn, float64((awCPU-w.readyCPU).Microseconds())/float64(accepted))
	m.lost += st.sum.LostEvents
	m.overflow += st.sum.AddressOverflow
	m.lines += uint64(st.lines)
	if msg := compare(st.sum, accepted, perAddr); msg != "" {
		m.inexact = append(m.inexact, msg)
	}
	return r, nil
}

// compare checks acceptwatch's summary against the server's own counts and
// says what differs ("" when it is exact).
func compare(s summary, accepted uint64, perAddr map[[4]byte]uint64) string {
	if s.TotalAccepted != accepted {
		return fmt.Sprintf("total_accepted %d, server accepted %d", s.TotalAccepted, accepted)
	}
	wrong, seen := 0, 0
	for _, a := range s.Addresses {
		ip, err := netip.ParseAddr(a.Addr)
		if err != nil || !ip.Is4() || perAddr[ip.As4()] != a.Accepted {
			wrong++
		}
		if a.Accepted > 0 {
			seen++
		}
	}
	if wrong > 0 {
		return fmt.Sprintf("%d addresses with wrong counts", wrong)
	}
	if s.AddressOverflow == 0 && seen != len(perAddr) {
		return fmt.Sprintf("%d addresses in the summary, server saw %d", seen, len(perAddr))
	}
	return ""
}

// scale connects once from each of o.scale distinct addresses, with an
// address map big enough and with the default one.
func (b *bench) scale() (*table, error) {
	t := &table{
		title: fmt.Sprintf("Scale: %d connections, each from its own address in 127.0.0.0/8, acceptwatch -q", b.o.scale),
		header: []string{"--max-addresses", "storm time", "conn/s", "server accepted", "total_accepted",
			"addresses in summary", "addr overflow", "lost", "exact", "peak RSS tracing", "peak RSS incl. summary",
			"kernel map memory", "port map memory", "SIGINT to exit"},
	}
	if b.o.scale == 0 {
		t.notes = append(t.notes, "skipped (-scale 0)")
		return t, nil
	}
	caps := []uint32{uint32(b.o.scale)}
	if b.o.scaleDefault {
		caps = append(caps, 65536)
	}
	for _, capacity := range caps {
		srv, err := listen(b.o.acceptors)
		if err != nil {
			return nil, err
		}
		w, err := startWatch(b.bin, b.dir, "-q", "--port", strconv.Itoa(srv.port), "--max-addresses", strconv.FormatUint(uint64(capacity), 10))
		if err != nil {
			srv.close()
			return nil, err
		}
		b.logf("scale: %d addresses, --max-addresses %d: started", b.o.scale, capacity)
		r := storm(srv, b.o.clients, distinctSources, 0, 10*time.Minute, b.o.scale, nil)
		pid := w.cmd.Process.Pid
		hwm := w.statusKB("VmHWM")
		kmem := mapMemlock(pid, "aw_addrs")
		pmem := mapMemlock(pid, "aw_lports")
		perAddr := srv.close()
		st, err := w.stop()
		if err != nil {
			return nil, err
		}
		accepted := srv.accepted.Load()
		exact := "yes"
		if msg := compare(st.sum, accepted, perAddr); msg != "" {
			exact = "NO: " + msg
		} else if st.sum.AddressOverflow > 0 {
			exact = "total yes; per address for the first " + strconv.Itoa(len(st.sum.Addresses))
		}
		t.add(capacity, r.elapsed.Round(100*time.Millisecond), fmt.Sprintf("%.0f", r.rate()), accepted, st.sum.TotalAccepted,
			len(st.sum.Addresses), st.sum.AddressOverflow, st.sum.LostEvents, exact,
			mib(hwm*1024), mib(st.maxRSSKB*1024), mib(kmem), fmt.Sprintf("%.0f KiB", float64(pmem)/1024), st.stopTime.Round(10*time.Millisecond))
		b.logf("scale: --max-addresses %d: %d accepted in %s, exact: %s, peak RSS %s", capacity, accepted, r.elapsed, exact, mib(st.maxRSSKB*1024))
		if capacity == uint32(b.o.scale) {
			ok := exact == "yes" && len(st.sum.Addresses) == len(perAddr)
			b.target(fmt.Sprintf("%d addresses: exact summary, memory bounded and stated", b.o.scale),
				fmt.Sprintf("exact: %s; peak RSS %s (tracing %s); kernel map %s", exact, mib(st.maxRSSKB*1024), mib(hwm*1024), mib(kmem)), ok)
		}
	}
	t.notes = append(t.notes,
		"peak RSS tracing = VmHWM before SIGINT; incl. summary = VmHWM polled every 5 ms until exit (the final summary holds every address)",
		"kernel map memory = memlock of the aw_addrs hash map (preallocated at start: fixed by --max-addresses, not by traffic)",
		"port map memory = memlock of the per-CPU aw_lports hash (not preallocated: grows by 2.1 KiB per CPU for each listening port seen)",
		"at capacity the map stops taking new addresses: their accepts and handshakes go to address_overflow and still count in the totals")
	return t, nil
}

func median(d []time.Duration) time.Duration {
	s := slices.Clone(d)
	slices.Sort(s)
	return s[len(s)/2]
}

func medianF(f []float64) float64 {
	if len(f) == 0 {
		return 0
	}
	s := slices.Clone(f)
	slices.Sort(s)
	if len(s)%2 == 0 {
		return (s[len(s)/2-1] + s[len(s)/2]) / 2
	}
	return s[len(s)/2]
}

func ms(d time.Duration) string { return fmt.Sprintf("%.1f ms", float64(d.Microseconds())/1000) }

func mib(bytes uint64) string { return fmt.Sprintf("%.0f MiB", float64(bytes)/(1<<20)) }

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}
