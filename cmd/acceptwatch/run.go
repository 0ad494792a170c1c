package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"runtime/debug"
	"runtime/pprof"
	"strings"
	"syscall"
	"time"

	"github.com/acceptwatch/acceptwatch/report"
	"github.com/acceptwatch/acceptwatch/report/baseline"
	"github.com/acceptwatch/acceptwatch/tracer"
	"github.com/acceptwatch/acceptwatch/tracer/netns"
)

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	o, fs, err := parseFlags(args)
	if err != nil {
		return err
	}
	if o.help {
		printUsage(stdout, fs)
		return nil
	}
	if o.version {
		fmt.Fprintf(stdout, "acceptwatch %s\n", version())
		return nil
	}
	if o.docs.requested() {
		return o.docs.write(stdout, fs)
	}
	if o.snapshot.on {
		return runSnapshot(o, stdout, stderr)
	}
	var base *baseline.File
	if o.baseline != "" {
		if base, err = baseline.Load(o.baseline); err != nil {
			return usageError{err.Error()}
		}
	}
	if o.saveBaseline != "" {
		if err := baseline.CheckWritable(o.saveBaseline); err != nil {
			return usageError{err.Error()}
		}
	}
	if o.output == "top" && !isTerminal(stdout) {
		return usagef("-o top needs a terminal, and stdout is not one (use -o text or -o json)")
	}
	if o.cpuProfile != "" {
		f, err := os.Create(o.cpuProfile)
		if err != nil {
			return fmt.Errorf("cpu profile: %w", err)
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return fmt.Errorf("cpu profile: %w", err)
		}
		defer pprof.StopCPUProfile()
	}

	cfg := tracer.Config{
		Attach:       o.attach,
		Ports:        o.portList,
		PID:          o.pid,
		NetNS:        o.netnsIno,
		NetNSPath:    o.netnsPath,
		Cgroup:       o.cgroupT,
		MaxAddresses: o.maxAddresses,
		// --count needs the events to count them, even with -q; the live
		// table reads only the counters.
		LiveEvents:   o.output != "top" && (!o.quiet || o.count > 0),
		NoSynCounter: o.noSynCounter,
	}
	if o.metrics.on() {
		o.metrics.configure(o, &cfg)
	}
	if o.ipv4 {
		cfg.Family = 4
	} else if o.ipv6 {
		cfg.Family = 6
	}
	if o.verbose {
		cfg.Logf = func(format string, args ...any) {
			fmt.Fprintf(stderr, "acceptwatch: "+format+"\n", args...)
		}
	}
	t, err := tracer.Open(cfg)
	if err != nil {
		return err
	}
	defer t.Close()

	fmt.Fprintf(stderr, "acceptwatch: tracing accepts on %s with %s (handshakes: sock:inet_sock_set_state); Ctrl-C to end\n", o.portsLabel(), t.Mode())

	if o.metrics.on() {
		out := bufio.NewWriterSize(stdout, 64<<10)
		err = serveMetrics(ctx, o, t, o.writer(out), out, stderr)
	} else if err = writeReady(o.readyFile, t.Mode()); err == nil {
		l := &loop{o: o, t: t, now: openConnectionsNow(o.netnsPath), base: base, stderr: stderr}
		defer l.now.Close()
		if o.output == "top" {
			err = runTop(ctx, l, stdout.(*os.File))
		} else {
			err = l.lines(ctx, stdout)
		}
	}
	if isClosedPipe(err) {
		return nil
	}
	return err
}

// lines prints live lines and summaries as text or JSON.
func (l *loop) lines(ctx context.Context, stdout io.Writer) error {
	l.out = bufio.NewWriterSize(stdout, 64<<10)
	l.w = l.o.writer(l.out)
	return l.run(ctx)
}

// writer is the text or JSON writer of live lines and summaries.
func (o *options) writer(out *bufio.Writer) report.Writer {
	if o.output == "json" {
		return report.NewJSON(out)
	}
	return report.NewText(out, report.TextOptions{Top: o.top, Quiet: o.quiet, NetNS: o.netnsColumn, NetNSName: netnsLabel,
		Container: o.containerColumn})
}

// portsLabel names the watched ports: "port 80,443" or "all ports".
func (o *options) portsLabel() string {
	l := "port " + strings.Join(o.portNames, ",")
	if len(o.portNames) == 0 {
		l = "all ports"
	}
	if o.cgroupT.ID != 0 {
		l += " of cgroup " + report.Sanitize(o.cgroupT.Path)
	}
	return l
}

