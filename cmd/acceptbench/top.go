package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"
)

// topPhase is one stretch of the live table's run, sampled every second.
type topPhase struct {
	name      string
	addresses string
	cpu       []time.Duration // acceptwatch CPU in each second
	rssKB     []uint64        // VmRSS at the end of each second
	elapsed   time.Duration
	total     time.Duration // CPU over the phase
}

// perRefresh is the phase's CPU divided by the refreshes in it (one per
// second: the table refreshes in step with the clock).
func (p *topPhase) perRefresh() time.Duration {
	n := p.elapsed.Seconds()
	if n <= 0 {
		return 0
	}
	return time.Duration(float64(p.total) / n)
}

// liveTable runs acceptwatch -o top in a tmux terminal and measures what a
// refresh costs with o.topAddresses distinct addresses in the map: the
// process's CPU per second (one refresh a second) idle with an empty map,
// idle with the full map, while every address keeps connecting, and its
// resident memory over the whole run.
func (b *bench) liveTable() (*table, error) {
	n := b.o.topAddresses
	t := &table{
		title: fmt.Sprintf("Live table (-o top, --refresh 1s, 200x50 tmux terminal): CPU per refresh and memory with %d addresses", n),
		header: []string{"phase", "addresses in the map", "seconds", "CPU per refresh (mean)", "CPU per 1s sample: median",
			"max", "RSS first", "RSS last", "RSS max"},
	}
	if _, err := exec.LookPath("tmux"); err != nil {
		t.notes = append(t.notes, "not run: tmux is not installed (apt-get install tmux)")
		return t, nil
	}
	srv, err := listen(b.o.acceptors)
	if err != nil {
		return nil, err
	}
	defer srv.close()
	sock := filepath.Join(b.dir, "tmux.sock")
	ready := filepath.Join(b.dir, "top.ready")
	tmux := func(args ...string) (string, error) {
		out, err := exec.Command("tmux", append([]string{"-S", sock}, args...)...).CombinedOutput()
		if err != nil {
			return "", fmt.Errorf("tmux %s: %v: %s", args[0], err, out)
		}
		return string(out), nil
	}
	capacity := strconv.FormatUint(max(n*5/4, 65536), 10)
	cmd := fmt.Sprintf("exec %s -o top --port %d --max-addresses %s --ready-file %s 2>%s",
		b.bin, srv.port, capacity, ready, filepath.Join(b.dir, "top.stderr"))
	if _, err := tmux("new-session", "-d", "-s", "top", "-x", "200", "-y", "50", cmd); err != nil {
		return nil, err
	}
	defer exec.Command("tmux", "-S", sock, "kill-server").Run()
	deadline := time.Now().Add(15 * time.Second)
	for {
		if _, err := os.Stat(ready); err == nil {
			break
		}
		if time.Now().After(deadline) {
			errText, _ := os.ReadFile(filepath.Join(b.dir, "top.stderr"))
			return nil, fmt.Errorf("acceptwatch -o top did not start: %s", lastLine(string(errText)))
		}
		time.Sleep(20 * time.Millisecond)
	}
	out, err := tmux("display-message", "-p", "-t", "top", "#{pane_pid}")
	if err != nil {
		return nil, err
	}
	pid, err := strconv.Atoi(strings.TrimSpace(out))
	if err != nil {
		return nil, err
	}
	sample := func(p *topPhase, d time.Duration, during func()) {
		start, cpu0 := time.Now(), procCPU(pid)
		done := make(chan struct{})
		if during != nil {
			go func() { during(); close(done) }()
		}
		tick := time.NewTicker(time.Second)
		last := cpu0
		for time.Since(start) < d {
			<-tick.C
			c := procCPU(pid)
			p.cpu = append(p.cpu, c-last)
			p.rssKB = append(p.rssKB, pidStatusKB(pid, "VmRSS"))
			last = c
		}
		tick.Stop()
		if during != nil {
			<-done
		}
		p.elapsed, p.total = time.Since(start), procCPU(pid)-cpu0
	}
	var phases []*topPhase
	time.Sleep(2 * time.Second) // past start-up and the first draws
	empty := &topPhase{name: "idle", addresses: "0"}
	sample(empty, 5*time.Second, nil)
	phases = append(phases, empty)

	b.logf("live table: connecting from %d addresses", n)
	r := storm(srv, b.o.clients, distinctSources, 0, 10*time.Minute, n, nil)
	b.logf("live table: %d accepted in %s", r.accepted, r.elapsed.Round(100*time.Millisecond))
	time.Sleep(1500 * time.Millisecond) // a refresh with every address in the map
	screen, err := tmux("capture-pane", "-p", "-t", "top")
	if err != nil {
		return nil, err
	}
	// The title says how many addresses the map holds.
	seen := "?"
	if f := strings.Fields(strings.SplitN(screen, "\n", 2)[0]); slices.Contains(f, "addresses") {
		seen = f[slices.Index(f, "addresses")-1]
	}
	if seen != strconv.FormatUint(n, 10) {
		t.notes = append(t.notes, fmt.Sprintf("the table showed %s addresses, not %d (dials failed?)", seen, n))
	}
	full := &topPhase{name: "idle", addresses: seen}
	sample(full, 10*time.Second, nil)
	phases = append(phases, full)

	// Every address connects again, round after round: every row's rate and
	// count change at each refresh.
	busy := &topPhase{name: "all addresses connecting (storm)", addresses: seen}
	var again stormResult
	sample(busy, 15*time.Second, func() {
		again = storm(srv, b.o.clients, func(i uint64) [4]byte { return distinctSources(i % n) }, 0, 15*time.Second, 0, nil)
	})
	phases = append(phases, busy)
	after := &topPhase{name: "idle again", addresses: seen}
	sample(after, 30*time.Second, nil)
	phases = append(phases, after)

	if _, err := tmux("send-keys", "-t", "top", "q"); err != nil {
		return nil, err
	}
	for i := 0; i < 100; i++ { // the summary, then exit
		if _, err := os.Stat(fmt.Sprintf("/proc/%d", pid)); err != nil {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}

	for _, p := range phases {
		sorted := slices.Clone(p.cpu)
		slices.Sort(sorted)
		t.add(p.name, p.addresses, fmt.Sprintf("%.0f", p.elapsed.Seconds()), ms(p.perRefresh()), ms(median(sorted)),
			ms(sorted[len(sorted)-1]), mib(p.rssKB[0]*1024), mib(p.rssKB[len(p.rssKB)-1]*1024), mib(slices.Max(p.rssKB)*1024))
	}
	worst := max(full.perRefresh(), busy.perRefresh())
	b.target(fmt.Sprintf("live table: one refresh < 100 ms CPU with %d addresses", n),
		fmt.Sprintf("%s idle, %s while all connect (means; max 1 s sample %s)", ms(full.perRefresh()), ms(busy.perRefresh()),
			ms(max(slices.Max(full.cpu), slices.Max(busy.cpu)))), worst < 100*time.Millisecond)
	// Memory must not grow with time: the last 10 s against the first 10 s
	// after the map filled (1 MiB of slack for the Go runtime's own churn).
	var rss []uint64
	for _, p := range phases[1:] {
		rss = append(rss, p.rssKB...)
	}
	first, last := slices.Max(rss[:10]), slices.Max(rss[len(rss)-10:])
	b.target("live table: memory does not grow with time",
		fmt.Sprintf("RSS %s in the first 10 s with the map full, %s in the last 10 s (%d s later)", mib(first*1024), mib(last*1024), len(rss)-10),
		last <= first+1024)
	t.notes = append(t.notes,
		"CPU = all acceptwatch threads (/proc/PID/task/*/schedstat), drawing included; the table refreshes once a second in step with the clock, so a second's CPU is one refresh's",
		fmt.Sprintf("the storm phase: %d connections over the same %s addresses in %s; its CPU is the storm's, not acceptwatch's (BPF programs run in the storm's threads)",
			again.accepted, seen, again.elapsed.Round(100*time.Millisecond)),
		"the idle row with 0 addresses is the terminal UI's own cost per second")
	return t, nil
}
