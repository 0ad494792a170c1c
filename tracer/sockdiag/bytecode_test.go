package sockdiag

import (
	"bytes"
	"encoding/binary"
	"math/rand/v2"
	"slices"
	"testing"
)

// What ss sends for these filters, read from its sendmsg with
// `strace -e trace=sendmsg -xx ss -Htn '<filter>'` (iproute2 6.1, amd64).
var ssBytecode = []struct {
	filter string
	ranges []portRange
	want   []byte
}{
	{"sport = :80 or sport = :443", []portRange{{80, 80}, {443, 443}}, []byte{
		0x07, 0x10, 0x14, 0x00, 0x00, 0x00, 0x00, 0x00, 0x50, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
		0x01, 0x04, 0x14, 0x00,
		0x07, 0x10, 0x14, 0x00, 0x00, 0x00, 0x00, 0x00, 0xbb, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
	}},
	{"( sport >= :1000 and sport <= :2000 ) or sport = :8080", []portRange{{1000, 2000}, {8080, 8080}}, []byte{
		0x02, 0x08, 0x14, 0x00, 0x00, 0x00, 0xe8, 0x03,
		0x03, 0x08, 0x0c, 0x00, 0x00, 0x00, 0xd0, 0x07,
		0x01, 0x04, 0x14, 0x00,
		0x07, 0x10, 0x14, 0x00, 0x00, 0x00, 0x00, 0x00, 0x90, 0x1f, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
	}},
}

func TestCompileLikeSS(t *testing.T) {
	for _, tc := range ssBytecode {
		got := compilePorts(tc.ranges)
		if !bytes.Equal(got, tc.want) {
			t.Errorf("%s:\n got % x\nwant % x", tc.filter, got, tc.want)
		}
		if err := audit(got); err != nil {
			t.Errorf("%s: kernel audit: %v", tc.filter, err)
		}
	}
}

func TestPortRanges(t *testing.T) {
	for _, tc := range []struct {
		ports []uint16
		max   int
		want  []portRange
	}{
		{nil, 4, nil},
		{[]uint16{80}, 4, []portRange{{80, 80}}},
		{[]uint16{80, 81, 82, 443, 8000, 65535}, 4, []portRange{{80, 82}, {443, 443}, {8000, 8000}, {65535, 65535}}},
		// Five ranges into three: the two smallest gaps (82-90, 90-100) close.
		{[]uint16{80, 81, 82, 90, 100, 5000, 9000}, 3, []portRange{{80, 100}, {5000, 5000}, {9000, 9000}}},
		{[]uint16{1, 3, 5, 7}, 1, []portRange{{1, 7}}},
	} {
		got := portRanges(tc.ports, tc.max)
		if !slices.Equal(got, tc.want) {
			t.Errorf("portRanges(%v, %d) = %v, want %v", tc.ports, tc.max, got, tc.want)
		}
	}
}

// TestCompileSelects runs compiled programs through a model of the kernel's
// audit and interpreter (net/ipv4/inet_diag.c) on every port.
func TestCompileSelects(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for round := 0; round < 60; round++ {
		n := 1 + rng.IntN(300)
		if round%10 == 0 {
			n = 5000 // many listening ports: merged ranges
		}
		set := map[uint16]bool{}
		for i := 0; i < n; i++ {
			p := uint16(1 + rng.IntN(65535))
			if rng.IntN(4) == 0 { // some runs of neighbours
				for j := 0; j < 1+rng.IntN(20) && int(p)+j <= 65535; j++ {
					set[p+uint16(j)] = true
				}
			}
			set[p] = true
		}
		var ports []uint16
		for p := range set {
			ports = append(ports, p)
		}
		slices.Sort(ports)
		rs := portRanges(ports, maxRanges)
		if len(rs) > maxRanges {
			t.Fatalf("%d ranges, max %d", len(rs), maxRanges)
		}
		prog := compilePorts(rs)
		if err := audit(prog); err != nil {
			t.Fatalf("round %d (%d ranges, %d bytes): audit: %v", round, len(rs), len(prog), err)
		}
		merged := len(rs) < len(portRanges(ports, 1<<16))
		for p := 0; p <= 65535; p++ {
			got := run(prog, uint16(p))
			if set[uint16(p)] && !got {
				t.Fatalf("round %d: port %d is watched but the program rejects it", round, p)
			}
			if got && !set[uint16(p)] && !merged {
				t.Fatalf("round %d: port %d is not watched but the program keeps it", round, p)
			}
			if got && !set[uint16(p)] && !inRanges(rs, uint16(p)) {
				t.Fatalf("round %d: port %d is outside every range but kept", round, p)
			}
		}
	}
}

func inRanges(rs []portRange, p uint16) bool {
	for _, r := range rs {
		if r.lo <= p && p <= r.hi {
			return true
		}
	}
	return false
}

