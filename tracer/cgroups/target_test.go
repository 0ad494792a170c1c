package cgroups

import (
	"os"
	"path/filepath"
	"testing"
)

// ResolveTarget: the id, the level counted from the root and the path of
// cgroups the test makes, by absolute and relative paths and through a
// symbolic link; Contains for the subtree only.
func TestResolveTarget(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("making cgroups needs root")
	}
	mnt, dirs := makeCgroup(t, "a", "b")
	_, root, _ := Find()
	rootDepth := depth(filepath.Clean("/" + root))
	link := filepath.Join(t.TempDir(), "link")
	if err := os.Symlink(mnt+dirs[1], link); err != nil {
		t.Fatal(err)
	}
	for _, spec := range []string{mnt + dirs[1], dirs[1][1:], link} {
		tg, err := ResolveTarget(spec)
		if err != nil {
			t.Fatalf("ResolveTarget(%q): %v", spec, err)
		}
		id, _ := Resolve(mnt + dirs[1])
		// /aw-cgroups-test-PID/a/b: three below the mount's root.
		if tg.ID != id || tg.Level != uint32(rootDepth+3) || tg.Path != filepath.Join("/", root, dirs[1]) || tg.Dir != mnt+dirs[1] {
			t.Errorf("ResolveTarget(%q) = %+v, want id %d level %d path %s", spec, tg, id, rootDepth+3, dirs[1])
		}
		if !tg.Contains(tg.Path) || !tg.Contains(tg.Path+"/c") || tg.Contains(tg.Path+"c") || tg.Contains(filepath.Dir(tg.Path)) || tg.Contains("") {
			t.Errorf("%+v: Contains wrong", tg)
		}
	}
	if tg, err := ResolveTarget(mnt); err != nil || tg.Level != uint32(rootDepth) || !tg.Contains("/x") {
		t.Errorf("the mount's root: %+v %v", tg, err)
	}
}
