package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

const readyLine = "acceptwatch: tracing"

// watch is one running acceptwatch process.
type watch struct {
	cmd      *exec.Cmd
	outPath  string
	startup  time.Duration // exec to the "tracing" line
	readyCPU time.Duration // CPU time used up to then
	json     bool          // -o json: stop parses the summary

	mu     sync.Mutex
	stderr bytes.Buffer
	done   chan struct{} // closed when stderr reaches EOF
}

// startWatch execs acceptwatch with args (plus "-o json" unless they choose
// an output), stdout to a file in dir, and waits for it to say it is
// tracing. If it exits instead, the error is its last stderr line.
func startWatch(bin, dir string, args ...string) (*watch, error) {
	f, err := os.CreateTemp(dir, "aw-out-*")
	if err != nil {
		return nil, err
	}
	defer f.Close()
	w := &watch{outPath: f.Name(), done: make(chan struct{}), json: true}
	if i := slices.IndexFunc(args, func(a string) bool { return a == "-o" || a == "--output" }); i >= 0 && i+1 < len(args) {
		w.json = args[i+1] == "json"
	} else {
		args = append(args, "-o", "json")
	}
	w.cmd = exec.Command(bin, args...)
	w.cmd.Stdout = f
	pr, err := w.cmd.StderrPipe()
	if err != nil {
		return nil, err
	}
	ready := make(chan time.Duration, 1)
	start := time.Now()
	if err := w.cmd.Start(); err != nil {
		return nil, err
	}
	go func() {
		defer close(w.done)
		sc := bufio.NewScanner(pr)
		for sc.Scan() {
			line := sc.Text()
			if strings.HasPrefix(line, readyLine) {
				select {
				case ready <- time.Since(start):
				default:
				}
			}
			w.mu.Lock()
			w.stderr.WriteString(line + "\n")
			w.mu.Unlock()
		}
	}()
	select {
	case w.startup = <-ready:
		w.readyCPU = w.cpuTime()
		return w, nil
	case <-w.done:
		err := w.cmd.Wait()
		os.Remove(w.outPath)
		return nil, fmt.Errorf("acceptwatch did not start (%v): %s", err, lastLine(w.stderrText()))
	case <-time.After(15 * time.Second):
		w.cmd.Process.Kill()
		w.cmd.Wait()
		os.Remove(w.outPath)
		return nil, errors.New("acceptwatch did not say it was tracing within 15 s")
	}
}

func (w *watch) stderrText() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.stderr.String()
}

func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return strings.TrimPrefix(lines[len(lines)-1], "acceptwatch: ")
}

// cpuTime is the CPU time of every thread of the process so far.
func (w *watch) cpuTime() time.Duration { return procCPU(w.cmd.Process.Pid) }

// procCPU is the CPU time of every thread of process pid so far (schedstat
// is in nanoseconds; /proc/PID/stat only has clock ticks).
func procCPU(pid int) time.Duration {
	dir := fmt.Sprintf("/proc/%d/task", pid)
	tasks, _ := os.ReadDir(dir)
	var sum time.Duration
	for _, t := range tasks {
		b, err := os.ReadFile(filepath.Join(dir, t.Name(), "schedstat"))
		if err != nil {
			continue
		}
		if f := strings.Fields(string(b)); len(f) > 0 {
			ns, _ := strconv.ParseInt(f[0], 10, 64)
			sum += time.Duration(ns)
		}
	}
	return sum
}

// statusKB reads a "VmHWM:"-style field of /proc/PID/status, in KiB.
func (w *watch) statusKB(field string) uint64 {
	b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", w.cmd.Process.Pid))
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, field+":"); ok {
			kb, _ := strconv.ParseUint(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			return kb
		}
	}
	return 0
}

// summary is the final JSON summary of acceptwatch.
type summary struct {
	Type            string `json:"type"`
	Final           bool   `json:"final"`
	AttachMode      string `json:"attach_mode"`
	TotalAccepted   uint64 `json:"total_accepted"`
	TotalHandshakes uint64 `json:"total_handshakes"`
	LostEvents      uint64 `json:"lost_events"`
	AddressOverflow uint64 `json:"address_overflow"`
	Addresses       []struct {
		Addr       string `json:"addr"`
		Accepted   uint64 `json:"accepted"`
		Handshakes uint64 `json:"handshakes"`
	} `json:"addresses"`
}

// stopped is what an acceptwatch run left behind.
type stopped struct {
	sum      summary
	lines    int           // live accept lines written
	maxRSSKB uint64        // peak RSS (VmHWM) until exit, summary included
	stopTime time.Duration // SIGINT to exit (includes writing the summary)
	outBytes int64
}

// stop sends SIGINT, waits for the exit and parses the final summary.
func (w *watch) stop() (stopped, error) {
	var st stopped
	defer os.Remove(w.outPath)
	t0 := time.Now()
	w.cmd.Process.Signal(os.Interrupt)
	exited := make(chan error, 1)
	go func() { exited <- w.cmd.Wait() }()
	// ru_maxrss cannot be used: Go starts children with vfork semantics,
	// and the kernel folds the parent's RSS at exec into the child's
	// maxrss. VmHWM is the child's own; poll it while the summary is built.
	st.maxRSSKB = w.statusKB("VmHWM")
	poll := time.NewTicker(5 * time.Millisecond)
	defer poll.Stop()
	timeout := time.After(2 * time.Minute)
	var err error
wait:
	for {
		select {
		case err = <-exited:
			break wait
		case <-poll.C:
			st.maxRSSKB = max(st.maxRSSKB, w.statusKB("VmHWM"))
		case <-timeout:
			w.cmd.Process.Kill()
			<-exited
			return st, errors.New("acceptwatch did not exit within 2 minutes of SIGINT")
		}
	}
	st.stopTime = time.Since(t0)
	if err != nil {
		return st, fmt.Errorf("acceptwatch: %v: %s", err, lastLine(w.stderrText()))
	}
	f, err := os.Open(w.outPath)
	if err != nil {
		return st, err
	}
	defer f.Close()
	if fi, err := f.Stat(); err == nil {
		st.outBytes = fi.Size()
	}
	if !w.json {
		// Text: live lines start with the time, HH:MM:SS.
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			if l := sc.Bytes(); len(l) > 8 && l[2] == ':' && l[5] == ':' && l[8] == ' ' {
				st.lines++
			}
		}
		return st, sc.Err()
	}
	dec := json.NewDecoder(bufio.NewReaderSize(f, 1<<20))
	found := false
	for {
		var s summary
		if err := dec.Decode(&s); err != nil {
			if errors.Is(err, io.EOF) {
				break
			}
			return st, fmt.Errorf("parsing acceptwatch output: %w", err)
		}
		switch {
		case s.Type == "accept":
			st.lines++
		case s.Type == "summary" && s.Final:
			st.sum, found = s, true
		}
	}
	if !found {
		return st, errors.New("acceptwatch printed no final summary")
	}
	return st, nil
}
