package main

import (
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/pflag"

	"github.com/acceptwatch/acceptwatch/report"
	"github.com/acceptwatch/acceptwatch/tracer"
	"github.com/acceptwatch/acceptwatch/tracer/cgroups"
)

// options holds every command-line flag.
type options struct {
	ports             []string
	pid               uint32
	netns             string // --netns as given
	netnsColumn       bool
	containerColumn   bool
	cgroup            string // --cgroup as given
	ipv4, ipv6        bool
	duration          time.Duration
	interval          time.Duration
	count             uint64
	top               int
	quiet             bool
	output            string
	refresh           time.Duration // -o top: time between redraws
	attach            string
	maxAddresses      uint32
	verbose           bool
	version           bool
	help              bool
	waitThreshold     time.Duration
	halfOpenThreshold uint64
	noSynCounter      bool
	prefix            string
	groupBy           string
	floodMin          uint64
	floodFactor       float64
	floodShare        float64
	baseline          string
	saveBaseline      string
	baselineFactor    float64
	readyFile         string // test hook: written once tracing has started
	cpuProfile        string // profiling hook: pprof CPU profile of the whole run
	snapshot          snapshotOptions
	metrics           metricsOptions
	docs              docOptions

	pidSet    bool           // --pid was given (0 is then an error)
	netnsIno  uint32         // --netns resolved: the namespace's inode
	netnsPath string         // and a file to enter it by
	cgroupT   cgroups.Target // --cgroup resolved
	// cgroupPaths names sockets' cgroups for the connection snapshots'
	// --cgroup filter (their dumps carry ids).
	cgroupPaths *cgroups.Resolver
	portList    []uint16         // parsed from ports
	portNames   []string         // normalised, for display: sorted, ranges merged
	prefixLen   report.PrefixLen // parsed from prefix
}

// thresholds are the findings' thresholds the flags set.
func (o *options) thresholds() report.Thresholds {
	return report.Thresholds{
		Wait: o.waitThreshold, HalfOpen: o.halfOpenThreshold,
		FloodMin: o.floodMin, FloodFactor: o.floodFactor, FloodShare: o.floodShare, Prefix: o.prefixLen,
	}
}

// usageError is a bad command line: exit status 2.
type usageError struct{ msg string }

func (e usageError) Error() string { return e.msg }

func usagef(format string, args ...any) error {
	return usageError{fmt.Sprintf(format, args...)}
}

const examples = `Examples:
  sudo acceptwatch -port 80              # live accepts on port 80, summary at Ctrl-C
  sudo acceptwatch -port 80,443 -q       # summary only
  sudo acceptwatch -P 8000-8100 --duration 1m --top 10
  sudo acceptwatch -port 22 --interval 10s  # a summary every 10 s
  sudo acceptwatch -port 80 -o json | jq .  # one JSON object per line
  sudo acceptwatch -port 443 -o top         # live table of the busiest addresses; q quits
  sudo acceptwatch -port 80 --netns web     # only namespace /run/netns/web
  sudo acceptwatch -v --attach tracepoint   # force a mode; -v says why others failed
  acceptwatch --snapshot -port 80,443       # who is connected now (no BPF, no root)
  sudo acceptwatch -port 443 -q --group-by prefix --prefix 16,48  # rows per network
  sudo acceptwatch -port 443 -q -d 10m --save-baseline normal.json  # a normal period...
  sudo acceptwatch -port 443 -q -i 1m --baseline normal.json        # ...and what is far above it
  sudo acceptwatch --metrics                # serve Prometheus metrics on :10074 and keep running
`

