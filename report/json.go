package report

import (
	"bytes"
	"encoding/json"
	"io"
	"slices"
	"time"
)

type jsonWriter struct {
	w   io.Writer
	buf bytes.Buffer
	enc *json.Encoder
}

// NewJSON returns a Writer producing one JSON object per line (JSON Lines).
// Each object is written with a single Write call.
func NewJSON(w io.Writer) Writer {
	j := &jsonWriter{w: w}
	j.enc = json.NewEncoder(&j.buf)
	j.enc.SetEscapeHTML(false)
	return j
}

type jsonAccept struct {
	Type       string  `json:"type"`
	Time       string  `json:"time"`
	PID        uint32  `json:"pid"`
	Comm       string  `json:"comm"`
	Family     int     `json:"family"`
	LocalAddr  string  `json:"local_addr"`
	LocalPort  uint16  `json:"local_port"`
	RemoteAddr string  `json:"remote_addr"`
	RemotePort uint16  `json:"remote_port"`
	QueueWait  *int64  `json:"queue_wait_us"` // null: handshake not seen
	Backlog    *uint32 `json:"backlog"`       // null: listener not seen
	BacklogMax *uint32 `json:"backlog_max"`
	ClientGone bool    `json:"client_gone"`
	State      string  `json:"state"`
}

type jsonWait struct {
	Count uint64 `json:"count"`
	P50   *int64 `json:"p50_us"`
	P99   *int64 `json:"p99_us"`
	Max   *int64 `json:"max_us"`
}

type jsonPort struct {
	Port          uint16   `json:"port"`
	Accepted      uint64   `json:"accepted"`
	NotAccepted   uint64   `json:"not_accepted"`
	SynackRetrans uint64   `json:"synack_retrans"`
	Syns          *uint64  `json:"syns"` // null: not counted in this attach mode
	BacklogMax    uint32   `json:"backlog_max"`
	BacklogLimit  uint32   `json:"backlog_limit"`
	QueueWait     jsonWait `json:"queue_wait"`
}

type jsonAddr struct {
	Addr          string   `json:"addr"`
	Accepted      uint64   `json:"accepted"`
	Handshakes    uint64   `json:"handshakes"`
	First         *string  `json:"first"`
	Last          *string  `json:"last"`
	NotAccepted   uint64   `json:"not_accepted"`
	ClientGone    uint64   `json:"client_gone"`
	SynackRetrans uint64   `json:"synack_retrans"`
	Syns          *uint64  `json:"syns"`
	QueueWait     jsonWait `json:"queue_wait"`
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
	KernelCounters     map[string]uint64 `json:"kernel_counters"`
	Findings           []string          `json:"findings"`
	Listeners          []jsonPort        `json:"listeners"`
}

func (j *jsonWriter) write(v any) error {
	j.buf.Reset()
	if err := j.enc.Encode(v); err != nil { // Encode appends '\n'
		return err
	}
	_, err := j.w.Write(j.buf.Bytes())
	return err
}

func (j *jsonWriter) Event(e Event) error {
	raddr := Normalize(e.RemoteAddr)
	return j.write(jsonAccept{
		Type:       "accept",
		Time:       e.Time.Format(time.RFC3339Nano),
		PID:        e.PID,
		Comm:       Sanitize(e.Comm),
		Family:     family(raddr),
		LocalAddr:  Normalize(e.LocalAddr).String(),
		LocalPort:  e.LocalPort,
		RemoteAddr: raddr.String(),
		RemotePort: e.RemotePort,
		QueueWait:  usIf(e.QueueWait, e.HasWait),
		Backlog:    u32If(e.Backlog, e.HasBacklog),
		BacklogMax: u32If(e.BacklogMax, e.HasBacklog),
		ClientGone: e.ClientGone,
		State:      e.State,
	})
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
		TotalSyns:          u64If(s.TotalSyns, s.SynsCounted),
		KernelCounters:     map[string]uint64{},
		Findings:           []string{},
		Listeners:          make([]jsonPort, len(s.Listeners)),
	}
	for _, c := range s.KernelCounters {
		out.KernelCounters[c.Name] = c.Delta
	}
	for _, f := range s.Findings {
		out.Findings = append(out.Findings, Sanitize(f))
	}
	for i, p := range s.Listeners {
		out.Listeners[i] = jsonPort{
			Port:          p.Port,
			Accepted:      p.Accepted,
			NotAccepted:   p.NotAccepted,
			SynackRetrans: p.SynackRetrans,
			Syns:          u64If(p.Syns, s.SynsCounted),
			BacklogMax:    p.BacklogMax,
			BacklogLimit:  p.BacklogLimit,
			QueueWait:     waitJSON(p.Wait),
		}
	}
	if out.Ports == nil {
		out.Ports = []string{}
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
		if err := j.enc.Encode(jsonAddr{
			Addr:          a.Addr.String(),
			Accepted:      a.Accepted,
			Handshakes:    a.Handshakes,
			First:         jsonTime(a.First),
			Last:          jsonTime(a.Last),
			NotAccepted:   a.NotAccepted,
			ClientGone:    a.ClientGone,
			SynackRetrans: a.SynackRetrans,
			Syns:          u64If(a.Syns, s.SynsCounted),
			QueueWait:     waitJSON(a.Wait),
		}); err != nil {
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
	ok := w.Count > 0
	return jsonWait{Count: w.Count, P50: usIf(w.P50, ok), P99: usIf(w.P99, ok), Max: usIf(w.Max, ok)}
}

func u64If(v uint64, ok bool) *uint64 {
	if !ok {
		return nil
	}
	return &v
}
