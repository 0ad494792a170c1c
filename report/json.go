package report

import (
	"bytes"
	"encoding/json"
	"io"
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
	Type       string `json:"type"`
	Time       string `json:"time"`
	PID        uint32 `json:"pid"`
	Comm       string `json:"comm"`
	Family     int    `json:"family"`
	LocalAddr  string `json:"local_addr"`
	LocalPort  uint16 `json:"local_port"`
	RemoteAddr string `json:"remote_addr"`
	RemotePort uint16 `json:"remote_port"`
}

type jsonAddr struct {
	Addr       string  `json:"addr"`
	Accepted   uint64  `json:"accepted"`
	Handshakes uint64  `json:"handshakes"`
	First      *string `json:"first"`
	Last       *string `json:"last"`
}

type jsonSummary struct {
	Type            string     `json:"type"`
	Final           bool       `json:"final"`
	Start           string     `json:"start"`
	End             string     `json:"end"`
	DurationS       float64    `json:"duration_s"`
	AttachMode      string     `json:"attach_mode"`
	Ports           []string   `json:"ports"`
	TotalAccepted   uint64     `json:"total_accepted"`
	TotalHandshakes uint64     `json:"total_handshakes"`
	LostEvents      uint64     `json:"lost_events"`
	AddressOverflow uint64     `json:"address_overflow"`
	MaxAddresses    uint32     `json:"max_addresses"`
	Addresses       []jsonAddr `json:"addresses"`
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
	})
}

// Summary writes all addresses (no top cut), sorted with SortAddresses.
func (j *jsonWriter) Summary(s Summary) error {
	addrs := prepare(s.Addresses)
	out := jsonSummary{
		Type:            "summary",
		Final:           s.Final,
		Start:           s.Start.Format(time.RFC3339Nano),
		End:             s.End.Format(time.RFC3339Nano),
		DurationS:       s.End.Sub(s.Start).Seconds(),
		AttachMode:      s.AttachMode,
		Ports:           s.Ports,
		TotalAccepted:   s.TotalAccepted,
		TotalHandshakes: s.TotalHandshakes,
		LostEvents:      s.LostEvents,
		AddressOverflow: s.AddressOverflow,
		MaxAddresses:    s.MaxAddresses,
		Addresses:       make([]jsonAddr, len(addrs)),
	}
	if out.Ports == nil {
		out.Ports = []string{}
	}
	for i, a := range addrs {
		out.Addresses[i] = jsonAddr{
			Addr:       a.Addr.String(),
			Accepted:   a.Accepted,
			Handshakes: a.Handshakes,
			First:      jsonTime(a.First),
			Last:       jsonTime(a.Last),
		}
	}
	return j.write(out)
}

func jsonTime(t time.Time) *string {
	if t.IsZero() {
		return nil
	}
	s := t.Format(time.RFC3339Nano)
	return &s
}
