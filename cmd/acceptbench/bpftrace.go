package main

import (
	_ "embed"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"
)

// acceptBT is the peer: a bpftrace script doing acceptwatch's job on the
// same tracepoints (tracepoint mode).
//
//go:embed testdata/accept.bt
var acceptBT []byte

var (
	bpftraceOnce sync.Once
	bpftracePath string
	bpftraceErr  error
)

// findBpftrace returns bpftrace, installing it from apt if it is missing
// (the bench only: make test does not need it).
func (b *bench) findBpftrace() (string, error) {
	bpftraceOnce.Do(func() {
		if p, err := exec.LookPath("bpftrace"); err == nil {
			bpftracePath = p
			return
		}
		if b.o.guest {
			bpftraceErr = errors.New("no bpftrace in the VM")
			return
		}
		if _, err := exec.LookPath("apt-get"); err != nil {
			bpftraceErr = errors.New("bpftrace is not installed and there is no apt-get")
			return
		}
		b.logf("installing bpftrace from apt")
		install := func() error {
			cmd := exec.CommandContext(b.ctx, "apt-get", "install", "-y", "-q", "bpftrace")
			cmd.Env = append(os.Environ(), "DEBIAN_FRONTEND=noninteractive")
			cmd.Stdout, cmd.Stderr = b.log, b.log
			return cmd.Run()
		}
		if err := install(); err != nil {
			update := exec.CommandContext(b.ctx, "apt-get", "update", "-q")
			update.Stdout, update.Stderr = b.log, b.log
			if err := update.Run(); err != nil {
				bpftraceErr = fmt.Errorf("apt-get update: %w", err)
				return
			}
			if err := install(); err != nil {
				bpftraceErr = fmt.Errorf("apt-get install bpftrace: %w", err)
				return
			}
		}
		bpftracePath, bpftraceErr = exec.LookPath("bpftrace")
	})
	return bpftracePath, bpftraceErr
}

// bpftraceRun is the script running on one port, output to a file.
type bpftraceRun struct {
	cmd     *exec.Cmd
	out     string
	startup time.Duration // exec to the script's "ready" line (printed once all probes are attached)
	done    chan error
	lines   int // accept lines in its output, counted by finish
}

func (b *bench) startBpftrace(port int) (*bpftraceRun, error) {
	bin, err := b.findBpftrace()
	if err != nil {
		return nil, err
	}
	script := filepath.Join(b.dir, "accept.bt")
	if err := os.WriteFile(script, acceptBT, 0o644); err != nil {
		return nil, err
	}
	f, err := os.CreateTemp(b.dir, "bpftrace-out-*")
	if err != nil {
		return nil, err
	}
	defer f.Close()
	r := &bpftraceRun{out: f.Name(), done: make(chan error, 1)}
	r.cmd = exec.Command(bin, script, strconv.Itoa(port))
	r.cmd.Stdout = f
	var stderr strings.Builder
	r.cmd.Stderr = &stderr
	start := time.Now()
	if err := r.cmd.Start(); err != nil {
		return nil, err
	}
	go func() { r.done <- r.cmd.Wait() }()
	// BEGIN prints "ready" after bpftrace has attached every probe.
	deadline := time.After(60 * time.Second)
	for {
		b, _ := os.ReadFile(r.out)
		if strings.Contains(string(b), "ready\n") {
			r.startup = time.Since(start)
			return r, nil
		}
		select {
		case err := <-r.done:
			os.Remove(r.out)
			return nil, fmt.Errorf("bpftrace exited before it was ready (%v): %s", err, lastLine(stderr.String()))
		case <-deadline:
			r.cmd.Process.Kill()
			<-r.done
			os.Remove(r.out)
			return nil, errors.New("bpftrace was not ready within 60 s")
		case <-time.After(5 * time.Millisecond):
		}
	}
}

func (r *bpftraceRun) cpuTime() time.Duration { return procCPU(r.cmd.Process.Pid) }

// finish stops the script with SIGINT (it then prints its maps), waits and
// counts its live lines.
func (r *bpftraceRun) finish() error {
	defer os.Remove(r.out)
	r.cmd.Process.Signal(os.Interrupt)
	select {
	case <-r.done: // bpftrace exits non-zero after SIGINT on some versions
	case <-time.After(time.Minute):
		r.cmd.Process.Kill()
		<-r.done
		return errors.New("bpftrace did not exit within a minute of SIGINT")
	}
	out, err := os.ReadFile(r.out)
	r.lines = strings.Count(string(out), " us\n")
	return err
}

func (r *bpftraceRun) liveLines() int { return r.lines }

func (b *bench) bpftraceRow(id, name string) *cpuRow {
	return &cpuRow{id: id, name: name, probe: true, start: func(port int) (tracing, error) {
		r, err := b.startBpftrace(port)
		if err != nil {
			return nil, err // not a typed nil in the interface
		}
		return r, nil
	}}
}