// run is the kernel's inet_diag_bc_run for the ops compilePorts emits,
// for a socket with local port sport.
func run(bc []byte, sport uint16) bool {
	l := len(bc)
	off := 0
	for l > 0 {
		code, yes, no := bc[off], int(bc[off+1]), int(binary.NativeEndian.Uint16(bc[off+2:]))
		ok := true
		switch code {
		case 0: // NOP
		case bcJMP:
			ok = false
		case bcSGE:
			ok = sport >= binary.NativeEndian.Uint16(bc[off+6:])
		case bcSLE:
			ok = sport <= binary.NativeEndian.Uint16(bc[off+6:])
		case bcSCond:
			port := int32(binary.NativeEndian.Uint32(bc[off+8:]))
			fam, plen := bc[off+4], bc[off+5]
			ok = (port == -1 || port == int32(sport)) && fam == 0 && plen == 0
		default:
			panic("op not modelled")
		}
		if ok {
			l -= yes
			off += yes
		} else {
			l -= no
			off += no
		}
	}
	return l == 0
}

type auditError string

func (e auditError) Error() string { return string(e) }

// audit is the kernel's inet_diag_bc_audit for these ops.
func audit(bc []byte) error {
	if len(bc) < opLen {
		return auditError("shorter than one op")
	}
	if len(bc) > 0xffff-4 {
		return auditError("longer than a netlink attribute")
	}
	l := len(bc)
	off := 0
	for l > 0 {
		minLen := opLen
		code, yes, no := bc[off], int(bc[off+1]), int(binary.NativeEndian.Uint16(bc[off+2:]))
		switch code {
		case bcSCond:
			minLen += 8
			if l < minLen {
				return auditError("short hostcond")
			}
			fam := bc[off+4]
			alen := map[byte]int{0: 0, 2: 4, 10: 16}[fam]
			minLen += alen
			if l < minLen || int(bc[off+5]) > 8*alen {
				return auditError("bad hostcond")
			}
		case bcSGE, bcSLE:
			minLen += opLen
			if l < minLen {
				return auditError("short port comparison")
			}
		case bcJMP, 0:
		default:
			return auditError("unknown op")
		}
		if code != 0 {
			if no < minLen || no > l+4 || no&3 != 0 {
				return auditError("bad no")
			}
			if no < l && !validCC(bc, len(bc), l-no) {
				return auditError("no lands inside an op")
			}
		}
		if yes < minLen || yes > l+4 || yes&3 != 0 {
			return auditError("bad yes")
		}
		off += yes
		l -= yes
	}
	if l != 0 {
		return auditError("does not end on the end")
	}
	return nil
}

func validCC(bc []byte, l, cc int) bool {
	off := 0
	for l >= 0 {
		if cc > l {
			return false
		}
		if cc == l {
			return true
		}
		yes := int(bc[off+1])
		if yes < 4 || yes&3 != 0 {
			return false
		}
		l -= yes
		off += yes
	}
	return false
}

func TestRequest(t *testing.T) {
	prog := compilePorts([]portRange{{80, 80}, {443, 443}})
	b := request(10, connMask, prog)
	// ss's request for the same filter: family, protocol, states, then the
	// attribute header (length 40, type 1) and the program.
	if len(b) != reqLen+4+len(prog) || b[0] != 10 || b[1] != 6 {
		t.Fatalf("request % x", b)
	}
	if !bytes.Equal(b[reqLen:reqLen+4], []byte{0x28, 0x00, 0x01, 0x00}) || !bytes.Equal(b[reqLen+4:], prog) {
		t.Errorf("attribute % x", b[reqLen:])
	}
	// Every state but LISTEN (bit 10); bit 0 is no state.
	if m := binary.NativeEndian.Uint32(b[4:]); m != 0xbfe {
		t.Errorf("state mask %#x, want 0xbfe", m)
	}
	if len(request(2, listenMask, nil)) != reqLen {
		t.Errorf("a request without a filter carries an attribute")
	}
}

func TestParseMsg(t *testing.T) {
	b := make([]byte, msgLen+8) // attributes after the message are ignored
	b[0], b[1] = 10, 3          // AF_INET6, SYN_RECV
	binary.BigEndian.PutUint16(b[4:], 8080)
	binary.BigEndian.PutUint16(b[6:], 40000)
	copy(b[8:24], []byte{0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 127, 0, 0, 1})
	copy(b[24:40], []byte{0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 127, 0, 0, 9})
	binary.NativeEndian.PutUint32(b[56:], 3)
	binary.NativeEndian.PutUint32(b[60:], 128)
	var s sock
	if err := parseMsg(b, &s); err != nil {
		t.Fatal(err)
	}
	if s.state != StateSynRecv || s.local.String() != "127.0.0.1:8080" || s.remote.String() != "127.0.0.9:40000" ||
		s.rqueue != 3 || s.wqueue != 128 {
		t.Errorf("parsed %+v", s)
	}
	b[0] = 2 // AF_INET
	copy(b[8:], []byte{10, 0, 0, 1})
	copy(b[24:], []byte{192, 0, 2, 7})
	b[1] = 12 // NEW_SYN_RECV counts as SYN_RECV
	if err := parseMsg(b, &s); err != nil || s.remote.Addr().String() != "192.0.2.7" || s.state != StateSynRecv {
		t.Errorf("IPv4: %+v %v", s, err)
	}
	if err := parseMsg(b[:msgLen-1], &s); err == nil {
		t.Error("short message accepted")
	}
	b[0] = 1
	if err := parseMsg(b, &s); err == nil {
		t.Error("AF_UNIX message accepted")
	}
}
