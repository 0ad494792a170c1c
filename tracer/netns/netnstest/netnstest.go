// Package netnstest makes network namespaces for tests.
package netnstest

import (
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/acceptwatch/acceptwatch/tracer/netns"
)

var made atomic.Int32

// Make makes a network namespace named in /run/netns (unique to this test
// process and call) with lo up, deleted when the test ends, also when it
// fails. It skips without root and needs ip(8).
func Make(t testing.TB) netns.NS {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("making a network namespace needs root (ip netns add)")
	}
	name := fmt.Sprintf("aw-%d-%d-%s", os.Getpid(), made.Add(1), strings.NewReplacer("/", "-", " ", "-").Replace(t.Name()))
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add %s: %v: %s", name, err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("ip", "netns", "del", name).CombinedOutput(); err != nil {
			t.Errorf("ip netns del %s: %v: %s", name, err, out)
		}
	})
	if out, err := exec.Command("ip", "-n", name, "link", "set", "lo", "up").CombinedOutput(); err != nil {
		t.Fatalf("lo up in %s: %v: %s", name, err, out)
	}
	ns, err := netns.Resolve(name)
	if err != nil {
		t.Fatal(err)
	}
	return ns
}
