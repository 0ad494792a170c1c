package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/acceptwatch/acceptwatch/tracer/cgroups"
)

// TestMain lets the test binary be an accepting server of its own (a process
// the test moves into a cgroup): AW_TEST_ACCEPT_SERVER=N accepts N
// connections once a line arrives on stdin, then exits.
func TestMain(m *testing.M) {
	if n, err := strconv.Atoi(os.Getenv("AW_TEST_ACCEPT_SERVER")); err == nil {
		os.Exit(acceptServer(n))
	}
	os.Exit(m.Run())
}

func acceptServer(n int) int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	fmt.Println(l.Addr().(*net.TCPAddr).Port)
	if _, err := bufio.NewReader(os.Stdin).ReadString('\n'); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	for i := 0; i < n; i++ {
		c, err := l.Accept()
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		c.Close()
	}
	return 0
}

// TestCgroupOnEvents: a server process in a cgroup the test makes, named as
// docker's systemd driver names a container's scope: its accepts carry the
// cgroup's id and path and the container's short id, in JSON; the test
// process's own accepts carry its own cgroup.
func TestCgroupOnEvents(t *testing.T) {
	requireRoot(t)
	mnt, err := cgroups.Mount()
	if err != nil {
		if os.Getenv("ACCEPTWATCH_NO_SKIP") == "1" {
			t.Fatal(err)
		}
		t.Skipf("needs a cgroup v2 hierarchy: %v", err)
	}
	const cid = "c0ffee0123456789abcdef0123456789abcdef0123456789abcdef0123456789"
	base := fmt.Sprintf("/aw-cgroup-test-%d", os.Getpid())
	rel := base + "/docker-" + cid + ".scope"
	if err := os.MkdirAll(mnt+rel, 0o755); err != nil {
		t.Fatal(err)
	}
	defer os.Remove(mnt + base)
	defer os.Remove(mnt + rel) // after the server has exited (deferred first)
	id, err := cgroups.Resolve(mnt + rel)
	if err != nil {
		t.Fatal(err)
	}

	const n = 5
	srv := exec.Command(os.Args[0])
	srv.Env = append(os.Environ(), "AW_TEST_ACCEPT_SERVER="+strconv.Itoa(n))
	stdin, err := srv.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := srv.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var srvErr strings.Builder
	srv.Stderr = &srvErr
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { srv.Process.Kill(); srv.Wait() }()
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil {
		t.Fatalf("server: %v %s", err, srvErr.String())
	}
	port, _ := strconv.Atoi(strings.TrimSpace(line))
	if err := os.WriteFile(filepath.Join(mnt+rel, "cgroup.procs"), []byte(strconv.Itoa(srv.Process.Pid)), 0o644); err != nil {
		t.Fatalf("moving the server into %s: %v", rel, err)
	}

	own := listen(t)
	p := start(t, "-port", strconv.Itoa(port), "-port", strconv.Itoa(own.port), "-o", "json")
	io.WriteString(stdin, "go\n")
	dial(t, "127.0.0.1", "127.0.0.1", port, n)
	dial(t, "127.0.0.1", "127.0.0.1", own.port, 2)
	own.waitAccepted(t, 2)
	done := make(chan error, 1)
	go func() { done <- srv.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("server: %v %s", err, srvErr.String())
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the server did not accept its connections")
	}
	p.stop(os.Interrupt)

	type ev struct {
		Type      string `json:"type"`
		LocalPort int    `json:"local_port"`
		CgroupID  uint64 `json:"cgroup_id"`
		Cgroup    string `json:"cgroup"`
		Container string `json:"container"`
	}
	got := map[int][]ev{}
	for _, l := range strings.Split(p.stdout.String(), "\n") {
		var e ev
		if json.Unmarshal([]byte(l), &e) == nil && e.Type == "accept" {
			got[e.LocalPort] = append(got[e.LocalPort], e)
		}
	}
	if len(got[port]) != n || len(got[own.port]) != 2 {
		t.Fatalf("accept events: %d on the server's port, %d on the test's; want %d and 2\n%s", len(got[port]), len(got[own.port]), n, p.stdout.String())
	}
	for _, e := range got[port] {
		if e.CgroupID != id || e.Cgroup != rel || e.Container != "docker:"+cid[:12] {
			t.Errorf("server's accept: cgroup %d %q container %q; want %d %q docker:%s", e.CgroupID, e.Cgroup, e.Container, id, rel, cid[:12])
		}
	}
	for _, e := range got[own.port] {
		if e.CgroupID == id || e.CgroupID == 0 || e.Cgroup == "" || e.Container == "docker:"+cid[:12] {
			t.Errorf("the test's own accept: cgroup %d %q container %q", e.CgroupID, e.Cgroup, e.Container)
		}
	}
}
