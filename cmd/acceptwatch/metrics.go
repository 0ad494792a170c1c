package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"runtime/debug"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/spf13/pflag"

	"github.com/acceptwatch/acceptwatch/report"
	"github.com/acceptwatch/acceptwatch/report/metrics"
	"github.com/acceptwatch/acceptwatch/tracer"
)

// DefaultMetricsPort is acceptwatch's Prometheus port: free in Prometheus'
// default port allocations (README: Always on).
const DefaultMetricsPort = 10074

// maxTopAddresses bounds --metrics-top-addresses: each address is five series.
const maxTopAddresses = 10000

// metricsOptions are the flags of the Prometheus exporter.
type metricsOptions struct {
	enable bool   // --metrics: serve on the default port
	addr   string // --metrics-addr
	top    int    // --metrics-top-addresses
	live   bool   // --live: live lines too
}

func (m *metricsOptions) flags(fs *pflag.FlagSet) {
	fs.BoolVar(&m.enable, "metrics", false, fmt.Sprintf("serve Prometheus metrics on :%d/metrics and keep running (no summaries)", DefaultMetricsPort))
	fs.StringVar(&m.addr, "metrics-addr", "", "serve Prometheus metrics on this `host:port` instead (implies --metrics)")
	fs.IntVar(&m.top, "metrics-top-addresses", 0, fmt.Sprintf("also export the `N` busiest remote addresses (0-%d; bounded memory)", maxTopAddresses))
	fs.BoolVar(&m.live, "live", false, "with --metrics: print live lines too")
}

func (m *metricsOptions) on() bool { return m.enable || m.addr != "" }

func (o *options) validateMetrics() error {
	m := &o.metrics
	if !m.on() {
		switch {
		case m.top != 0:
			return usagef("--metrics-top-addresses needs --metrics or --metrics-addr")
		case m.live:
			return usagef("--live needs --metrics or --metrics-addr (without them live lines are on)")
		}
		return nil
	}
	if m.addr == "" {
		m.addr = ":" + strconv.Itoa(DefaultMetricsPort)
	}
	host, port, err := net.SplitHostPort(m.addr)
	if err != nil {
		return usagef("invalid --metrics-addr %q: want host:port or :port", m.addr)
	}
	if n, err := strconv.Atoi(port); err != nil || n < 0 || n > 65535 {
		return usagef("invalid --metrics-addr %q: port %q is not 0-65535", m.addr, port)
	}
	if host != "" && net.ParseIP(host) == nil && host != "localhost" {
		return usagef("invalid --metrics-addr %q: host must be an IP address or localhost", m.addr)
	}
	if m.top < 0 || m.top > maxTopAddresses {
		return usagef("invalid --metrics-top-addresses %d: must be 0-%d", m.top, maxTopAddresses)
	}
	if o.interval > 0 {
		return usagef("--interval and --metrics exclude each other: Prometheus keeps the windows (rate(), increase())")
	}
	return nil
}

// configure sets up the tracer for the exporter: no per-address counting
// without top addresses, else two address maps that take turns.
func (m *metricsOptions) configure(o *options, cfg *tracer.Config) {
	cfg.LiveEvents = m.live || o.count > 0
	cfg.NoAddresses = m.top == 0
	cfg.AddressWindows = m.top > 0
}

