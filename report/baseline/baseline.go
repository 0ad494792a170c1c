// Package baseline saves what a normal period looked like (rates per port
// and per top address, SYNs per handshake, queue waits) and compares later
// summaries with it: the findings say what is far above usual.
//
// The file is JSON, versioned by "format" and "version" (README: Baseline
// file). A reader refuses a file of another format or of a newer version.
package baseline

import (
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/acceptwatch/acceptwatch/report"
)

const (
	// Format names the file's kind.
	Format = "acceptwatch-baseline"
	// Version is the version this package writes and the newest it reads.
	Version = 1
	// TopAddresses is how many addresses (by SYNs and accepts) a baseline keeps.
	TopAddresses = 100
)

// File is a saved baseline. Rates are per second over the saved run.
type File struct {
	Format     string    `json:"format"`
	Version    int       `json:"version"`
	Start      time.Time `json:"start"`
	End        time.Time `json:"end"`
	DurationS  float64   `json:"duration_s"`
	AttachMode string    `json:"attach_mode"`
	Ports      []string  `json:"ports"` // --port as given; [] = all
	// SynCounter is where SYNs were counted; "" when they were not (then
	// every syns_per_s is null).
	SynCounter string `json:"syn_counter"`
	Totals     Rates  `json:"totals"`
	// SynsPerHandshake is SYNs over completed handshakes (1.0 when every
	// SYN completes); null without SYNs or handshakes.
	SynsPerHandshake *float64   `json:"syns_per_handshake"`
	Listeners        []Listener `json:"listeners"`
	// Addresses are the run's top addresses by SYNs plus accepts, at most
	// TopAddresses of AddressesSeen.
	Addresses     []Address `json:"addresses"`
	AddressesSeen int       `json:"addresses_seen"`
}

// Rates are counts per second.
type Rates struct {
	AcceptsPerS    float64  `json:"accepts_per_s"`
	HandshakesPerS float64  `json:"handshakes_per_s"`
	SynsPerS       *float64 `json:"syns_per_s"`
}

// Listener is one port's rates and queue waits.
type Listener struct {
	NetNS       string   `json:"netns,omitempty"` // namespace label (report.NetNSLabel); "" in older files: "host"
	Port        uint16   `json:"port"`
	AcceptsPerS float64  `json:"accepts_per_s"`
	SynsPerS    *float64 `json:"syns_per_s"`
	WaitP50Us   *int64   `json:"queue_wait_p50_us"` // null: no wait measured
	WaitP99Us   *int64   `json:"queue_wait_p99_us"`
}

// Address is one remote address's rates.
type Address struct {
	NetNS string `json:"netns,omitempty"` // as Listener.NetNS
	Addr  string `json:"addr"`
	Rates
}

// FromSummary makes a baseline of a summary (normally the run's final one).
func FromSummary(s report.Summary) *File {
	secs := s.End.Sub(s.Start).Seconds()
	rate := func(n uint64) float64 {
		if secs <= 0 {
			return 0
		}
		return round3(float64(n) / secs)
	}
	syns := func(n uint64) *float64 {
		if !s.SynsCounted() {
			return nil
		}
		r := rate(n)
		return &r
	}
	f := &File{
		Format: Format, Version: Version,
		Start: s.Start, End: s.End, DurationS: round3(secs),
		AttachMode: s.AttachMode, Ports: append([]string{}, s.Ports...), SynCounter: s.SynCounter,
		Totals:        Rates{AcceptsPerS: rate(s.TotalAccepted), HandshakesPerS: rate(s.TotalHandshakes), SynsPerS: syns(s.TotalSyns)},
		Listeners:     []Listener{},
		Addresses:     []Address{},
		AddressesSeen: len(s.Addresses),
	}
	if s.SynsCounted() && s.TotalHandshakes > 0 {
		r := round3(float64(s.TotalSyns) / float64(s.TotalHandshakes))
		f.SynsPerHandshake = &r
	}
	for _, p := range s.Listeners {
		l := Listener{NetNS: report.NetNSLabel(s.NetNSNames, p.NetNS), Port: p.Port, AcceptsPerS: rate(p.Accepted), SynsPerS: syns(p.Syns)}
		if p.Wait.Count > 0 {
			// Per port the middle of a percentile's range is within 3.2 %.
			p50, p99 := p.Wait.P50.Est().Microseconds(), p.Wait.P99.Est().Microseconds()
			l.WaitP50Us, l.WaitP99Us = &p50, &p99
		}
		f.Listeners = append(f.Listeners, l)
	}
	for _, a := range topAddresses(s.Addresses, TopAddresses) {
		f.Addresses = append(f.Addresses, Address{NetNS: report.NetNSLabel(s.NetNSNames, a.NetNS), Addr: report.Normalize(a.Addr).String(),
			Rates: Rates{AcceptsPerS: rate(a.Accepted), HandshakesPerS: rate(a.Handshakes), SynsPerS: syns(a.Syns)}})
	}
	return f
}

