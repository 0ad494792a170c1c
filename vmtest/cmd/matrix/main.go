// Command matrix runs the kernel tests on every kernel x attach mode, each
// cell in its own VM (see vmtest/README.md). `make vmtest` calls it.
package main

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/acceptwatch/acceptwatch/vmtest"
)

const guestBin = "/usr/local/bin/acceptwatch"

// modeIndependent names the tests that do not depend on the attach mode
// (no BPF: the sock_diag snapshot).
const modeIndependent = "^TestSnapshot"

func envOr(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}

func list(s string) []string {
	var out []string
	for _, f := range strings.FieldsFunc(s, func(r rune) bool { return r == ',' || r == ' ' }) {
		out = append(out, f)
	}
	return out
}

type cell struct {
	kernel   vmtest.Kernel
	fetchOK  bool
	mode     string
	modeless bool // also runs the tests that do not depend on the mode
	pass     bool
	secs     float64
	note     string
}

func main() { os.Exit(run()) }

func run() int {
	var allKernels []string
	for _, k := range vmtest.Kernels {
		allKernels = append(allKernels, k.Name)
	}
	kernelsF := flag.String("kernels", envOr("KERNELS", strings.Join(allKernels, ",")), "kernels ($KERNELS)")
	modesF := flag.String("modes", envOr("MODES", "fexit,kretprobe,tracepoint,auto"), "attach modes ($MODES)")
	pkgsF := flag.String("packages", envOr("VMTEST_PACKAGES", "./cmd/acceptwatch"), "packages holding kernel tests ($VMTEST_PACKAGES)")
	awF := flag.String("acceptwatch", envOr("VMTEST_ACCEPTWATCH", "./cmd/acceptwatch"), "package of the acceptwatch binary, copied to "+guestBin+" (\"none\" to skip)")
	par, _ := strconv.Atoi(envOr("VMTEST_PARALLEL", "2"))
	parallel := flag.Int("parallel", par, "VMs at once ($VMTEST_PARALLEL)")
	timeout := flag.Duration("timeout", mustDur(envOr("VMTEST_TIMEOUT", "5m")), "per-VM timeout ($VMTEST_TIMEOUT)")
	fetchOnly := flag.Bool("fetch-only", false, "only fetch the kernels")
	refresh := flag.Bool("refresh", os.Getenv("VMTEST_REFRESH") != "", "re-resolve kernels even if cached ($VMTEST_REFRESH)")
	flag.Parse()
	if *parallel < 1 {
		*parallel = 1
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	// 1. Kernels.
	cache, err := vmtest.CacheDir()
	if err != nil {
		fmt.Fprintf(os.Stderr, "vmtest: %v\n", err)
		return 1
	}
	fetcher := &vmtest.Fetcher{Cache: cache, Refresh: *refresh, Log: os.Stderr}
	var kernels []vmtest.Kernel
	var fetchErrs []string
	fetched := map[string]bool{}
	for _, name := range list(*kernelsF) {
		spec, ok := vmtest.LookupKernel(name)
		if !ok {
			fmt.Fprintf(os.Stderr, "vmtest: unknown kernel %q (have %s)\n", name, strings.Join(allKernels, ", "))
			return 2
		}
		t := time.Now()
		_, cached := fetcher.Cached(spec)
		k, err := fetcher.Fetch(spec)
		if err != nil {
			fmt.Fprintf(os.Stderr, "vmtest: FETCH FAILED: %v\n", err)
			fetchErrs = append(fetchErrs, spec.Name)
			kernels = append(kernels, vmtest.Kernel{Spec: spec})
			continue
		}
		how := fmt.Sprintf("fetched in %.1fs", time.Since(t).Seconds())
		if cached && !*refresh {
			how = "cached"
		}
		fmt.Fprintf(os.Stderr, "vmtest: kernel %-4s %s (%s) %s\n", spec.Name, k.Release, spec.Suite, how)
		kernels = append(kernels, k)
		fetched[spec.Name] = true
	}
	if *fetchOnly {
		if len(fetchErrs) > 0 {
			return 1
		}
		return 0
	}

	// 2. Build: vmrun (also the guest /init), acceptwatch, test binaries.
	tmp, err := os.MkdirTemp("", "vmtest-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(tmp)
	build := func(args ...string) error {
		cmd := exec.CommandContext(ctx, "go", args...)
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
		fmt.Fprintf(os.Stderr, "vmtest: go %s\n", strings.Join(args, " "))
		return cmd.Run()
	}
	vmrun := filepath.Join(tmp, "vmrun")
	if err := build("build", "-o", vmrun, "./cmd/vmrun"); err != nil {
		fmt.Fprintf(os.Stderr, "vmtest: building vmrun: %v\n", err)
		return 1
	}
	var files string
	if *awF != "none" && *awF != "" {
		aw := filepath.Join(tmp, "acceptwatch")
		if err := build("build", "-o", aw, *awF); err != nil {
			fmt.Fprintf(os.Stderr, "vmtest: building acceptwatch: %v\n", err)
			return 1
		}
		files = aw + ":" + guestBin
	}
	// ss (iproute2, dynamically linked: vmrun brings its libraries): the
	// snapshot tests compare their counts with it.
	if ss, err := exec.LookPath("ss"); err == nil {
		files = strings.TrimPrefix(files+","+ss+":/usr/bin/ss", ",")
	} else {
		fmt.Fprintf(os.Stderr, "vmtest: no ss on this machine (install iproute2): the snapshot tests will fail in the VMs\n")
	}
	var tests []string
	for i, pkg := range list(*pkgsF) {
		out := filepath.Join(tmp, fmt.Sprintf("%d-%s.test", i, filepath.Base(pkg)))
		if err := build("test", "-c", "-o", out, pkg); err != nil {
			fmt.Fprintf(os.Stderr, "vmtest: building tests of %s: %v\n", pkg, err)
			return 1
		}
		if _, err := os.Stat(out); err != nil {
			fmt.Fprintf(os.Stderr, "vmtest: %s has no test binary (no test files?)\n", pkg)
			return 1
		}
		tests = append(tests, out)
	}

	// 3. Cells.
	logDir := filepath.Join(cache, "logs")
	os.MkdirAll(logDir, 0o755)
	modes := list(*modesF)
	// Tests that do not depend on the attach mode run in one cell per
	// kernel (auto's, else the first mode's): the others skip them with
	// -test.skip, which neither runs nor lists them.
	modeless := modes[0]
	if slices.Contains(modes, "auto") {
		modeless = "auto"
	}
	var cells []*cell
	for _, k := range kernels {
		for _, m := range modes {
			cells = append(cells, &cell{kernel: k, fetchOK: fetched[k.Spec.Name], mode: m, modeless: m == modeless})
		}
	}
	var mu sync.Mutex // serialises output
	jobs := make(chan *cell)
	var wg sync.WaitGroup
	start := time.Now()
	for i := 0; i < *parallel; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for c := range jobs {
				if ctx.Err() != nil {
					c.note = "interrupted"
					continue
				}
				runCell(ctx, c, vmrun, tests, files, *timeout, *parallel == 1, &mu, logDir)
			}
		}()
	}
	for _, c := range cells {
		if !c.fetchOK {
			c.note = "kernel not fetched"
			continue
		}
		jobs <- c
	}
	close(jobs)
	wg.Wait()

	// 4. Table.
	passed, failed := 0, 0
	var tb strings.Builder
	fmt.Fprintf(&tb, "\n%-34s", "kernel")
	for _, m := range modes {
		fmt.Fprintf(&tb, " %-16s", m)
	}
	tb.WriteString("\n")
	for i, k := range kernels {
		label := k.Spec.Name + " (" + k.Release + ")"
		if !fetched[k.Spec.Name] {
			label = k.Spec.Name + " (FETCH FAILED)"
		}
		fmt.Fprintf(&tb, "%-34s", label)
		for j := range modes {
			c := cells[i*len(modes)+j]
			s := fmt.Sprintf("FAIL %.0fs", c.secs)
			if c.pass {
				s = fmt.Sprintf("PASS %.0fs", c.secs)
				passed++
			} else {
				failed++
				if !c.fetchOK {
					s = "FAIL (no kernel)"
				}
			}
			fmt.Fprintf(&tb, " %-16s", s)
		}
		tb.WriteString("\n")
	}
	for _, c := range cells {
		if !c.pass && c.note != "" && c.fetchOK {
			fmt.Fprintf(&tb, "FAIL %s %s: %s\n", c.kernel.Spec.Name, c.mode, c.note)
		}
	}
	fmt.Fprintf(&tb, "matrix wall time %s, logs in %s\n", time.Since(start).Round(time.Second), logDir)
	fmt.Fprintf(&tb, "%d passed, %d failed\n", passed, failed)
	fmt.Print(tb.String())
	if failed > 0 || len(fetchErrs) > 0 {
		return 1
	}
	return 0
}

