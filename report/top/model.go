package top

import (
	"time"

	tea "github.com/charmbracelet/bubbletea"
)

// Options describe the run for the header.
type Options struct {
	Mode     string        // attach mode
	Ports    string        // "port 443", "ports 80,8000-8100", "all ports"
	Refresh  time.Duration // time between refreshes
	Start    time.Time     // when counting began: the zero of every counter
	Location *time.Location
	Styles   Styles
}

// Model is the bubbletea model of the live table.
type Model struct {
	src  Source
	opt  Options
	caps Caps

	width, height int
	sort          Column
	group         bool
	paused        bool
	help          bool
	note          string // one-line answer to the last key, until the next one

	cur    screen  // what the latest frames say
	frozen *screen // shown instead while paused
	prev   *Frame  // the previous advancing frame: rates are differences from it
	ports  map[PortKey]uint64
	spark  []float64 // accepts/s of the last refreshes, oldest first
	err    error
}

// screen is everything one redraw shows.
type screen struct {
	frame *Frame
	rates rates
	port  map[PortKey]float64 // accepts/s per port over the last refresh
	spark []float64
}

// rates are the header's per-second rates over the last refresh.
type rates struct {
	accepted, handshakes, syns, synack, overflows, syncookies, lost float64
}

// frameMsg carries a refresh's result to Update.
type frameMsg struct {
	f       *Frame
	advance bool
	err     error
}

type tickMsg struct{}

// New returns the model; run it with tea.NewProgram(m, ...).
func New(src Source, opt Options) *Model {
	if opt.Refresh <= 0 {
		opt.Refresh = time.Second
	}
	if opt.Location == nil {
		opt.Location = time.Local
	}
	return &Model{
		src: src, opt: opt, caps: src.Caps(),
		prev:  &Frame{Time: opt.Start},
		ports: map[PortKey]uint64{},
	}
}

// Err is the error that ended the program, if any.
func (m *Model) Err() error { return m.err }

// Init starts the first refresh.
func (m *Model) Init() tea.Cmd { return m.refresh(true) }

// sparkLen is how many refreshes the sparkline covers: the last minute.
func (m *Model) sparkLen() int {
	return min(max(int(time.Minute/m.opt.Refresh), 10), 600)
}

// query asks for as many rows as the screen could possibly show.
func (m *Model) query() Query {
	return Query{Sort: m.sort, Rows: max(m.height, 24), Group: m.group}
}

func (m *Model) refresh(advance bool) tea.Cmd {
	q := m.query()
	return func() tea.Msg {
		f, err := m.src.Refresh(q, advance)
		return frameMsg{f: f, advance: advance, err: err}
	}
}

// Update handles keys, sizes and refreshes.
func (m *Model) Update(msg tea.Msg) (tea.Model, tea.Cmd) {
	switch msg := msg.(type) {
	case tea.WindowSizeMsg:
		grew := msg.Height > m.height
		m.width, m.height = msg.Width, msg.Height
		if grew {
			return m, m.refresh(false)
		}
	case tea.KeyMsg:
		return m, m.key(msg.String())
	case tickMsg:
		return m, m.refresh(true)
	case frameMsg:
		if msg.err != nil {
			m.err = msg.err
			return m, tea.Quit
		}
		m.apply(msg.f, msg.advance)
		if msg.advance {
			// In step with the clock: one refresh per period, however long a read takes.
			return m, tea.Every(m.opt.Refresh, func(time.Time) tea.Msg { return tickMsg{} })
		}
	}
	return m, nil
}

func (m *Model) key(k string) tea.Cmd {
	m.note = ""
	switch k {
	case "q", "ctrl+c":
		return tea.Quit
	case "?", "h":
		m.help = !m.help
	case "esc":
		m.help = false
	case "s", "S":
		if k == "s" {
			m.sort = m.sort.next(m.caps)
		} else {
			m.sort = m.sort.prev(m.caps)
		}
		m.resort()
		return m.refresh(false)
	case "p", " ":
		m.paused = !m.paused
		m.frozen = nil
		if m.paused {
			f := m.cur
			f.spark = append([]float64(nil), m.cur.spark...)
			m.frozen = &f
		}
	case "g":
		if !m.caps.Group {
			m.note = "grouping by prefix is not available in this build"
			return nil
		}
		m.group = !m.group
		return m.refresh(false)
	}
	return nil
}

// resort orders what is on screen by the new column at once; the refresh
// asked for at the same time brings the right rows.
func (m *Model) resort() {
	for _, s := range []*screen{&m.cur, m.frozen} {
		if s != nil && s.frame != nil {
			f := *s.frame
			f.Rows = append([]Row(nil), f.Rows...)
			SortRows(f.Rows, m.sort)
			s.frame = &f
		}
	}
}

// apply takes a frame in. An advancing frame moves the header's rates, the
// ports' rates and the sparkline; a redraw only replaces the rows.
func (m *Model) apply(f *Frame, advance bool) {
	SortRows(f.Rows, m.sort) // a refresh asked before the last s key
	if !advance {
		if m.cur.frame != nil {
			m.cur.frame = f
		}
		return
	}
	dt := f.Time.Sub(m.prev.Time).Seconds()
	rate := func(now, before uint64) float64 {
		if dt <= 0 || now < before {
			return 0
		}
		return float64(now-before) / dt
	}
	a, b := &f.Totals, &m.prev.Totals
	m.cur.rates = rates{
		accepted:   rate(a.Accepted, b.Accepted),
		handshakes: rate(a.Handshakes, b.Handshakes),
		syns:       rate(a.Syns, b.Syns),
		synack:     rate(a.SynackRetrans, b.SynackRetrans),
		overflows:  rate(a.ListenOverflows, b.ListenOverflows),
		syncookies: rate(a.Syncookies, b.Syncookies),
		lost:       rate(a.LostEvents, b.LostEvents),
	}
	port := make(map[PortKey]float64, len(f.Ports))
	for _, p := range f.Ports {
		k := PortKey{p.NetNS, p.Port}
		port[k] = rate(p.Accepted, m.ports[k])
		m.ports[k] = p.Accepted
	}
	m.cur.port = port
	m.spark = append(m.spark, m.cur.rates.accepted)
	if n := m.sparkLen(); len(m.spark) > n {
		// Shift in place: the slice never grows past n.
		m.spark = append(m.spark[:0], m.spark[len(m.spark)-n:]...)
	}
	m.cur.spark = m.spark
	m.cur.frame = f
	m.prev = f
}

// View draws the screen.
func (m *Model) View() string {
	s := &m.cur
	if m.paused && m.frozen != nil {
		s = m.frozen
	}
	w, h := m.width, m.height
	if w <= 0 || h <= 0 {
		w, h = 80, 24 // before the terminal said its size
	}
	return m.render(s, w, h)
}