func newFlagSet(o *options) *pflag.FlagSet {
	fs := pflag.NewFlagSet("acceptwatch", pflag.ContinueOnError)
	fs.SortFlags = false
	fs.StringSliceVarP(&o.ports, "port", "P", nil, "local `ports` to watch: 80, 80,443, 8000-8100; repeatable (default all)")
	fs.Uint32VarP(&o.pid, "pid", "p", 0, "only accepts by this process `id` (handshakes are counted for every process; default every process)")
	fs.StringVar(&o.netns, "netns", "", "only this network `namespace`: /proc/PID/ns/net, /run/netns/NAME, NAME or an inode (default every namespace)")
	fs.StringVar(&o.cgroup, "cgroup", "", "only sockets of servers in this cgroup v2 `directory` and below it: /sys/fs/cgroup/system.slice/nginx.service, or a path below the mount (default every cgroup)")
	fs.BoolVar(&o.netnsColumn, "netns-column", false, "live lines: the NETNS column from the start (it appears once a second namespace is seen)")
	fs.BoolVar(&o.containerColumn, "container-column", false, "live lines: the CONTAINER column (the acceptor's container, unit or cgroup, at most 32 characters) from the start (it appears once a second one is seen)")
	fs.BoolVarP(&o.ipv4, "ipv4", "4", false, "IPv4 only (IPv4 clients of dual-stack listeners included)")
	fs.BoolVarP(&o.ipv6, "ipv6", "6", false, "IPv6 only")
	fs.DurationVarP(&o.duration, "duration", "d", 0, "stop after this long, e.g. 30s, 5m (0: until Ctrl-C)")
	fs.DurationVarP(&o.interval, "interval", "i", 0, "also print a summary for each window of this length, at least "+minInterval.String()+" (0: only at the end)")
	fs.Uint64VarP(&o.count, "count", "c", 0, "stop after this many accepts (0: no limit)")
	fs.IntVar(&o.top, "top", 20, "rows in the text summary (0: all)")
	fs.BoolVarP(&o.quiet, "quiet", "q", false, "no live lines, summary only")
	fs.StringVarP(&o.output, "output", "o", "text", "output `format`: text, json, or top (a live table on the terminal)")
	fs.DurationVar(&o.refresh, "refresh", time.Second, "with -o top: time between redraws")
	fs.StringVar(&o.attach, "attach", tracer.ModeAuto, "accept hook: auto, fexit, kretprobe or tracepoint")
	fs.Uint32Var(&o.maxAddresses, "max-addresses", tracer.DefaultMaxAddresses, "capacity of the kernel's per-address counters")
	fs.DurationVar(&o.waitThreshold, "wait-threshold", 100*time.Millisecond, "report a finding when a port's queue wait p99 is above this (0: never)")
	fs.Uint64Var(&o.halfOpenThreshold, "half-open-threshold", 10, "report a finding for an address with this many SYN-ACK retransmits (0: never)")
	snapshotFlags(fs, &o.snapshot)
	d := report.DefaultThresholds
	fs.StringVar(&o.prefix, "prefix", d.Prefix.String(), "network `bits` for IPv4,IPv6 in per-network findings and --group-by prefix")
	fs.StringVar(&o.groupBy, "group-by", "address", "summary rows per address or per prefix (network)")
	fs.Uint64Var(&o.floodMin, "flood-min", d.FloodMin, "fewest SYNs, accepts or half-open handshakes in a window for a flood or baseline finding")
	fs.Float64Var(&o.floodFactor, "flood-factor", d.FloodFactor, "finding for an address or network with this many times the median one's SYNs or accepts")
	fs.Float64Var(&o.floodShare, "flood-share", d.FloodShare, "finding for an address or network with this share (0-1) of all SYNs or accepts")
	fs.StringVar(&o.saveBaseline, "save-baseline", "", "at the end, save this run's rates to `file` as a baseline")
	fs.StringVar(&o.baseline, "baseline", "", "compare with the baseline saved in `file`: findings for what is far above it")
	fs.Float64Var(&o.baselineFactor, "baseline-factor", 3, "finding for a rate (or queue wait) this many times its baseline")
	fs.BoolVar(&o.noSynCounter, "no-syn-counter", false, "count no SYNs: no per-packet program on the cgroup root (SYNS not counted)")
	o.metrics.flags(fs)
	fs.BoolVarP(&o.verbose, "verbose", "v", false, "say which attach modes were tried and why each failed")
	fs.BoolVar(&o.version, "version", false, "print the version and exit")
	fs.BoolVarP(&o.help, "help", "h", false, "show this help")
	fs.StringVar(&o.readyFile, "ready-file", "", "create this file once tracing has started")
	_ = fs.MarkHidden("ready-file")
	fs.StringVar(&o.cpuProfile, "cpuprofile", "", "write a pprof CPU profile of the run to this file")
	_ = fs.MarkHidden("cpuprofile")
	o.docs.flags(fs)
	return fs
}

func printUsage(w io.Writer, fs *pflag.FlagSet) {
	fmt.Fprintf(w, "Usage: acceptwatch [flags]\n\nTraces accepted TCP connections: a line per accept, and at the end a summary\nper remote address that stays exact when live lines are dropped. With\n--snapshot: the TCP connections to this machine's listening ports now.\n\nFlags (long flags also work with one dash, as in -port 80):\n%s\n%s", fs.FlagUsages(), examples)
}

