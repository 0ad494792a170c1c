// Package metrics exports acceptwatch's counters to Prometheus. The
// collector reads the tracer's exact kernel counters on each scrape (they
// are counted in the kernel, never incremented here), and keeps the optional
// top remote addresses in bounded memory.
//
// Names follow Prometheus conventions: an acceptwatch_ prefix, _total on
// counters, seconds, and a port label for per-listening-port series.
package metrics

import (
	"runtime"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/acceptwatch/acceptwatch/tracer"
)

const namespace = "acceptwatch"

// Source is what the collector reads: a *tracer.Tracer.
type Source interface {
	Snapshot(drain func(tracer.AddressCounts)) (tracer.Snapshot, error)
	RotateAddresses(func(tracer.AddressCounts)) error
	Mode() string
	SynCounter() string // "" when SYNs are not counted
}

// Options configure a Collector.
type Options struct {
	TopAddresses int       // remote addresses exported (0: none); needs Config.AddressWindows
	MaxAddresses uint32    // capacity of each kernel address map, exported as a gauge
	AddressMaps  int       // kernel address maps of that capacity (0, 1 or 2)
	Version      string    // for acceptwatch_build_info
	Revision     string    // commit, for acceptwatch_build_info
	Start        time.Time // created time of the histograms
}

// Collector is a prometheus.Collector over a tracer.
type Collector struct {
	src  Source
	opts Options

	mu        sync.Mutex // scrapes and rotations
	top       *topTable  // nil without TopAddresses
	rotations uint64
	native    nativeLayout
	classic   []classicBucket
}

// New returns a Collector reading src.
func New(src Source, opts Options) *Collector {
	bounds := tracer.WaitBuckets()
	c := &Collector{src: src, opts: opts, classic: classicLayout(bounds)}
	c.native = newNativeLayout(bounds, tracer.WaitLinearBelow.Seconds())
	if opts.TopAddresses > 0 {
		c.top = newTopTable(opts.TopAddresses)
	}
	if c.opts.Start.IsZero() {
		c.opts.Start = time.Now()
	}
	return c
}

func desc(name, help string, labels ...string) *prometheus.Desc {
	return prometheus.NewDesc(namespace+"_"+name, help, labels, nil)
}

// Each table row is one series family: a new counter is one line.

// portCounters are per listening port.
var portCounters = []struct {
	desc  *prometheus.Desc
	value func(*tracer.PortCounters) uint64
	syns  bool // only where the attach mode counts SYNs
}{
	{desc("accepts_total", "Connections taken from the port's accept queue by accept().", "netns", "port"), func(p *tracer.PortCounters) uint64 { return p.Accepted }, false},
	{desc("handshakes_total", "TCP handshakes completed on the port (connections that entered its accept queue).", "netns", "port"), func(p *tracer.PortCounters) uint64 { return p.Handshakes }, false},
	{desc("not_accepted_total", "Connections whose handshake completed and whose socket was closed before any accept() took it.", "netns", "port"), func(p *tracer.PortCounters) uint64 { return p.NotAccepted }, false},
	{desc("client_gone_total", "Connections accepted after the client had already closed or reset them.", "netns", "port"), func(p *tracer.PortCounters) uint64 { return p.ClientGone }, false},
	{desc("synack_retransmits_total", "SYN-ACKs the listener resent: handshakes the client had not completed (half-open connections).", "netns", "port"), func(p *tracer.PortCounters) uint64 { return p.SynackRetrans }, false},
	{desc("syns_total", "SYNs that reached the listener.", "netns", "port"), func(p *tracer.PortCounters) uint64 { return p.Syns }, true},
	{desc("accept_queue_drops_total", "Completed handshakes (final ACKs) dropped because the port's accept queue was full (kernels with the TCP_LISTEN_OVERFLOW drop reason).", "netns", "port"), func(p *tracer.PortCounters) uint64 { return p.Drops }, false},
}

// portGauges are per listening port.
var portGauges = []struct {
	desc  *prometheus.Desc
	value func(*tracer.PortCounters) uint32
}{
	{desc("accept_queue_length_max", "Most connections waiting in the port's accept queue, as accept() found it, since the previous scrape.", "netns", "port"), func(p *tracer.PortCounters) uint32 { return p.BacklogMaxEpoch }},
	{desc("accept_queue_limit", "The port's accept-queue limit (the listen() backlog, capped by net.core.somaxconn), as last seen by accept().", "netns", "port"), func(p *tracer.PortCounters) uint32 { return p.BacklogLimit }},
}

var queueWait = desc("queue_wait_seconds", "Time from a completed handshake to the accept() that took the connection (the kernel's buckets: classic and native).", "netns", "port")

var addrOverflow = desc("address_overflow_total", "Events not attributed to a remote address because the kernel's address map was full (per-port counters still have them).", "event")

