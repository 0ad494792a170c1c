// Tests of the repository itself: what is committed, what is ignored, and
// what a binary built from a clone says about where it came from.
package acceptwatch_test

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// repoRoot is the top of the git work tree the tests run in; tests skip
// outside one (a source tarball has no history to check).
func repoRoot(t *testing.T) string {
	t.Helper()
	out, err := exec.Command("git", "rev-parse", "--show-toplevel").Output()
	if err != nil {
		t.Skipf("not in a git work tree (git rev-parse: %v): nothing committed to check", err)
	}
	return strings.TrimSpace(string(out))
}

func git(t *testing.T, dir string, args ...string) string {
	t.Helper()
	cmd := exec.Command("git", args...)
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("git %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// The only compiled files in the repository are the bpf2go objects that let
// `go build` work without clang; any other ELF file, or anything large, is a
// build output committed by mistake.
func TestNoBuildOutputCommitted(t *testing.T) {
	root := repoRoot(t)
	generated := regexp.MustCompile(`^tracer/[a-z0-9_]+_bpfel\.o$`)
	for _, name := range strings.Split(strings.TrimRight(git(t, root, "ls-files", "-z"), "\x00"), "\x00") {
		path := filepath.Join(root, name)
		fi, err := os.Lstat(path)
		if err != nil {
			continue // deleted in the work tree
		}
		if !fi.Mode().IsRegular() {
			continue
		}
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		if bytes.HasPrefix(b, []byte("\x7fELF")) && !generated.MatchString(name) {
			t.Errorf("%s is a compiled (ELF) file: build outputs must not be committed", name)
		}
		if len(b) > 1<<20 {
			t.Errorf("%s is %d bytes: a build output or data that does not belong in the repository?", name, len(b))
		}
	}
}

// What the Makefile, the README and the tests build lands in ignored paths.
func TestBuildOutputsIgnored(t *testing.T) {
	root := repoRoot(t)
	for _, p := range []string{"acceptwatch", "acceptbench", "vmrun", "matrix", "cmd/acceptwatch/acceptwatch.test", "dist/acceptwatch.deb"} {
		cmd := exec.Command("git", "check-ignore", "-q", "--no-index", p)
		cmd.Dir = root
		if err := cmd.Run(); err != nil {
			t.Errorf("%s is not ignored by .gitignore (git check-ignore: %v)", p, err)
		}
	}
}

// readmeBuild is the README's first-screen build command.
func readmeBuild(t *testing.T, root string) []string {
	t.Helper()
	readme, err := os.ReadFile(filepath.Join(root, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile("(?m)^(go build [^&\n]*?) &&").FindSubmatch(readme)
	if m == nil {
		t.Fatal("README has no `go build ... &&` set-up command")
	}
	return strings.Fields(string(m[1]))
}

// Built from a clone with the README's command, --version names the commit,
// and says "dirty" when the work tree had changes. (This machine's Go
// configuration may set GOFLAGS=-buildvcs=false; the command must win.)
func TestVersionFromClone(t *testing.T) {
	root := repoRoot(t)
	if _, err := exec.LookPath("go"); err != nil {
		t.Skip("no go command")
	}
	head := strings.TrimSpace(git(t, root, "rev-parse", "HEAD"))
	clone := filepath.Join(t.TempDir(), "clone")
	git(t, root, "clone", "-q", "--no-hardlinks", root, clone)
	git(t, clone, "checkout", "-q", head)
	build := readmeBuild(t, clone)

	version := func() string {
		t.Helper()
		cmd := exec.Command(build[0], build[1:]...)
		cmd.Dir = clone
		cmd.Env = append(os.Environ(), "GOFLAGS=-buildvcs=false")
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("%s: %v\n%s", strings.Join(build, " "), err, out)
		}
		out, err := exec.Command(filepath.Join(clone, "acceptwatch"), "--version").Output()
		if err != nil {
			t.Fatalf("acceptwatch --version: %v", err)
		}
		return strings.TrimSpace(string(out))
	}
	if v := version(); !strings.Contains(v, "commit "+head[:12]+",") || strings.Contains(v, "dirty") {
		t.Errorf("clean clone at %s: --version %q, want the commit and no dirty flag", head[:12], v)
	}
	if err := os.WriteFile(filepath.Join(clone, "README.md"), []byte("changed\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if v := version(); !strings.Contains(v, "commit "+head[:12]+" dirty") {
		t.Errorf("modified clone: --version %q, want commit %s dirty", v, head[:12])
	}
}
