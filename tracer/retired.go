package tracer

// retiredAddrs keeps what drained address maps held, per address, for the
// views of the whole run (the live table, the final summary) when the
// address maps take turns (Config.AddressWindows): an address's counts since
// the start are its retired counts plus the map in use's. Its memory grows
// with the distinct addresses of the run, as the final summary's does; it is
// kept only once such a view exists (Tracer.Live).
type retiredAddrs struct {
	m   map[addrKey]*retiredAddr
	gen uint32 // visits so far
	sum acceptwatchAddrStats
}

type retiredAddr struct {
	v    acceptwatchAddrStats
	seen uint32 // the visit that last met the address in the map in use
}

func newRetiredAddrs() *retiredAddrs {
	return &retiredAddrs{m: map[addrKey]*retiredAddr{}}
}

// add takes one entry of a map being drained.
func (r *retiredAddrs) add(k addrKey, v *acceptwatchAddrStats) {
	if e := r.m[k]; e != nil {
		mergeAddr(&e.v, v)
		return
	}
	r.m[k] = &retiredAddr{v: *v}
}

// each visits every address once, with its counts since the start: those
// of the map in use (walked by active) added to its retired ones, then the
// addresses only retired maps held. The pointer fn gets is valid during the
// call only.
func (r *retiredAddrs) each(active func(func(addrKey, *acceptwatchAddrStats)) error, fn func(addrKey, *acceptwatchAddrStats)) error {
	if len(r.m) == 0 {
		return active(fn)
	}
	r.gen++
	err := active(func(k addrKey, v *acceptwatchAddrStats) {
		e := r.m[k]
		if e == nil {
			fn(k, v)
			return
		}
		e.seen = r.gen
		r.sum = e.v
		mergeAddr(&r.sum, v)
		fn(k, &r.sum)
	})
	if err != nil {
		return err
	}
	for k, e := range r.m {
		if e.seen != r.gen {
			fn(k, &e.v)
		}
	}
	return nil
}

// mergeAddr adds b, counted in a later map, to a.
func mergeAddr(a, b *acceptwatchAddrStats) {
	a.Accepted += b.Accepted
	a.Handshakes += b.Handshakes
	a.NotAccepted += b.NotAccepted
	a.Gone += b.Gone
	a.SynackRetrans += b.SynackRetrans
	a.Syns += b.Syns
	a.Drops += b.Drops
	for i := range a.WaitHist {
		a.WaitHist[i] += b.WaitHist[i]
	}
	a.WaitMaxNs = max(a.WaitMaxNs, b.WaitMaxNs)
	a.WaitMinNs = min(a.WaitMinNs, b.WaitMinNs) // ~0 (none) is the largest
	if a.FirstNs == 0 || b.FirstNs != 0 && b.FirstNs < a.FirstNs {
		a.FirstNs = b.FirstNs
	}
	a.LastNs = max(a.LastNs, b.LastNs)
	// The later map's window is the current one, or newer.
	if b.Window != a.Window || a.WindowFirstNs == 0 {
		a.Window, a.WindowFirstNs = b.Window, b.WindowFirstNs
	}
}
