package report

import (
	"fmt"
	"time"
)

// Thresholds say when a summary's numbers are worth a finding.
type Thresholds struct {
	Wait     time.Duration // queue wait p99 on a port above this
	HalfOpen uint64        // SYN-ACK retransmits from one address at or above this
}

// maxHalfOpenFindings bounds the per-address half-open lines of a flood.
const maxHalfOpenFindings = 5

// Findings lists, one line each, what in s looks wrong: slow accepts,
// overflowing queues, half-open handshakes, lost live events.
func Findings(s Summary, th Thresholds) []string {
	var out []string
	for _, p := range s.Listeners {
		if p.Wait.Count > 0 && th.Wait > 0 && p.Wait.P99 > th.Wait {
			out = append(out, fmt.Sprintf("port %d: queue wait p99 %s is over %s: the server is slow to accept()",
				p.Port, FormatDuration(p.Wait.P99), FormatDuration(th.Wait)))
		}
		if p.BacklogLimit > 0 && p.BacklogMax > p.BacklogLimit {
			out = append(out, fmt.Sprintf("port %d: accept queue reached its limit (%d/%d)", p.Port, p.BacklogMax, p.BacklogLimit))
		}
		if p.NotAccepted > 0 {
			out = append(out, fmt.Sprintf("port %d: %d connections completed the handshake but closed before any accept()",
				p.Port, p.NotAccepted))
		}
	}
	counter := map[string]uint64{}
	for _, c := range s.KernelCounters {
		counter[c.Name] = c.Delta
	}
	if n := counter["ListenOverflows"]; n > 0 {
		out = append(out, fmt.Sprintf("accept queues overflowed %d times (ListenOverflows): handshakes were dropped; raise the listen backlog or accept faster", n))
	}
	if n := counter["TCPReqQFullDrop"]; n > 0 {
		out = append(out, fmt.Sprintf("SYN queues were full: %d SYNs dropped (TCPReqQFullDrop)", n))
	}
	if n := counter["SyncookiesSent"]; n > 0 {
		out = append(out, fmt.Sprintf("%d SYN cookies sent: a SYN queue overflowed (SYN flood?)", n))
	}
	var flood []AddrStats
	for _, a := range s.Addresses {
		if th.HalfOpen > 0 && a.SynackRetrans >= th.HalfOpen {
			flood = append(flood, a)
		}
	}
	sortBy(flood, func(a AddrStats) uint64 { return a.SynackRetrans })
	for i, a := range flood {
		if i == maxHalfOpenFindings {
			out = append(out, fmt.Sprintf("… and %d more addresses with %d or more SYN-ACK retransmits", len(flood)-i, th.HalfOpen))
			break
		}
		out = append(out, fmt.Sprintf("%s: %d SYN-ACK retransmits: handshakes left half-open (SYN flood or lossy client)",
			Normalize(a.Addr), a.SynackRetrans))
	}
	if s.LostEvents > 0 {
		out = append(out, fmt.Sprintf("%d live events lost (ring buffer full): some live lines are missing, the counts are exact", s.LostEvents))
	}
	return out
}
