package vmtest

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

// toolSuite is the Debian release whose packages give a guest of another
// architecture the programs the tests run beside acceptwatch (ss): the CI
// machines' own release, so that guests of both architectures run the
// same versions.
const toolSuite = "bookworm"

// libPackage says whether a dependency of a tool may hold a shared library
// it loads. Only those are followed: the rest (debconf, dpkg, tar, ...)
// matter to an installed system, not to running one program. A library
// missing from them shows when vmrun collects the program's libraries.
func libPackage(name string) bool {
	return strings.HasPrefix(name, "lib") || name == "zlib1g"
}

// Sysroot returns a directory holding Debian's packages pkgs for arch
// (from toolSuite) and the libraries they depend on, unpacked as they would
// be installed: <Cache>/sysroot/<arch>/. A program below it runs in an arch
// guest with its libraries (vmrun's VMTEST_SYSROOT). A cached sysroot with
// the same packages is used as is.
func (f *Fetcher) Sysroot(arch string, pkgs ...string) (string, error) {
	dst := filepath.Join(f.Cache, "sysroot", arch)
	stamp := filepath.Join(dst, ".packages")
	want := strings.Join(pkgs, " ") + "\n"
	cached := func() bool {
		b, err := os.ReadFile(stamp)
		return err == nil && strings.SplitN(string(b), "\n", 2)[0]+"\n" == want
	}
	if !f.Refresh && cached() {
		return dst, nil
	}
	aptConfig, unlock, err := f.lockedApt()
	if err != nil {
		return "", err
	}
	defer unlock()
	if !f.Refresh && cached() {
		return dst, nil
	}
	isRoot := func(name string) bool { return slices.Contains(pkgs, name) || libPackage(name) }
	resolved, err := resolve(aptConfig, f.Cache, arch, toolSuite, strings.Join(pkgs, ", "), true, isRoot)
	if err != nil {
		return "", fmt.Errorf("%s for %s: %w", strings.Join(pkgs, " "), arch, err)
	}
	stage, err := os.MkdirTemp(f.Cache, "sysroot-")
	if err != nil {
		return "", err
	}
	defer os.RemoveAll(stage)
	root, names, err := f.download(aptConfig, "sysroot "+arch, resolved, stage)
	if err != nil {
		return "", err
	}
	if err := os.WriteFile(filepath.Join(root, ".packages"), []byte(want+strings.Join(names, "\n")+"\n"), 0o644); err != nil {
		return "", err
	}
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return "", err
	}
	if err := os.RemoveAll(dst); err != nil {
		return "", err
	}
	if err := os.Rename(root, dst); err != nil {
		return "", err
	}
	f.logf("vmtest: sysroot %s: %s -> %s", arch, strings.Join(pkgs, " "), dst)
	return dst, nil
}
