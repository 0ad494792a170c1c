// Package tracer loads acceptwatch's BPF programs, chooses how to hook accept()
// on the running kernel, and reads live events and exact counters back.
package tracer

import (
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"sync"
	"time"
	"unsafe"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/btf"
	"github.com/cilium/ebpf/link"
	"github.com/cilium/ebpf/ringbuf"
	"github.com/cilium/ebpf/rlimit"

	"github.com/acceptwatch/acceptwatch/report"
	"github.com/acceptwatch/acceptwatch/tracer/cgroups"
)

// Attach modes, in the order "auto" tries them.
const (
	ModeAuto       = "auto"
	ModeFexit      = "fexit"
	ModeKretprobe  = "kretprobe"
	ModeTracepoint = "tracepoint"
)

// Modes lists the attach modes auto tries, best first.
var Modes = []string{ModeFexit, ModeKretprobe, ModeTracepoint}

// DefaultMaxAddresses is the default capacity of the per-address counter map.
const DefaultMaxAddresses = 65536

// PollInterval bounds how long a live event can wait in the ring buffer: the
// programs wake the reader only when a batch is queued.
const PollInterval = 100 * time.Millisecond

// Config says what to trace. The zero value traces every port, process and family.
type Config struct {
	Attach string   // ModeAuto or one of Modes; "" means auto
	Ports  []uint16 // watched local ports; empty: all
	PID    uint32   // acceptor's process id; 0: all
	NetNS  uint32   // network namespace (inode) whose sockets are counted; 0: all
	// NetNSPath is that namespace's nsfs file: the kernel counters (TcpExt)
	// are read inside it. "": acceptwatch's own namespace.
	NetNSPath string
	// Cgroup is the cgroup whose subtree's sockets are counted (by the
	// cgroup that made each listener); zero ID: every cgroup.
	Cgroup       cgroups.Target
	Family       int    // 4 or 6; 0: both
	MaxAddresses uint32 // capacity of the address map; 0: DefaultMaxAddresses
	LiveEvents   bool   // send a live event per accept (false: counters only)
	NoSynCounter bool   // count no SYNs: no per-packet program, no tcp_conn_request hook
	// NoAddresses turns per-address counting off: per-port counters only
	// (metrics without top addresses). The address map then holds 1 entry.
	NoAddresses bool
	// AddressWindows keeps two address maps of MaxAddresses each, for runs
	// of any length: RotateAddresses swaps them and drains the full one.
	AddressWindows bool
	// Logf receives diagnostics (which modes failed and why); nil drops them.
	Logf func(format string, args ...any)
}

// Tracer is a loaded and attached set of programs. Close releases everything.
type Tracer struct {
	mode       string
	synCounter string           // SynCgroup, SynConnRequest or "" (not counted)
	maps       *ebpf.Collection // every map, made once for all modes tried
	coll       *ebpf.Collection // the chosen mode's programs
	extras     *extras          // SYN and drop counters every mode shares
	links      []link.Link
	reader     *ringbuf.Reader
	addrs      *ebpf.Map // the address map in use
	addrWin    *addrWindows
	lports     *ebpf.Map
	stats      *ebpf.Map
	window     *ebpf.Variable
	windowID   uint32
	mu         sync.Mutex     // Snapshot, RotateAddresses, AddressFill may run from several goroutines
	blEpoch    *ebpf.Variable // backlog_epoch: see Snapshot
	epoch      uint32
	bootWall   time.Time // wall-clock time of CLOCK_MONOTONIC zero
	rec        ringbuf.Record
	batchKeys  []acceptwatchAddrKey // eachAddr's buffers, kept between reads
	batchVals  []acceptwatchAddrStats
	retired    *retiredAddrs // drained address maps' counts, once a whole-run view needs them
	// The reader's deadline is in the past (a read returns at once).
	deadlinePast bool
	comm         commCache
	cgroups      *cgroups.Resolver // nil without cgroup v2: events then carry no path

	start, windowStart time.Time
	prev               map[addrKey]acceptwatchAddrStats
	prevPorts          map[portKey]acceptwatchPortStats
	prevStats          [acceptwatchStatSTAT_MAX]uint64
	prevMissed         uint64
	netnsPath          string  // Config.NetNSPath
	counters           netstat // TcpExt at start
	prevCounters       netstat
}

