package top

import (
	"math/rand/v2"
	"net/netip"
	"slices"
	"testing"
	"time"
)

// Best keeps exactly the n rows a full sort puts first, in that order.
func TestBestMatchesFullSort(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	for round := 0; round < 200; round++ {
		rows := make([]Row, rng.IntN(300))
		for i := range rows {
			// Small ranges make many ties: the address must break them.
			rows[i] = Row{
				Addr:          netip.AddrFrom4([4]byte{10, byte(rng.IntN(4)), byte(i >> 8), byte(i)}),
				New:           uint64(rng.IntN(5)),
				Accepted:      uint64(rng.IntN(5)),
				Syns:          uint64(rng.IntN(5)),
				Handshakes:    uint64(rng.IntN(5)),
				NotAccepted:   uint64(rng.IntN(3)),
				SynackRetrans: uint64(rng.IntN(3)),
				Open:          uint64(rng.IntN(3)),
				WaitP99:       qr(time.Duration(rng.IntN(3))*time.Millisecond, time.Duration(rng.IntN(3))*time.Millisecond),
				Last:          t0.Add(time.Duration(rng.IntN(3)) * time.Second),
			}
			if rng.IntN(10) == 0 {
				rows[i].Last = time.Time{}
			}
		}
		col := Column(rng.IntN(int(numColumns)))
		n := rng.IntN(40)
		var b Best
		b.Reset(col, n)
		for i := range rows {
			b.Offer(&rows[i])
		}
		want := slices.Clone(rows)
		SortRows(want, col)
		want = want[:min(n, len(want))]
		got := b.Sorted()
		if !slices.EqualFunc(got, want, func(x, y Row) bool { return x.Addr == y.Addr }) {
			t.Fatalf("round %d, %s, n %d: kept %v, want %v", round, col, n, labels(got), labels(want))
		}
	}
}

func labels(rows []Row) []string {
	var out []string
	for i := range rows {
		out = append(out, rows[i].Label())
	}
	return out
}

// A second pass reuses the storage: a refresh allocates nothing per address.
func TestBestReusesStorage(t *testing.T) {
	var b Best
	rows := make([]Row, 1000)
	for i := range rows {
		rows[i] = Row{Addr: netip.AddrFrom4([4]byte{10, 0, byte(i >> 8), byte(i)}), New: uint64(i % 97)}
	}
	pass := func() {
		b.Reset(ColRate, 50)
		for i := range rows {
			b.Offer(&rows[i])
		}
	}
	pass()
	if allocs := testing.AllocsPerRun(10, pass); allocs != 0 {
		t.Errorf("%.0f allocations per pass over 1000 rows", allocs)
	}
}
