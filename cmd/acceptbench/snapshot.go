package main

// Section snapshot: acceptwatch --snapshot against the pipelines admins
// run (netstat | cut | grep | sort | uniq -c | sort -nr | head, and
// ss | awk | sort | uniq -c | sort -nr), with 100,000 established loopback
// connections (both ends: 200,000 sockets) and some half-open ones.

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// halfOpenConns is how many SYN_RECV request sockets the bench keeps: under
// the listen backlog, so no SYN cookie replaces them.
const halfOpenConns = 1000

// loopListener listens on 127.0.0.1 with the largest backlog.
func loopListener() (fd, port int, err error) {
	fd, err = unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return -1, 0, err
	}
	if err = unix.Bind(fd, &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err == nil {
		err = unix.Listen(fd, 65535)
	}
	if err != nil {
		unix.Close(fd)
		return -1, 0, err
	}
	sa, _ := unix.Getsockname(fd)
	return fd, sa.(*unix.SockaddrInet4).Port, nil
}

// connSet holds established loopback connections, both ends, as bare file
// descriptors (no Go objects: the bench's own memory stays flat).
type connSet struct {
	mu  sync.Mutex
	fds []int
}

func (c *connSet) add(fd int) {
	c.mu.Lock()
	c.fds = append(c.fds, fd)
	c.mu.Unlock()
}

func (c *connSet) close() {
	for _, fd := range c.fds {
		unix.Close(fd)
	}
	c.fds = nil
}

// establish makes connections first..first+n-1 to 127.0.0.1:port from
// sources spread over 127.3.x.y (1,000 per address: each has 28,000
// ephemeral ports), and accepts n from lfd, keeping both ends.
func establish(lfd, port, first, n int, set *connSet) error {
	var accepted atomic.Int64
	acceptErr := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		for accepted.Load() < int64(n) {
			nfd, _, err := unix.Accept4(lfd, unix.SOCK_CLOEXEC)
			if err != nil {
				if errors.Is(err, unix.EINTR) || errors.Is(err, unix.ECONNABORTED) {
					continue
				}
				acceptErr <- err
				return
			}
			set.add(nfd)
			accepted.Add(1)
		}
		acceptErr <- nil
	}()
	const workers = 4
	const perSource = 1000
	var next atomic.Int64
	var wg sync.WaitGroup
	var dialErr atomic.Value
	dst := &unix.SockaddrInet4{Port: port, Addr: [4]byte{127, 0, 0, 1}}
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := next.Add(1) - 1
				if i >= int64(n) {
					return
				}
				i += int64(first)
				src := [4]byte{127, 3, byte(i / perSource / 250), byte(1 + i/perSource%250)}
				fd, err := dialKeep(src, dst)
				if err != nil {
					dialErr.Store(err)
					return
				}
				set.add(fd)
			}
		}()
	}
	wg.Wait()
	if err, _ := dialErr.Load().(error); err != nil {
		return err
	}
	select {
	case err := <-acceptErr:
		return err
	case <-time.After(time.Minute):
		return fmt.Errorf("accepted %d of %d connections", accepted.Load(), n)
	}
}

// dialKeep connects from src (any port: IP_BIND_ADDRESS_NO_PORT lets
// different destinations share one) and returns the open descriptor.
func dialKeep(src [4]byte, dst *unix.SockaddrInet4) (int, error) {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return -1, err
	}
	unix.SetsockoptInt(fd, unix.IPPROTO_IP, unix.IP_BIND_ADDRESS_NO_PORT, 1)
	if err := unix.Bind(fd, &unix.SockaddrInet4{Addr: src}); err != nil {
		unix.Close(fd)
		return -1, err
	}
	if err := unix.Connect(fd, dst); err != nil {
		unix.Close(fd)
		return -1, fmt.Errorf("connect from %v: %w", src, err)
	}
	return fd, nil
}

// halfOpen leaves n handshakes in SYN_RECV on a TCP_DEFER_ACCEPT listener:
// it keeps the request socket (not a full one) until the client sends data,
// which these clients never do.
func halfOpen(n int, set *connSet) (port int, err error) {
	lfd, port, err := loopListener()
	if err != nil {
		return 0, err
	}
	set.add(lfd)
	if err := unix.SetsockoptInt(lfd, unix.IPPROTO_TCP, unix.TCP_DEFER_ACCEPT, 600); err != nil {
		return 0, err
	}
	dst := &unix.SockaddrInet4{Port: port, Addr: [4]byte{127, 0, 0, 1}}
	for i := range n {
		fd, err := dialKeep([4]byte{127, 4, byte(i / 250), byte(1 + i%250)}, dst)
		if err != nil {
			return 0, err
		}
		set.add(fd)
	}
	return port, nil
}

