package report

import (
	"bytes"
	"encoding/json"
	"net/netip"
	"testing"
	"time"
)

// jsonAccept is the accept event's schema as encoding/json would write it.
type jsonAccept struct {
	Type       string  `json:"type"`
	Time       string  `json:"time"`
	PID        uint32  `json:"pid"`
	Comm       string  `json:"comm"`
	NetNS      uint32  `json:"netns"`
	CgroupID   uint64  `json:"cgroup_id"`
	Cgroup     string  `json:"cgroup,omitempty"`
	Container  string  `json:"container,omitempty"`
	Family     int     `json:"family"`
	LocalAddr  string  `json:"local_addr"`
	LocalPort  uint16  `json:"local_port"`
	RemoteAddr string  `json:"remote_addr"`
	RemotePort uint16  `json:"remote_port"`
	QueueWait  *int64  `json:"queue_wait_us"` // null: handshake not seen
	Backlog    *uint32 `json:"backlog"`       // null: listener not seen
	BacklogMax *uint32 `json:"backlog_max"`
	ClientGone bool    `json:"client_gone"`
	State      string  `json:"state"`
}

// viaEncodingJSON is what the reflection-based encoder makes of an event:
// the hand-written Event must match it byte for byte.
func viaEncodingJSON(t testing.TB, e Event) []byte {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	raddr := Normalize(e.RemoteAddr)
	if err := enc.Encode(jsonAccept{
		Type: "accept", Time: e.Time.Format(time.RFC3339Nano), PID: e.PID, Comm: Sanitize(e.Comm),
		NetNS: e.NetNS, CgroupID: e.CgroupID, Cgroup: Sanitize(e.Cgroup), Container: Sanitize(e.Container),
		Family: family(raddr), LocalAddr: Normalize(e.LocalAddr).String(), LocalPort: e.LocalPort,
		RemoteAddr: raddr.String(), RemotePort: e.RemotePort, QueueWait: usIf(e.QueueWait, e.HasWait),
		Backlog: u32If(e.Backlog, e.HasBacklog), BacklogMax: u32If(e.BacklogMax, e.HasBacklog),
		ClientGone: e.ClientGone, State: Sanitize(e.State),
	}); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func checkEventJSON(t testing.TB, e Event) {
	var got bytes.Buffer
	if err := NewJSON(&got).Event(e); err != nil {
		t.Fatal(err)
	}
	if want := viaEncodingJSON(t, e); !bytes.Equal(got.Bytes(), want) {
		t.Errorf("hand-written event JSON differs:\n got %s\nwant %s", got.Bytes(), want)
	}
}

func TestEventMatchesEncodingJSON(t *testing.T) {
	ts := time.Date(2026, 11, 21, 19, 1, 2, 120000000, time.FixedZone("X", -3600))
	for _, e := range []Event{
		{},
		{Time: ts, PID: 1, Comm: `a"b\c`, LocalAddr: netip.MustParseAddr("::ffff:10.0.0.1"), LocalPort: 80,
			RemoteAddr: netip.MustParseAddr("::ffff:10.0.0.2"), RemotePort: 1, HasWait: true, QueueWait: 1499 * time.Nanosecond},
		{Time: ts, PID: 4294967295, Comm: "ünï\x1b[0m\x7f\xff<&>\u2028", LocalAddr: netip.MustParseAddr("fe80::1%eth0"),
			RemoteAddr: netip.MustParseAddr("2001:db8::1"), HasBacklog: true, Backlog: 3, BacklogMax: 4096,
			ClientGone: true, State: "CLOSE_WAIT"},
	} {
		checkEventJSON(t, e)
	}
}

func FuzzEventJSON(f *testing.F) {
	f.Add("nginx", "ESTABLISHED", int64(1234))
	f.Add("\"\\\x00\x01", "", int64(-5))
	f.Fuzz(func(t *testing.T, comm, state string, wait int64) {
		checkEventJSON(t, Event{Time: time.Unix(0, wait).UTC(), Comm: comm, State: state, HasWait: wait > 0,
			QueueWait: time.Duration(wait), RemoteAddr: netip.MustParseAddr("192.0.2.1")})
	})
}
