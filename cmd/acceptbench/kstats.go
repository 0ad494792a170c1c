package main

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/cilium/ebpf"
)

// progStat is the kernel's run-time statistics of one BPF program.
type progStat struct {
	name    string
	runs    uint64
	runtime time.Duration
}

// ownedIDs returns the IDs of the BPF programs and maps whose file
// descriptors the process holds, from /proc/PID/fdinfo (other acceptwatch
// processes may be running on this machine with the same program names).
func ownedIDs(pid int, key string) []uint32 {
	dir := fmt.Sprintf("/proc/%d/fdinfo", pid)
	ents, _ := os.ReadDir(dir)
	var ids []uint32
	seen := map[uint32]bool{} // a program is also named by its links' fdinfo
	for _, e := range ents {
		b, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(b), "\n") {
			if rest, ok := strings.CutPrefix(line, key+":"); ok {
				id, err := strconv.ParseUint(strings.TrimSpace(rest), 10, 32)
				if err == nil && !seen[uint32(id)] {
					seen[uint32(id)] = true
					ids = append(ids, uint32(id))
				}
			}
		}
	}
	return ids
}

// progStats reads the run counts and run times of the process's programs.
// The kernel only counts while statistics are enabled (ebpf.EnableStats).
func progStats(pid int) ([]progStat, error) {
	var out []progStat
	for _, id := range ownedIDs(pid, "prog_id") {
		p, err := ebpf.NewProgramFromID(ebpf.ProgramID(id))
		if err != nil {
			return nil, err
		}
		info, err := p.Info()
		if err != nil {
			p.Close()
			return nil, err
		}
		st, err := p.Stats()
		p.Close()
		if err != nil {
			return nil, err
		}
		out = append(out, progStat{name: info.Name, runs: st.RunCount, runtime: st.Runtime})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].name < out[j].name })
	return out, nil
}

// mapMemlock sums the kernel memory charged to the process's maps named
// name (the address map: aw_addrs).
func mapMemlock(pid int, name string) uint64 {
	var sum uint64
	for _, id := range ownedIDs(pid, "map_id") {
		m, err := ebpf.NewMapFromID(ebpf.MapID(id))
		if err != nil {
			continue
		}
		if info, err := m.Info(); err == nil && info.Name == name {
			if n, ok := info.Memlock(); ok {
				sum += n
			}
		}
		m.Close()
	}
	return sum
}

// foreignPrograms counts loaded acceptwatch programs (aw_*) that do not
// belong to the process pid (0: any): other runs on this machine that add
// their cost to every accept.
func foreignPrograms(pid int) int {
	own := map[uint32]bool{}
	if pid > 0 {
		for _, id := range ownedIDs(pid, "prog_id") {
			own[id] = true
		}
	}
	n := 0
	var id ebpf.ProgramID
	for {
		next, err := ebpf.ProgramGetNextID(id)
		if err != nil {
			return n
		}
		id = next
		if own[uint32(id)] {
			continue
		}
		p, err := ebpf.NewProgramFromID(id)
		if err != nil {
			continue
		}
		if info, err := p.Info(); err == nil && strings.HasPrefix(info.Name, "aw_") {
			n++
		}
		p.Close()
	}
}
