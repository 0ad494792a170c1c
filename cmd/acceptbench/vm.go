package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"time"

	"github.com/acceptwatch/acceptwatch/vmtest"
)

// tableMarker starts a table printed as JSON (-tables-json), so that the
// host can pick the guest's tables out of its console output.
const tableMarker = "acceptbench-table: "

type jsonTable struct {
	Title  string     `json:"title"`
	Header []string   `json:"header"`
	Rows   [][]string `json:"rows"`
	Notes  []string   `json:"notes"`
}

func (t *table) jsonLine() string {
	b, _ := json.Marshal(jsonTable{t.title, t.header, t.rows, t.notes})
	return tableMarker + string(b)
}

// cpuVM runs the cpu section inside QEMU on a real kernel, once per attach
// mode (this host refuses fexit and kretprobe), with the vmtest harness:
// static builds of acceptbench and acceptwatch, booted by vmrun.
func (b *bench) cpuVM() (*table, error) {
	dir := filepath.Join(b.dir, "vm")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	// What runs in the guest is built for the kernel's architecture; vmrun
	// runs here, and a guest of another architecture gets an own /init.
	arch, err := vmtest.GuestArch(b.o.vmKernel)
	if err != nil {
		return nil, fmt.Errorf("cpu-vm: %w", err)
	}
	builds := []struct{ name, out, arch string }{
		{"acceptbench", "acceptbench", arch}, {"acceptwatch", "acceptwatch", arch}, {"vmrun", "vmrun", runtime.GOARCH},
	}
	var initArgs []string
	if arch != runtime.GOARCH {
		builds = append(builds, struct{ name, out, arch string }{"vmrun", "vmrun-" + arch, arch})
		initArgs = []string{"-init", filepath.Join(dir, "vmrun-"+arch)}
	}
	for _, bd := range builds {
		cmd := exec.CommandContext(b.ctx, "go", "build", "-o", filepath.Join(dir, bd.out), "github.com/acceptwatch/acceptwatch/cmd/"+bd.name)
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOARCH="+bd.arch)
		cmd.Stdout, cmd.Stderr = b.log, b.log
		if err := cmd.Run(); err != nil {
			return nil, fmt.Errorf("building a static %s for %s: %w", bd.name, bd.arch, err)
		}
	}
	sum := &table{
		title: fmt.Sprintf("CPU per connection inside QEMU (Linux %s, TCG), as a ratio to \"nothing traced\" in the same VM, medians of %d rounds",
			b.o.vmKernel, b.o.vmRounds),
		header: []string{"--attach", "nothing traced µs/conn", "acceptwatch -q", "live lines", "-o json live lines", "empty programs on all hooks", "VM time"},
	}
	vmTracepoint := map[string]string{} // row name -> ratio in the tracepoint VM
	for _, mode := range strings.Split(b.o.vmModes, ",") {
		mode = strings.TrimSpace(mode)
		b.logf("cpu-vm: --attach %s in QEMU (%s)", mode, b.o.vmKernel)
		started := time.Now()
		args := append([]string{"-kernel", b.o.vmKernel}, initArgs...)
		args = append(args, filepath.Join(dir, "acceptbench"),
			"-guest", "-tables-json", "-sections", "cpu", "-attach", mode,
			"-acceptwatch", "/usr/local/bin/acceptwatch",
			"-cpu-rounds", fmt.Sprint(b.o.vmRounds), "-cpu-round", b.o.cpuRound.String(),
			"-clients", fmt.Sprint(b.o.clients), "-acceptors", fmt.Sprint(b.o.acceptors), "-sources", fmt.Sprint(b.o.sources),
			"-cpu-rows", b.o.cpuRows) // the same rows as on the host
		cmd := exec.CommandContext(b.ctx, filepath.Join(dir, "vmrun"), args...)
		cmd.Env = append(os.Environ(), "VMTEST_FILES="+filepath.Join(dir, "acceptwatch")+":/usr/local/bin/acceptwatch",
			"VMTEST_TIMEOUT=40m")
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, b.log
		err := cmd.Run()
		tables := parseTables(out.Bytes())
		if err != nil || len(tables) == 0 {
			b.logf("cpu-vm: %s: output:\n%s", mode, out.String())
			sum.add(mode, fmt.Sprintf("failed: %v", err), "", "", "", "", "")
			continue
		}
		for _, t := range tables {
			if strings.HasPrefix(t.title, "CPU per connection") {
				t.title = fmt.Sprintf("In QEMU (Linux %s, TCG): %s", b.o.vmKernel, t.title)
				b.extra = append(b.extra, t)
				if mode == "tracepoint" {
					vmTracepoint = ratioColumn(t)
				}
				sum.rows = append(sum.rows, append(append([]string{mode}, vmRatios(t)...), time.Since(started).Round(time.Second).String()))
			}
		}
	}
	if len(vmTracepoint) > 0 && b.hostRatio != nil && b.o.attachMode() == "tracepoint" {
		var cmp []string
		for _, id := range []string{"quiet", "live", "json", "empty:all"} {
			for _, r := range b.cpuRows() {
				if r.id == id && vmTracepoint[r.name] != "" && b.hostRatio[id] > 0 {
					cmp = append(cmp, fmt.Sprintf("%s %.3f on this host, %s in QEMU", r.name, b.hostRatio[id], vmTracepoint[r.name]))
				}
			}
		}
		sum.notes = append(sum.notes, "how far emulation can be trusted, tracepoint mode against this host's cpu section (× nothing traced): "+strings.Join(cmp, "; "))
	}
	sum.notes = append(sum.notes,
		"each VM: the vmtest harness (2 vCPUs, 1 GiB, single-threaded TCG: both vCPUs share one host thread), the same storm and rows as on the host; the full tables follow",
		"TCG translates every guest instruction, the BPF programs' JIT output included, so instruction-bound costs keep roughly their proportions; "+
			"but atomics, page-table walks, timer reads and cache effects are emulated (or absent: no cache lines move between vCPUs that share a thread), "+
			"so read the ratios as an order of magnitude, and compare the tracepoint row with the host's own tracepoint ratio to see how far they drift")
	return sum, nil
}