// Holders. A process may hold only RLIMIT_NOFILE descriptors (20,000 hard
// on these machines, and raising it needs CAP_SYS_RESOURCE), so the
// connections live in child processes of this binary, each holding both
// ends of at most perHolder of them, until its stdin closes.
const (
	holderArg = "-snapshot-holder"
	perHolder = 8000
)

// holder is the child: holder FIRST N PORT, the listener inherited as fd 3.
func holder(args []string) int {
	if len(args) != 3 {
		fmt.Fprintln(os.Stderr, "acceptbench holder: want FIRST N PORT")
		return 2
	}
	first, _ := strconv.Atoi(args[0])
	n, _ := strconv.Atoi(args[1])
	port, _ := strconv.Atoi(args[2])
	var lim unix.Rlimit
	unix.Getrlimit(unix.RLIMIT_NOFILE, &lim)
	lim.Cur = lim.Max
	unix.Setrlimit(unix.RLIMIT_NOFILE, &lim)
	var set connSet
	if err := establish(3, port, first, n, &set); err != nil {
		fmt.Fprintf(os.Stderr, "acceptbench holder: %v\n", err)
		return 1
	}
	fmt.Println("ready")
	io.Copy(io.Discard, os.Stdin) // until the bench is done
	return 0
}

// holdConnections makes n connections to the listener through holders; stop
// closes them all.
func holdConnections(lf *os.File, port, n int) (stop func(), err error) {
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	var stdins []io.Closer
	var cmds []*exec.Cmd
	stop = func() {
		for _, w := range stdins {
			w.Close()
		}
		for _, c := range cmds {
			c.Wait()
		}
	}
	for first := 0; first < n; first += perHolder {
		k := min(perHolder, n-first)
		cmd := exec.Command(self, holderArg, strconv.Itoa(first), strconv.Itoa(k), strconv.Itoa(port))
		cmd.ExtraFiles = []*os.File{lf}
		cmd.Stderr = os.Stderr
		in, err := cmd.StdinPipe()
		if err != nil {
			stop()
			return nil, err
		}
		out, err := cmd.StdoutPipe()
		if err != nil {
			stop()
			return nil, err
		}
		if err := cmd.Start(); err != nil {
			stop()
			return nil, err
		}
		stdins, cmds = append(stdins, in), append(cmds, cmd)
		// One holder at a time: its accepts then take its own connections.
		line := make([]byte, 6)
		if _, err := io.ReadFull(out, line); err != nil || string(line) != "ready\n" {
			stop()
			return nil, fmt.Errorf("holder of connections %d-%d failed", first, first+k-1)
		}
	}
	return stop, nil
}

// pipeline is one way of answering "who is connected".
type pipeline struct {
	name   string
	stages []string // shell commands joined with |
	times  []time.Duration
	rssKB  uint64 // peak RSS, summed over the stages
	out    string // last output
}

func (p *pipeline) shell(wrap func(i int, stage string) string) string {
	parts := make([]string, len(p.stages))
	for i, s := range p.stages {
		parts[i] = wrap(i, s)
	}
	return strings.Join(parts, " | ")
}

// run times one run of the whole pipeline.
func (p *pipeline) run() error {
	t0 := time.Now()
	out, err := exec.Command("sh", "-c", p.shell(func(_ int, s string) string { return s })).Output()
	d := time.Since(t0)
	if err != nil {
		return fmt.Errorf("%s: %w", p.name, err)
	}
	p.times = append(p.times, d)
	p.out = string(out)
	return nil
}