// nsKey is what baseline entries are matched by besides the port or
// address: the namespace's label (a name is stable across runs, an inode
// across one boot); files without one were made on the host.
func nsKey(label string) string {
	if label == "" {
		return "host"
	}
	return label
}

// topAddresses returns the n addresses with the most SYNs plus accepts.
func topAddresses(addrs []report.AddrStats, n int) []report.AddrStats {
	top := slices.Clone(addrs)
	slices.SortStableFunc(top, func(a, b report.AddrStats) int {
		if c := cmp.Compare(b.Syns+b.Accepted, a.Syns+a.Accepted); c != 0 {
			return c
		}
		return report.Normalize(a.Addr).Compare(report.Normalize(b.Addr))
	})
	return top[:min(n, len(top))]
}

func round3(v float64) float64 { return math.Round(v*1000) / 1000 }

// Save writes f to path (through a temporary file beside it, renamed into
// place, so a reader never sees half a file).
func (f *File) Save(path string) error {
	b, err := json.MarshalIndent(f, "", "  ")
	if err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), ".acceptwatch-baseline-*")
	if err != nil {
		return fmt.Errorf("saving baseline: %w", err)
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(append(b, '\n')); err != nil {
		tmp.Close()
		return fmt.Errorf("saving baseline %s: %w", path, err)
	}
	if err := tmp.Chmod(0o644); err != nil {
		tmp.Close()
		return fmt.Errorf("saving baseline %s: %w", path, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("saving baseline %s: %w", path, err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("saving baseline: %w", err)
	}
	return nil
}

// CheckWritable fails now, not after the run, if path cannot be saved to.
func CheckWritable(path string) error {
	if fi, err := os.Stat(path); err == nil && fi.IsDir() {
		return fmt.Errorf("baseline %s is a directory", path)
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), ".acceptwatch-baseline-*")
	if err != nil {
		return fmt.Errorf("cannot save baseline to %s: %w", path, errors.Unwrap(err))
	}
	tmp.Close()
	return os.Remove(tmp.Name())
}

// Load reads and checks a baseline file.
func Load(path string) (*File, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading baseline: %w", err)
	}
	f, err := Parse(b)
	if err != nil {
		return nil, fmt.Errorf("baseline %s: %w", path, err)
	}
	return f, nil
}

// Parse reads a baseline from its JSON.
func Parse(b []byte) (*File, error) {
	var head struct {
		Format  string `json:"format"`
		Version int    `json:"version"`
	}
	if err := json.Unmarshal(b, &head); err != nil {
		return nil, fmt.Errorf("not a baseline file: %s", jsonError(b, err))
	}
	if head.Format != Format {
		return nil, fmt.Errorf("not a baseline file (format %q, want %q)", head.Format, Format)
	}
	if head.Version < 1 || head.Version > Version {
		return nil, fmt.Errorf("version %d, this acceptwatch reads versions 1 to %d", head.Version, Version)
	}
	var f File
	if err := json.Unmarshal(b, &f); err != nil {
		return nil, fmt.Errorf("not a baseline file: %s", jsonError(b, err))
	}
	if err := f.check(); err != nil {
		return nil, err
	}
	return &f, nil
}

// jsonError says where in the file a JSON error is.
func jsonError(b []byte, err error) string {
	var se *json.SyntaxError
	var te *json.UnmarshalTypeError
	switch {
	case errors.As(err, &se):
		line := 1 + countNewlines(b[:min(int(se.Offset), len(b))])
		return fmt.Sprintf("line %d: %v", line, err)
	case errors.As(err, &te):
		return fmt.Sprintf("field %s: %s where %s belongs", te.Field, te.Value, te.Type)
	}
	return err.Error()
}

func countNewlines(b []byte) int {
	n := 0
	for _, c := range b {
		if c == '\n' {
			n++
		}
	}
	return n
}

func (f *File) check() error {
	if !(f.DurationS > 0) || math.IsInf(f.DurationS, 0) {
		return fmt.Errorf("duration_s %v: must be above 0", f.DurationS)
	}
	bad := func(v float64) bool { return !(v >= 0) || math.IsInf(v, 0) }
	badp := func(v *float64) bool { return v != nil && bad(*v) }
	if bad(f.Totals.AcceptsPerS) || bad(f.Totals.HandshakesPerS) || badp(f.Totals.SynsPerS) || badp(f.SynsPerHandshake) {
		return fmt.Errorf("totals: rates must be 0 or more")
	}
	for _, l := range f.Listeners {
		if l.Port == 0 || bad(l.AcceptsPerS) || badp(l.SynsPerS) {
			return fmt.Errorf("listeners: port %d: needs a port and rates of 0 or more", l.Port)
		}
	}
	for _, a := range f.Addresses {
		if _, err := parseAddr(a.Addr); err != nil {
			return fmt.Errorf("addresses: %w", err)
		}
		if bad(a.AcceptsPerS) || bad(a.HandshakesPerS) || badp(a.SynsPerS) {
			return fmt.Errorf("addresses: %s: rates must be 0 or more", a.Addr)
		}
	}
	return nil
}