// statCounters are what the kernel could not record.
var statCounters = []struct {
	desc   *prometheus.Desc
	value  func(*tracer.Stats) uint64
	labels []string
}{
	{desc("lost_events_total", "Live events the ring buffer could not take (counters stay exact)."), func(s *tracer.Stats) uint64 { return s.LostEvents }, nil},
	{addrOverflow, func(s *tracer.Stats) uint64 { return s.OverflowAccepts }, []string{"accept"}},
	{addrOverflow, func(s *tracer.Stats) uint64 { return s.OverflowHandshakes }, []string{"handshake"}},
	{addrOverflow, func(s *tracer.Stats) uint64 { return s.OverflowOther }, []string{"other"}},
	{desc("queue_waits_unknown_total", "Handshakes whose queue wait could not be measured: too many connections queued at once."), func(s *tracer.Stats) uint64 { return s.WaitsUnknown }, nil},
	{desc("port_overflow_total", "Events not counted per port: too many listening ports."), func(s *tracer.Stats) uint64 { return s.PortsOverflow }, nil},
	{desc("hook_runs_missed_total", "Runs of acceptwatch's programs the kernel skipped because a BPF program was already running on that CPU: counts may be short by as much."), func(s *tracer.Stats) uint64 { return s.MissedRuns }, nil},
}

// kernelCounters are the TcpExt counters of acceptwatch's network namespace
// (all ports), by their /proc/net/netstat names.
var kernelCounters = map[string]*prometheus.Desc{
	"ListenOverflows":      desc("tcpext_listen_overflows_total", "TcpExt ListenOverflows: completed handshakes dropped because an accept queue was full (all ports, since boot)."),
	"ListenDrops":          desc("tcpext_listen_drops_total", "TcpExt ListenDrops: SYNs and handshakes dropped by listeners for any reason (all ports, since boot)."),
	"TCPReqQFullDrop":      desc("tcpext_reqq_full_drops_total", "TcpExt TCPReqQFullDrop: SYNs dropped because a SYN queue was full and syncookies were off (all ports, since boot)."),
	"TCPReqQFullDoCookies": desc("tcpext_reqq_full_do_cookies_total", "TcpExt TCPReqQFullDoCookies: SYN queue full, syncookies sent instead (all ports, since boot)."),
	"SyncookiesSent":       desc("tcpext_syncookies_sent_total", "TcpExt SyncookiesSent (all ports, since boot)."),
	"SyncookiesRecv":       desc("tcpext_syncookies_recv_total", "TcpExt SyncookiesRecv: valid syncookies received (all ports, since boot)."),
	"SyncookiesFailed":     desc("tcpext_syncookies_failed_total", "TcpExt SyncookiesFailed: invalid syncookies received (all ports, since boot)."),
}

// addrCounters are per remote address, for the top addresses only.
var addrCounters = []struct {
	desc  *prometheus.Desc
	value func(*tracer.AddressCounts) uint64
	syns  bool
}{
	{desc("address_accepts_total", "Connections from this remote address accepted (top addresses only: since it entered the top table).", "netns", "addr"), func(a *tracer.AddressCounts) uint64 { return a.Accepted }, false},
	{desc("address_handshakes_total", "Handshakes completed by this remote address (top addresses only).", "netns", "addr"), func(a *tracer.AddressCounts) uint64 { return a.Handshakes }, false},
	{desc("address_not_accepted_total", "Connections from this remote address never accepted (top addresses only).", "netns", "addr"), func(a *tracer.AddressCounts) uint64 { return a.NotAccepted }, false},
	{desc("address_synack_retransmits_total", "SYN-ACKs resent to this remote address (top addresses only).", "netns", "addr"), func(a *tracer.AddressCounts) uint64 { return a.SynackRetrans }, false},
	{desc("address_syns_total", "SYNs from this remote address (top addresses only).", "netns", "addr"), func(a *tracer.AddressCounts) uint64 { return a.Syns }, true},
}

var (
	attachInfo      = desc("attach_info", "How acceptwatch hooks accept() on this kernel, and what counts SYNs (value 1).", "mode", "syn_counter")
	buildInfo       = desc("build_info", "acceptwatch's version (value 1).", "version", "revision", "goversion")
	addrMapCapacity = desc("address_map_capacity", "Entries each kernel address map holds (--max-addresses).")
	addrMaps        = desc("address_maps", "Kernel address maps of that capacity: 0 without top addresses, 2 with (one fills while the other is drained).")
	rotations       = desc("address_map_rotations_total", "Times the kernel's address maps were swapped and the full one drained into the top-address table.")
	evictions       = desc("address_evictions_total", "Remote addresses that left the top-address table (a busier one came in) or could not enter it.")
	evictedAccepts  = desc("address_evicted_accepts_total", "Accepts of evicted remote addresses: tracked + evicted + overflow accepts = all accepts.")
	topSize         = desc("top_addresses", "Remote addresses in the top-address table now.")
	scrapeErrors    = desc("scrape_error", "1 if reading the kernel's counters failed in this scrape.")
)

