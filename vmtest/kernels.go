package vmtest

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"sort"
	"strings"

	"golang.org/x/sys/unix"
)

// KernelSpec names one kernel of the matrix: a label, its architecture, the
// Debian suite whose linux-image-cloud-<arch> metapackage provides it, and
// the version prefix the resolved kernel release must have.
type KernelSpec struct {
	Name   string // "6.1"
	Arch   string // "amd64", "arm64"
	Suite  string // "bookworm-security"
	Prefix string // "6.1."
	// Auto is the attach mode acceptwatch's auto must pick on this kernel,
	// and Unsupported the modes it must refuse (the matrix then checks the
	// refusal instead of running the tests in that mode).
	Auto        string
	Unsupported []string
}

// Kernels is the matrix, by architecture, oldest first.
var Kernels = []KernelSpec{
	{Name: "5.10", Arch: "amd64", Suite: "bullseye-security", Prefix: "5.10.", Auto: "fexit"},
	{Name: "6.1", Arch: "amd64", Suite: "bookworm-security", Prefix: "6.1.", Auto: "fexit"},
	{Name: "6.12", Arch: "amd64", Suite: "trixie-security", Prefix: "6.12.", Auto: "fexit"},
	{Name: "7.x", Arch: "amd64", Suite: "trixie-backports", Prefix: "7.", Auto: "fexit"},
	// fexit needs a BPF trampoline on the traced function: arm64 has
	// them from 6.4 (ftrace direct calls); before, the attach fails.
	{Name: "6.1", Arch: "arm64", Suite: "bookworm-security", Prefix: "6.1.", Auto: "kretprobe", Unsupported: []string{"fexit"}},
	{Name: "7.x", Arch: "arm64", Suite: "trixie-backports", Prefix: "7.", Auto: "fexit"},
}

// String is "6.1" for amd64 kernels and "arm64/6.1" for the others.
func (k KernelSpec) String() string {
	if k.Arch == "amd64" {
		return k.Name
	}
	return k.Arch + "/" + k.Name
}

// Metapackage is the Debian package whose dependencies are the kernel.
func (k KernelSpec) Metapackage() string {
	return "linux-image-cloud-" + k.Arch + ":" + k.Arch + "/" + k.Suite
}

// LookupKernel finds a spec by architecture and name ("7" is accepted for
// "7.x"). name may carry the architecture itself: "arm64/6.1".
func LookupKernel(arch, name string) (KernelSpec, bool) {
	if a, n, ok := strings.Cut(name, "/"); ok {
		arch, name = a, n
	}
	for _, k := range Kernels {
		if k.Arch == arch && (k.Name == name || strings.TrimSuffix(k.Name, ".x") == name) {
			return k, true
		}
	}
	return KernelSpec{}, false
}

// GuestArch is the architecture of a kernel given as vmrun's -kernel takes
// it: an image file (from its boot header) or a matrix name ("6.12" is
// amd64, "arm64/7.x" arm64). What runs in its guest must be built for it.
func GuestArch(kernel string) (string, error) {
	if _, err := os.Stat(kernel); err == nil {
		return KernelArch(kernel)
	}
	spec, ok := LookupKernel("amd64", kernel)
	if !ok {
		return "", fmt.Errorf("kernel %q: no such file and not a matrix kernel name", kernel)
	}
	return spec.Arch, nil
}

// Kernel is a fetched kernel.
type Kernel struct {
	Spec    KernelSpec
	Vmlinuz string // absolute path
	Release string // e.g. "6.1.0-40-cloud-amd64"
}

// dir is where a fetched kernel lives below the cache.
func (k KernelSpec) dir(cache string) string {
	return filepath.Join(cache, "kernels", k.Arch, k.Name)
}

// CacheDir is ${ACCEPTWATCH_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/acceptwatch}.
func CacheDir() (string, error) {
	if d := os.Getenv("ACCEPTWATCH_CACHE"); d != "" {
		return filepath.Abs(d)
	}
	base := os.Getenv("XDG_CACHE_HOME")
	if base == "" {
		home, err := os.UserHomeDir()
		if err != nil {
			return "", fmt.Errorf("no cache dir: set ACCEPTWATCH_CACHE: %w", err)
		}
		base = filepath.Join(home, ".cache")
	}
	return filepath.Join(base, "acceptwatch"), nil
}