// writeReady creates the test hook's ready file: write then rename, so a
// waiter never sees an empty file.
func writeReady(path, mode string) error {
	if path == "" {
		return nil
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(mode+"\n"), 0o644); err != nil {
		return fmt.Errorf("writing ready file: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("writing ready file: %w", err)
	}
	return nil
}

// flushEvery bounds how long a live line waits in acceptwatch's output
// buffer while events keep coming (the kernel side wakes the reader at
// least every tracer.PollInterval).
const flushEvery = 50 * time.Millisecond

type loop struct {
	o      *options
	t      *tracer.Tracer
	w      report.Writer
	out    *bufio.Writer
	now    *connectionsNow // who is connected, for each summary
	base   *baseline.File  // --baseline, or nil
	stderr io.Writer
	// nsNames labels network namespaces in summaries (see names).
	nsNames map[uint32]string
}

func (l *loop) run(ctx context.Context) error {
	// Limits count from when the programs were attached: that is the
	// summary's start, so a --duration 2s run reports 2.0s.
	var deadline, nextWindow time.Time
	start := l.t.Started()
	if l.o.duration > 0 {
		deadline = start.Add(l.o.duration)
	}
	if l.o.interval > 0 {
		nextWindow = start.Add(l.o.interval)
	}
	var ev report.Event
	var seen uint64
	stopping := false
	var now, lastFlush time.Time
	wait := time.Duration(0)
	batch := 0 // live events read since the clock was last looked at
	for {
		// The clock, the context and the limits are looked at when the
		// ring runs dry and every 256 events, not per event: at full rate
		// a clock read per live line was a tenth of acceptwatch's CPU.
		if batch == 0 {
			now = time.Now()
			if !stopping && (ctx.Err() != nil || (!deadline.IsZero() && !now.Before(deadline))) {
				// Print what is already queued, then end.
				stopping = true
			}
			if !nextWindow.IsZero() && !now.Before(nextWindow) && !stopping {
				end, err := l.summary(false)
				if err != nil {
					return err
				}
				// The next window is as long as asked from when this one
				// ended (its counters were read), however late that was.
				nextWindow = end.Add(l.o.interval)
				lastFlush = end
			}
			// Wake for the next window, the deadline and the next flush
			// on time, not up to a poll interval late.
			wait = tracer.PollInterval
			if stopping {
				wait = 0
			} else {
				for _, t := range []time.Time{deadline, nextWindow} {
					if !t.IsZero() {
						wait = max(0, min(wait, t.Sub(now)))
					}
				}
				if l.out.Buffered() > 0 {
					wait = max(0, min(wait, lastFlush.Add(flushEvery).Sub(now)))
				}
			}
		}
		ok, err := l.t.Read(&ev, wait)
		if err != nil {
			return err
		}
		if !ok && stopping {
			break
		}
		if ok {
			seen++
			if !l.o.quiet {
				if err := l.w.Event(ev); err != nil {
					return err
				}
			}
			if l.o.count > 0 && seen >= l.o.count {
				break
			}
			batch = (batch + 1) % 256
		}
		dry := !ok || !l.t.Pending()
		if dry {
			batch = 0
		}
		// Lines go out when the ring runs dry, at most every flushEvery
		// while it keeps refilling: one write per batch, not per line.
		if dry && l.out.Buffered() > 0 && (!ok || time.Since(lastFlush) >= flushEvery) {
			if err := l.out.Flush(); err != nil {
				return err
			}
			lastFlush = time.Now()
		}
	}
	if l.o.interval > 0 {
		if _, err := l.summary(false); err != nil {
			return err
		}
	}
	_, err := l.summary(true)
	return err
}

// summary prints the whole run's summary or the current window's and
// returns its end.
func (l *loop) summary(final bool) (time.Time, error) {
	var c tracer.Counts
	var err error
	if final {
		c, err = l.t.Total()
	} else {
		c, err = l.t.Window()
	}
	if err != nil {
		return c.End, err
	}
	s := report.Summary{
		Start:              c.Start,
		End:                c.End,
		AttachMode:         l.t.Mode(),
		Ports:              l.o.portNames,
		Addresses:          c.Addresses,
		TotalAccepted:      c.TotalAccepted,
		TotalHandshakes:    c.TotalHandshakes,
		LostEvents:         c.LostEvents,
		AddressOverflow:    c.AddressOverflow,
		MaxAddresses:       l.o.maxAddresses,
		Final:              final,
		TotalNotAccepted:   c.TotalNotAccepted,
		TotalClientGone:    c.TotalClientGone,
		TotalSynackRetrans: c.TotalSynackRetrans,
		TotalSyns:          c.TotalSyns,
		TotalDrops:         c.TotalDrops,
		SynCounter:         c.SynCounter,
		DropCounters:       c.DropCounters,
		GroupByPrefix:      l.o.groupBy == "prefix",
		Prefix:             l.o.prefixLen,
		Listeners:          c.Listeners,
		KernelCounters:     c.KernelCounters,
		NetNSNames:         l.names(&c),
		CountersNetNS:      l.countersNS(),
		Cgroup:             l.o.cgroupT.Path,
	}
	s.NetNSNames = l.nsNames // countersNS may have looked names up again
	s.Findings = l.findings(s, &c)
	l.now.add(&s, l.o)
	err = l.w.Summary(s)
	if err == nil {
		err = l.out.Flush()
	}
	// Saved even when stdout has gone (| head): the counts are complete.
	if final && l.o.saveBaseline != "" {
		if serr := baseline.FromSummary(s).Save(l.o.saveBaseline); serr != nil {
			return c.End, serr
		}
		fmt.Fprintf(l.stderr, "acceptwatch: baseline saved to %s\n", l.o.saveBaseline)
	}
	return c.End, err
}

// names labels the namespaces of c's rows (looked up again only when a
// summary holds one not seen before).
func (l *loop) names(c *tracer.Counts) map[uint32]string {
	fresh := false
	lookup := func(ns uint32) {
		if _, ok := l.nsNames[ns]; !ok && ns != 0 && !fresh {
			l.nsNames, fresh = netns.Names(), true
		}
	}
	for _, a := range c.Addresses {
		lookup(a.NetNS)
	}
	for _, p := range c.Listeners {
		lookup(p.NetNS)
	}
	return l.nsNames
}

// countersNS is the namespace the kernel counters are read in.
func (l *loop) countersNS() uint32 {
	if l.o.netnsIno != 0 {
		return l.o.netnsIno
	}
	var st syscall.Stat_t
	if syscall.Stat("/proc/self/ns/net", &st) != nil {
		return 0
	}
	ns := uint32(st.Ino)
	if _, ok := l.nsNames[ns]; !ok {
		l.nsNames = netns.Names()
	}
	return ns
}

// findings are report.Findings, the baseline's comparison and the tracer's
// own limits (from c).
func (l *loop) findings(s report.Summary, c *tracer.Counts) []string {
	f := report.Findings(s, l.o.thresholds())
	if l.base != nil {
		f = append(f, baseline.Compare(l.base, s, baseline.Thresholds{Factor: l.o.baselineFactor, Min: l.o.floodMin})...)
	}
	if c.WaitsUnknown > 0 {
		f = append(f, fmt.Sprintf("%d queue waits unknown: too many connections waiting at once", c.WaitsUnknown))
	}
	if c.MissedRuns > 0 {
		f = append(f, fmt.Sprintf("%d hook runs skipped by the kernel (another BPF program was running on that CPU): counts may be short by as much", c.MissedRuns))
	}
	if c.PortsOverflow > 0 {
		f = append(f, fmt.Sprintf("%d events not counted per port: too many listening ports", c.PortsOverflow))
	}
	return f
}

func isClosedPipe(err error) bool {
	return errors.Is(err, syscall.EPIPE)
}

// buildCommit is set by `make build` (-ldflags "-X main.buildCommit=...",
// from git describe) for builds that Go does not stamp itself: a git
// worktree, or GOFLAGS=-buildvcs=false.
var buildCommit string

func version() string {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return "(unknown)"
	}
	return versionOf(bi, buildCommit)
}

// versionOf names the module version and the commit the binary was built
// from, with "dirty" when the work tree had changes. Go records the commit
// only when it builds from a git clone with VCS stamping on (go build's
// default; GOFLAGS=-buildvcs=false or a go test binary turn it off).
func versionOf(bi *debug.BuildInfo, described string) string {
	vcs := map[string]string{}
	for _, s := range bi.Settings {
		vcs[s.Key] = s.Value
	}
	v := bi.Main.Version
	if v == "" {
		v = "(devel)"
	}
	rev := vcs["vcs.revision"]
	if rev == "" && described != "" {
		return v + " (commit " + strings.Replace(described, "-dirty", " dirty", 1) + ")"
	}
	if rev == "" {
		return v + " (no commit recorded: build from a git clone with go build -buildvcs=true)"
	}
	rev = rev[:min(len(rev), 12)]
	if vcs["vcs.modified"] == "true" {
		rev += " dirty"
	}
	if t := vcs["vcs.time"]; t != "" {
		rev += ", " + t
	}
	return v + " (commit " + rev + ")"
}
