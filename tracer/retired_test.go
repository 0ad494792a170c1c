package tracer

import (
	"math"
	"testing"
)

// The whole run's counts of an address are its drained maps' plus the map
// in use's; addresses only drained maps held are visited too, each once.
func TestRetiredAddrs(t *testing.T) {
	none := uint64(math.MaxUint64)
	r := newRetiredAddrs()
	a, b, c := key(1), key(2), key(3)
	// First drained map: a and b; second: a again.
	r.add(a, &acceptwatchAddrStats{Accepted: 5, Syns: 6, Drops: 1, FirstNs: 100, LastNs: 200, WaitMinNs: 30, WaitMaxNs: 90, WaitHist: [30]uint32{2: 5}})
	r.add(b, &acceptwatchAddrStats{Accepted: 3, FirstNs: 150, LastNs: 160, WaitMinNs: none})
	r.add(a, &acceptwatchAddrStats{Accepted: 4, Handshakes: 4, FirstNs: 300, LastNs: 400, WaitMinNs: 20, WaitMaxNs: 50, WaitHist: [30]uint32{2: 3, 4: 1}})
	// In use: a and c.
	active := func(fn func(addrKey, *acceptwatchAddrStats)) error {
		fn(a, &acceptwatchAddrStats{Accepted: 2, Gone: 1, FirstNs: 500, LastNs: 600, WaitMinNs: none, Window: 3, WindowFirstNs: 550})
		fn(c, &acceptwatchAddrStats{Accepted: 1, FirstNs: 510, LastNs: 510, WaitMinNs: none})
		return nil
	}
	for round := range 2 {
		got := map[byte]acceptwatchAddrStats{}
		err := r.each(active, func(k addrKey, v *acceptwatchAddrStats) {
			if _, dup := got[k.Addr[15]]; dup {
				t.Errorf("round %d: address %d visited twice", round, k.Addr[15])
			}
			got[k.Addr[15]] = *v
		})
		if err != nil {
			t.Fatal(err)
		}
		wantA := acceptwatchAddrStats{Accepted: 11, Handshakes: 4, Gone: 1, Syns: 6, Drops: 1, FirstNs: 100, LastNs: 600,
			WaitMinNs: 20, WaitMaxNs: 90, WaitHist: [30]uint32{2: 8, 4: 1}, Window: 3, WindowFirstNs: 550}
		if got[1] != wantA {
			t.Errorf("round %d: a %+v, want %+v", round, got[1], wantA)
		}
		if got[2].Accepted != 3 || got[3].Accepted != 1 || len(got) != 3 {
			t.Errorf("round %d: b %d, c %d, %d addresses", round, got[2].Accepted, got[3].Accepted, len(got))
		}
	}
	// Nothing retired: the map in use as it is.
	empty := newRetiredAddrs()
	n := 0
	if err := empty.each(active, func(addrKey, *acceptwatchAddrStats) { n++ }); err != nil || n != 2 {
		t.Errorf("nothing retired: %d visits, %v", n, err)
	}
}
