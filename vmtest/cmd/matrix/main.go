// Command matrix runs the kernel tests on every kernel (amd64 and arm64) x
// attach mode, each cell in its own VM (see vmtest/README.md). `make vmtest`
// calls it.
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
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/acceptwatch/acceptwatch/vmtest"
)

const guestBin = "/usr/local/bin/acceptwatch"

// modeIndependent names the tests that do not depend on the attach mode;
// they run in one cell per kernel. Each one's attach-mode dependent part (the
// programs counting accepts, handshakes and SYNs into the maps, and releasing
// them on stop) is checked in every cell by the tests that stay:
//   - TestSnapshot*: no BPF at all (sock_diag).
//   - TestMetricsLongRun: user-space draining and swapping of the address map
//     over many windows; the per-mode counting into the map is TestMetrics'.
//   - TestStops: --count, --duration, --interval, SIGHUP and a closed stdout
//     are user-space loop exits; every test's stop checks the release per mode.
//   - TestBaseline: saving and comparing a baseline is user-space arithmetic
//     over the per-address counts that TestTraceJSON checks per mode.
//   - TestCgroupErrors: --cgroup refused at flag parsing, before any load.
//   - TestDocs, TestParseFlags*, TestSingleDashLongLeavesOthers,
//     TestHelpHasExamples, TestVersionOf, TestMetricsFlags, TestTopPortRows:
//     pure Go (documentation, flags, layout), no kernel.
const modeIndependent = "^(TestSnapshot|TestMetricsLongRun$|TestStops$|TestBaseline$|TestDocs$|TestParseFlags|" +
	"TestSingleDashLongLeavesOthers$|TestHelpHasExamples$|TestVersionOf$|TestMetricsFlags$|TestTopPortRows$|TestCgroupErrors$)"

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
	refused  bool // the kernel cannot give this mode: the cell checks that acceptwatch says so
	modeless bool // also runs the tests that do not depend on the mode
	pass     bool
	secs     float64
	note     string
}

// name is e.g. "arm64-6.1-fexit", for log files.
func (c *cell) name() string {
	return c.kernel.Spec.Arch + "-" + c.kernel.Spec.Name + "-" + c.mode
}

// guest holds what one architecture's cells boot: the /init (a vmrun built
// for it), the test binaries and the files copied in.
type guest struct {
	init    string
	tests   []string
	files   string
	sysroot string // of files built for another architecture than the host's
}

func main() { os.Exit(run()) }