// Open loads the programs for the first attach mode that works and attaches
// them. If none works, the error names every mode tried and why it failed.
func Open(cfg Config) (*Tracer, error) {
	if cfg.Logf == nil {
		cfg.Logf = func(string, ...any) {}
	}
	logf := cfg.Logf
	if err := checkCapabilities(); err != nil {
		return nil, err
	}
	if memlockErr = rlimit.RemoveMemlock(); memlockErr != nil {
		logf("raising RLIMIT_MEMLOCK: %v", memlockErr)
	}
	if cfg.MaxAddresses == 0 {
		cfg.MaxAddresses = DefaultMaxAddresses
	}
	// Start-up is mostly parsing the kernel's BTF (CO-RE, finding attach
	// targets): start it now, once for every mode tried, and create the
	// maps on the other core meanwhile.
	cache := btf.NewCache()
	go cache.Kernel() //nolint:errcheck // the loads below report its error

	spec, err := loadAcceptwatch()
	if err != nil {
		return nil, fmt.Errorf("loading BPF objects: %w", err)
	}
	if err := configure(spec, cfg); err != nil {
		return nil, err
	}
	maps, err := createMaps(spec, cfg)
	if err != nil {
		return nil, mapsError(err)
	}
	win, err := newAddrWindows(spec.Maps["aw_addr_slot"].InnerMap, maps.Maps["aw_addr_slot"], maps.Maps["aw_stats"], cfg)
	if err != nil {
		maps.Close()
		return nil, mapsError(err)
	}

	modes := Modes
	if cfg.Attach != "" && cfg.Attach != ModeAuto {
		modes = []string{cfg.Attach}
	}
	// The loader looks tracefs up once per process and remembers a miss, so
	// mount it before the first mode that may need it (kprobes fall back to
	// tracefs; classic tracepoints need it).
	var tracefsErr error
	if !slices.Equal(modes, []string{ModeFexit}) {
		var mounted bool
		var dir string
		dir, mounted, tracefsErr = ensureTracefs()
		if mounted {
			logf("mounted tracefs on %s", dir)
		}
		if tracefsErr == nil {
			// Classic tracepoints are found by their id there: a
			// directory only root may read, so say which capability
			// is missing before loading anything.
			f, err := os.Open(dir + "/events/syscalls/sys_exit_accept4/id")
			if err != nil {
				tracefsErr = tracefsError(dir, err)
			} else {
				f.Close()
			}
		}
	}
	ex := openExtras(spec, maps, cache, cfg)
	var reasons []string
	for _, mode := range modes {
		t, err := openMode(spec, maps, cache, mode, cfg, tracefsErr, ex)
		if err == nil {
			logf("attach mode %s: attached", mode)
			t.addrWin = win
			t.addrs = win.active()
			return t, nil
		}
		reason := oneLine(err.Error())
		logf("attach mode %s: failed: %s", mode, reason)
		reasons = append(reasons, mode+": "+reason)
	}
	ex.Close()
	win.close()
	maps.Close()
	return nil, fmt.Errorf("no attach mode works on this kernel (%s)", strings.Join(reasons, "; "))
}

// tcpPrograms are loaded in every mode: BTF tracepoints of the TCP stack
// (completed handshakes, destroyed sockets, SYN-ACK retransmits).
var tcpPrograms = []string{"aw_handshake", "aw_destroy", "aw_synack"}

func configure(spec *ebpf.CollectionSpec, cfg Config) error {
	consts := map[string]any{
		"target_tgid":   cfg.PID,
		"target_family": uint8(cfg.Family),
		"target_netns":  cfg.NetNS,
		"target_cgroup": cfg.Cgroup.ID,
		// The knob's type: a u32 (the verifier's index arithmetic).
		"target_cgroup_level": cfg.Cgroup.Level,
		"filter_ports":        len(cfg.Ports) > 0,
		"emit_events":         cfg.LiveEvents,
		// A sixteenth of the ring: a batch big enough to amortise a wakeup,
		// far from full.
		"wakeup_bytes": uint64(spec.Maps["aw_events"].MaxEntries / 16),
		"count_addrs":  !cfg.NoAddresses,
	}
	for name, v := range consts {
		vs, ok := spec.Variables[name]
		if !ok {
			return fmt.Errorf("BPF object has no variable %s", name)
		}
		if err := vs.Set(v); err != nil {
			return fmt.Errorf("setting %s: %w", name, err)
		}
	}
	// The outer map's template: the kernel compares an inner hash map's
	// type, key, value and flags with it, not its size (5.10+), so a
	// one-entry template spares a preallocation of --max-addresses entries.
	spec.Maps["aw_addr_slot"].InnerMap.MaxEntries = 1
	return nil
}

