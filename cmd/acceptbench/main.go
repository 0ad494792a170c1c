// Command acceptbench measures what acceptwatch costs on this machine: accept
// throughput with and without it, lost events, start-up time, memory and
// exactness with a million remote addresses, and the kernel-side cost per
// event of each attach mode. Traffic stays on loopback; every part is bounded
// in count and time.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"
)

// options holds every command-line flag.
type options struct {
	acceptwatch   string        // binary to run; empty: build ./cmd/acceptwatch
	sections      string        // comma-separated parts to run
	pairs         int           // with/without pairs per throughput mode
	round         time.Duration // length of one throughput round
	clients       int           // concurrent dialing threads
	acceptors     int           // accepting threads
	sources       int           // client source addresses in throughput rounds
	starts        int           // start-up measurements per attach mode
	scale         uint64        // distinct remote addresses of the scale run
	scaleDefault  bool          // also run the scale run at the default capacity
	markdown      string        // also write the report here, as markdown
	snapshotConns int           // established connections in the snapshot section
	snapshotRuns  int           // timed runs per command there
	attach        string        // attach mode of the cpu section
	cpuRounds     int           // rounds of the cpu section
	cpuRound      time.Duration // measured storm of one cpu row
	vmKernel      string        // kernel of the cpu-vm section
	vmModes       string        // attach modes of the cpu-vm section
	vmRounds      int           // rounds of the cpu section in each VM
	cpuRows       string        // only these rows of the cpu section (ids, comma-separated; empty: all)
	guest         bool          // running inside a vmtest VM (set by cpu-vm)
	tablesJSON    bool          // print tables as JSON lines (cpu-vm reads them)
	topAddresses  uint64        // distinct addresses in the live table's run
}

// defaultSections run without -sections; throughput (with/without ratios
// of accept rates, which move with other work on a shared machine) runs on
// request.
const (
	defaultSections = "startup,cpu,cpu-vm,kernel,scale,snapshot,top"
	allSections     = defaultSections + ",throughput"
)

// attachMode is the mode the cpu section measures and hooks.
func (o *options) attachMode() string { return o.attach }

func parseFlags(args []string, stderr io.Writer) (*options, error) {
	o := &options{}
	fs := flag.NewFlagSet("acceptbench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&o.acceptwatch, "acceptwatch", "", "acceptwatch binary (default: build ./cmd/acceptwatch into a temporary directory)")
	fs.StringVar(&o.sections, "sections", defaultSections, "parts to run, comma-separated")
	fs.IntVar(&o.pairs, "pairs", 16, "without/with round pairs per throughput mode")
	fs.DurationVar(&o.round, "round", 1500*time.Millisecond, "length of a throughput round")
	fs.IntVar(&o.clients, "clients", 3, "concurrent client threads")
	fs.IntVar(&o.acceptors, "acceptors", 2, "server threads calling accept()")
	fs.IntVar(&o.sources, "sources", 64, "client source addresses (127.0.1.x) in throughput rounds")
	fs.IntVar(&o.starts, "starts", 20, "start-up measurements per attach mode")
	fs.Uint64Var(&o.scale, "scale", 1_000_000, "distinct remote addresses in the scale run (0: skip)")
	fs.BoolVar(&o.scaleDefault, "scale-default", true, "repeat the scale run at the default --max-addresses")
	fs.IntVar(&o.snapshotConns, "snapshot-conns", 100_000, "established connections in the snapshot section")
	fs.IntVar(&o.snapshotRuns, "snapshot-runs", 7, "timed runs per command in the snapshot section")
	fs.Uint64Var(&o.topAddresses, "top-addresses", 100_000, "distinct addresses in the map while the live table (-o top) is measured")
	fs.StringVar(&o.markdown, "markdown", "", "also write the report as markdown to this `file`")
	fs.StringVar(&o.attach, "attach", "tracepoint", "attach mode of the cpu section: fexit, kretprobe or tracepoint")
	fs.IntVar(&o.cpuRounds, "cpu-rounds", 8, "rounds of the cpu section (each runs every row once)")
	fs.DurationVar(&o.cpuRound, "cpu-round", 1500*time.Millisecond, "measured storm of one row in the cpu section")
	fs.StringVar(&o.cpuRows, "cpu-rows", "", "only these rows of the cpu section, by id: none,quiet,quiet-nosyn,quiet-cgroup,live,json,bpftrace,empty:HOOK,empty:all (default all)")
	fs.StringVar(&o.vmKernel, "vm-kernel", "6.12", "kernel of the cpu-vm section (a vmtest matrix name such as 6.12 or arm64/7.x, or a kernel image path; the guest programs are built for its architecture)")
	fs.StringVar(&o.vmModes, "vm-modes", "fexit,kretprobe,tracepoint", "attach modes of the cpu-vm section, one VM each")
	fs.IntVar(&o.vmRounds, "vm-rounds", 6, "rounds of the cpu section inside each VM")
	fs.BoolVar(&o.guest, "guest", false, "running inside a vmtest VM (set by the cpu-vm section)")
	fs.BoolVar(&o.tablesJSON, "tables-json", false, "print the tables as JSON lines (the cpu-vm section reads them)")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected arguments: %s", strings.Join(fs.Args(), " "))
	}
	if o.snapshotConns < 1 || o.snapshotRuns < 1 {
		return nil, fmt.Errorf("-snapshot-conns and -snapshot-runs must be positive")
	}
	if o.topAddresses < 1 {
		return nil, fmt.Errorf("-top-addresses must be positive")
	}
	if o.pairs < 1 || o.clients < 1 || o.acceptors < 1 || o.sources < 1 || o.starts < 1 || o.round <= 0 ||
		o.cpuRounds < 1 || o.cpuRound <= 0 || o.vmRounds < 1 {
		return nil, fmt.Errorf("-pairs, -clients, -acceptors, -sources, -starts, -round, -cpu-rounds, -cpu-round and -vm-rounds must be positive")
	}
	return o, nil
}

func main() {
	if len(os.Args) > 1 && os.Args[1] == holderArg {
		os.Exit(holder(os.Args[2:])) // a child of the snapshot section
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	if err != nil {
		fmt.Fprintf(os.Stderr, "acceptbench: %v\n", err)
		os.Exit(1)
	}
}
