package report

import (
	"bytes"
	"encoding/json"
	"net/netip"
	"strings"
	"testing"
)

func sampleSnapshot() Snapshot {
	s := Snapshot{
		Time:  at(0),
		NetNS: 4026531840,
		Ports: []string{"80", "8000-8100"},
		Addresses: []SnapAddr{
			{Addr: netip.MustParseAddr("192.0.2.7"), ConnStates: ConnStates{Established: 3, TimeWait: 2}},
			{Addr: netip.MustParseAddr("::ffff:203.0.113.9"), ConnStates: ConnStates{SynRecv: 12}},
			{Addr: netip.MustParseAddr("2001:db8::2"), ConnStates: ConnStates{Established: 1, CloseWait: 11, FinWait: 1, Other: 1}},
			{Addr: netip.MustParseAddr("198.51.100.1"), ConnStates: ConnStates{Established: 5}},
		},
		States: []StateCount{{"ESTABLISHED", 9}, {"SYN_SENT", 0}, {"SYN_RECV", 12}, {"FIN_WAIT1", 1}, {"TIME_WAIT", 2}, {"CLOSE_WAIT", 11}, {"LAST_ACK", 1}},
		Listeners: []SnapPort{
			{Port: 80, Listeners: 2, Queue: 4, QueueLimit: 8, QueueFull: true, ConnStates: ConnStates{Established: 8, TimeWait: 2, SynRecv: 12}},
			{Port: 8080, Listeners: 1, Queue: 0, QueueLimit: 4096, ConnStates: ConnStates{Established: 1, CloseWait: 11, FinWait: 1, Other: 1}},
			{Port: 8090, ConnStates: ConnStates{}},
		},
	}
	for _, a := range s.Addresses {
		s.Total.Add(a.ConnStates)
	}
	s.Findings = SnapshotFindings(s, SnapshotThresholds{SynRecvShare: 0.5, AddressShare: 0.3, CloseWait: 10})
	return s
}

func TestGoldenSnapshot(t *testing.T) {
	var buf bytes.Buffer
	s := sampleSnapshot()
	if err := WriteSnapshotText(&buf, s, TextOptions{Location: testLoc, Top: 3}); err != nil {
		t.Fatal(err)
	}
	if err := WriteSnapshotText(&buf, Snapshot{Time: at(1), NetNS: 1}, TextOptions{Location: testLoc}); err != nil {
		t.Fatal(err)
	}
	if err := WriteSnapshotJSON(&buf, s); err != nil {
		t.Fatal(err)
	}
	checkGolden(t, "snapshot", buf.Bytes())
}

func TestSnapshotFindings(t *testing.T) {
	s := sampleSnapshot()
	want := []string{
		"port 80: accept queue full now (4/8)",
		"port 80: 12 of 22 connections (55%) are half-open (SYN_RECV)",
		"port 8080: 11 connections in CLOSE_WAIT",
		"2001:db8::2 holds 14 of 36 connections (39%)",
	}
	if len(s.Findings) != len(want) {
		t.Fatalf("findings %q, want %d", s.Findings, len(want))
	}
	for i, w := range want {
		if !strings.HasPrefix(s.Findings[i], w) {
			t.Errorf("finding %d = %q, want %q…", i, s.Findings[i], w)
		}
	}
	// Thresholds off, or counts under the minimums: no share findings.
	if f := SnapshotFindings(s, SnapshotThresholds{}); len(f) != 1 {
		t.Errorf("thresholds off: %q, want only the full queue", f)
	}
	small := Snapshot{Addresses: []SnapAddr{{Addr: netip.MustParseAddr("192.0.2.1"), ConnStates: ConnStates{SynRecv: 3}}},
		Listeners: []SnapPort{{Port: 1, ConnStates: ConnStates{SynRecv: 3}}}, Total: ConnStates{SynRecv: 3}}
	if f := SnapshotFindings(small, SnapshotThresholds{SynRecvShare: 0.1, AddressShare: 0.1, CloseWait: 1}); len(f) != 0 {
		t.Errorf("3 half-open connections: %q, want none", f)
	}
}

func TestSnapshotJSONParseBack(t *testing.T) {
	var cw countingWriter
	if err := WriteSnapshotJSON(&cw, sampleSnapshot()); err != nil {
		t.Fatal(err)
	}
	if len(cw.writes) != 1 {
		t.Fatalf("%d writes, want 1", len(cw.writes))
	}
	var v struct {
		Type        string
		Connections struct{ Total, Established, SynRecv uint64 } `json:"connections"`
		States      map[string]uint64
		Addresses   []struct {
			Addr        string
			Total       uint64
			Established uint64
		}
		Listeners []struct {
			Port             uint16
			AcceptQueue      uint64 `json:"accept_queue"`
			AcceptQueueLimit uint64 `json:"accept_queue_limit"`
			AcceptQueueFull  bool   `json:"accept_queue_full"`
		}
	}
	if err := json.Unmarshal(cw.writes[0], &v); err != nil {
		t.Fatal(err)
	}
	if v.Type != "snapshot" || v.Connections.Total != 36 || v.States["SYN_RECV"] != 12 || len(v.Addresses) != 4 ||
		v.Addresses[1].Addr != "203.0.113.9" || v.Listeners[0].AcceptQueue != 4 || !v.Listeners[0].AcceptQueueFull {
		t.Errorf("parsed back %+v", v)
	}
}
