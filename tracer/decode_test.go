package tracer

import (
	"net/netip"
	"testing"
	"time"
	"unsafe"

	"github.com/acceptwatch/acceptwatch/report"
)

func rawEvent(e acceptwatchEvent) []byte {
	return unsafe.Slice((*byte)(unsafe.Pointer(&e)), unsafe.Sizeof(e))
}

func TestDecodeEvent(t *testing.T) {
	boot := time.Date(2026, 11, 21, 8, 0, 0, 0, time.UTC)
	v4 := acceptwatchEvent{TsNs: uint64(3 * time.Second), Pid: 77, Lport: 80, Rport: 40000, Family: 4, State: 8,
		QueueWaitNs: 1500, Backlog: 2, BacklogMax: 128,
		Flags: uint8(acceptwatchEventFlagsEVENT_F_WAIT | acceptwatchEventFlagsEVENT_F_BACKLOG | acceptwatchEventFlagsEVENT_F_GONE)}
	copy(v4.Laddr[:], netip.MustParseAddr("::ffff:10.0.0.1").AsSlice())
	copy(v4.Raddr[:], netip.MustParseAddr("::ffff:192.0.2.7").AsSlice())
	for i, c := range "nginx\x1b" {
		v4.Comm[i] = int8(c)
	}
	var ev report.Event
	if err := decodeEvent(rawEvent(v4), boot, &ev, nil); err != nil {
		t.Fatal(err)
	}
	want := report.Event{
		Time: boot.Add(3 * time.Second), PID: 77, Comm: "nginx\x1b",
		LocalAddr: netip.MustParseAddr("10.0.0.1"), LocalPort: 80,
		RemoteAddr: netip.MustParseAddr("192.0.2.7"), RemotePort: 40000,
		QueueWait: 1500 * time.Nanosecond, HasWait: true, Backlog: 2, BacklogMax: 128, HasBacklog: true,
		ClientGone: true, State: "CLOSE_WAIT",
	}
	if ev != want {
		t.Errorf("v4: got %+v, want %+v", ev, want)
	}

	v6 := acceptwatchEvent{Family: 6, Lport: 443}
	copy(v6.Raddr[:], netip.MustParseAddr("2001:db8::9").AsSlice())
	for i := range v6.Comm { // no NUL: all 16 bytes are the name
		v6.Comm[i] = 'a'
	}
	if err := decodeEvent(rawEvent(v6), boot, &ev, nil); err != nil {
		t.Fatal(err)
	}
	if ev.RemoteAddr != netip.MustParseAddr("2001:db8::9") || len(ev.Comm) != 16 || ev.LocalAddr != netip.IPv6Unspecified() ||
		ev.HasWait || ev.HasBacklog || ev.ClientGone {
		t.Errorf("v6: got %+v", ev)
	}

	if err := decodeEvent(make([]byte, eventSize-1), boot, &ev, nil); err == nil {
		t.Error("short record decoded without error")
	}
}

func TestAddrOfKeyUnmaps(t *testing.T) {
	k := netip.MustParseAddr("::ffff:127.0.0.2").As16()
	if got := addrOfKey(addrKey{Addr: k}); got != netip.MustParseAddr("127.0.0.2") {
		t.Errorf("got %v", got)
	}
}