// parseFlags parses args (without the program name).
func parseFlags(args []string) (*options, *pflag.FlagSet, error) {
	o := &options{}
	fs := newFlagSet(o)
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	args = singleDashLong(fs, args)
	if err := flagWithoutValue(fs, args); err != nil {
		return nil, fs, err
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			o.help = true
			return o, fs, nil
		}
		return nil, fs, friendly(err)
	}
	if fs.NArg() > 0 {
		return nil, fs, usagef("unexpected argument %q (ports go after -port)", fs.Arg(0))
	}
	o.pidSet = fs.Changed("pid")
	if fs.Changed("netns") {
		ino, path, err := resolveNetNS(o.netns)
		if err != nil {
			return nil, fs, err
		}
		o.netnsIno, o.netnsPath = ino, path
	}
	if fs.Changed("cgroup") {
		t, err := resolveCgroup(o.cgroup)
		if err != nil {
			return nil, fs, err
		}
		o.cgroupT = t
		o.cgroupPaths, _ = cgroups.NewResolver() // nil (no paths) only without cgroup v2, refused above
	}
	if fs.Changed("port") && len(o.ports) == 0 {
		return nil, fs, usagef(`invalid port "": empty`)
	}
	if fs.Changed("refresh") && o.output != "top" {
		return nil, fs, usagef("--refresh goes with -o top")
	}
	if err := o.validate(); err != nil {
		return nil, fs, err
	}
	if err := checkSnapshotFlags(fs, o); err != nil {
		return nil, fs, err
	}
	return o, fs, nil
}

// singleDashLong rewrites "-port 80" as "--port 80" for every long flag name,
// as users of bcc and Go's flag package write them. A single-dash word that
// is not a long flag name is left to pflag as shorthand flags.
func singleDashLong(fs *pflag.FlagSet, args []string) []string {
	out := make([]string, 0, len(args))
	for i, a := range args {
		if a == "--" {
			return append(out, args[i:]...)
		}
		if len(a) > 2 && a[0] == '-' && a[1] != '-' {
			name, _, _ := strings.Cut(a[1:], "=")
			if len(name) > 1 && fs.Lookup(name) != nil {
				a = "-" + a
			}
		}
		out = append(out, a)
	}
	return out
}

// minInterval is the shortest --interval: a window's summary reads every
// kernel counter, and shorter windows would be mostly that reading.
const minInterval = 100 * time.Millisecond

// expects says, per flag that takes a number or a duration, what a valid
// value looks like: pflag's own errors quote strconv and time internals.
var expects = map[string]string{
	"pid":                   "a process id, 1 or more",
	"count":                 "a whole number (0: no limit)",
	"top":                   "a whole number, 0 or more",
	"max-addresses":         "a whole number, 1 or more",
	"half-open-threshold":   "a whole number (0: never)",
	"duration":              "a duration such as 30s or 5m (0: until Ctrl-C)",
	"interval":              "a duration such as 10s (0: only the final summary)",
	"wait-threshold":        "a duration such as 100ms (0: never)",
	"syn-recv-share":        "a percentage, 0 to 100",
	"address-share":         "a percentage, 0 to 100",
	"close-wait-threshold":  "a whole number",
	"flood-min":             "a whole number",
	"flood-factor":          "a number, 0 or more",
	"flood-share":           "a share between 0 and 1",
	"baseline-factor":       "a number, 0 or more",
	"metrics-top-addresses": fmt.Sprintf("a whole number, 0 to %d", maxTopAddresses),
}

// friendly rewrites pflag's errors for bad and missing values in the words
// acceptwatch uses for every flag.
func friendly(err error) error {
	var bad *pflag.InvalidValueError
	if errors.As(err, &bad) {
		name := bad.GetFlag().Name
		if want, ok := expects[name]; ok {
			return usagef("invalid --%s %q: want %s", name, bad.GetValue(), want)
		}
		return usagef("invalid --%s %q", name, bad.GetValue())
	}
	var missing *pflag.ValueRequiredError
	if errors.As(err, &missing) {
		return usagef("flag --%s needs a value", missing.GetFlag().Name)
	}
	return usageError{err.Error()}
}

// flagWithoutValue catches a flag that takes a value followed by another
// flag ("-port --duration 1s"): pflag would take "--duration" as the port
// and then complain about "1s". Negative numbers ("--top -1") are values.
func flagWithoutValue(fs *pflag.FlagSet, args []string) error {
	needsValue := func(f *pflag.Flag) bool { return f != nil && f.NoOptDefVal == "" }
	short := func(r rune) *pflag.Flag {
		if r >= 0x80 {
			return nil // ShorthandLookup panics on more than one byte
		}
		return fs.ShorthandLookup(string(r))
	}
	isFlag := func(a string) bool {
		switch {
		case strings.HasPrefix(a, "--"):
			name, _, _ := strings.Cut(a[2:], "=")
			return fs.Lookup(name) != nil
		case len(a) > 1 && a[0] == '-':
			return short(rune(a[1])) != nil
		}
		return false
	}
	for i := 0; i+1 < len(args); i++ {
		a := args[i]
		if a == "--" {
			return nil
		}
		var f *pflag.Flag
		switch {
		case strings.HasPrefix(a, "--") && !strings.Contains(a, "="):
			f = fs.Lookup(a[2:])
		case len(a) > 1 && a[0] == '-' && a[1] != '-':
			// A shorthand cluster (-qP) takes a value only with its last letter.
			if j := strings.IndexFunc(a[1:], func(r rune) bool { return needsValue(short(r)) }); j == len(a)-2 {
				f = short(rune(a[len(a)-1]))
			}
		}
		if needsValue(f) && isFlag(args[i+1]) {
			return usagef("flag --%s needs a value (got the flag %s)", f.Name, args[i+1])
		}
		if needsValue(f) {
			i++ // skip the value
		}
	}
	return nil
}

