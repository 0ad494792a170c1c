package report

import (
	"bytes"
	"encoding/json"
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
	}
	var buf bytes.Buffer
	if err := NewText(&buf, TextOptions{Location: time.UTC}).Summary(s); err != nil {
		t.Fatal(err)
	}
	out := buf.String()
	if strings.ContainsRune(out, '\x1b') || !strings.Contains(out, ", ports 80 of cgroup /system.slice/web") ||
		!strings.Contains(out, "kernel counters (netns host, every cgroup): ListenOverflows +3") {
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
