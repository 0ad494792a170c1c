package sockdiag

import (
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// listenN opens n dual-stack listeners and k connections to each, from
// 127.0.0.2, plus one from ::1 to the first.
func listenN(t *testing.T, n, k int) []uint16 {
	t.Helper()
	var ports []uint16
	for i := 0; i < n; i++ {
		ln, err := net.Listen("tcp", "[::]:0")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { ln.Close() })
		port := ln.Addr().(*net.TCPAddr).Port
		ports = append(ports, uint16(port))
		var conns []net.Conn
		go func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				conns = append(conns, c) // kept open until the listener's cleanup
			}
		}()
		for j := 0; j < k; j++ {
			d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP("127.0.0.2")}}
			c, err := d.Dial("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { c.Close() })
		}
		if i == 0 {
			c, err := net.Dial("tcp", net.JoinHostPort("::1", strconv.Itoa(port)))
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { c.Close() })
		}
	}
	return ports
}

// ssSockets lists "lport remote state" for the sockets ss selects with the
// filter expression, listeners left out.
func ssSockets(t *testing.T, expr string) []string {
	t.Helper()
	out, err := exec.Command("ss", "-Htan", expr).Output()
	if err != nil {
		t.Fatalf("ss -Htan %q: %v", expr, err)
	}
	var got []string
	for _, l := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		f := strings.Fields(l)
		if len(f) < 5 || f[0] == "LISTEN" {
			continue
		}
		local, err := netip.ParseAddrPort(strings.ReplaceAll(strings.ReplaceAll(f[3], "[", ""), "]", ""))
		if err != nil {
			local = mustAddrPort(t, f[3])
		}
		remote := mustAddrPort(t, f[4])
		state := strings.ReplaceAll(f[0], "-", "_")
		if state == "ESTAB" {
			state = "ESTABLISHED"
		}
		got = append(got, fmt.Sprintf("%d %s %s", local.Port(), remote.Addr().Unmap(), state))
	}
	slices.Sort(got)
	return got
}

func mustAddrPort(t *testing.T, s string) netip.AddrPort {
	t.Helper()
	i := strings.LastIndexByte(s, ':')
	a, err := netip.ParseAddr(strings.Trim(s[:i], "[]"))
	if err != nil {
		t.Fatalf("address %q: %v", s, err)
	}
	p, err := strconv.Atoi(s[i+1:])
	if err != nil {
		t.Fatalf("port %q: %v", s, err)
	}
	return netip.AddrPortFrom(a, uint16(p))
}

// TestFilterLikeSS: for random sets of watched ports, the kernel filter
// selects exactly the sockets ss selects for "sport = :a or sport = :b ...".
func TestFilterLikeSS(t *testing.T) {
	if _, err := exec.LookPath("ss"); err != nil {
		t.Skip("needs ss (iproute2)")
	}
	ports := listenN(t, 8, 2)
	d, err := Open()
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	rng := rand.New(rand.NewPCG(3, 4))
	time.Sleep(100 * time.Millisecond) // accepts settle
	for round := 0; round < 6; round++ {
		var sub []uint16
		for _, p := range ports {
			if rng.IntN(2) == 0 {
				sub = append(sub, p)
			}
		}
		if len(sub) == 0 {
			sub = ports[:1]
		}
		slices.Sort(sub)
		var terms []string
		for _, p := range sub {
			terms = append(terms, fmt.Sprintf("sport = :%d", p))
		}
		want := ssSockets(t, strings.Join(terms, " or "))
		var got []string
		err := d.dump(connMask, compilePorts(portRanges(sub, maxRanges)), func(k *sock) {
			got = append(got, fmt.Sprintf("%d %s %s", k.local.Port(), k.remote.Addr(), k.state))
		})
		if err != nil {
			t.Fatal(err)
		}
		slices.Sort(got)
		if !slices.Equal(got, want) {
			t.Errorf("ports %v:\n got %q\nwant %q (ss)", sub, got, want)
		}
		if len(got) != 2*len(sub)+boolInt(slices.Contains(sub, ports[0])) {
			t.Errorf("ports %v: %d sockets, want 2 per port and ::1 on the first", sub, len(got))
		}
	}
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

// TestSnapshotCounts: per address, port and state, with and without -port,
// and the listeners' queues.
func TestSnapshotCounts(t *testing.T) {
	ports := listenN(t, 3, 2)
	time.Sleep(100 * time.Millisecond)
	s, err := Take(Filter{Ports: ports[:2]})
	if err != nil {
		t.Fatal(err)
	}
	byAddr := map[string]uint32{}
	for _, a := range s.Addrs {
		byAddr[a.Addr.String()] = a.States.Open()
	}
	if byAddr["127.0.0.2"] != 4 || byAddr["::1"] != 1 || len(byAddr) != 2 {
		t.Errorf("open per address %v, want 127.0.0.2: 4, ::1: 1", byAddr)
	}
	if len(s.Ports) != 2 || s.Ports[0].Port != min(ports[0], ports[1]) {
		t.Fatalf("ports %+v", s.Ports)
	}
	for _, p := range s.Ports {
		if len(p.Listeners) != 1 || p.Listeners[0].Limit == 0 {
			t.Errorf("port %d listeners %+v, want one with a limit", p.Port, p.Listeners)
		}
	}
	if s.States.Open() != 5 || s.States.Total() != 5 || s.NetNS == 0 {
		t.Errorf("states %v (netns %d), want 5 established", s.States, s.NetNS)
	}
	// Without ports: every listening port of this network namespace,
	// which holds at least the three made here.
	all, err := Take(Filter{Family: 6})
	if err != nil {
		t.Fatal(err)
	}
	seen := 0
	for _, p := range all.Ports {
		if slices.Contains(ports, p.Port) {
			seen++
		}
	}
	for _, a := range all.Addrs {
		if !a.Addr.Is6() {
			t.Errorf("-6 snapshot holds %s", a.Addr)
		}
	}
	if seen != 3 {
		t.Errorf("all ports: %d of the 3 listeners seen: %+v", seen, all.Ports)
	}
}

// TestManyPorts: more scattered ports than one kernel filter holds ranges
// for. The kernel takes the merged program, and user space drops the
// sockets on ports in the merged gaps.
func TestManyPorts(t *testing.T) {
	ports := listenN(t, 2*maxRanges+40, 1)
	time.Sleep(100 * time.Millisecond)
	watched := ports[:maxRanges+60] // every other listener's connection may fall in a gap
	slices.Sort(watched)
	if n := len(portRanges(watched, 1<<16)); n <= maxRanges {
		t.Skipf("the kernel gave %d ports in only %d ranges; need more than %d", len(watched), n, maxRanges)
	}
	s, err := Take(Filter{Ports: watched})
	if err != nil {
		t.Fatal(err)
	}
	want := uint64(len(watched))
	if slices.Contains(watched, ports[0]) {
		want++ // ::1
	}
	if s.States.Total() != want || len(s.Ports) != len(watched) {
		t.Errorf("%d connections on %d ports, want %d on %d", s.States.Total(), len(s.Ports), want, len(watched))
	}
	all, err := Take(Filter{})
	if err != nil {
		t.Fatal(err)
	}
	seen := 0
	for _, p := range all.Ports {
		if slices.Contains(ports, p.Port) && p.States.Open() >= 1 {
			seen++
		}
	}
	if seen != len(ports) {
		t.Errorf("all ports: %d of %d listeners with their connection", seen, len(ports))
	}
	t.Logf("%d watched ports in %d kernel ranges; %d sockets dropped in user space", len(watched), len(portRanges(watched, maxRanges)), s.Dropped)
}
