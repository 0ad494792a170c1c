package report

import (
	"bytes"
	"encoding/json"
	"net/netip"
	"strings"
	"testing"
	"time"
)

// A summary of one cgroup (--cgroup) says so in its header and JSON, and
// that the kernel counters are every cgroup's; the cgroup's path is
// sanitised (users name cgroups).
func TestSummaryCgroup(t *testing.T) {
	s := Summary{
		Start: time.Unix(0, 0), End: time.Unix(10, 0), Final: true, Ports: []string{"80"}, CountersNetNS: 7,
		NetNSNames: map[uint32]string{7: "host"}, Cgroup: "/system.slice/web\x1b[2J.service",
		KernelCounters: []KernelCounter{{Name: "ListenOverflows", Delta: 3}},
		Now:            &ConnStates{Established: 2}, NetNS: 7,
	}
	var buf bytes.Buffer
	if err := NewText(&buf, TextOptions{Location: time.UTC}).Summary(s); err != nil {
		t.Fatal(err)
	}
	out := buf.String()
	if strings.ContainsRune(out, '\x1b') || !strings.Contains(out, ", ports 80 of cgroup /system.slice/web") ||
		!strings.Contains(out, "kernel counters (netns host, every cgroup): ListenOverflows +3") ||
		!strings.Contains(out, "connections now: 2 (ESTABLISHED 2, SYN_RECV 0, CLOSE_WAIT 0, TIME_WAIT 0, FIN_WAIT 0, other 0), netns host\n") {
		t.Errorf("text summary:\n%s", out)
	}
	buf.Reset()
	if err := NewJSON(&buf).Summary(s); err != nil {
		t.Fatal(err)
	}
	var j struct {
		Cgroup string `json:"cgroup"`
	}
	if err := json.Unmarshal(buf.Bytes(), &j); err != nil || j.Cgroup != s.Cgroup {
		t.Errorf("JSON cgroup %q (%v), want %q", j.Cgroup, err, s.Cgroup)
	}
	s.Cgroup = ""
	buf.Reset()
	NewText(&buf, TextOptions{Location: time.UTC}).Summary(s)
	if strings.Contains(buf.String(), "cgroup") {
		t.Errorf("without --cgroup, the summary names no cgroup:\n%s", buf.String())
	}
}

// The live CONTAINER column: absent while one container (or unit, or
// cgroup) accepts, then added with a new header; aligned with its header
// beside NETNS; a long cgroup path cut at its start; control characters
// gone.
func TestLiveContainerColumn(t *testing.T) {
	var buf bytes.Buffer
	w := NewText(&buf, TextOptions{Location: time.UTC, NetNSName: func(ns uint32) string {
		return map[uint32]string{1: "host", 2: "web"}[ns]
	}})
	ev := Event{Time: time.Unix(0, 0), PID: 1, Comm: "srv", LocalAddr: netip.MustParseAddr("127.0.0.1"), LocalPort: 80,
		RemoteAddr: netip.MustParseAddr("127.0.0.2"), RemotePort: 5000, NetNS: 1, Cgroup: "/system.slice/nginx.service", Container: "nginx.service"}
	w.Event(ev)
	w.Event(ev)
	ev.Container = "docker:c0ffee012345"
	w.Event(ev)
	ev.NetNS = 2
	ev.Container, ev.Cgroup = "", "/very/long/cgroup/path/that/goes/on/and/on/to/a\x1b[31m/leaf.scope"
	w.Event(ev)
	lines := strings.Split(strings.TrimSuffix(buf.String(), "\n"), "\n")
	if len(lines) != 7 {
		t.Fatalf("got %d lines, want 3 headers and 4 events:\n%s", len(lines), buf.String())
	}
	if strings.Contains(lines[0], "CONTAINER") || strings.Contains(lines[1], "nginx") || !strings.HasSuffix(lines[1], "5000  -        -") {
		t.Errorf("one container: no CONTAINER column, the layout unchanged:\n%s", buf.String())
	}
	if !strings.HasSuffix(lines[3], " CONTAINER") || strings.Contains(lines[3], "NETNS") || !strings.HasSuffix(lines[4], " docker:c0ffee012345") {
		t.Errorf("second container: a new header and the column:\n%s", buf.String())
	}
	if i := strings.Index(lines[3], "CONTAINER"); i != strings.Index(lines[4], "docker:") {
		t.Errorf("CONTAINER not aligned with its header:\n%s", buf.String())
	}
	if !strings.HasSuffix(lines[5], "NETNS      CONTAINER") {
		t.Errorf("both columns' header: %q", lines[5])
	}
	last := lines[6]
	if strings.ContainsRune(last, '\x1b') || !strings.HasSuffix(last, "/leaf.scope") || !strings.Contains(last, " web ") ||
		strings.Index(lines[5], "NETNS") != strings.Index(last, "web") || strings.Index(lines[5], "CONTAINER") != strings.Index(last, "…") {
		t.Errorf("NETNS and a cut, sanitised CONTAINER, aligned:\n%s\n%s", lines[5], last)
	}
	if l := ContainerLabel(Event{Cgroup: strings.Repeat("x", 100)}); len([]rune(l)) != containerWidth || !strings.HasPrefix(l, "…") {
		t.Errorf("a long label: %q", l)
	}
}
