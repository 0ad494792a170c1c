// Package cgroups names cgroup v2 ids: it finds the hierarchy, turns a
// directory into the id BPF programs see (bpf_get_current_cgroup_id), an id
// back into its path, and a path into the container or unit it belongs to.
package cgroups

import (
	"bufio"
	"fmt"
	"os"
	"strings"
)

// Find returns the mount point of a cgroup2 file system and the path
// of the hierarchy it shows (mountinfo's fourth field), preferring a mount
// of the whole hierarchy; "" if there is none.
func Find() (mnt, root string, _ error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return "", "", fmt.Errorf("reading mounts: %w", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		before, after, ok := strings.Cut(sc.Text(), " - ")
		if !ok {
			continue
		}
		if fstype, _, _ := strings.Cut(after, " "); fstype != "cgroup2" {
			continue
		}
		// ID parent major:minor root mountpoint options...
		fields := strings.Fields(before)
		if len(fields) < 5 {
			continue
		}
		r, m := unescapeMount(fields[3]), unescapeMount(fields[4])
		if mnt == "" || (root != "/" && r == "/") {
			mnt, root = m, r
		}
	}
	if err := sc.Err(); err != nil {
		return "", "", fmt.Errorf("reading mounts: %w", err)
	}
	return mnt, root, nil
}

// unescapeMount undoes mountinfo's octal escapes (\040 for a space).
func unescapeMount(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			var v byte
			ok := true
			for _, c := range []byte(s[i+1 : i+4]) {
				if c < '0' || c > '7' {
					ok = false
					break
				}
				v = v*8 + c - '0'
			}
			if ok {
				b.WriteByte(v)
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}
