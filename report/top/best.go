package top

import "slices"

// Best keeps the n rows that sort first by one column, out of any number
// offered: the view shows a screenful of 100,000 addresses without building
// the rest. Ties sort by the second key, then by address.
type Best struct {
	col  Column
	n    int
	rows []Row // a heap: rows[0] is the one that sorts last
}

// Reset empties b for a new pass that keeps n rows by col. The storage is kept.
func (b *Best) Reset(col Column, n int) {
	b.col, b.n, b.rows = col, max(n, 0), b.rows[:0]
}

// Admits says whether r would be kept; call it before building the costly
// parts of a row.
func (b *Best) Admits(r *Row) bool {
	if len(b.rows) < b.n {
		return true
	}
	return b.n > 0 && before(r, &b.rows[0], b.col)
}

// Offer keeps r if it is among the n first so far.
func (b *Best) Offer(r *Row) {
	if !b.Admits(r) {
		return
	}
	if len(b.rows) < b.n {
		b.rows = append(b.rows, *r)
		b.up(len(b.rows) - 1)
		return
	}
	b.rows[0] = *r
	b.down(0)
}

// Len is the number of rows kept.
func (b *Best) Len() int { return len(b.rows) }

// Sorted returns the rows kept, first first, in a new slice.
func (b *Best) Sorted() []Row {
	out := slices.Clone(b.rows)
	SortRows(out, b.col)
	return out
}

// SortRows sorts rows by col, first first.
func SortRows(rows []Row, col Column) {
	slices.SortFunc(rows, func(x, y Row) int {
		switch {
		case before(&x, &y, col):
			return -1
		case before(&y, &x, col):
			return 1
		}
		return 0
	})
}

// before says whether x sorts before y by col.
func before(x, y *Row, col Column) bool {
	x1, x2 := x.Key(col)
	y1, y2 := y.Key(col)
	if x1 != y1 {
		return x1 > y1
	}
	if x2 != y2 {
		return x2 > y2
	}
	if x.Prefix.IsValid() || y.Prefix.IsValid() {
		if c := x.Prefix.Addr().Compare(y.Prefix.Addr()); c != 0 {
			return c < 0
		}
		return x.Prefix.Bits() < y.Prefix.Bits()
	}
	return x.Addr.Compare(y.Addr) < 0
}

// The heap keeps the row that sorts last at the root.
func (b *Best) less(i, j int) bool { return before(&b.rows[j], &b.rows[i], b.col) }

func (b *Best) up(i int) {
	for i > 0 {
		p := (i - 1) / 2
		if !b.less(i, p) {
			return
		}
		b.rows[i], b.rows[p] = b.rows[p], b.rows[i]
		i = p
	}
}

func (b *Best) down(i int) {
	n := len(b.rows)
	for {
		l := 2*i + 1
		if l >= n {
			return
		}
		m := l
		if r := l + 1; r < n && b.less(r, l) {
			m = r
		}
		if !b.less(m, i) {
			return
		}
		b.rows[i], b.rows[m] = b.rows[m], b.rows[i]
		i = m
	}
}
