package sockdiag

import (
	"encoding/binary"
	"slices"
)

// inet_diag bytecode (include/uapi/linux/inet_diag.h). A program is a list
// of 4-byte ops {code u8, yes u8, no u16}; the kernel runs it per socket,
// moving "yes" or "no" bytes forward after each test, and keeps the socket
// when it lands exactly on the end. A "no" that jumps 4 bytes past the end
// rejects. Some ops carry data after them (counted in "yes").
const (
	bcJMP    = 1 // always takes "no"
	bcSGE    = 2 // local port >= the port in the next op's "no"
	bcSLE    = 3 // local port <= ...
	bcSCond  = 7 // local address/port matches the inet_diag_hostcond that follows
	opLen    = 4
	condLen  = opLen + 8 + 4 // op, hostcond {family, prefix_len, pad, port int32}, 4 address bytes (AF_UNSPEC)
	rangeLen = 2 * 2 * opLen // S_GE and S_LE, each with its data op
)

// maxRanges bounds the program: the kernel runs it on every socket it
// visits (cost linear in its length) and audits it in quadratic time, and a
// netlink attribute holds at most 64 KiB. With more distinct port ranges
// than this (a machine listening on hundreds of scattered ports), the
// closest ranges are merged: the kernel then sends a few sockets on ports
// in the gaps, and Snapshot drops them by their exact port.
const maxRanges = 64

// portRange is an inclusive range of local ports.
type portRange struct{ lo, hi uint16 }

// portRanges turns sorted, unique ports into ranges, at most max of them:
// beyond that the smallest gaps are closed (a superset of the ports).
func portRanges(ports []uint16, max int) []portRange {
	var rs []portRange
	for _, p := range ports {
		if n := len(rs); n > 0 && rs[n-1].hi+1 == p {
			rs[n-1].hi = p
			continue
		}
		rs = append(rs, portRange{p, p})
	}
	if len(rs) <= max {
		return rs
	}
	// Close the len(rs)-max smallest gaps (ties: the lower gap first).
	gaps := make([]int, len(rs)-1) // gap i lies between rs[i] and rs[i+1]
	for i := range gaps {
		gaps[i] = i
	}
	width := func(i int) int { return int(rs[i+1].lo) - int(rs[i].hi) }
	slices.SortStableFunc(gaps, func(a, b int) int { return width(a) - width(b) })
	closed := make([]bool, len(gaps))
	for _, g := range gaps[:len(rs)-max] {
		closed[g] = true
	}
	out := []portRange{rs[0]}
	for i := 1; i < len(rs); i++ {
		if closed[i-1] {
			out[len(out)-1].hi = rs[i].hi
		} else {
			out = append(out, rs[i])
		}
	}
	return out
}

// compilePorts returns a program keeping sockets whose local port is in
// one of the ranges, laid out as ss(8) compiles
// "sport = :80 or ( sport >= :8000 and sport <= :8100 ) or ...":
// a left-nested chain of ORs. nil for no ranges (no filter).
func compilePorts(rs []portRange) []byte {
	var prog []byte
	for i, r := range rs {
		var term []byte
		if r.lo == r.hi {
			term = sportEq(r.lo)
		} else {
			term = and(sportCmp(bcSGE, r.lo), sportCmp(bcSLE, r.hi))
		}
		if i == 0 {
			prog = term
		} else {
			prog = or(prog, term)
		}
	}
	return prog
}

func op(code, yes uint8, no uint16) []byte {
	b := []byte{code, yes, 0, 0}
	binary.NativeEndian.PutUint16(b[2:], no)
	return b
}

// sportEq is ss's "sport = :P": a host condition of family AF_UNSPEC
// (any address) with a port. Its "no" rejects.
func sportEq(p uint16) []byte {
	b := op(bcSCond, condLen, condLen+opLen)
	b = append(b, 0, 0, 0, 0) // family AF_UNSPEC, prefix_len 0, padding
	b = binary.NativeEndian.AppendUint32(b, uint32(p))
	return append(b, 0, 0, 0, 0) // address (ss sends 4 bytes when not AF_INET6)
}

// sportCmp is ss's "sport >= :P" (bcSGE) or "sport <= :P" (bcSLE): the
// port travels in the "no" field of a second op.
func sportCmp(code uint8, p uint16) []byte {
	return append(op(code, 2*opLen, 3*opLen), op(0, 0, p)...)
}

// and runs b only where a holds: a's rejecting jumps are moved past b.
func and(a, b []byte) []byte {
	out := append(slices.Clone(a), b...)
	patch(out[:len(a)], len(b))
	return out
}

// or tries b only where a fails: a's rejecting jumps land on b, and a
// success jumps over b.
func or(a, b []byte) []byte {
	out := slices.Clone(a)
	out = append(out, op(bcJMP, opLen, uint16(len(b)+opLen))...)
	return append(out, b...)
}

// patch adds reloc to every jump in a that leaves a to reject (lands 4
// bytes past its end), as ss's ssfilter_patch does.
func patch(a []byte, reloc int) {
	for off := 0; off < len(a); {
		yes := int(a[off+1])
		no := int(binary.NativeEndian.Uint16(a[off+2:]))
		if no == len(a)-off+opLen {
			binary.NativeEndian.PutUint16(a[off+2:], uint16(no+reloc))
		}
		off += yes
	}
}
