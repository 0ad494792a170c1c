package vmtest

import (
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// GuestModules are the kernel modules the guest loads at boot, in load
// order: the sock_diag handlers for TCP (what ss and acceptwatch --snapshot
// read), which Debian builds as modules and a running system loads on
// demand with modprobe, which the guest has not.
var GuestModules = []string{"inet_diag", "tcp_diag"}

// moduleConfig is each module's kernel configuration symbol.
var moduleConfig = map[string]string{"inet_diag": "CONFIG_INET_DIAG", "tcp_diag": "CONFIG_INET_TCP_DIAG"}

// modulesList is the file beside a cached vmlinuz naming its kept modules,
// one file name a line, in load order. A cache without it predates modules
// and is fetched again.
const modulesList = "modules.list"

const guestModules = "/vmtest/modules"

// keepModules moves GuestModules of release from an extracted package root
// into dir/modules and writes dir/modules.list. A module built into the
// kernel (=y in config) is left out; one configured =m must be found.
func keepModules(root, release, dir, config string) error {
	cfg, _ := os.ReadFile(config)
	found := map[string]string{}
	for _, base := range []string{"lib/modules", "usr/lib/modules"} {
		filepath.WalkDir(filepath.Join(root, base, release), func(p string, d fs.DirEntry, err error) error {
			if err == nil && !d.IsDir() {
				name, _, _ := strings.Cut(d.Name(), ".ko")
				if strings.Contains(d.Name(), ".ko") {
					found[name] = p
				}
			}
			return nil
		})
	}
	if err := os.MkdirAll(filepath.Join(dir, "modules"), 0o755); err != nil {
		return err
	}
	var list []string
	for _, m := range GuestModules {
		p, ok := found[m]
		if !ok {
			if strings.Contains(string(cfg), "\n"+moduleConfig[m]+"=m\n") {
				return fmt.Errorf("module %s (%s=m) is in none of the kernel's packages", m, moduleConfig[m])
			}
			continue
		}
		if err := os.Rename(p, filepath.Join(dir, "modules", filepath.Base(p))); err != nil {
			return err
		}
		list = append(list, filepath.Base(p))
	}
	return os.WriteFile(filepath.Join(dir, modulesList), []byte(strings.Join(list, "\n")+"\n"), 0o644)
}

// KernelModules lists the module files kept beside a vmlinuz of the cache,
// in load order (none for a kernel from elsewhere).
func KernelModules(vmlinuz string) []string {
	dir := filepath.Dir(vmlinuz)
	b, err := os.ReadFile(filepath.Join(dir, modulesList))
	if err != nil {
		return nil
	}
	var out []string
	for _, name := range strings.Fields(string(b)) {
		out = append(out, filepath.Join(dir, "modules", name))
	}
	return out
}