// Fetcher downloads kernels into <Cache>/kernels/<arch>/<name>/ with a private apt
// configuration in <Cache>/apt/ (the system's apt state is never touched).
type Fetcher struct {
	Cache   string
	Refresh bool      // re-resolve even when cached
	Log     io.Writer // progress messages
	updated bool
}

// Cached returns the cached kernel for spec, if any.
func (f *Fetcher) Cached(spec KernelSpec) (Kernel, bool) {
	dir := spec.dir(f.Cache)
	rel, err := os.ReadFile(filepath.Join(dir, "release"))
	if err != nil {
		return Kernel{}, false
	}
	vm := filepath.Join(dir, "vmlinuz")
	if _, err := os.Stat(vm); err != nil {
		return Kernel{}, false
	}
	if _, err := os.Stat(filepath.Join(dir, modulesList)); err != nil {
		return Kernel{}, false // cached before modules were kept
	}
	return Kernel{Spec: spec, Vmlinuz: vm, Release: strings.TrimSpace(string(rel))}, true
}

// Fetch returns spec's kernel, downloading it on a cache miss (or Refresh).
func (f *Fetcher) Fetch(spec KernelSpec) (Kernel, error) {
	if !f.Refresh {
		if k, ok := f.Cached(spec); ok {
			return k, nil
		}
	}
	k, err := f.fetch(spec)
	if err != nil {
		return Kernel{}, fmt.Errorf("kernel %s (%s): %w", spec, spec.Metapackage(), err)
	}
	return k, nil
}

func (f *Fetcher) logf(format string, args ...any) {
	if f.Log != nil {
		fmt.Fprintf(f.Log, format+"\n", args...)
	}
}

const keyring = "/usr/share/keyrings/debian-archive-keyring.gpg"

// aptSetup writes the private apt configuration and returns the APT_CONFIG path.
//
// Keyring: every suite is verified with the Debian archive keyring installed on
// the machine (signed-by). Bookworm's debian-archive-keyring (2023.3+deb12u2)
// already carries the trixie release and security keys (2025), so trixie,
// trixie-security and trixie-backports verify without any bootstrap or any
// [trusted=yes]; on a machine whose keyring is older, apt-get update fails
// with a NO_PUBKEY error and the fix is to update debian-archive-keyring.
func (f *Fetcher) aptSetup() (string, error) {
	m, err := SystemMirrors()
	if err != nil {
		return "", err
	}
	if _, err := os.Stat(keyring); err != nil {
		return "", fmt.Errorf("Debian archive keyring missing (apt-get install debian-archive-keyring): %w", err)
	}
	d := filepath.Join(f.Cache, "apt")
	for _, sub := range []string{"apt.conf.d", "sources.list.d", "preferences.d", "trusted.gpg.d", "state/lists/partial", "cache/archives/partial"} {
		if err := os.MkdirAll(filepath.Join(d, sub), 0o755); err != nil {
			return "", err
		}
	}
	var src strings.Builder
	seen := map[string]bool{}
	for _, k := range Kernels {
		if seen[k.Suite] {
			continue
		}
		seen[k.Suite] = true
		fmt.Fprintf(&src, "deb [signed-by=%s] %s %s main\n", keyring, m.URIFor(k.Suite), k.Suite)
	}
	// Guest tools of the other architectures (Sysroot), from this
	// machine's release; this machine's own come from its own apt.
	var foreign []string
	for _, a := range strings.Fields(strings.NewReplacer(`"`, "", ";", "").Replace(aptArches())) {
		if a != runtime.GOARCH {
			foreign = append(foreign, a)
		}
	}
	if len(foreign) > 0 {
		fmt.Fprintf(&src, "deb [arch=%s signed-by=%s] %s %s main\n", strings.Join(foreign, ","), keyring, m.URIFor(toolSuite), toolSuite)
	}
	conf := fmt.Sprintf(`// Private apt configuration of the acceptwatch kernel fetcher (vmtest).
Dir::Etc::main "%[1]s/empty.conf";
Dir::Etc::Parts "%[1]s/apt.conf.d";
Dir::Etc::SourceList "%[1]s/sources.list";
Dir::Etc::SourceParts "%[1]s/sources.list.d";
Dir::Etc::Preferences "%[1]s/preferences";
Dir::Etc::PreferencesParts "%[1]s/preferences.d";
Dir::Etc::Trusted "%[1]s/trusted.gpg";
Dir::Etc::TrustedParts "%[1]s/trusted.gpg.d";
Dir::State "%[1]s/state";
Dir::State::Lists "%[1]s/state/lists";
Dir::State::Status "%[1]s/state/status";
Dir::Cache "%[1]s/cache";
Dir::Cache::Archives "%[1]s/cache/archives";
APT::Architecture "%[3]s";
APT::Architectures { %[2]s };
APT::Sandbox::User "root";
Acquire::Languages "none";
Acquire::Retries "3";
`, d, aptArches(), runtime.GOARCH)
	files := map[string]string{"apt.conf": conf, "sources.list": src.String(), "empty.conf": "", "preferences": "", "state/status": ""}
	for name, content := range files {
		p := filepath.Join(d, name)
		old, err := os.ReadFile(p)
		if err == nil && (name == "state/status" || string(old) == content) {
			continue
		}
		// A configuration written by another version of this code (other
		// architectures or suites) has lists to match: update again.
		f.updated = false
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			return "", err
		}
	}
	return filepath.Join(d, "apt.conf"), nil
}