// hostOnlyTests drive programs the guest lacks (a static initramfs has no
// tmux): they run on the host (CI runs it as root), and the guest runs the
// same data path without the terminal (TestTopFrames). Skipped by name here,
// so they never show as a skip.
const hostOnlyTests = `^TestTopTmux`

var skipRe = regexp.MustCompile(`(?m)^\s*--- SKIP`)
var passRe = regexp.MustCompile(`(?m)^\s*--- PASS`)

func runCell(ctx context.Context, c *cell, vmrun string, tests []string, files string, timeout time.Duration, stream bool, mu *sync.Mutex, logDir string) {
	t0 := time.Now()
	defer func() { c.secs = time.Since(t0).Seconds() }()
	c.pass = true
	logPath := filepath.Join(logDir, fmt.Sprintf("%s-%s.log", c.kernel.Spec.Name, c.mode))
	logf, _ := os.Create(logPath)
	defer logf.Close()
	for _, tb := range tests {
		var buf bytes.Buffer
		header := fmt.Sprintf("=== vmtest kernel %s (%s) mode %s: %s\n", c.kernel.Spec.Name, c.kernel.Release, c.mode, filepath.Base(tb))
		var w io.Writer = &buf
		if !stream {
			fmt.Fprintf(os.Stderr, "vmtest: started kernel %s mode %s: %s (output when done)\n", c.kernel.Spec.Name, c.mode, filepath.Base(tb))
		}
		if stream {
			mu.Lock()
			os.Stdout.WriteString(header)
			w = io.MultiWriter(&buf, os.Stdout)
		}
		args := []string{"-kernel", c.kernel.Vmlinuz, "-timeout", timeout.String(),
			"-kernel-log", filepath.Join(logDir, fmt.Sprintf("%s-%s.kernel.log", c.kernel.Spec.Name, c.mode)),
			tb, "-test.v"}
		if timeout > time.Minute {
			// A hang inside the tests then ends with goroutine dumps
			// rather than a killed VM.
			args = append(args, "-test.timeout", (timeout - 30*time.Second).String())
		}
		skip := hostOnlyTests
		if !c.modeless {
			skip += "|" + modeIndependent
		}
		args = append(args, "-test.skip", skip)
		args = append(args, strings.Fields(os.Getenv("VMTEST_TESTFLAGS"))...)
		cmd := exec.CommandContext(ctx, vmrun, args...)
		cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) } // vmrun stops QEMU
		cmd.WaitDelay = 10 * time.Second
		cmd.Env = append(os.Environ(),
			"VMTEST_FILES="+files,
			"ACCEPTWATCH_BIN="+guestBin,
			"ACCEPTWATCH_ATTACH="+c.mode,
			"ACCEPTWATCH_EXPECT_AUTO=fexit",
			"ACCEPTWATCH_NO_SKIP=1",
		)
		cmd.Stdout, cmd.Stderr = w, w
		err := cmd.Run()
		var notes []string
		if err != nil {
			notes = append(notes, fmt.Sprintf("%s: %v", filepath.Base(tb), err))
		}
		if skipRe.Match(buf.Bytes()) {
			notes = append(notes, filepath.Base(tb)+": a test was skipped (SKIP counts as failure in the VM)")
		}
		if err == nil && !passRe.Match(buf.Bytes()) {
			notes = append(notes, filepath.Base(tb)+": no test passed (no tests run?)")
		}
		result := "ok"
		if len(notes) > 0 {
			c.pass = false
			c.note = strings.Join(notes, "; ")
			result = "FAIL: " + c.note
		}
		footer := fmt.Sprintf("=== vmtest kernel %s mode %s: %s (%.1fs)\n", c.kernel.Spec.Name, c.mode, result, time.Since(t0).Seconds())
		if logf != nil {
			logf.WriteString(header)
			logf.Write(buf.Bytes())
			logf.WriteString(footer)
		}
		if stream {
			os.Stdout.WriteString(footer)
			mu.Unlock()
		} else {
			mu.Lock()
			os.Stdout.WriteString(header)
			os.Stdout.Write(buf.Bytes())
			os.Stdout.WriteString(footer)
			mu.Unlock()
		}
	}
}

func mustDur(s string) time.Duration {
	d, err := time.ParseDuration(s)
	if err != nil {
		fmt.Fprintf(os.Stderr, "vmtest: bad duration %q: %v\n", s, err)
		os.Exit(2)
	}
	return d
}