// createMaps creates every map and fills the port filter, before any program
// can run.
func createMaps(spec *ebpf.CollectionSpec, cfg Config) (_ *ebpf.Collection, err error) {
	spec = spec.Copy()
	spec.Programs = nil
	maps, err := ebpf.NewCollection(spec)
	if err != nil {
		return nil, fmt.Errorf("creating maps: %w", err)
	}
	for _, p := range cfg.Ports {
		if err := maps.Maps["aw_ports"].Put(uint32(p), uint8(1)); err != nil {
			maps.Close()
			return nil, fmt.Errorf("setting port filter: %w", err)
		}
	}
	return maps, nil
}

// openMode loads the accept programs of one mode and the TCP tracepoint
// programs (no other program is loaded) and attaches them.
func openMode(spec *ebpf.CollectionSpec, maps *ebpf.Collection, cache *btf.Cache, mode string, cfg Config, tracefsErr error, ex *extras) (_ *Tracer, err error) {
	var accept []string // the accept hook's programs, in attach order
	var syn string      // counts SYNs where the cgroup counter could not (optional)
	switch mode {
	case ModeFexit:
		var prog string
		prog, err = fexitProgram(cache)
		accept, syn = []string{prog}, "aw_fentry_syn"
	case ModeKretprobe:
		accept, syn = []string{"aw_kprobe_acc", "aw_kretprobe_acc"}, "aw_kprobe_syn"
		err = haveKprobes()
	case ModeTracepoint:
		err = tracefsErr
		if err == nil {
			accept, err = tracepointPrograms(cache)
		}
	default:
		return nil, fmt.Errorf("unknown attach mode %q", mode)
	}
	if err != nil {
		return nil, err
	}
	if ex.syn != "" || cfg.NoSynCounter {
		syn = "" // one source of truth: the cgroup counter, or none
	}

	logf := cfg.Logf
	logf("attach mode %s: loading %s", mode, strings.Join(accept, ", "))
	keep := append(slices.Clone(tcpPrograms), accept...)
	opts := ebpf.CollectionOptions{MapReplacements: maps.Maps, Cache: cache}
	coll, err := loadPrograms(spec, append(keep, syn), opts)
	if err != nil && slices.Equal(accept, []string{tracepointCast}) {
		// A kernel whose verifier refuses the kfunc in tracepoint programs.
		logf("attach mode %s: %s not loaded, using %s: %s", mode, tracepointCast, tracepointProbeRead, oneLine(err.Error()))
		accept = []string{tracepointProbeRead}
		keep = append(slices.Clone(tcpPrograms), accept...)
		coll, err = loadPrograms(spec, keep, opts)
	}
	if err != nil && syn != "" {
		// SYN counting is a bonus: load the mode without it.
		logf("attach mode %s: SYN counter at tcp_conn_request unavailable: %s", mode, oneLine(err.Error()))
		syn = ""
		coll, err = loadPrograms(spec, keep, opts)
	}
	if err != nil {
		return nil, fmt.Errorf("loading programs: %w", err)
	}
	cgs, err := cgroups.NewResolver()
	if err != nil {
		logf("cgroup paths on events: %v", err)
	}
	mono, wall := monotonicNow()
	t := &Tracer{
		cgroups:    cgs,
		mode:       mode,
		synCounter: ex.syn,
		maps:       maps,
		coll:       coll,
		lports:     maps.Maps["aw_lports"],
		stats:      maps.Maps["aw_stats"],
		window:     maps.Variables["window_id"],
		blEpoch:    maps.Variables["backlog_epoch"],
		bootWall:   wall.Add(-mono),
		prev:       map[addrKey]acceptwatchAddrStats{},
		prevPorts:  map[portKey]acceptwatchPortStats{},
		netnsPath:  cfg.NetNSPath,
	}
	defer func() {
		if err != nil {
			t.maps = nil // the caller's, for the next mode
			t.Close()
		} else {
			t.extras = ex
		}
	}()

	if cfg.LiveEvents {
		t.reader, err = ringbuf.NewReader(maps.Maps["aw_events"])
		if err != nil {
			return nil, fmt.Errorf("opening ring buffer: %w", err)
		}
	}

	progs := func(i int) *ebpf.Program { return coll.Programs[accept[i]] }
	switch mode {
	case ModeFexit:
		err = t.attach(link.AttachTracing(link.TracingOptions{Program: progs(0)}))
		if errors.Is(err, ebpf.ErrNotSupported) {
			// The program loads, but the kernel has no BPF trampoline
			// for its functions: arm64 before 6.4 (no ftrace direct calls).
			err = fmt.Errorf("kernel cannot attach fexit programs to its functions: %w", err)
		}
	case ModeKretprobe:
		if err = t.attach(link.Kprobe("inet_csk_accept", progs(0), nil)); err == nil {
			err = t.attach(link.Kretprobe("inet_csk_accept", progs(1), nil))
		}
		if errors.Is(err, os.ErrNotExist) {
			err = fmt.Errorf("kernel has no kprobe support (no kprobe PMU or kprobe_events): %w", err)
		}
	case ModeTracepoint:
		// One program at exit, or an entry and an exit program (old kernels).
		for _, name := range []string{"accept4", "accept"} {
			if len(accept) == 2 {
				if err = t.attach(link.Tracepoint("syscalls", "sys_enter_"+name, progs(0), nil)); err != nil {
					break
				}
			}
			if err = t.attach(link.Tracepoint("syscalls", "sys_exit_"+name, progs(len(accept)-1), nil)); err != nil {
				break
			}
		}
	}
	if err != nil {
		return nil, fmt.Errorf("attaching: %w", perfEventError(err))
	}
	for _, name := range tcpPrograms {
		if err := t.attach(link.AttachTracing(link.TracingOptions{Program: coll.Programs[name]})); err != nil {
			return nil, fmt.Errorf("attaching %s: %w", name, err)
		}
	}
	if syn != "" {
		var l link.Link
		var synErr error
		if mode == ModeFexit {
			l, synErr = link.AttachTracing(link.TracingOptions{Program: coll.Programs[syn]})
		} else {
			l, synErr = link.Kprobe("tcp_conn_request", coll.Programs[syn], nil)
		}
		if synErr != nil {
			logf("attach mode %s: SYN counter at tcp_conn_request unavailable: %s", mode, oneLine(synErr.Error()))
		} else {
			t.links = append(t.links, l)
			t.synCounter = SynConnRequest
			logf("SYN counter: falling back to tcp_conn_request (%s, attach mode %s)", syn, mode)
		}
	}
	if t.synCounter == "" && !cfg.NoSynCounter {
		logf("SYN counter: none in attach mode %s: SYNS not counted", mode)
	}
	t.counters, _ = t.readNetstat()
	t.prevCounters = t.counters
	t.start = time.Now()
	t.windowStart = t.start
	return t, nil
}

