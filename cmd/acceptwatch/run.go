package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"runtime/debug"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/acceptwatch/acceptwatch/report"
	"github.com/acceptwatch/acceptwatch/report/baseline"
	"github.com/acceptwatch/acceptwatch/tracer"
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
	if err := checkPrivileges(); err != nil {
		return err
	}

	cfg := tracer.Config{
		Attach:       o.attach,
		Ports:        o.portList,
		PID:          o.pid,
		MaxAddresses: o.maxAddresses,
		// --count needs the events to count them, even with -q; the live
		// table reads only the counters.
		LiveEvents:   o.output != "top" && (!o.quiet || o.count > 0),
		NoSynCounter: o.noSynCounter,
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
	if o.readyFile != "" {
		// Write then rename, so a waiter never sees an empty file.
		tmp := o.readyFile + ".tmp"
		if err := os.WriteFile(tmp, []byte(t.Mode()+"\n"), 0o644); err != nil {
			return fmt.Errorf("writing ready file: %w", err)
		}
		if err := os.Rename(tmp, o.readyFile); err != nil {
			return fmt.Errorf("writing ready file: %w", err)
		}
	}

	l := &loop{o: o, t: t, now: openConnectionsNow(), base: base, stderr: stderr}
	defer l.now.Close()
	if o.output == "top" {
		err = runTop(ctx, l, stdout.(*os.File))
	} else {
		err = l.lines(ctx, stdout)
	}
	if isClosedPipe(err) {
		return nil
	}
	return err
}

// lines prints live lines and summaries as text or JSON.
func (l *loop) lines(ctx context.Context, stdout io.Writer) error {
	l.out = bufio.NewWriterSize(stdout, 64<<10)
	if l.o.output == "json" {
		l.w = report.NewJSON(l.out)
	} else {
		l.w = report.NewText(l.out, report.TextOptions{Top: l.o.top, Quiet: l.o.quiet})
	}
	return l.run(ctx)
}

// portsLabel names the watched ports: "port 80,443" or "all ports".
func (o *options) portsLabel() string {
	if len(o.portNames) == 0 {
		return "all ports"
	}
	return "port " + strings.Join(o.portNames, ",")
}

type loop struct {
	o      *options
	t      *tracer.Tracer
	w      report.Writer
	out    *bufio.Writer
	now    *connectionsNow // who is connected, for each summary
	base   *baseline.File  // --baseline, or nil
	stderr io.Writer
}

func (l *loop) run(ctx context.Context) error {
	var deadline, nextWindow time.Time
	start := time.Now()
	if l.o.duration > 0 {
		deadline = start.Add(l.o.duration)
	}
	if l.o.interval > 0 {
		nextWindow = start.Add(l.o.interval)
	}
	var ev report.Event
	var seen uint64
	wait := tracer.PollInterval
	stopping := false
	for {
		if !stopping && (ctx.Err() != nil || (!deadline.IsZero() && !time.Now().Before(deadline))) {
			// Print what is already queued, then end.
			stopping, wait = true, 0
		}
		now := time.Now()
		if !nextWindow.IsZero() && !now.Before(nextWindow) {
			if err := l.summary(false); err != nil {
				return err
			}
			nextWindow = nextWindow.Add(l.o.interval)
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
		}
		if !ok || !l.t.Pending() {
			if err := l.out.Flush(); err != nil {
				return err
			}
		}
	}
	if l.o.interval > 0 {
		if err := l.summary(false); err != nil {
			return err
		}
	}
	return l.summary(true)
}

func (l *loop) summary(final bool) error {
	var c tracer.Counts
	var err error
	if final {
		c, err = l.t.Total()
	} else {
		c, err = l.t.Window()
	}
	if err != nil {
		return err
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
	}
	s.Findings = l.findings(s, c.WaitsUnknown, c.PortsOverflow)
	l.now.add(&s, l.o)
	err = l.w.Summary(s)
	if err == nil {
		err = l.out.Flush()
	}
	// Saved even when stdout has gone (| head): the counts are complete.
	if final && l.o.saveBaseline != "" {
		if serr := baseline.FromSummary(s).Save(l.o.saveBaseline); serr != nil {
			return serr
		}
		fmt.Fprintf(l.stderr, "acceptwatch: baseline saved to %s\n", l.o.saveBaseline)
	}
	return err
}

// findings are report.Findings, the baseline's comparison and the tracer's
// own limits.
func (l *loop) findings(s report.Summary, waitsUnknown, portsOverflow uint64) []string {
	f := report.Findings(s, l.o.thresholds())
	if l.base != nil {
		f = append(f, baseline.Compare(l.base, s, baseline.Thresholds{Factor: l.o.baselineFactor, Min: l.o.floodMin})...)
	}
	if waitsUnknown > 0 {
		f = append(f, fmt.Sprintf("%d queue waits unknown: too many connections waiting at once", waitsUnknown))
	}
	if portsOverflow > 0 {
		f = append(f, fmt.Sprintf("%d events not counted per port: too many listening ports", portsOverflow))
	}
	return f
}

// checkPrivileges fails early, with the capabilities named, when the
// process plainly cannot load BPF programs.
func checkPrivileges() error {
	if os.Geteuid() == 0 {
		return nil
	}
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData
	if err := unix.Capget(&hdr, &data[0]); err != nil {
		return nil // let the kernel decide
	}
	has := func(c uint) bool { return data[c/32].Effective&(1<<(c%32)) != 0 }
	if has(unix.CAP_SYS_ADMIN) || (has(unix.CAP_BPF) && has(unix.CAP_PERFMON)) {
		return nil
	}
	return tracer.ErrPrivileges
}

func isClosedPipe(err error) bool {
	return errors.Is(err, syscall.EPIPE)
}

func version() string {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return "(unknown)"
	}
	v := bi.Main.Version
	for _, s := range bi.Settings {
		if s.Key == "vcs.revision" && len(s.Value) >= 12 {
			v += " " + s.Value[:12]
		}
	}
	return v
}
