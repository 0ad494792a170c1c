package report

import (
	"bytes"
	"encoding/json"
	"io"
	"net/netip"
	"slices"
	"strconv"
	"time"
)

type jsonWriter struct {
	w    io.Writer
	buf  bytes.Buffer
	enc  *json.Encoder
	line []byte // reused by Event
}

// NewJSON returns a Writer producing one JSON object per line (JSON Lines).
// Each object is written with a single Write call.
func NewJSON(w io.Writer) Writer {
	j := &jsonWriter{w: w}
	j.enc = json.NewEncoder(&j.buf)
	j.enc.SetEscapeHTML(false)
	return j
}

type jsonWait struct {
	Count    uint64    `json:"count"`
	P50      *int64    `json:"p50_us"`
	P99      *int64    `json:"p99_us"`
	P50Range *[2]int64 `json:"p50_range_us"`
	P99Range *[2]int64 `json:"p99_range_us"`
	Min      *int64    `json:"min_us"`
	Max      *int64    `json:"max_us"`
}

// percentilesNote is the summary's "percentiles" key: what the queue-wait
// numbers mean, for readers of the JSON without the README.
const percentilesNote = "queue_wait p50_us/p99_us: the middle of p50_range_us/p99_range_us, the range the true percentile (nearest rank) lies in; " +
	"per listener within 3.2 % (log-linear histogram), per address a log2 histogram bucket narrowed by min_us and max_us; " +
	"min_us/max_us are exact for the whole run and bounds in --interval windows"

type jsonPort struct {
	NetNS         uint32   `json:"netns"`
	Port          uint16   `json:"port"`
	Accepted      uint64   `json:"accepted"`
	NotAccepted   uint64   `json:"not_accepted"`
	SynackRetrans uint64   `json:"synack_retrans"`
	Syns          *uint64  `json:"syns"`  // null: not counted
	Drops         *uint64  `json:"drops"` // null: not attributed on this kernel
	BacklogMax    uint32   `json:"backlog_max"`
	BacklogLimit  uint32   `json:"backlog_limit"`
	QueueWait     jsonWait `json:"queue_wait"`
}

type jsonAddr struct {
	NetNS         uint32   `json:"netns"` // 0: unknown
	Addr          string   `json:"addr"`
	Accepted      uint64   `json:"accepted"`
	Handshakes    uint64   `json:"handshakes"`
	First         *string  `json:"first"`
	Last          *string  `json:"last"`
	NotAccepted   uint64   `json:"not_accepted"`
	ClientGone    uint64   `json:"client_gone"`
	SynackRetrans uint64   `json:"synack_retrans"`
	Syns          *uint64  `json:"syns"`
	Drops         *uint64  `json:"drops"`
	QueueWait     jsonWait `json:"queue_wait"`
	Open          *uint64  `json:"open"`     // null: no snapshot
	SynRecv       *uint64  `json:"syn_recv"` // null: no snapshot
}

// jsonPrefix is one network's row (--group-by prefix): the sums of its
// addresses; queue_wait has count and max_us only.
type jsonPrefix struct {
	Prefix    string `json:"prefix"`
	Addresses uint64 `json:"addresses"`
	NoAddr    string `json:"addr,omitempty"` // hides jsonAddr's addr: a network has none
	jsonAddr
}

type jsonSummary struct {
	Type               string            `json:"type"`
	Final              bool              `json:"final"`
	Start              string            `json:"start"`
	End                string            `json:"end"`
	DurationS          float64           `json:"duration_s"`
	AttachMode         string            `json:"attach_mode"`
	Ports              []string          `json:"ports"`
	TotalAccepted      uint64            `json:"total_accepted"`
	TotalHandshakes    uint64            `json:"total_handshakes"`
	LostEvents         uint64            `json:"lost_events"`
	AddressOverflow    uint64            `json:"address_overflow"`
	MaxAddresses       uint32            `json:"max_addresses"`
	TotalNotAccepted   uint64            `json:"total_not_accepted"`
	TotalClientGone    uint64            `json:"total_client_gone"`
	TotalSynackRetrans uint64            `json:"total_synack_retrans"`
	TotalSyns          *uint64           `json:"total_syns"`
	TotalDrops         *uint64           `json:"total_drops"`
	SynCounter         *string           `json:"syn_counter"`
	DropCounters       []string          `json:"drop_counters"`
	KernelCounters     map[string]uint64 `json:"kernel_counters"`
	CountersNetNS      uint32            `json:"kernel_counters_netns"` // 0: not said
	Cgroup             string            `json:"cgroup,omitempty"`      // --cgroup
	Findings           []string          `json:"findings"`
	Percentiles        string            `json:"percentiles"`
	Listeners          []jsonPort        `json:"listeners"`
	ConnectionsNow     *jsonStates       `json:"connections_now"` // null: no snapshot
	NetNS              *uint64           `json:"netns"`
	PrefixLen          *[2]int           `json:"prefix_len,omitempty"`
	Prefixes           []jsonPrefix      `json:"prefixes,omitempty"`
}

