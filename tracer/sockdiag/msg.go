package sockdiag

import (
	"encoding/binary"
	"fmt"
	"net/netip"

	"golang.org/x/sys/unix"
)

// Wire formats of include/uapi/linux/inet_diag.h. Ports and addresses are
// in network byte order; everything else in host order.
const (
	sockDiagByFamily = 20 // SOCK_DIAG_BY_FAMILY
	reqBytecode      = 1  // INET_DIAG_REQ_BYTECODE
	attrCgroupID     = 21 // INET_DIAG_CGROUP_ID: the socket's cgroup v2 id (5.9+)
	reqLen           = 56 // struct inet_diag_req_v2
	msgLen           = 72 // struct inet_diag_msg
)

// TCP states (include/net/tcp_states.h).
const (
	StateEstablished State = 1
	StateSynSent     State = 2
	StateSynRecv     State = 3
	StateFinWait1    State = 4
	StateFinWait2    State = 5
	StateTimeWait    State = 6
	StateClose       State = 7
	StateCloseWait   State = 8
	StateLastAck     State = 9
	StateListen      State = 10
	StateClosing     State = 11
	numStates              = 12 // 12 is NEW_SYN_RECV, which the kernel reports as SYN_RECV
)

// State is a kernel TCP state.
type State uint8

var stateNames = [numStates]string{"", "ESTABLISHED", "SYN_SENT", "SYN_RECV", "FIN_WAIT1", "FIN_WAIT2",
	"TIME_WAIT", "CLOSE", "CLOSE_WAIT", "LAST_ACK", "LISTEN", "CLOSING"}

func (s State) String() string {
	if s > 0 && int(s) < numStates {
		return stateNames[s]
	}
	return fmt.Sprintf("STATE_%d", uint8(s))
}

// States lists every state a connection can be in, in the kernel's order.
func States() []State {
	out := make([]State, 0, numStates-1)
	for s := State(1); s < numStates; s++ {
		out = append(out, s)
	}
	return out
}

// stateMask asks for every state but LISTEN. The kernel adds request
// sockets (NEW_SYN_RECV) when SYN_RECV is asked for, and TIME_WAIT sockets
// when TIME_WAIT (or FIN_WAIT2, for timewait sockets in that sub-state) is.
const (
	listenMask = 1 << StateListen
	connMask   = (1<<numStates - 1) &^ 1 &^ listenMask
)

// request encodes a dump request for one family of TCP sockets in the
// states of mask, with an optional bytecode filter.
func request(family uint8, mask uint32, bytecode []byte) []byte {
	b := make([]byte, reqLen, reqLen+4+len(bytecode))
	b[0] = family
	b[1] = unix.IPPROTO_TCP
	binary.NativeEndian.PutUint32(b[4:], mask)
	if len(bytecode) > 0 {
		b = binary.NativeEndian.AppendUint16(b, uint16(4+len(bytecode)))
		b = binary.NativeEndian.AppendUint16(b, reqBytecode)
		b = append(b, bytecode...) // always a multiple of 4: no padding
	}
	return b
}

// sock is the part of an inet_diag_msg a snapshot uses.
type sock struct {
	state          State
	local, remote  netip.AddrPort // IPv4-mapped addresses already unmapped
	rqueue, wqueue uint32         // listeners: accept queue now, and its limit
	cgroup         uint64         // cgroup v2 id (5.9+; 0: not sent, as for request and timewait sockets)
}

// parseMsg decodes the fixed part of an inet_diag_msg and, of the attributes
// after it, the socket's cgroup.
func parseMsg(b []byte, s *sock) error {
	if len(b) < msgLen {
		return fmt.Errorf("short inet_diag message: %d bytes", len(b))
	}
	var src, dst netip.Addr
	switch b[0] {
	case unix.AF_INET:
		src = netip.AddrFrom4([4]byte(b[8:12]))
		dst = netip.AddrFrom4([4]byte(b[24:28]))
	case unix.AF_INET6:
		src = netip.AddrFrom16([16]byte(b[8:24])).Unmap()
		dst = netip.AddrFrom16([16]byte(b[24:40])).Unmap()
	default:
		return fmt.Errorf("inet_diag message of family %d", b[0])
	}
	s.state = State(b[1])
	if s.state == 12 { // TCP_NEW_SYN_RECV: older kernels may leak it
		s.state = StateSynRecv
	}
	s.local = netip.AddrPortFrom(src, binary.BigEndian.Uint16(b[4:6]))
	s.remote = netip.AddrPortFrom(dst, binary.BigEndian.Uint16(b[6:8]))
	s.rqueue = binary.NativeEndian.Uint32(b[56:60])
	s.wqueue = binary.NativeEndian.Uint32(b[60:64])
	s.cgroup = 0
	// Attributes: {u16 length, u16 type, value} each, 4-byte aligned.
	for a := b[msgLen:]; len(a) >= 4; {
		n := int(binary.NativeEndian.Uint16(a))
		if n < 4 || n > len(a) {
			break
		}
		if binary.NativeEndian.Uint16(a[2:]) == attrCgroupID && n >= 12 {
			s.cgroup = binary.NativeEndian.Uint64(a[4:12])
		}
		a = a[min((n+3)&^3, len(a)):]
	}
	return nil
}
