package tracer

import "testing"

func key(b byte) [16]byte { return [16]byte{15: b} }

// before finds each address's previous counters whether the map gives the
// old entries in the same order with new ones in between (the fast path) or,
// should a kernel ever do so, in another order.
func TestLiveBefore(t *testing.T) {
	l := &Live{
		prevKeys: [][16]byte{key(1), key(2), key(3)},
		prevAcc:  []uint64{10, 20, 30},
		prevMono: 1000,
	}
	old := &acceptwatchAddrStats{FirstNs: 500}
	young := &acceptwatchAddrStats{FirstNs: 1500}
	type visit struct {
		k    byte
		v    *acceptwatchAddrStats
		want uint64
	}
	for _, tc := range []struct {
		name      string
		visits    []visit
		wantIndex bool
	}{
		{"same order", []visit{{1, old, 10}, {2, old, 20}, {3, old, 30}}, false},
		{"new ones in between", []visit{{9, young, 0}, {1, old, 10}, {2, old, 20}, {8, young, 0}, {3, old, 30}, {7, young, 0}}, false},
		{"another order", []visit{{3, old, 30}, {1, old, 10}, {2, old, 20}}, true},
		{"missed by the previous read", []visit{{1, old, 10}, {6, old, 0}, {2, old, 20}, {3, old, 30}}, true},
	} {
		l.index = nil
		j := 0
		for _, v := range tc.visits {
			if got := l.before(key(v.k), v.v, &j); got != v.want {
				t.Errorf("%s: address %d: before %d, want %d", tc.name, v.k, got, v.want)
			}
		}
		if (l.index != nil) != tc.wantIndex {
			t.Errorf("%s: index built %v, want %v", tc.name, l.index != nil, tc.wantIndex)
		}
	}
}