func run() int {
	var allKernels []string
	for _, k := range vmtest.Kernels {
		if !slices.Contains(allKernels, k.Name) {
			allKernels = append(allKernels, k.Name)
		}
	}
	kernelsF := flag.String("kernels", envOr("KERNELS", strings.Join(allKernels, ",")), "kernels ($KERNELS); each runs on every architecture that has it")
	archesF := flag.String("arches", envOr("ARCHES", strings.Join(vmtest.ArchNames(), ",")), "guest architectures ($ARCHES)")
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
	var specs []vmtest.KernelSpec
	arches := list(*archesF)
	for _, a := range arches {
		if _, err := vmtest.LookupArch(a); err != nil {
			fmt.Fprintf(os.Stderr, "vmtest: %v\n", err)
			return 2
		}
	}
	for _, name := range list(*kernelsF) {
		found := false
		for _, a := range vmtest.ArchNames() {
			if spec, ok := vmtest.LookupKernel(a, name); ok {
				found = true
				// "7.x,arm64/7.x" names arm64's 7.x twice: one cell each.
				if slices.Contains(arches, a) && !slices.ContainsFunc(specs, func(s vmtest.KernelSpec) bool { return s.String() == spec.String() }) {
					specs = append(specs, spec)
				}
			}
		}
		if !found {
			fmt.Fprintf(os.Stderr, "vmtest: unknown kernel %q (have %s)\n", name, strings.Join(allKernels, ", "))
			return 2
		}
	}
	if len(specs) == 0 {
		fmt.Fprintf(os.Stderr, "vmtest: no kernel %s for %s\n", *kernelsF, *archesF)
		return 2
	}
	// Architecture by architecture, in the order of vmtest.Kernels.
	slices.SortStableFunc(specs, func(a, b vmtest.KernelSpec) int {
		return slices.Index(vmtest.ArchNames(), a.Arch) - slices.Index(vmtest.ArchNames(), b.Arch)
	})
	var kernels []vmtest.Kernel
	var fetchErrs []string
	fetched := map[string]bool{}
	for _, spec := range specs {
		t := time.Now()
		_, cached := fetcher.Cached(spec)
		k, err := fetcher.Fetch(spec)
		if err != nil {
			fmt.Fprintf(os.Stderr, "vmtest: FETCH FAILED: %v\n", err)
			fetchErrs = append(fetchErrs, spec.String())
			kernels = append(kernels, vmtest.Kernel{Spec: spec})
			continue
		}
		how := fmt.Sprintf("fetched in %.1fs", time.Since(t).Seconds())
		if cached && !*refresh {
			how = "cached"
		}
		fmt.Fprintf(os.Stderr, "vmtest: kernel %-10s %s (%s) %s\n", spec, k.Release, spec.Suite, how)
		kernels = append(kernels, k)
		fetched[spec.String()] = true
	}
	if *fetchOnly {
		if len(fetchErrs) > 0 {
			return 1
		}
		return 0
	}

	// 2. Build: vmrun, and for each guest architecture its /init (vmrun
	// again), acceptwatch and the test binaries.
	tmp, err := os.MkdirTemp("", "vmtest-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(tmp)
	build := func(goarch string, args ...string) error {
		cmd := exec.CommandContext(ctx, "go", args...)
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOARCH="+goarch)
		cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
		fmt.Fprintf(os.Stderr, "vmtest: GOARCH=%s go %s\n", goarch, strings.Join(args, " "))
		return cmd.Run()
	}
	vmrun := filepath.Join(tmp, "vmrun")
	if err := build(runtime.GOARCH, "build", "-o", vmrun, "./cmd/vmrun"); err != nil {
		fmt.Fprintf(os.Stderr, "vmtest: building vmrun: %v\n", err)
		return 1
	}
	guests := map[string]*guest{}
	for _, k := range kernels {
		a := k.Spec.Arch
		if guests[a] != nil || !fetched[k.Spec.String()] {
			continue
		}
		g := &guest{init: vmrun}
		dir := filepath.Join(tmp, a)
		os.MkdirAll(dir, 0o755)
		if a != runtime.GOARCH {
			g.init = filepath.Join(dir, "vmrun")
			if err := build(a, "build", "-o", g.init, "./cmd/vmrun"); err != nil {
				fmt.Fprintf(os.Stderr, "vmtest: building vmrun for %s: %v\n", a, err)
				return 1
			}
		}
		if *awF != "none" && *awF != "" {
			aw := filepath.Join(dir, "acceptwatch")
			if err := build(a, "build", "-o", aw, *awF); err != nil {
				fmt.Fprintf(os.Stderr, "vmtest: building acceptwatch for %s: %v\n", a, err)
				return 1
			}
			g.files = aw + ":" + guestBin
		}
		// ss (iproute2, dynamically linked: vmrun brings its libraries):
		// the snapshot tests compare their counts with it.
		ss, sysroot, err := guestSS(fetcher, a)
		if err != nil {
			fmt.Fprintf(os.Stderr, "vmtest: %v: the snapshot tests will fail in the %s VMs\n", err, a)
		} else {
			g.files = strings.TrimPrefix(g.files+","+ss+":/usr/bin/ss", ",")
			g.sysroot = sysroot
		}
		for i, pkg := range list(*pkgsF) {
			out := filepath.Join(dir, fmt.Sprintf("%d-%s.test", i, filepath.Base(pkg)))
			if err := build(a, "test", "-c", "-o", out, pkg); err != nil {
				fmt.Fprintf(os.Stderr, "vmtest: building tests of %s for %s: %v\n", pkg, a, err)
				return 1
			}
			if _, err := os.Stat(out); err != nil {
				fmt.Fprintf(os.Stderr, "vmtest: %s has no test binary (no test files?)\n", pkg)
				return 1
			}
			g.tests = append(g.tests, out)
		}
		guests[a] = g
	}

	// 3. Cells.
	logDir := filepath.Join(cache, "logs")
	os.MkdirAll(logDir, 0o755)
	var modes []string
	for _, m := range list(*modesF) {
		if !slices.Contains(modes, m) {
			modes = append(modes, m)
		}
	}
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
			cells = append(cells, &cell{kernel: k, fetchOK: fetched[k.Spec.String()], mode: m,
				refused: slices.Contains(k.Spec.Unsupported, m), modeless: m == modeless})
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
				runCell(ctx, c, vmrun, guests[c.kernel.Spec.Arch], *timeout, *parallel == 1, &mu, logDir)
			}
		}()
	}
	// Longest first: the cells that also run the mode-independent tests,
	// then the others, then the short refused-mode ones to fill the tail.
	queue := slices.Clone(cells)
	weight := func(c *cell) int {
		switch {
		case c.refused:
			return 2
		case c.modeless:
			return 0
		}
		return 1
	}
	slices.SortStableFunc(queue, func(a, b *cell) int { return weight(a) - weight(b) })
	for _, c := range queue {
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
	fmt.Fprintf(&tb, "\n%-40s", "kernel")
	for _, m := range modes {
		fmt.Fprintf(&tb, " %-16s", m)
	}
	tb.WriteString("\n")
	for i, k := range kernels {
		label := k.Spec.Arch + " " + k.Spec.Name + " (" + k.Release + ")"
		if !fetched[k.Spec.String()] {
			label = k.Spec.Arch + " " + k.Spec.Name + " (FETCH FAILED)"
		}
		fmt.Fprintf(&tb, "%-40s", label)
		for j := range modes {
			c := cells[i*len(modes)+j]
			s := fmt.Sprintf("FAIL %.0fs", c.secs)
			if c.pass {
				s = fmt.Sprintf("PASS %.0fs", c.secs)
				if c.refused {
					s = fmt.Sprintf("REFUSED %.0fs", c.secs)
				}
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
		if c.refused {
			tb.WriteString("REFUSED: the kernel cannot give the mode; the cell passes when acceptwatch, forced to it, fails saying why, and auto picks the mode expected\n")
			break
		}
	}
	for _, c := range cells {
		if !c.pass && c.note != "" && c.fetchOK {
			fmt.Fprintf(&tb, "FAIL %s %s: %s\n", c.kernel.Spec, c.mode, c.note)
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

func runCell(ctx context.Context, c *cell, vmrun string, g *guest, timeout time.Duration, stream bool, mu *sync.Mutex, logDir string) {
	t0 := time.Now()
	defer func() { c.secs = time.Since(t0).Seconds() }()
	c.pass = true
	logf, _ := os.Create(filepath.Join(logDir, c.name()+".log"))
	defer logf.Close()
	for _, tb := range g.tests {
		var buf bytes.Buffer
		header := fmt.Sprintf("=== vmtest kernel %s (%s) mode %s: %s\n", c.kernel.Spec, c.kernel.Release, c.mode, filepath.Base(tb))
		var w io.Writer = &buf
		if !stream {
			fmt.Fprintf(os.Stderr, "vmtest: started kernel %s mode %s: %s (output when done)\n", c.kernel.Spec, c.mode, filepath.Base(tb))
		}
		if stream {
			mu.Lock()
			os.Stdout.WriteString(header)
			w = io.MultiWriter(&buf, os.Stdout)
		}
		args := []string{"-kernel", c.kernel.Vmlinuz, "-init", g.init, "-timeout", timeout.String(),
			"-kernel-log", filepath.Join(logDir, c.name()+".kernel.log"),
			tb, "-test.v"}
		if timeout > time.Minute {
			// A hang inside the tests then ends with goroutine dumps
			// rather than a killed VM.
			args = append(args, "-test.timeout", (timeout - 30*time.Second).String())
		}
		attach, expectUnsupported := c.mode, ""
		if c.refused {
			// TestAuto forces the mode, checks the refusal and that
			// auto says why it passed it over.
			attach, expectUnsupported = "auto", c.mode
			args = append(args, "-test.run", "^TestAuto$")
		} else {
			skip := hostOnlyTests
			if !c.modeless {
				skip += "|" + modeIndependent
			}
			args = append(args, "-test.skip", skip)
			args = append(args, strings.Fields(os.Getenv("VMTEST_TESTFLAGS"))...)
		}
		env := []string{
			"VMTEST_FILES=" + g.files,
			"VMTEST_SYSROOT=" + g.sysroot,
			"ACCEPTWATCH_BIN=" + guestBin,
			"ACCEPTWATCH_ATTACH=" + attach,
			"ACCEPTWATCH_EXPECT_AUTO=" + c.kernel.Spec.Auto,
			"ACCEPTWATCH_EXPECT_UNSUPPORTED=" + expectUnsupported,
			"ACCEPTWATCH_NO_SKIP=1",
		}
		cmd := exec.CommandContext(ctx, vmrun, args...)
		cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) } // vmrun stops QEMU
		cmd.WaitDelay = 10 * time.Second
		cmd.Env = append(os.Environ(), env...)
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
		footer := fmt.Sprintf("=== vmtest kernel %s mode %s: %s (%.1fs)\n", c.kernel.Spec, c.mode, result, time.Since(t0).Seconds())
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

// guestSS returns an ss for the guest: the host's when the guest has the
// host's architecture, else iproute2's from Debian for it, with the
// sysroot its libraries come from.
func guestSS(f *vmtest.Fetcher, arch string) (ss, sysroot string, err error) {
	if arch == runtime.GOARCH {
		ss, err := exec.LookPath("ss")
		if err != nil {
			return "", "", fmt.Errorf("no ss on this machine (install iproute2)")
		}
		return ss, "", nil
	}
	sysroot, err = f.Sysroot(arch, "iproute2")
	if err != nil {
		return "", "", err
	}
	return filepath.Join(sysroot, "bin/ss"), sysroot, nil
}

func mustDur(s string) time.Duration {
	d, err := time.ParseDuration(s)
	if err != nil {
		fmt.Fprintf(os.Stderr, "vmtest: bad duration %q: %v\n", s, err)
		os.Exit(2)
	}
	return d
}