// loadPrograms loads only the named programs, on the maps in opts.
func loadPrograms(spec *ebpf.CollectionSpec, names []string, opts ebpf.CollectionOptions) (*ebpf.Collection, error) {
	spec = spec.Copy()
	for name := range spec.Programs {
		if !slices.Contains(names, name) {
			delete(spec.Programs, name)
		}
	}
	return ebpf.NewCollectionWithOptions(spec, opts)
}

func (t *Tracer) attach(l link.Link, err error) error {
	if err != nil {
		return err
	}
	t.links = append(t.links, l)
	return nil
}

// Mode is the attach mode in use.
func (t *Tracer) Mode() string { return t.mode }

// SynCounter says where SYNs are counted: SynCgroup, SynConnRequest, or
// "" when they are not.
func (t *Tracer) SynCounter() string { return t.synCounter }

// DropCounters says which accept-queue drops are attributed to addresses
// (DropsSyn, DropsFinalAck); none: only the kernel's global counters.
func (t *Tracer) DropCounters() []string {
	if t.extras == nil {
		return nil
	}
	return t.extras.drops
}

// Started is when every program was attached: the zero of every total, the
// start of the first window and of the whole run's summary.
func (t *Tracer) Started() time.Time { return t.start }

// Close detaches and unloads every program and map. It is safe to call twice.
func (t *Tracer) Close() error {
	var errs []error
	for _, l := range t.links {
		errs = append(errs, l.Close())
	}
	t.links = nil
	if t.extras != nil {
		t.extras.Close()
		t.extras = nil
	}
	if t.reader != nil {
		errs = append(errs, t.reader.Close())
		t.reader = nil
	}
	if t.coll != nil {
		t.coll.Close()
		t.coll = nil
	}
	if t.maps != nil {
		t.maps.Close()
		t.maps = nil
	}
	if t.addrWin != nil {
		t.addrWin.close()
		t.addrWin = nil
	}
	return errors.Join(errs...)
}