// peakRSS runs the pipeline once with each stage under GNU time, which
// reports the stage's peak RSS from wait4 (a stage forked by time, not by
// this large process, so no parent memory is folded in beyond time's own
// ~2 MB), and sums the stages: they run at the same time.
func (p *pipeline) peakRSS(dir string) (uint64, error) {
	files := make([]string, len(p.stages))
	cmd := p.shell(func(i int, s string) string {
		files[i] = filepath.Join(dir, fmt.Sprintf("rss-%d", i))
		return fmt.Sprintf("/usr/bin/time -f %%M -o %s %s", files[i], s)
	})
	if out, err := exec.Command("sh", "-c", cmd).CombinedOutput(); err != nil {
		return 0, fmt.Errorf("%s under time: %v: %s", p.name, err, out)
	}
	var sum uint64
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			return 0, err
		}
		// A stage that head closed early reports a signal line first.
		fields := strings.Fields(string(b))
		kb, err := strconv.ParseUint(fields[len(fields)-1], 10, 64)
		if err != nil {
			return 0, fmt.Errorf("%s: GNU time wrote %q", p.name, b)
		}
		sum += kb
	}
	return sum, nil
}

func (b *bench) snapshot() (*table, error) {
	n := b.o.snapshotConns
	t := &table{
		title: fmt.Sprintf("Snapshot: who is connected, with %d established loopback connections (%d sockets) and %d half-open, %d alternating runs each",
			n, 2*n, halfOpenConns, b.o.snapshotRuns),
		header: []string{"command", "median", "min", "max", "peak RSS", "vs acceptwatch"},
	}
	for _, tool := range []string{"netstat", "ss", "/usr/bin/time"} {
		if _, err := exec.LookPath(tool); err != nil {
			return nil, fmt.Errorf("needs %s (Debian packages net-tools, iproute2, time; make bench installs them)", tool)
		}
	}
	var set connSet
	defer set.close()
	hport, err := halfOpen(halfOpenConns, &set)
	if err != nil {
		return nil, fmt.Errorf("half-open connections: %w", err)
	}
	lfd, port, err := loopListener()
	if err != nil {
		return nil, err
	}
	lf := os.NewFile(uintptr(lfd), "listener") // the holders inherit it
	defer lf.Close()

	// Memory with nothing but the half-open port watched, before and
	// after the 100,000 connections appear on the other port.
	unwatched := func() (uint64, error) {
		p := &pipeline{stages: []string{b.bin + " --snapshot -o json -port " + strconv.Itoa(hport)}}
		var kbs []uint64
		for range 3 {
			kb, err := p.peakRSS(b.dir)
			if err != nil {
				return 0, err
			}
			kbs = append(kbs, kb)
		}
		slices.Sort(kbs)
		return kbs[1], nil
	}
	before, err := unwatched()
	if err != nil {
		return nil, err
	}
	t0 := time.Now()
	stop, err := holdConnections(lf, port, n)
	if err != nil {
		return nil, fmt.Errorf("establishing %d connections: %w", n, err)
	}
	defer stop()
	b.logf("snapshot: %d connections established in %s", n, time.Since(t0).Round(time.Millisecond))
	after, err := unwatched()
	if err != nil {
		return nil, err
	}

	ports := fmt.Sprintf("%d,%d", port, hport)
	aw := &pipeline{name: "acceptwatch --snapshot -port " + ports, stages: []string{b.bin + " --snapshot -port " + ports}}
	ssFilter := fmt.Sprintf("'sport = :%d or sport = :%d'", port, hport)
	pipes := []*pipeline{
		aw,
		{name: "netstat -nta | cut -b 45-68 | grep -oE IPv4 | sort | uniq -c | sort -nr | head", stages: []string{
			"netstat -nta", "cut -b 45-68", `grep -oE '([0-9]{1,3}\.){3}[0-9]{1,3}'`, "sort", "uniq -c", "sort -nr", "head"}},
		{name: "ss -Htn | awk | sort | uniq -c | sort -nr", stages: []string{
			"ss -Htn", `awk '{sub(/:[^:]*$/, "", $5); print $5}'`, "sort", "uniq -c", "sort -nr"}},
		{name: "ss -Htan 'sport = :P or sport = :Q' (filtered in the kernel) | awk | sort | uniq -c | sort -nr", stages: []string{
			"ss -Htan " + ssFilter, `awk '{sub(/:[^:]*$/, "", $5); print $5}'`, "sort", "uniq -c", "sort -nr"}},
	}
	for i := range b.o.snapshotRuns {
		order := slices.Clone(pipes)
		if i%2 == 1 {
			slices.Reverse(order)
		}
		for _, p := range order {
			if err := b.ctx.Err(); err != nil {
				return nil, err
			}
			if err := p.run(); err != nil {
				return nil, err
			}
		}
		b.logf("snapshot run %d/%d: acceptwatch %s, netstat pipeline %s, ss pipeline %s", i+1, b.o.snapshotRuns,
			ms(aw.times[i]), ms(pipes[1].times[i]), ms(pipes[2].times[i]))
	}
	for _, p := range pipes {
		if p.rssKB, err = p.peakRSS(b.dir); err != nil {
			return nil, err
		}
	}

	// Exactness: acceptwatch's counts against what the bench made.
	out, err := exec.Command(b.bin, "--snapshot", "-o", "json", "-v", "-port", ports).CombinedOutput()
	if err != nil {
		return nil, fmt.Errorf("acceptwatch --snapshot: %v: %s", err, out)
	}
	stderrLine, jsonLine, _ := bytes.Cut(out, []byte("\n"))
	var snap struct {
		Connections struct {
			Established uint64 `json:"established"`
			SynRecv     uint64 `json:"syn_recv"`
		} `json:"connections"`
		Addresses []json.RawMessage `json:"addresses"`
	}
	if !bytes.HasPrefix(stderrLine, []byte("acceptwatch: snapshot")) {
		jsonLine, stderrLine = stderrLine, jsonLine
	}
	if err := json.Unmarshal(bytes.TrimSpace(jsonLine), &snap); err != nil {
		return nil, fmt.Errorf("parsing acceptwatch --snapshot: %w", err)
	}
	exact := snap.Connections.Established == uint64(n) && snap.Connections.SynRecv == halfOpenConns &&
		len(snap.Addresses) == (n+999)/1000+halfOpenConns
	dumped := regexp.MustCompile(`dumped in (\S+)`).FindSubmatch(stderrLine)

	awMed := median(aw.times)
	for _, p := range pipes {
		slices.Sort(p.times)
		ratio := "1"
		if p != aw {
			ratio = fmt.Sprintf("%.1f× slower", float64(median(p.times))/float64(awMed))
		}
		t.add(p.name, ms(median(p.times)), ms(p.times[0]), ms(p.times[len(p.times)-1]), mib(p.rssKB*1024), ratio)
	}
	ssMed := median(pipes[2].times)
	b.target("snapshot ≥ 3× faster than ss | awk | sort | uniq -c | sort -nr",
		fmt.Sprintf("%.1f× (%s against %s, medians)", float64(ssMed)/float64(awMed), ms(awMed), ms(ssMed)), ssMed >= 3*awMed)
	grew := float64(after) / float64(before)
	b.target(fmt.Sprintf("snapshot memory does not grow with %d connections on an unwatched port", n),
		fmt.Sprintf("peak RSS %s without them, %s with them", mib(before*1024), mib(after*1024)), grew < 1.1)
	b.target("snapshot exact (established and SYN_RECV counts, addresses)",
		fmt.Sprintf("%d established, %d SYN_RECV, %d addresses", snap.Connections.Established, snap.Connections.SynRecv, len(snap.Addresses)), exact)
	t.notes = append(t.notes,
		fmt.Sprintf("clients from 127.3.x.y (1,000 per address, %d addresses) to one port; %d half-open handshakes, each from its own 127.4.x.y, to a TCP_DEFER_ACCEPT listener (the server keeps SYN_RECV request sockets); both ports watched", (n+999)/1000, halfOpenConns),
		fmt.Sprintf("the connections are held by %d child processes of the bench (at most %d each: RLIMIT_NOFILE), the half-open ones by the bench", (n+perHolder-1)/perHolder, perHolder),
		"each run is the whole command line under sh -c, output read to the end; the order of the commands alternates between runs",
		"the pipelines count every TCP socket of the machine (both ends, outbound too), as people run them; the last row is ss with the same port filter as acceptwatch, compiled into the kernel as acceptwatch does",
		"peak RSS: each stage under GNU time (wait4's ru_maxrss, which has a floor of about 2 MB: time's own memory), summed over the stages of a pipeline",
		fmt.Sprintf("acceptwatch --snapshot -v: the three sock_diag dumps took %s of its time (the cost of one sockdiag.Dumper.Snapshot call for %d watched sockets)", string(dumpedOr(dumped)), n+halfOpenConns))
	return t, nil
}

func dumpedOr(m [][]byte) []byte {
	if len(m) < 2 {
		return []byte("?")
	}
	d, err := time.ParseDuration(string(m[1]))
	if err != nil {
		return m[1]
	}
	return []byte(ms(d))
}