// aptArches is the private configuration's architecture list: every
// architecture of the matrix.
func aptArches() string {
	var b strings.Builder
	seen := map[string]bool{}
	for _, k := range Kernels {
		if !seen[k.Arch] {
			seen[k.Arch] = true
			fmt.Fprintf(&b, "%q; ", k.Arch)
		}
	}
	return b.String()
}

func aptRun(aptConfig, dir string, name string, args ...string) ([]byte, error) {
	cmd := exec.Command(name, args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "APT_CONFIG="+aptConfig, "LC_ALL=C", "DEBIAN_FRONTEND=noninteractive")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return out, fmt.Errorf("%s %s: %v: %s", name, strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return out, nil
}

type debPkg struct{ name, version, arch string }

var depRe = regexp.MustCompile(`^\s*([a-z0-9][a-z0-9+.-]*)(?::\S+)?\s*(?:\(\s*=\s*([^)\s]+)\s*\))?`)

// wanted says whether a dependency of the metapackage may hold the kernel
// image or the modules the guest loads (GuestModules): linux-image-* (up to
// 6.x), linux-binary-* / linux-base-* / linux-modules-* (7.x). initramfs
// tools are not needed.
func wanted(name string) bool {
	for _, p := range []string{"linux-image-", "linux-binary-", "linux-base-", "linux-modules-"} {
		if strings.HasPrefix(name, p) {
			return true
		}
	}
	return false
}

// showField returns a field of the first stanza of apt-cache show output.
func showField(out []byte, field string) string {
	for _, line := range strings.Split(string(out), "\n") {
		if line == "" {
			break
		}
		if v, ok := strings.CutPrefix(line, field+": "); ok {
			return v
		}
	}
	return ""
}

// lockedApt takes the fetch lock (other processes share the cache) and
// readies the private apt configuration, updating its lists once per
// Fetcher or when the configuration changed. unlock releases the lock.
func (f *Fetcher) lockedApt() (aptConfig string, unlock func(), err error) {
	if err := os.MkdirAll(f.Cache, 0o755); err != nil {
		return "", nil, err
	}
	lock, err := os.OpenFile(filepath.Join(f.Cache, "fetch.lock"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return "", nil, err
	}
	if err := unix.Flock(int(lock.Fd()), unix.LOCK_EX); err != nil {
		lock.Close()
		return "", nil, err
	}
	unlock = func() { lock.Close() }
	for _, tool := range []string{"apt-get", "apt-cache", "dpkg-deb"} {
		if _, err := exec.LookPath(tool); err != nil {
			unlock()
			return "", nil, fmt.Errorf("%s not found: %w", tool, err)
		}
	}
	aptConfig, err = f.aptSetup()
	if err == nil && !f.updated {
		f.logf("vmtest: apt-get update (private config %s)", aptConfig)
		_, err = aptRun(aptConfig, f.Cache, "apt-get", "-q", "update")
		f.updated = err == nil
	}
	if err != nil {
		unlock()
		return "", nil, err
	}
	return aptConfig, unlock, nil
}

// resolve follows dependency fields (apt-cache show's Depends, and
// Pre-Depends when pre is set) from deps, keeping the packages want
// accepts: an exact version (= v) where the dependency gives one, else the
// one of suite. The first alternative want accepts is taken.
func resolve(aptConfig, dir, arch, suite, deps string, pre bool, want func(string) bool) ([]debPkg, error) {
	var pkgs []debPkg
	seen := map[string]bool{}
	queue := []string{deps}
	for len(queue) > 0 {
		deps := queue[0]
		queue = queue[1:]
		for _, dep := range strings.Split(deps, ",") {
			for _, alt := range strings.Split(dep, "|") {
				m := depRe.FindStringSubmatch(alt)
				if m == nil || !want(m[1]) {
					continue
				}
				if seen[m[1]] {
					break
				}
				seen[m[1]] = true
				o, err := showPkg(aptConfig, dir, m[1], arch, suite, m[2])
				if err != nil {
					return nil, err
				}
				pkgs = append(pkgs, debPkg{m[1], showField(o, "Version"), showField(o, "Architecture")})
				queue = append(queue, showField(o, "Depends"))
				if pre {
					queue = append(queue, showField(o, "Pre-Depends"))
				}
				break
			}
		}
	}
	return pkgs, nil
}

// showPkg is apt-cache show of name for arch (or architecture-independent)
// at version, or in suite when version is "".
func showPkg(aptConfig, dir, name, arch, suite, version string) ([]byte, error) {
	var err error
	for _, a := range []string{arch, "all"} {
		ref := name + ":" + a + "/" + suite
		if version != "" {
			ref = name + ":" + a + "=" + version
		}
		var o []byte
		if o, err = aptRun(aptConfig, dir, "apt-cache", "show", ref); err == nil {
			if showField(o, "Version") != "" {
				return o, nil
			}
			err = fmt.Errorf("apt-cache show %s: no version", ref)
		}
	}
	return nil, fmt.Errorf("cannot resolve %s (%s, %s): %w", name, arch, suite, err)
}

// download fetches pkgs into stage and unpacks them into stage/root. It
// returns that root and the packages as name=version.
func (f *Fetcher) download(aptConfig, what string, pkgs []debPkg, stage string) (string, []string, error) {
	args := []string{"-q", "download"}
	var names []string
	for _, p := range pkgs {
		args = append(args, p.name+":"+p.arch+"="+p.version)
		names = append(names, p.name+"="+p.version)
	}
	f.logf("vmtest: %s: downloading %s", what, strings.Join(names, " "))
	if _, err := aptRun(aptConfig, stage, "apt-get", args...); err != nil {
		return "", nil, err
	}
	debs, _ := filepath.Glob(filepath.Join(stage, "*.deb"))
	root := filepath.Join(stage, "root")
	for _, deb := range debs {
		if o, err := exec.Command("dpkg-deb", "-x", deb, root).CombinedOutput(); err != nil {
			return "", nil, fmt.Errorf("dpkg-deb -x %s: %v: %s", filepath.Base(deb), err, o)
		}
	}
	sort.Strings(names)
	return root, names, nil
}

func (f *Fetcher) fetch(spec KernelSpec) (Kernel, error) {
	aptConfig, unlock, err := f.lockedApt()
	if err != nil {
		return Kernel{}, err
	}
	defer unlock()
	if !f.Refresh { // another process may have fetched it meanwhile
		if k, ok := f.Cached(spec); ok {
			return k, nil
		}
	}

	// Resolve the metapackage and follow exact-version dependencies.
	meta := spec.Metapackage()
	out, err := aptRun(aptConfig, f.Cache, "apt-cache", "show", meta)
	if err != nil {
		return Kernel{}, fmt.Errorf("cannot resolve %s: %w", meta, err)
	}
	pkgs, err := resolve(aptConfig, f.Cache, spec.Arch, spec.Suite, showField(out, "Depends"), false, wanted)
	if err != nil {
		return Kernel{}, fmt.Errorf("dependencies of %s: %w", meta, err)
	}
	if len(pkgs) == 0 {
		return Kernel{}, fmt.Errorf("%s has no linux-image/binary/base dependency (Depends: %q)", meta, showField(out, "Depends"))
	}

	stage, err := os.MkdirTemp(f.Cache, "fetch-")
	if err != nil {
		return Kernel{}, err
	}
	defer os.RemoveAll(stage)
	root, names, err := f.download(aptConfig, "kernel "+spec.String(), pkgs, stage)
	if err != nil {
		return Kernel{}, err
	}

	// Up to 6.x: boot/vmlinuz-<release>; from 7.x: usr/lib/modules/<release>/vmlinuz
	// in linux-binary-<release>.
	var release, vmlinuz, config string
	if m, _ := filepath.Glob(filepath.Join(root, "boot/vmlinuz-*")); len(m) == 1 {
		vmlinuz = m[0]
		release = strings.TrimPrefix(filepath.Base(m[0]), "vmlinuz-")
		config = filepath.Join(root, "boot", "config-"+release)
	} else if m, _ := filepath.Glob(filepath.Join(root, "usr/lib/modules/*/vmlinuz")); len(m) == 1 {
		vmlinuz = m[0]
		release = filepath.Base(filepath.Dir(m[0]))
		config = filepath.Join(filepath.Dir(m[0]), "config")
	} else {
		return Kernel{}, fmt.Errorf("no (single) vmlinuz in %s", strings.Join(names, " "))
	}
	if !strings.HasPrefix(release, spec.Prefix) {
		return Kernel{}, fmt.Errorf("resolved kernel %s, want a %s* kernel", release, spec.Prefix)
	}

	tmp := filepath.Join(stage, "out")
	if err := os.MkdirAll(tmp, 0o755); err != nil {
		return Kernel{}, err
	}
	if err := os.Rename(vmlinuz, filepath.Join(tmp, "vmlinuz")); err != nil {
		return Kernel{}, err
	}
	_ = os.Rename(config, filepath.Join(tmp, "config"))
	if err := keepModules(root, release, tmp, filepath.Join(tmp, "config")); err != nil {
		return Kernel{}, fmt.Errorf("keeping modules: %w", err)
	}
	meta2 := fmt.Sprintf("suite: %s\nmetapackage: linux-image-cloud-%s=%s\npackages: %s\n", spec.Suite, spec.Arch, showField(out, "Version"), strings.Join(names, " "))
	if err := os.WriteFile(filepath.Join(tmp, "packages"), []byte(meta2), 0o644); err != nil {
		return Kernel{}, err
	}
	if err := os.WriteFile(filepath.Join(tmp, "release"), []byte(release+"\n"), 0o644); err != nil {
		return Kernel{}, err
	}
	if a, err := KernelArch(filepath.Join(tmp, "vmlinuz")); err != nil || a != spec.Arch {
		return Kernel{}, fmt.Errorf("%s: kernel image is %q (%v), want %s", release, a, err, spec.Arch)
	}
	dst := spec.dir(f.Cache)
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return Kernel{}, err
	}
	if err := os.RemoveAll(dst); err != nil {
		return Kernel{}, err
	}
	if err := os.Rename(tmp, dst); err != nil {
		return Kernel{}, err
	}
	f.logf("vmtest: kernel %s: %s -> %s", spec, release, dst)
	k, _ := f.Cached(spec)
	return k, nil
}