func (j *jsonWriter) write(v any) error {
	j.buf.Reset()
	if err := j.enc.Encode(v); err != nil { // Encode appends '\n'
		return err
	}
	_, err := j.w.Write(j.buf.Bytes())
	return err
}

// Event appends the accept object by hand: one per connection, where
// reflection-based encoding was most of acceptwatch's CPU. The output is
// byte for byte what encoding/json makes of the struct in json_event_test.go.
func (j *jsonWriter) Event(e Event) error {
	raddr := Normalize(e.RemoteAddr)
	b := j.line[:0]
	b = append(b, `{"type":"accept","time":"`...)
	b = e.Time.AppendFormat(b, time.RFC3339Nano)
	b = append(b, `","pid":`...)
	b = strconv.AppendUint(b, uint64(e.PID), 10)
	b = append(b, `,"comm":`...)
	b = appendJSONString(b, Sanitize(e.Comm))
	b = append(b, `,"netns":`...)
	b = strconv.AppendUint(b, uint64(e.NetNS), 10)
	b = append(b, `,"cgroup_id":`...)
	b = strconv.AppendUint(b, e.CgroupID, 10)
	if e.Cgroup != "" {
		b = append(b, `,"cgroup":`...)
		b = appendJSONString(b, Sanitize(e.Cgroup))
	}
	if e.Container != "" {
		b = append(b, `,"container":`...)
		b = appendJSONString(b, Sanitize(e.Container))
	}
	b = append(b, `,"family":`...)
	b = strconv.AppendInt(b, int64(family(raddr)), 10)
	b = append(b, `,"local_addr":"`...)
	b = appendAddr(b, Normalize(e.LocalAddr))
	b = append(b, `","local_port":`...)
	b = strconv.AppendUint(b, uint64(e.LocalPort), 10)
	b = append(b, `,"remote_addr":"`...)
	b = appendAddr(b, raddr)
	b = append(b, `","remote_port":`...)
	b = strconv.AppendUint(b, uint64(e.RemotePort), 10)
	b = append(b, `,"queue_wait_us":`...)
	if e.HasWait {
		b = strconv.AppendInt(b, e.QueueWait.Microseconds(), 10)
	} else {
		b = append(b, "null"...)
	}
	if e.HasBacklog {
		b = append(b, `,"backlog":`...)
		b = strconv.AppendUint(b, uint64(e.Backlog), 10)
		b = append(b, `,"backlog_max":`...)
		b = strconv.AppendUint(b, uint64(e.BacklogMax), 10)
	} else {
		b = append(b, `,"backlog":null,"backlog_max":null`...)
	}
	b = append(b, `,"client_gone":`...)
	b = strconv.AppendBool(b, e.ClientGone)
	b = append(b, `,"state":`...)
	b = appendJSONString(b, Sanitize(e.State))
	b = append(b, "}\n"...)
	j.line = b
	_, err := j.w.Write(b)
	return err
}

func appendAddr(b []byte, a netip.Addr) []byte {
	if !a.IsValid() {
		return append(b, a.String()...) // as encoding/json would print it
	}
	return a.AppendTo(b)
}

// appendJSONString quotes a Sanitize'd string: it holds no control
// characters and is valid UTF-8, so only quotes and backslashes need escapes.
func appendJSONString(b []byte, s string) []byte {
	b = append(b, '"')
	for i := 0; i < len(s); i++ {
		if c := s[i]; c == '"' || c == '\\' {
			b = append(b, '\\')
		}
		b = append(b, s[i])
	}
	return append(b, '"')
}

