package tracer

import (
	"errors"
	"fmt"
	"net/netip"

	"github.com/cilium/ebpf"
)

// addrWindows holds the per-address maps behind aw_addr_slot: one for the
// console (its summaries read every address), two for runs of any length,
// where RotateAddresses swaps in the empty one and drains the other.
type addrWindows struct {
	slot   *ebpf.Map   // aw_addr_slot: the map in use, in slot 0
	stats  *ebpf.Map   // aw_stats: STAT_ADDR_NEW counts insertions
	maps   []*ebpf.Map // 1 or 2
	cur    int         // index of the map in use
	size   uint32      // capacity of each map
	base   uint64      // STAT_ADDR_NEW when the map in use was swapped in
	drains uint64      // rotations done
	keys   []acceptwatchAddrKey
	vals   []acceptwatchAddrStats
}

func newAddrWindows(inner *ebpf.MapSpec, slot, stats *ebpf.Map, cfg Config) (_ *addrWindows, err error) {
	w := &addrWindows{slot: slot, stats: stats, size: cfg.MaxAddresses}
	if cfg.NoAddresses {
		w.size = 1 // no program writes it: count_addrs is off
	}
	n := 1
	if cfg.AddressWindows && !cfg.NoAddresses {
		n = 2
	}
	defer func() {
		if err != nil {
			w.close()
		}
	}()
	spec := inner.Copy()
	spec.Name = "aw_addrs"
	spec.MaxEntries = w.size
	for range n {
		m, err := ebpf.NewMap(spec)
		if err != nil {
			return nil, fmt.Errorf("creating the address map: %w", err)
		}
		w.maps = append(w.maps, m)
	}
	if err := slot.Put(uint32(0), w.maps[0]); err != nil {
		return nil, fmt.Errorf("installing the address map: %w", err)
	}
	return w, nil
}

func (w *addrWindows) active() *ebpf.Map { return w.maps[w.cur] }

func (w *addrWindows) close() {
	for _, m := range w.maps {
		m.Close()
	}
	w.maps = nil
}

// AddressCounts is what the kernel counted for one remote address while its
// map was in use.
type AddressCounts struct {
	Addr          netip.Addr
	NetNS         uint32 // network namespace inode; 0: unknown
	Accepted      uint64
	Handshakes    uint64
	NotAccepted   uint64
	ClientGone    uint64
	SynackRetrans uint64
	Syns          uint64
}

// AddressFill says how many addresses the map in use holds (insertions since
// it was swapped in) and how many it can hold.
func (t *Tracer) AddressFill() (used, capacity uint64, err error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	stats, err := t.readStats()
	if err != nil {
		return 0, 0, err
	}
	w := t.addrWin
	return stats[acceptwatchStatSTAT_ADDR_NEW] - w.base, uint64(w.size), nil
}

// AddressRotations is how many times RotateAddresses swapped the maps.
func (t *Tracer) AddressRotations() uint64 { return t.addrWin.drains }

// RotateAddresses swaps the empty address map in and drains the one that
// was in use: fn receives each of its addresses, then it is emptied for the
// next swap. Nothing is lost between the two: the swap returns only after
// every program that may still update the old map has finished (replacing a
// map-in-map slot waits for an RCU grace period), so the drain reads final
// values. It needs Config.AddressWindows. The whole run's views (a Live
// reader, Total, Window) keep counting what the drained map held.
func (t *Tracer) RotateAddresses(fn func(AddressCounts)) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.rotate(fn)
}

func (t *Tracer) rotate(fn func(AddressCounts)) error {
	w := t.addrWin
	if len(w.maps) < 2 {
		return errors.New("address windows are off (Config.AddressWindows)")
	}
	stats, err := t.readStats()
	if err != nil {
		return err
	}
	next := 1 - w.cur
	if err := w.slot.Put(uint32(0), w.maps[next]); err != nil {
		return fmt.Errorf("swapping address maps: %w", err)
	}
	// Insertions counted before the swap belong to the old map: the fill
	// of the new one is never underestimated.
	old := w.maps[w.cur]
	w.cur, w.base = next, stats[acceptwatchStatSTAT_ADDR_NEW]
	t.addrs = w.maps[next]
	w.drains++
	return w.drain(old, t.retired, fn)
}

// drain reads and deletes every entry of m, which no program updates any
// more; keep, if not nil, takes each entry too.
func (w *addrWindows) drain(m *ebpf.Map, keep *retiredAddrs, fn func(AddressCounts)) error {
	const batch = 4096
	if w.keys == nil {
		w.keys = make([]acceptwatchAddrKey, batch)
		w.vals = make([]acceptwatchAddrStats, batch)
	}
	emit := func(k *acceptwatchAddrKey, v *acceptwatchAddrStats) {
		if keep != nil {
			keep.add(*k, v)
		}
		fn(AddressCounts{
			Addr:          addrOfKey(*k),
			NetNS:         k.Netns,
			Accepted:      v.Accepted,
			Handshakes:    v.Handshakes,
			NotAccepted:   v.NotAccepted,
			ClientGone:    v.Gone,
			SynackRetrans: v.SynackRetrans,
			Syns:          v.Syns,
		})
	}
	var cursor ebpf.MapBatchCursor
	for {
		n, err := m.BatchLookupAndDelete(&cursor, w.keys, w.vals, nil)
		for i := range n {
			emit(&w.keys[i], &w.vals[i])
		}
		if errors.Is(err, ebpf.ErrKeyNotExist) {
			return nil
		}
		if errors.Is(err, ebpf.ErrNotSupported) && n == 0 {
			break
		}
		if err != nil {
			return fmt.Errorf("draining address counters: %w", err)
		}
	}
	// Kernels without batch operations: one by one.
	var k acceptwatchAddrKey
	var v acceptwatchAddrStats
	for {
		if err := m.NextKey(nil, &k); errors.Is(err, ebpf.ErrKeyNotExist) {
			return nil
		} else if err != nil {
			return fmt.Errorf("draining address counters: %w", err)
		}
		if err := m.Lookup(&k, &v); err != nil {
			return fmt.Errorf("draining address counters: %w", err)
		}
		if err := m.Delete(&k); err != nil {
			return fmt.Errorf("draining address counters: %w", err)
		}
		emit(&k, &v)
	}
}
