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

	cfg := tracer.Config{
		Attach:       o.attach,
		Ports:        o.portList,
		PID:          o.pid,
		MaxAddresses: o.maxAddresses,
		// --count needs the events to count them, even with -q.
		LiveEvents:   !o.quiet || o.count > 0,
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

	ports := "all ports"
	if len(o.portNames) > 0 {
		ports = "port " + strings.Join(o.portNames, ",")
	}
	fmt.Fprintf(stderr, "acceptwatch: tracing accepts on %s with %s (handshakes: sock:inet_sock_set_state); Ctrl-C to end\n", ports, t.Mode())

	out := bufio.NewWriterSize(stdout, 64<<10)
	var w report.Writer
	if o.output == "json" {
		w = report.NewJSON(out)
	} else {
		w = report.NewText(out, report.TextOptions{Top: o.top, Quiet: o.quiet})
	}
	if o.metrics.on() {
		err = serveMetrics(ctx, o, t, w, out, stderr)
	} else if err = writeReady(o.readyFile, t.Mode()); err == nil {
		l := &loop{o: o, t: t, w: w, out: out, now: openConnectionsNow(), base: base, stderr: stderr}
		defer l.now.Close()
		err = l.run(ctx)
	}
	if isClosedPipe(err) {
		return nil
	}
	return err
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
	s.Findings = report.Findings(s, l.o.thresholds())
	if l.base != nil {
		s.Findings = append(s.Findings, baseline.Compare(l.base, s, baseline.Thresholds{Factor: l.o.baselineFactor, Min: l.o.floodMin})...)
	}
	if c.WaitsUnknown > 0 {
		s.Findings = append(s.Findings, fmt.Sprintf("%d queue waits unknown: too many connections waiting at once", c.WaitsUnknown))
	}
	if c.PortsOverflow > 0 {
		s.Findings = append(s.Findings, fmt.Sprintf("%d events not counted per port: too many listening ports", c.PortsOverflow))
	}
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
