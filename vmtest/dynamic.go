package vmtest

import (
	"debug/elf"
	"fmt"
	"os"
	"path"
	"path/filepath"
)

// libDirs are where the guest's dynamic loader looks without an
// ld.so.cache: Debian's multiarch directories first.
func libDirs(m elf.Machine) []string {
	arch := map[elf.Machine]string{elf.EM_X86_64: "x86_64-linux-gnu", elf.EM_AARCH64: "aarch64-linux-gnu"}[m]
	dirs := []string{"/lib", "/usr/lib"}
	if arch != "" {
		dirs = append([]string{"/lib/" + arch, "/usr/lib/" + arch}, dirs...)
	}
	return dirs
}

// sharedLibs returns what a dynamically linked program (such as ss from
// iproute2, which the snapshot tests compare against) needs in the guest:
// its loader (PT_INTERP) and every DT_NEEDED library, transitively, each at
// its host path. It reads the ELF headers rather than running ldd, so it
// also works for another architecture's binaries, whose libraries are found
// below sysroot (a Debian root extracted for that architecture; "" is the
// host's /): a guest path P is then sysroot/P on the host. A static ELF
// file, or a file that is not ELF, needs nothing.
func sharedLibs(p, sysroot string) ([]FileMap, error) {
	host := func(guest string) string {
		if sysroot == "" {
			return guest
		}
		return filepath.Join(sysroot, guest)
	}
	var out []FileMap
	seen := map[string]bool{}
	var walk func(file string, top bool) error
	walk = func(file string, top bool) error {
		f, err := elf.Open(file)
		if err != nil {
			if top {
				return nil // not ELF: nothing to add
			}
			return fmt.Errorf("%s: %w", file, err)
		}
		defer f.Close()
		for _, prog := range f.Progs {
			if prog.Type != elf.PT_INTERP {
				continue
			}
			b := make([]byte, prog.Filesz)
			if _, err := prog.ReadAt(b, 0); err != nil {
				return fmt.Errorf("%s: reading PT_INTERP: %w", file, err)
			}
			interp := string(b[:len(b)-1]) // NUL-terminated
			if !seen[interp] {
				seen[interp] = true
				out = append(out, FileMap{Host: host(interp), Guest: interp})
			}
		}
		needed, err := f.ImportedLibraries()
		if err != nil {
			return fmt.Errorf("%s: %w", file, err)
		}
		for _, lib := range needed {
			if seen[lib] {
				continue
			}
			seen[lib] = true
			found := ""
			for _, dir := range libDirs(f.Machine) {
				if _, err := os.Stat(host(path.Join(dir, lib))); err == nil {
					found = path.Join(dir, lib)
					break
				}
			}
			if found == "" {
				return fmt.Errorf("%s needs %s, found in none of %v below %q", file, lib, libDirs(f.Machine), "/"+sysroot)
			}
			out = append(out, FileMap{Host: host(found), Guest: found})
			if err := walk(host(found), false); err != nil {
				return err
			}
		}
		return nil
	}
	if err := walk(p, true); err != nil {
		return nil, err
	}
	return out, nil
}
