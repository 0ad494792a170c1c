package cgroups

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const id64 = "3f2a9c1b7d4e5f60718293a4b5c6d7e8f90112233445566778899aabbccddeef"

func TestParse(t *testing.T) {
	for _, tc := range []struct {
		path string
		want Container
		str  string
	}{
		// docker, systemd and cgroupfs drivers
		{"/system.slice/docker-" + id64 + ".scope", Container{Runtime: "docker", ID: id64[:12]}, "docker:3f2a9c1b7d4e"},
		{"/docker/" + id64, Container{Runtime: "docker", ID: id64[:12]}, "docker:3f2a9c1b7d4e"},
		// Kubernetes with the systemd driver: containerd, CRI-O
		{"/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1a2b3c4d_5e6f_7a8b_9c0d_1e2f3a4b5c6d.slice/cri-containerd-" + id64 + ".scope",
			Container{Runtime: "containerd", ID: id64[:12], Pod: "1a2b3c4d-5e6f-7a8b-9c0d-1e2f3a4b5c6d"}, "k8s:1a2b3c4d/3f2a9c1b7d4e"},
		{"/kubepods.slice/kubepods-pod1a2b3c4d_5e6f_7a8b_9c0d_1e2f3a4b5c6d.slice/crio-" + id64 + ".scope",
			Container{Runtime: "cri-o", ID: id64[:12], Pod: "1a2b3c4d-5e6f-7a8b-9c0d-1e2f3a4b5c6d"}, "k8s:1a2b3c4d/3f2a9c1b7d4e"},
		// Kubernetes with the cgroupfs driver
		{"/kubepods/besteffort/pod1a2b3c4d-5e6f-7a8b-9c0d-1e2f3a4b5c6d/" + id64,
			Container{Runtime: "cri", ID: id64[:12], Pod: "1a2b3c4d-5e6f-7a8b-9c0d-1e2f3a4b5c6d"}, "k8s:1a2b3c4d/3f2a9c1b7d4e"},
		{"/kubepods/pod1a2b3c4d-5e6f-7a8b-9c0d-1e2f3a4b5c6d/crio-" + id64,
			Container{Runtime: "cri-o", ID: id64[:12], Pod: "1a2b3c4d-5e6f-7a8b-9c0d-1e2f3a4b5c6d"}, "k8s:1a2b3c4d/3f2a9c1b7d4e"},
		// podman: root, rootless, and the container's own sub-cgroup
		{"/machine.slice/libpod-" + id64 + ".scope", Container{Runtime: "podman", ID: id64[:12]}, "podman:3f2a9c1b7d4e"},
		{"/user.slice/user-1000.slice/user@1000.service/user.slice/libpod-" + id64 + ".scope/container",
			Container{Runtime: "podman", ID: id64[:12]}, "podman:3f2a9c1b7d4e"},
		{"/system.slice/nerdctl-" + id64 + ".scope", Container{Runtime: "containerd", ID: id64[:12]}, "containerd:3f2a9c1b7d4e"},
		{"/lxc.payload.web1", Container{Runtime: "lxc", ID: "web1"}, "lxc:web1"},
		// a systemd inside a docker container: the container wins
		{"/system.slice/docker-" + id64 + ".scope/system.slice/nginx.service", Container{Runtime: "docker", ID: id64[:12]}, "docker:3f2a9c1b7d4e"},
		// systemd units, no container
		{"/system.slice/nginx.service", Container{Unit: "nginx.service"}, "nginx.service"},
		{"/user.slice/user-1000.slice/session-3.scope", Container{Unit: "session-3.scope"}, "session-3.scope"},
		{"/user.slice/user-1000.slice/user@1000.service/app.slice/foo.service", Container{Unit: "foo.service"}, "foo.service"},
		// nothing to say
		{"/", Container{}, ""},
		{"/aw-test/a/b", Container{}, ""},
		{"/docker/notanid", Container{}, ""},
		{"/" + id64, Container{}, ""},
	} {
		got := Parse(tc.path)
		if got != tc.want || got.String() != tc.str {
			t.Errorf("Parse(%q) = %+v %q, want %+v %q", tc.path, got, got.String(), tc.want, tc.str)
		}
	}
}