func (o *options) validate() error {
	switch o.output {
	case "text", "json":
	case "top":
		switch {
		case o.quiet, o.count > 0, o.interval > 0, o.snapshot.on:
			return usagef("-o top draws a live table: -q, --count, --interval and --snapshot do not apply")
		case o.metrics.on():
			return usagef("-o top and --metrics exclude each other: run the exporter as its own process (the service) and -o top beside it")
		case o.refresh < 100*time.Millisecond:
			return usagef("invalid --refresh %s: must be at least 100ms", o.refresh)
		}
	default:
		return usagef("invalid output format %q: use text, json or top", o.output)
	}
	switch o.attach {
	case tracer.ModeAuto, tracer.ModeFexit, tracer.ModeKretprobe, tracer.ModeTracepoint:
	default:
		return usagef("invalid attach mode %q: use auto, fexit, kretprobe or tracepoint", o.attach)
	}
	if o.ipv4 && o.ipv6 {
		return usagef("-4 and -6 exclude each other (give neither for both)")
	}
	if o.top < 0 {
		return usagef("invalid --top %d: must be 0 or more", o.top)
	}
	if o.duration < 0 || o.interval < 0 || o.waitThreshold < 0 {
		return usagef("durations must not be negative")
	}
	if o.maxAddresses == 0 {
		return usagef("invalid --max-addresses 0: must be at least 1")
	}
	switch o.groupBy {
	case "address", "prefix":
	default:
		return usagef("invalid --group-by %q: use address or prefix", o.groupBy)
	}
	if !(o.floodFactor >= 0) || !(o.baselineFactor >= 0) {
		return usagef("--flood-factor and --baseline-factor must be 0 or more")
	}
	if !(o.floodShare >= 0 && o.floodShare <= 1) {
		return usagef("invalid --flood-share %v: must be between 0 and 1", o.floodShare)
	}
	if o.pid == 0 && o.pidSet {
		return usagef("invalid --pid 0: want %s (leave -p out to watch every process)", expects["pid"])
	}
	if o.interval > 0 && o.interval < minInterval {
		return usagef("invalid --interval %s: the shortest window is %s", o.interval, minInterval)
	}
	if err := o.validateMetrics(); err != nil {
		return err
	}
	if err := o.docs.validate(); err != nil {
		return err
	}
	var err error
	if o.prefixLen, err = report.ParsePrefixLen(o.prefix); err != nil {
		return usagef("invalid --prefix %q: %v", o.prefix, err)
	}
	o.portList, o.portNames, err = parsePorts(o.ports)
	return err
}

// parsePorts turns "80", "80,443" (already split by pflag) and "8000-8100"
// into a sorted list without duplicates, plus its spelling with adjacent
// ports merged into ranges ("80,80" is "80"; "22,20-23" is "20-23").
func parsePorts(specs []string) ([]uint16, []string, error) {
	var seen [65536]bool
	for _, spec := range specs {
		spec = strings.TrimSpace(spec)
		lo, hi, isRange := strings.Cut(spec, "-")
		first, err := parsePort(lo, spec)
		if err != nil {
			return nil, nil, err
		}
		last := first
		if isRange {
			if last, err = parsePort(hi, spec); err != nil {
				return nil, nil, err
			}
			if last < first {
				return nil, nil, usagef("invalid port range %q: %d is above %d", spec, first, last)
			}
		}
		for p := first; p <= last; p++ {
			seen[p] = true
		}
	}
	var ports []uint16
	var names []string
	for p := 0; p < len(seen); p++ {
		if !seen[p] {
			continue
		}
		first := p
		for p+1 < len(seen) && seen[p+1] {
			p++
		}
		for q := first; q <= p; q++ {
			ports = append(ports, uint16(q))
		}
		if first == p {
			names = append(names, strconv.Itoa(first))
		} else {
			names = append(names, fmt.Sprintf("%d-%d", first, p))
		}
	}
	return ports, names, nil
}

func parsePort(s, spec string) (int, error) {
	n, err := strconv.Atoi(s)
	if err != nil {
		return 0, usagef("invalid port %q: not a number", spec)
	}
	if n < 1 || n > 65535 {
		return 0, usagef("invalid port %q: %d is out of range 1-65535", spec, n)
	}
	return n, nil
}