// ratioColumn maps row names to their "× nothing traced" cell.
func ratioColumn(t *table) map[string]string {
	i := slices.Index(t.header, "× nothing traced (own)")
	m := map[string]string{}
	for _, r := range t.rows {
		if i >= 0 && len(r) > i {
			m[r[0]] = r[i]
		}
	}
	return m
}

// vmRatios picks the cells the summary shows: "nothing traced" in µs of own
// CPU per connection, then the ratios of the acceptwatch and empty rows.
func vmRatios(t *table) []string {
	ratio := ratioColumn(t)
	none := "–"
	if own := slices.Index(t.header, "own µs/conn"); own >= 0 {
		for _, r := range t.rows {
			if r[0] == "nothing traced" && len(r) > own {
				none, _, _ = strings.Cut(r[own], " ")
			}
		}
	}
	out := []string{none}
	for _, name := range []string{"acceptwatch -q", "acceptwatch, live lines to a file",
		"acceptwatch -o json, live lines to a file", "empty programs on all of these hooks"} {
		if v := ratio[name]; v != "" {
			out = append(out, v)
		} else {
			out = append(out, "–")
		}
	}
	return out
}

func parseTables(out []byte) []*table {
	var ts []*table
	sc := bufio.NewScanner(bytes.NewReader(out))
	sc.Buffer(nil, 16<<20)
	for sc.Scan() {
		_, rest, ok := strings.Cut(sc.Text(), tableMarker)
		if !ok {
			continue
		}
		var j jsonTable
		if json.Unmarshal([]byte(rest), &j) == nil {
			ts = append(ts, &table{title: j.Title, header: j.Header, rows: j.Rows, notes: j.Notes})
		}
	}
	return ts
}