// Summary writes all addresses (no top cut), sorted with SortAddresses.
func (j *jsonWriter) Summary(s Summary) error {
	addrs := prepare(s.Addresses)
	out := jsonSummary{
		Type:               "summary",
		Final:              s.Final,
		Start:              s.Start.Format(time.RFC3339Nano),
		End:                s.End.Format(time.RFC3339Nano),
		DurationS:          s.End.Sub(s.Start).Seconds(),
		AttachMode:         s.AttachMode,
		Ports:              s.Ports,
		TotalAccepted:      s.TotalAccepted,
		TotalHandshakes:    s.TotalHandshakes,
		LostEvents:         s.LostEvents,
		AddressOverflow:    s.AddressOverflow,
		MaxAddresses:       s.MaxAddresses,
		TotalNotAccepted:   s.TotalNotAccepted,
		TotalClientGone:    s.TotalClientGone,
		TotalSynackRetrans: s.TotalSynackRetrans,
		TotalSyns:          u64If(s.TotalSyns, s.SynsCounted()),
		TotalDrops:         u64If(s.TotalDrops, s.DropsCounted()),
		DropCounters:       append([]string{}, s.DropCounters...),
		KernelCounters:     map[string]uint64{},
		CountersNetNS:      s.CountersNetNS,
		Cgroup:             s.Cgroup,
		Findings:           []string{},
		Percentiles:        percentilesNote,
		Listeners:          make([]jsonPort, len(s.Listeners)),
	}
	if s.SynsCounted() {
		out.SynCounter = &s.SynCounter
	}
	for _, c := range s.KernelCounters {
		out.KernelCounters[c.Name] = c.Delta
	}
	if s.GroupByPrefix {
		out.PrefixLen = &[2]int{s.Prefix.V4, s.Prefix.V6}
		out.Prefixes = []jsonPrefix{}
		for _, g := range GroupByPrefix(s.Addresses, s.Prefix) {
			row := addrJSON(&s, g.AddrStats)
			row.QueueWait.P50, row.QueueWait.P99 = nil, nil // not kept per network
			row.QueueWait.P50Range, row.QueueWait.P99Range = nil, nil
			out.Prefixes = append(out.Prefixes, jsonPrefix{Prefix: g.Prefix.String(), Addresses: g.Addresses, jsonAddr: row})
		}
	}
	for _, f := range s.Findings {
		out.Findings = append(out.Findings, Sanitize(f))
	}
	for i, p := range s.Listeners {
		out.Listeners[i] = jsonPort{
			NetNS:         p.NetNS,
			Port:          p.Port,
			Accepted:      p.Accepted,
			NotAccepted:   p.NotAccepted,
			SynackRetrans: p.SynackRetrans,
			Syns:          u64If(p.Syns, s.SynsCounted()),
			Drops:         u64If(p.Drops, s.DropsCounted()),
			BacklogMax:    p.BacklogMax,
			BacklogLimit:  p.BacklogLimit,
			QueueWait:     waitJSON(p.Wait),
		}
	}
	if out.Ports == nil {
		out.Ports = []string{}
	}
	if s.Now != nil {
		now := statesJSON(*s.Now)
		out.ConnectionsNow, out.NetNS = &now, &s.NetNS
	}
	// The head is encoded whole; the addresses (a million of them, at
	// scale) one at a time, so that no second copy of them is built.
	j.buf.Reset()
	if err := j.enc.Encode(out); err != nil {
		return err
	}
	head := bytes.TrimSuffix(bytes.TrimSpace(j.buf.Bytes()), []byte("}"))
	line := append(slices.Clone(head), `,"addresses":[`...)
	for i, a := range addrs {
		if i > 0 {
			line = append(line, ',')
		}
		j.buf.Reset()
		if err := j.enc.Encode(addrJSON(&s, a)); err != nil {
			return err
		}
		line = append(line, bytes.TrimSpace(j.buf.Bytes())...)
		if len(line) > 64<<10 {
			if _, err := j.w.Write(line); err != nil {
				return err
			}
			line = line[:0]
		}
	}
	line = append(line, "]}\n"...)
	_, err := j.w.Write(line)
	return err
}

func addrJSON(s *Summary, a AddrStats) jsonAddr {
	return jsonAddr{
		NetNS:         a.NetNS,
		Addr:          a.Addr.String(),
		Accepted:      a.Accepted,
		Handshakes:    a.Handshakes,
		First:         jsonTime(a.First),
		Last:          jsonTime(a.Last),
		NotAccepted:   a.NotAccepted,
		ClientGone:    a.ClientGone,
		SynackRetrans: a.SynackRetrans,
		Syns:          u64If(a.Syns, s.SynsCounted()),
		Drops:         u64If(a.Drops, s.DropsCounted()),
		QueueWait:     waitJSON(a.Wait),
		Open:          u64If(a.Open, s.Now != nil),
		SynRecv:       u64If(a.SynRecv, s.Now != nil),
	}
}

func jsonTime(t time.Time) *string {
	if t.IsZero() {
		return nil
	}
	s := t.Format(time.RFC3339Nano)
	return &s
}

func usIf(d time.Duration, ok bool) *int64 {
	if !ok {
		return nil
	}
	us := d.Microseconds()
	return &us
}

func u32If(v uint32, ok bool) *uint32 {
	if !ok {
		return nil
	}
	return &v
}

func waitJSON(w Wait) jsonWait {
	if w.Count == 0 {
		return jsonWait{}
	}
	us := func(d time.Duration) *int64 { return usIf(d, true) }
	// The range in whole µs, widened outwards so that it still holds the truth.
	rng := func(q Quantile) *[2]int64 {
		hi := q.Hi.Microseconds()
		if q.Hi%time.Microsecond != 0 {
			hi++
		}
		return &[2]int64{q.Lo.Microseconds(), hi}
	}
	return jsonWait{Count: w.Count, P50: us(w.P50.Est()), P99: us(w.P99.Est()),
		P50Range: rng(w.P50), P99Range: rng(w.P99), Min: us(w.Min), Max: us(w.Max)}
}

func u64If(v uint64, ok bool) *uint64 {
	if !ok {
		return nil
	}
	return &v
}
