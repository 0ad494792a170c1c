package metrics

import (
	"container/heap"
	"net/netip"

	"github.com/acceptwatch/acceptwatch/tracer"
)

// topTable keeps the k busiest remote addresses, with their counts since
// each entered it, in bounded memory: k entries whatever the traffic. It is
// fed whole address windows drained from the kernel. An address that must
// leave (a busier one came, or it was not busy enough to enter) is an
// eviction: counted, with its accepts, so that for every accept
//
//	sum of tracked accepts + evicted accepts + address-map overflow = all accepts
//
// Busiest means the most events of any kind (SYNs, handshakes, accepts,
// SYN-ACK retransmits, connections never accepted).
type topTable struct {
	k              int
	byAddr         map[addrNS]*topEntry // one per (address, namespace)
	heap           topHeap              // least busy first
	evictions      uint64
	evictedAccepts uint64
}

type topEntry struct {
	tracer.AddressCounts
	score uint64
	index int
}

func newTopTable(k int) *topTable {
	return &topTable{k: k, byAddr: make(map[addrNS]*topEntry, k)}
}

func score(c *tracer.AddressCounts) uint64 {
	return c.Accepted + c.Handshakes + c.NotAccepted + c.SynackRetrans + c.Syns
}

func (t *topTable) add(c tracer.AddressCounts) {
	if e, ok := t.byAddr[addrNS{c.Addr, c.NetNS}]; ok {
		e.Accepted += c.Accepted
		e.Handshakes += c.Handshakes
		e.NotAccepted += c.NotAccepted
		e.ClientGone += c.ClientGone
		e.SynackRetrans += c.SynackRetrans
		e.Syns += c.Syns
		e.score += score(&c)
		heap.Fix(&t.heap, e.index)
		return
	}
	s := score(&c)
	if len(t.heap) >= t.k {
		if t.k == 0 || s <= t.heap[0].score {
			t.evict(&c)
			return
		}
		least := heap.Pop(&t.heap).(*topEntry)
		delete(t.byAddr, addrNS{least.Addr, least.NetNS})
		t.evict(&least.AddressCounts)
	}
	e := &topEntry{AddressCounts: c, score: s}
	heap.Push(&t.heap, e)
	t.byAddr[addrNS{c.Addr, c.NetNS}] = e
}

func (t *topTable) evict(c *tracer.AddressCounts) {
	t.evictions++
	t.evictedAccepts += c.Accepted
}

type topHeap []*topEntry

func (h topHeap) Len() int { return len(h) }
func (h topHeap) Less(i, j int) bool {
	if h[i].score != h[j].score {
		return h[i].score < h[j].score
	}
	if c := h[i].Addr.Compare(h[j].Addr); c != 0 {
		return c > 0
	}
	return h[i].NetNS > h[j].NetNS
}
func (h topHeap) Swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].index, h[j].index = i, j
}
func (h *topHeap) Push(x any) {
	e := x.(*topEntry)
	e.index = len(*h)
	*h = append(*h, e)
}
func (h *topHeap) Pop() any {
	old := *h
	e := old[len(old)-1]
	old[len(old)-1] = nil
	*h = old[:len(old)-1]
	return e
}

// addrNS keys the top table: a remote address in a network namespace.
type addrNS struct {
	addr  netip.Addr
	netns uint32
}
