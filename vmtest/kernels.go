package vmtest

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"

	"golang.org/x/sys/unix"
)

// KernelSpec names one kernel of the matrix: a label, the Debian suite whose
// linux-image-cloud-amd64 metapackage provides it, and the version prefix the
// resolved kernel release must have.
type KernelSpec struct {
	Name   string // "6.1"
	Suite  string // "bookworm-security"
	Prefix string // "6.1."
}

// Kernels is the matrix, oldest first.
var Kernels = []KernelSpec{
	{Name: "5.10", Suite: "bullseye-security", Prefix: "5.10."},
	{Name: "6.1", Suite: "bookworm-security", Prefix: "6.1."},
	{Name: "6.12", Suite: "trixie-security", Prefix: "6.12."},
	{Name: "7.x", Suite: "trixie-backports", Prefix: "7."},
}

// LookupKernel finds a spec by name ("7" is accepted for "7.x").
func LookupKernel(name string) (KernelSpec, bool) {
	for _, k := range Kernels {
		if k.Name == name || strings.TrimSuffix(k.Name, ".x") == name {
			return k, true
		}
	}
	return KernelSpec{}, false
}

// Kernel is a fetched kernel.
type Kernel struct {
	Spec    KernelSpec
	Vmlinuz string // absolute path
	Release string // e.g. "6.1.0-40-cloud-amd64"
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

// Fetcher downloads kernels into <Cache>/kernels/<name>/ with a private apt
// configuration in <Cache>/apt/ (the system's apt state is never touched).
type Fetcher struct {
	Cache   string
	Refresh bool      // re-resolve even when cached
	Log     io.Writer // progress messages
	updated bool
}

// Cached returns the cached kernel for spec, if any.
func (f *Fetcher) Cached(spec KernelSpec) (Kernel, bool) {
	dir := filepath.Join(f.Cache, "kernels", spec.Name)
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
		return Kernel{}, fmt.Errorf("kernel %s (linux-image-cloud-amd64/%s): %w", spec.Name, spec.Suite, err)
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
APT::Architecture "amd64";
APT::Architectures { "amd64"; };
APT::Sandbox::User "root";
Acquire::Languages "none";
Acquire::Retries "3";
`, d)
	files := map[string]string{"apt.conf": conf, "sources.list": src.String(), "empty.conf": "", "preferences": "", "state/status": ""}
	for name, content := range files {
		p := filepath.Join(d, name)
		if name == "state/status" {
			if _, err := os.Stat(p); err == nil {
				continue
			}
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			return "", err
		}
	}
	return filepath.Join(d, "apt.conf"), nil
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

type debPkg struct{ name, version string }

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

func (f *Fetcher) fetch(spec KernelSpec) (Kernel, error) {
	if err := os.MkdirAll(f.Cache, 0o755); err != nil {
		return Kernel{}, err
	}
	lock, err := os.OpenFile(filepath.Join(f.Cache, "fetch.lock"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return Kernel{}, err
	}
	defer lock.Close()
	if err := unix.Flock(int(lock.Fd()), unix.LOCK_EX); err != nil {
		return Kernel{}, err
	}
	if !f.Refresh { // another process may have fetched it meanwhile
		if k, ok := f.Cached(spec); ok {
			return k, nil
		}
	}
	for _, tool := range []string{"apt-get", "apt-cache", "dpkg-deb"} {
		if _, err := exec.LookPath(tool); err != nil {
			return Kernel{}, fmt.Errorf("%s not found: %w", tool, err)
		}
	}
	aptConfig, err := f.aptSetup()
	if err != nil {
		return Kernel{}, err
	}
	if !f.updated {
		f.logf("vmtest: apt-get update (private config %s)", aptConfig)
		if _, err := aptRun(aptConfig, f.Cache, "apt-get", "-q", "update"); err != nil {
			return Kernel{}, err
		}
		f.updated = true
	}

	// Resolve the metapackage and follow exact-version dependencies.
	meta := "linux-image-cloud-amd64/" + spec.Suite
	out, err := aptRun(aptConfig, f.Cache, "apt-cache", "show", meta)
	if err != nil {
		return Kernel{}, fmt.Errorf("cannot resolve %s: %w", meta, err)
	}
	var pkgs []debPkg
	seen := map[string]bool{}
	queue := []string{showField(out, "Depends")}
	for len(queue) > 0 {
		deps := queue[0]
		queue = queue[1:]
		for _, dep := range strings.Split(deps, ",") {
			for _, alt := range strings.Split(dep, "|") {
				m := depRe.FindStringSubmatch(alt)
				if m == nil || !wanted(m[1]) || seen[m[1]] {
					continue
				}
				seen[m[1]] = true
				ref := m[1] + "/" + spec.Suite
				if m[2] != "" {
					ref = m[1] + "=" + m[2]
				}
				o, err := aptRun(aptConfig, f.Cache, "apt-cache", "show", ref)
				if err != nil {
					return Kernel{}, fmt.Errorf("cannot resolve dependency %s of %s: %w", ref, meta, err)
				}
				pkgs = append(pkgs, debPkg{m[1], showField(o, "Version")})
				queue = append(queue, showField(o, "Depends"))
			}
		}
	}
	if len(pkgs) == 0 {
		return Kernel{}, fmt.Errorf("%s has no linux-image/binary/base dependency (Depends: %q)", meta, showField(out, "Depends"))
	}

	stage, err := os.MkdirTemp(f.Cache, "fetch-")
	if err != nil {
		return Kernel{}, err
	}
	defer os.RemoveAll(stage)
	args := []string{"-q", "download"}
	var names []string
	for _, p := range pkgs {
		args = append(args, p.name+"="+p.version)
		names = append(names, p.name+"="+p.version)
	}
	f.logf("vmtest: kernel %s: downloading %s", spec.Name, strings.Join(names, " "))
	if _, err := aptRun(aptConfig, stage, "apt-get", args...); err != nil {
		return Kernel{}, err
	}
	debs, _ := filepath.Glob(filepath.Join(stage, "*.deb"))
	root := filepath.Join(stage, "root")
	for _, deb := range debs {
		if o, err := exec.Command("dpkg-deb", "-x", deb, root).CombinedOutput(); err != nil {
			return Kernel{}, fmt.Errorf("dpkg-deb -x %s: %v: %s", filepath.Base(deb), err, o)
		}
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
	sort.Strings(names)
	meta2 := fmt.Sprintf("suite: %s\nmetapackage: linux-image-cloud-amd64=%s\npackages: %s\n", spec.Suite, showField(out, "Version"), strings.Join(names, " "))
	if err := os.WriteFile(filepath.Join(tmp, "packages"), []byte(meta2), 0o644); err != nil {
		return Kernel{}, err
	}
	if err := os.WriteFile(filepath.Join(tmp, "release"), []byte(release+"\n"), 0o644); err != nil {
		return Kernel{}, err
	}
	dst := filepath.Join(f.Cache, "kernels", spec.Name)
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return Kernel{}, err
	}
	if err := os.RemoveAll(dst); err != nil {
		return Kernel{}, err
	}
	if err := os.Rename(tmp, dst); err != nil {
		return Kernel{}, err
	}
	f.logf("vmtest: kernel %s: %s -> %s", spec.Name, release, dst)
	k, _ := f.Cached(spec)
	return k, nil
}