// Describe sends every descriptor.
func (c *Collector) Describe(ch chan<- *prometheus.Desc) {
	for _, m := range portCounters {
		ch <- m.desc
	}
	for _, m := range portGauges {
		ch <- m.desc
	}
	ch <- queueWait
	seen := map[*prometheus.Desc]bool{}
	for _, m := range statCounters {
		if !seen[m.desc] {
			seen[m.desc] = true
			ch <- m.desc
		}
	}
	for _, d := range kernelCounters {
		ch <- d
	}
	for _, m := range addrCounters {
		ch <- m.desc
	}
	for _, d := range []*prometheus.Desc{attachInfo, buildInfo, addrMapCapacity, addrMaps, rotations, evictions, evictedAccepts, topSize, scrapeErrors} {
		ch <- d
	}
}

// Rotate drains the kernel's full address map into the top table (see
// tracer.RotateAddresses). The collector does it on every scrape; call it
// also when the map in use fills up between scrapes.
func (c *Collector) Rotate() error {
	if c.top == nil {
		return nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.rotations++
	return c.src.RotateAddresses(c.top.add)
}

// Collect reads the counters and sends every series.
func (c *Collector) Collect(ch chan<- prometheus.Metric) {
	c.mu.Lock()
	defer c.mu.Unlock()
	failed := 0.0
	var drain func(tracer.AddressCounts)
	if c.top != nil {
		c.rotations++
		drain = c.top.add
	}
	snap, err := c.src.Snapshot(drain)
	if err != nil {
		ch <- prometheus.NewInvalidMetric(queueWait, err)
		failed = 1
	}
	ch <- prometheus.MustNewConstMetric(scrapeErrors, prometheus.GaugeValue, failed)
	counter := c.src.SynCounter()
	syns := counter != ""
	if counter == "" {
		counter = "none"
	}
	for i := range snap.Ports {
		p := &snap.Ports[i]
		port := strconv.Itoa(int(p.Port))
		netns := strconv.FormatUint(uint64(p.NetNS), 10)
		for _, m := range portCounters {
			if m.syns && !syns {
				continue
			}
			ch <- prometheus.MustNewConstMetric(m.desc, prometheus.CounterValue, float64(m.value(p)), netns, port)
		}
		for _, m := range portGauges {
			ch <- prometheus.MustNewConstMetric(m.desc, prometheus.GaugeValue, float64(m.value(p)), netns, port)
		}
		native, err := c.native.metric(queueWait, p.WaitBuckets, p.WaitSum, c.opts.Start, netns, port)
		if err != nil {
			ch <- prometheus.NewInvalidMetric(queueWait, err)
			continue
		}
		ch <- &waitHistogram{native: native, classic: c.classic, counts: p.WaitBuckets}
	}
	if err == nil {
		for _, m := range statCounters {
			ch <- prometheus.MustNewConstMetric(m.desc, prometheus.CounterValue, float64(m.value(&snap.Stats)), m.labels...)
		}
	}
	for _, k := range snap.Kernel {
		if d, ok := kernelCounters[k.Name]; ok {
			ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(k.Value))
		}
	}
	ch <- prometheus.MustNewConstMetric(attachInfo, prometheus.GaugeValue, 1, c.src.Mode(), counter)
	ch <- prometheus.MustNewConstMetric(buildInfo, prometheus.GaugeValue, 1, c.opts.Version, c.opts.Revision, runtime.Version())
	ch <- prometheus.MustNewConstMetric(addrMapCapacity, prometheus.GaugeValue, float64(c.opts.MaxAddresses))
	ch <- prometheus.MustNewConstMetric(addrMaps, prometheus.GaugeValue, float64(c.opts.AddressMaps))
	if c.top == nil {
		return
	}
	ch <- prometheus.MustNewConstMetric(rotations, prometheus.CounterValue, float64(c.rotations))
	ch <- prometheus.MustNewConstMetric(evictions, prometheus.CounterValue, float64(c.top.evictions))
	ch <- prometheus.MustNewConstMetric(evictedAccepts, prometheus.CounterValue, float64(c.top.evictedAccepts))
	ch <- prometheus.MustNewConstMetric(topSize, prometheus.GaugeValue, float64(len(c.top.heap)))
	for _, e := range c.top.heap {
		addr := e.Addr.String()
		netns := strconv.FormatUint(uint64(e.NetNS), 10)
		for _, m := range addrCounters {
			if m.syns && !syns {
				continue
			}
			ch <- prometheus.MustNewConstMetric(m.desc, prometheus.CounterValue, float64(m.value(&e.AddressCounts)), netns, addr)
		}
	}
}