// Read waits up to wait for the next accept event and decodes it into ev.
// It returns false when no event came in that time; with wait 0 it only
// takes what is already queued.
func (t *Tracer) Read(ev *report.Event, wait time.Duration) (bool, error) {
	if t.reader == nil {
		time.Sleep(wait)
		return false, nil
	}
	// With records queued the read cannot block: skip the clock read that
	// a deadline costs (once per live line).
	if wait > 0 && t.reader.AvailableBytes() == 0 {
		t.reader.SetDeadline(time.Now().Add(wait))
		t.deadlinePast = false
	} else if !t.deadlinePast {
		t.reader.SetDeadline(pastDeadline)
		t.deadlinePast = true
	}
	if err := t.reader.ReadInto(&t.rec); err != nil {
		if errors.Is(err, os.ErrDeadlineExceeded) {
			return false, nil
		}
		return false, fmt.Errorf("reading ring buffer: %w", err)
	}
	if err := decodeEvent(t.rec.RawSample, t.bootWall, ev, &t.comm); err != nil {
		return false, err
	}
	ev.Cgroup, ev.Container = t.cgroups.Lookup(ev.CgroupID)
	return true, nil
}

// pastDeadline makes a ring-buffer read return at once when nothing is
// queued (the zero time would mean no deadline).
var pastDeadline = time.Unix(1, 0)

// Pending says whether live events are queued, so a caller can flush its
// output when the ring runs dry.
func (t *Tracer) Pending() bool {
	return t.reader != nil && t.reader.AvailableBytes() > 0
}

var eventSize = int(unsafe.Sizeof(acceptwatchEvent{}))

// commCache keeps the last comm's string: most events come from a few
// processes, and a string per event was a third of the reader's allocations.
type commCache struct {
	raw [16]int8
	s   string
}

func (c *commCache) get(raw [16]int8) string {
	if c == nil {
		return commString(raw)
	}
	if raw != c.raw || c.s == "" {
		c.raw, c.s = raw, commString(raw)
	}
	return c.s
}

func decodeEvent(raw []byte, bootWall time.Time, ev *report.Event, comms *commCache) error {
	if len(raw) < eventSize {
		return fmt.Errorf("short event: %d bytes, want %d", len(raw), eventSize)
	}
	e := (*acceptwatchEvent)(unsafe.Pointer(&raw[0]))
	*ev = report.Event{
		Time:       bootWall.Add(time.Duration(e.TsNs)),
		PID:        e.Pid,
		NetNS:      e.Netns,
		CgroupID:   e.CgroupId,
		Comm:       comms.get(e.Comm),
		LocalAddr:  addrFrom16(e.Laddr, e.Family),
		LocalPort:  e.Lport,
		RemoteAddr: addrFrom16(e.Raddr, e.Family),
		RemotePort: e.Rport,
		QueueWait:  time.Duration(e.QueueWaitNs),
		HasWait:    e.Flags&uint8(acceptwatchEventFlagsEVENT_F_WAIT) != 0,
		Backlog:    e.Backlog,
		BacklogMax: e.BacklogMax,
		HasBacklog: e.Flags&uint8(acceptwatchEventFlagsEVENT_F_BACKLOG) != 0,
		ClientGone: e.Flags&uint8(acceptwatchEventFlagsEVENT_F_GONE) != 0,
		State:      tcpState(e.State),
	}
	return nil
}

func commString(c [16]int8) string {
	b := make([]byte, 0, len(c))
	for _, ch := range c {
		if ch == 0 {
			break
		}
		b = append(b, byte(ch))
	}
	return string(b)
}

func oneLine(s string) string {
	return strings.Join(strings.Fields(s), " ")
}

// tcpStates are the kernel's TCP states (include/net/tcp_states.h).
var tcpStates = []string{"", "ESTABLISHED", "SYN_SENT", "SYN_RECV", "FIN_WAIT1", "FIN_WAIT2",
	"TIME_WAIT", "CLOSE", "CLOSE_WAIT", "LAST_ACK", "LISTEN", "CLOSING", "NEW_SYN_RECV"}

func tcpState(s uint8) string {
	if int(s) < len(tcpStates) && s > 0 {
		return tcpStates[s]
	}
	return fmt.Sprintf("state %d", s)
}