// serveMetrics runs the exporter until ctx ends, --duration passes or
// --count accepts were seen. Live lines go to w with --live.
func serveMetrics(ctx context.Context, o *options, t *tracer.Tracer, w report.Writer, out *bufio.Writer, stderr io.Writer) error {
	m := &o.metrics
	ln, err := net.Listen("tcp", m.addr)
	if err != nil {
		return fmt.Errorf("metrics: %w", err)
	}
	maps := 2
	if m.top == 0 {
		maps = 0
	}
	ver, rev := buildVersion()
	col := metrics.New(t, metrics.Options{
		TopAddresses: m.top,
		MaxAddresses: o.maxAddresses,
		AddressMaps:  maps,
		Version:      ver,
		Revision:     rev,
	})
	reg := prometheus.NewRegistry()
	reg.MustRegister(col, collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg, ErrorHandling: promhttp.ContinueOnError}))
	mux.HandleFunc("/{$}", func(rw http.ResponseWriter, _ *http.Request) {
		fmt.Fprint(rw, "<html><body>acceptwatch: <a href=\"/metrics\">metrics</a></body></html>\n")
	})
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	serveErr := make(chan error, 1)
	go func() { serveErr <- srv.Serve(ln) }()
	var served <-chan error = serveErr
	defer func() {
		sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		srv.Shutdown(sctx) //nolint:errcheck // exiting anyway
	}()
	fmt.Fprintf(stderr, "acceptwatch: serving metrics on http://%s/metrics\n", ln.Addr())
	if err := writeReady(o.readyFile, t.Mode()); err != nil {
		return err
	}

	if m.top > 0 {
		fillErr := make(chan error, 1)
		stopWatch := make(chan struct{})
		defer close(stopWatch)
		go func() { fillErr <- watchFill(t, col, stopWatch) }()
		served = mergeErr(served, fillErr)
	}

	var deadline time.Time
	if o.duration > 0 {
		deadline = time.Now().Add(o.duration)
	}
	var ev report.Event
	var seen uint64
	wait := tracer.PollInterval
	for {
		select {
		case err := <-served:
			return fmt.Errorf("metrics: %w", err)
		default:
		}
		if wait > 0 && (ctx.Err() != nil || (!deadline.IsZero() && !time.Now().Before(deadline))) {
			wait = 0 // print what is already queued, then end
		}
		ok, err := t.Read(&ev, wait)
		if err != nil {
			return err
		}
		if !ok && wait == 0 {
			break
		}
		if ok {
			seen++
			if m.live {
				if err := w.Event(ev); err != nil {
					return err
				}
			}
			if o.count > 0 && seen >= o.count {
				break
			}
		}
		if !ok || !t.Pending() {
			if err := out.Flush(); err != nil {
				return err
			}
		}
	}
	return out.Flush()
}

// fillInterval is how often the fill of the address map in use is checked.
// The map is swapped when a quarter full: the other three quarters absorb
// new addresses while this process waits for a CPU and the swap completes
// (a default map of 65536 takes 49152 more, 490 ms at 100000 new addresses
// a second).
const fillInterval = 10 * time.Millisecond

// watchFill swaps and drains the address map in use when it is a quarter
// full, so that it never fills between scrapes (README: Always on).
func watchFill(t *tracer.Tracer, col *metrics.Collector, stop <-chan struct{}) error {
	tick := time.NewTicker(fillInterval)
	defer tick.Stop()
	for {
		select {
		case <-stop:
			return nil
		case <-tick.C:
		}
		used, size, err := t.AddressFill()
		if err != nil {
			return err
		}
		if 4*used >= size {
			if err := col.Rotate(); err != nil {
				return err
			}
		}
	}
}

// mergeErr returns a channel that gets the first error of a and b.
func mergeErr(a, b <-chan error) <-chan error {
	out := make(chan error, 2)
	go func() {
		select {
		case err := <-a:
			out <- err
		case err := <-b:
			out <- err
		}
	}()
	return out
}

// buildVersion is the module version and VCS revision, for build_info:
// the commit Go recorded ("-dirty" if the work tree had changes), or where
// it recorded none the one make stamped (buildCommit).
func buildVersion() (version, revision string) {
	version, revision = "unknown", "unknown"
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return
	}
	version = bi.Main.Version
	modified := false
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			revision = s.Value
		case "vcs.modified":
			modified = s.Value == "true"
		}
	}
	if revision == "unknown" && buildCommit != "" {
		return version, buildCommit
	}
	if modified {
		revision += "-dirty"
	}
	return
}