// makeCgroup makes a cgroup v2 directory tree for the test, removed after.
func makeCgroup(t *testing.T, rel ...string) (mnt string, dirs []string) {
	t.Helper()
	mnt, err := Mount()
	if err != nil {
		if os.Getenv("ACCEPTWATCH_NO_SKIP") == "1" {
			t.Fatalf("cgroup v2: %v", err)
		}
		t.Skipf("needs a cgroup v2 hierarchy: %v", err)
	}
	base := fmt.Sprintf("/aw-cgroups-test-%d", os.Getpid())
	// Cleanups run last-in first-out: the base goes after its children.
	t.Cleanup(func() { os.Remove(mnt + base) })
	dir := mnt + base
	for _, r := range rel {
		dir = filepath.Join(dir, r)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatalf("making a cgroup: %v", err)
		}
		d := dir
		t.Cleanup(func() { os.Remove(d) })
		dirs = append(dirs, strings.TrimPrefix(d, mnt))
	}
	return mnt, dirs
}

func TestResolveAndPath(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("making cgroups needs root")
	}
	mnt, dirs := makeCgroup(t, "a", "b")
	r, err := NewResolver()
	if err != nil {
		t.Fatal(err)
	}
	r.minWalk = 0
	for _, d := range dirs {
		for _, spec := range []string{mnt + d, strings.TrimPrefix(d, "/")} {
			id, err := Resolve(spec)
			if err != nil {
				t.Fatalf("Resolve(%q): %v", spec, err)
			}
			if got := r.Path(id); got != d {
				t.Errorf("Path(Resolve(%q)) = %q, want %q", spec, got, d)
			}
		}
	}
	rootID, err := Resolve(mnt)
	if err != nil {
		t.Fatal(err)
	}
	if got := r.Path(rootID); got != "/" {
		t.Errorf("the root's path: %q", got)
	}
	// A cgroup made after the first walk is found by the next one; a
	// removed one is gone after it.
	walks := r.walks
	_, more := makeCgroup(t, "a", "b", "c")
	id, err := Resolve(mnt + more[2])
	if err != nil {
		t.Fatal(err)
	}
	if got := r.Path(id); got != more[2] || r.walks != walks+1 {
		t.Errorf("new cgroup: %q after %d walks", got, r.walks-walks)
	}
	if err := os.Remove(mnt + more[2]); err != nil {
		t.Fatal(err)
	}
	if got := r.Path(12345678901); got != "" {
		t.Errorf("unknown id: %q", got)
	}
	if got := r.Path(id); got != "" {
		t.Errorf("removed cgroup still resolves to %q after a walk", got)
	}
	// Misses walk at most once per minWalk.
	r.minWalk = 1 << 62
	walks = r.walks
	for i := uint64(0); i < 100; i++ {
		r.Path(1<<40 + i)
	}
	if r.walks != walks {
		t.Errorf("%d walks for 100 misses within minWalk", r.walks-walks)
	}
}

func TestResolveErrors(t *testing.T) {
	if _, err := Mount(); errors.Is(err, ErrNoV2) {
		t.Skip("no cgroup v2 hierarchy")
	}
	for spec, want := range map[string]string{
		"":                        "empty cgroup path",
		"/aw-no-such-cgroup-dir":  "no such file",
		"aw-no-such-cgroup/child": "no such file",
		"/proc":                   "not in a cgroup v2 hierarchy",
	} {
		if _, err := Resolve(spec); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Resolve(%q): %v, want %q", spec, err, want)
		}
	}
	mnt, _ := Mount()
	if _, err := Resolve(filepath.Join(mnt, "cgroup.procs")); err == nil || !strings.Contains(err.Error(), "not a directory") {
		t.Errorf("a control file: %v", err)
	}
}
