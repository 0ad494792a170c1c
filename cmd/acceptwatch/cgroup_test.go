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
	"syscall"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/acceptwatch/acceptwatch/tracer/cgroups"
)

// TestMain lets the test binary be an accepting server of its own (a process
// the test moves into a cgroup): AW_TEST_ACCEPT_SERVER=N accepts N
// connections once a line arrives on stdin, then exits.
func TestMain(m *testing.M) {
	if n, err := strconv.Atoi(os.Getenv("AW_TEST_ACCEPT_SERVER")); err == nil {
		os.Exit(acceptServer(n))
	}
	if os.Getenv("AW_TEST_FULL_SERVER") != "" {
		os.Exit(fullQueueServer())
	}
	if bin := os.Getenv("AW_TEST_NO_CGROUP2"); bin != "" {
		os.Exit(withoutCgroup2(bin, os.Args[1:]))
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
	mnt := requireCgroup2(t)
	const cid = "c0ffee0123456789abcdef0123456789abcdef0123456789abcdef0123456789"
	rel := fmt.Sprintf("/aw-cgroup-test-%d/docker-%s.scope", os.Getpid(), cid)
	makeCgroups(t, mnt, rel)
	id, err := cgroups.Resolve(mnt + rel)
	if err != nil {
		t.Fatal(err)
	}

	// Started outside, moved in after it listens: events carry the
	// acceptor's cgroup at the accept.
	const n = 5
	port, stdin, srv := cgroupServer(t, "", "AW_TEST_ACCEPT_SERVER="+strconv.Itoa(n))
	if err := os.WriteFile(filepath.Join(mnt+rel, "cgroup.procs"), []byte(strconv.Itoa(srv.Process.Pid)), 0o644); err != nil {
		t.Fatalf("moving the server into %s: %v", rel, err)
	}

	own := listen(t)
	p := start(t, "-port", strconv.Itoa(port), "-port", strconv.Itoa(own.port), "-o", "json")
	// The same accepts as text lines with the CONTAINER column.
	text := start(t, "-port", strconv.Itoa(port), "-port", strconv.Itoa(own.port), "--container-column")
	io.WriteString(stdin, "go\n")
	dial(t, "127.0.0.1", "127.0.0.1", port, n)
	dial(t, "127.0.0.1", "127.0.0.1", own.port, 2)
	own.waitAccepted(t, 2)
	waitServer(t, srv)
	p.stop(os.Interrupt)
	text.stop(os.Interrupt)
	var header string
	labels := map[int][]string{}
	for _, l := range strings.Split(text.stdout.String(), "\n") {
		f := strings.Fields(l)
		switch {
		case len(f) > 0 && f[0] == "TIME":
			header = l
		case len(f) == 11 && f[1] != "" && header != "":
			lport, _ := strconv.Atoi(f[5])
			labels[lport] = append(labels[lport], f[10])
			// In runes: a wait in µs is wider in bytes.
			if utf8.RuneCountInString(l[:strings.LastIndex(l, f[10])]) != strings.Index(header, "CONTAINER") {
				t.Errorf("CONTAINER value not under its header:\n%s\n%s", header, l)
			}
		}
	}
	if !strings.HasSuffix(header, " CONTAINER") || len(labels[port]) != n || len(labels[own.port]) != 2 {
		t.Fatalf("text lines: header %q, labels %v; want CONTAINER, %d on %d and 2 on %d\n%s", header, labels, n, port, own.port, text.stdout.String())
	}
	for _, l := range labels[port] {
		if l != "docker:"+cid[:12] {
			t.Errorf("the server's text line says %q, want docker:%s", l, cid[:12])
		}
	}
	for _, l := range labels[own.port] {
		if l == "docker:"+cid[:12] || l == "-" {
			t.Errorf("the test's own text line says %q", l)
		}
	}

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

// fullQueueServer is the test binary as a server that never accepts
// (AW_TEST_FULL_SERVER): a listener of backlog 1 on 127.0.0.1, its port on
// stdout, held until stdin closes.
func fullQueueServer() int {
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err == nil {
		err = syscall.Bind(fd, &syscall.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}})
	}
	if err == nil {
		err = syscall.Listen(fd, 1)
	}
	var sa syscall.Sockaddr
	if err == nil {
		sa, err = syscall.Getsockname(fd)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	fmt.Println(sa.(*syscall.SockaddrInet4).Port)
	io.Copy(io.Discard, os.Stdin)
	return 0
}

// cgroupServer runs the test binary as a server (env selects which) that
// starts in cgroup dir ("": the test's) by clone3's CLONE_INTO_CGROUP, so
// that its listener is made there: a socket belongs to its creator's cgroup. It returns the port
// and the server's stdin; the server is killed at the end of the test.
func cgroupServer(t *testing.T, dir, env string) (int, io.WriteCloser, *exec.Cmd) {
	t.Helper()
	srv := exec.Command(os.Args[0])
	srv.Env = append(os.Environ(), env)
	if dir != "" {
		cg, err := os.Open(dir)
		if err != nil {
			t.Fatal(err)
		}
		defer cg.Close()
		srv.SysProcAttr = &syscall.SysProcAttr{UseCgroupFD: true, CgroupFD: int(cg.Fd())}
	}
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
		t.Fatalf("starting a server in %s: %v", dir, err)
	}
	t.Cleanup(func() { srv.Process.Kill(); srv.Wait() })
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil {
		t.Fatalf("server: %v %s", err, srvErr.String())
	}
	port, _ := strconv.Atoi(strings.TrimSpace(line))
	return port, stdin, srv
}

// waitServer waits for an accepting server to have taken its connections
// and exited.
func waitServer(t *testing.T, srv *exec.Cmd) {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- srv.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("server: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("a server did not accept its connections")
	}
}

// makeCgroups makes cgroup directories below the v2 mount (relative paths),
// removed deepest first at the end of the test (after its servers are gone).
func makeCgroups(t *testing.T, mnt string, rels ...string) {
	t.Helper()
	for _, rel := range rels {
		if err := os.MkdirAll(filepath.Join(mnt, rel), 0o755); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			for p := filepath.Join(mnt, rel); p != mnt && strings.HasPrefix(p, mnt); p = filepath.Dir(p) {
				os.Remove(p) // fails while not empty: the parent goes with the last child
			}
		})
	}
}

// requireCgroup2 is the cgroup v2 mount, or a skip (a failure in the VMs).
func requireCgroup2(t *testing.T) string {
	t.Helper()
	mnt, err := cgroups.Mount()
	if err != nil {
		if os.Getenv("ACCEPTWATCH_NO_SKIP") == "1" {
			t.Fatal(err)
		}
		t.Skipf("needs a cgroup v2 hierarchy: %v", err)
	}
	return mnt
}

// TestCgroupFilter: --cgroup counts only servers whose listener was made in
// that cgroup or below it, in every hook: servers in a child of the watched
// cgroup, in a sibling, and the test's own listener; a full accept queue in
// each of the first two. Exact accepts, SYNs and handshakes for the watched
// server, drops for its full queue, nothing at all from the others.
func TestCgroupFilter(t *testing.T) {
	requireRoot(t)
	mnt := requireCgroup2(t)
	base := fmt.Sprintf("aw-cgfilter-%d", os.Getpid())
	in, out := base+"/watched/inner", base+"/other"
	makeCgroups(t, mnt, in, out)

	const n = 3
	pIn, inStdin, inSrv := cgroupServer(t, filepath.Join(mnt, in), "AW_TEST_ACCEPT_SERVER="+strconv.Itoa(n))
	pOut, outStdin, outSrv := cgroupServer(t, filepath.Join(mnt, out), "AW_TEST_ACCEPT_SERVER=2")
	fIn, fInStdin, _ := cgroupServer(t, filepath.Join(mnt, in), "AW_TEST_FULL_SERVER=1")
	fOut, fOutStdin, _ := cgroupServer(t, filepath.Join(mnt, out), "AW_TEST_FULL_SERVER=1")
	defer fInStdin.Close()
	defer fOutStdin.Close()
	own := listen(t)

	ports := []int{pIn, pOut, fIn, fOut, own.port}
	var list []string
	for _, p := range ports {
		list = append(list, strconv.Itoa(p))
	}
	// Relative to the mount, as a user may give it.
	p := start(t, "-port", strings.Join(list, ","), "--cgroup", base+"/watched", "-o", "json", "-v")
	io.WriteString(inStdin, "go\n")
	io.WriteString(outStdin, "go\n")
	dial(t, "127.0.0.1", "127.0.0.1", pIn, n)
	dial(t, "127.0.0.1", "127.0.0.1", pOut, 2)
	dial(t, "127.0.0.1", "127.0.0.1", own.port, 2)
	own.waitAccepted(t, 2)
	synsTo(t, fIn, 6)
	synsTo(t, fOut, 6)
	waitServer(t, inSrv)
	waitServer(t, outSrv)
	time.Sleep(300 * time.Millisecond) // the SYNs to the full queues
	p.stop(os.Interrupt)

	events, sums := parseJSON(t, p.stdout.String())
	s := finalSummary(t, sums)
	// The programs that read the socket's cgroup all load (6.15+: the drop
	// counter reads kfree_skb's rx_sk only with --cgroup).
	for _, bad := range []string{"final ACKs not counted: loading", "SYN counter: cgroup_skb/ingress unavailable"} {
		if strings.Contains(p.stderr.String(), bad) {
			t.Errorf("with --cgroup: %s", p.stderr.String())
		}
	}
	if s.Cgroup != "/"+base+"/watched" {
		t.Errorf("summary of cgroup %q, want /%s/watched", s.Cgroup, base)
	}
	for _, e := range events {
		if e.LocalPort != pIn {
			t.Errorf("an accept on port %d, outside the watched cgroup", e.LocalPort)
		}
	}
	if len(events) != n {
		t.Errorf("%d accept events, want %d (the watched server's)", len(events), n)
	}
	rows := map[int]int{}
	for i, l := range s.Listeners {
		rows[l.Port] = i
	}
	if len(rows) != 2 {
		t.Errorf("port rows %v, want only the watched cgroup's %d and %d (ports: in %d, out %d, full in %d, full out %d, own %d)", rows, pIn, fIn, pIn, pOut, fIn, fOut, own.port)
	}
	i, ok := rows[pIn]
	if !ok || s.Listeners[i].Accepted != n {
		t.Fatalf("the watched server's port row: %+v", s.Listeners)
	}
	if syns := s.Listeners[i].Syns; syns != nil && *syns != n {
		t.Errorf("SYNs to the watched server %d, want %d", *syns, n)
	}
	i, ok = rows[fIn]
	if !ok || s.Listeners[i].Drops == nil || *s.Listeners[i].Drops == 0 {
		t.Errorf("the watched full queue's port row: no drops: %+v", s.Listeners)
	}
	a, ok := s.addr("127.0.0.1")
	if !ok || a.Accepted != n {
		t.Errorf("127.0.0.1: %+v, want %d accepted", a, n)
	}
}

// TestSnapshotCgroup: --snapshot --cgroup keeps the ports whose listener was
// made in the cgroup or below it, with their queues and connections; another
// cgroup's listener and connections are left out (and shown without it).
func TestSnapshotCgroup(t *testing.T) {
	requireRoot(t)
	mnt := requireCgroup2(t)
	base := fmt.Sprintf("aw-cgsnap-%d", os.Getpid())
	in, out := base+"/watched/inner", base+"/other"
	makeCgroups(t, mnt, in, out)
	fIn, inStdin, _ := cgroupServer(t, filepath.Join(mnt, in), "AW_TEST_FULL_SERVER=1")
	fOut, outStdin, _ := cgroupServer(t, filepath.Join(mnt, out), "AW_TEST_FULL_SERVER=1")
	defer inStdin.Close()
	defer outStdin.Close()
	// Two handshakes fit a queue of backlog 1; they wait there, ESTABLISHED.
	connectN(t, "127.0.0.1", fIn, 2)
	connectN(t, "127.0.0.1", fOut, 2)
	ports := strconv.Itoa(fIn) + "," + strconv.Itoa(fOut)

	all := snapshot(t, snapCmd(t, "-port", ports))
	only := snapshot(t, snapCmd(t, "-port", ports, "--cgroup", filepath.Join(mnt, base, "watched")))
	if len(all.Listeners) != 2 || all.Connections.Established != 4 {
		t.Fatalf("without --cgroup: %d listeners, %d established; want 2 and 4: %+v", len(all.Listeners), all.Connections.Established, all)
	}
	if len(only.Listeners) != 1 || only.Listeners[0].Port != fIn || only.Listeners[0].Queue != 2 ||
		only.Connections.Established != 2 || only.byAddr()["127.0.0.1"].Established != 2 {
		t.Errorf("--cgroup %s/watched: want the listener on %d (queue 2) and its 2 connections only: %+v", base, fIn, only)
	}
	if all.Cgroup != "" || only.Cgroup != "/"+base+"/watched" {
		t.Errorf("snapshots say cgroups %q and %q, want none and /%s/watched", all.Cgroup, only.Cgroup, base)
	}
}

// withoutCgroup2 is TestMain's AW_TEST_NO_CGROUP2 mode: in a mount namespace
// of its own (Go made its mounts private), unmount every cgroup2 file
// system, as on a cgroup v1-only host, and run acceptwatch with the args.
func withoutCgroup2(bin string, args []string) int {
	for {
		mnt, _, err := cgroups.Find()
		if err != nil || mnt == "" {
			break
		}
		if err := syscall.Unmount(mnt, syscall.MNT_DETACH); err != nil {
			fmt.Fprintln(os.Stderr, "unmounting", mnt, err)
			return 1
		}
	}
	fmt.Fprintln(os.Stderr, syscall.Exec(bin, append([]string{bin}, args...), os.Environ()))
	return 1
}

// TestCgroupErrors: a --cgroup that is not a cgroup v2 directory is a usage
// error (exit 2); a host without cgroup v2 and a cgroup namespace that hides
// the hierarchy are runtime ones (exit 1). One line each, naming the cause.
func TestCgroupErrors(t *testing.T) {
	requireRoot(t)
	mnt := requireCgroup2(t)
	bin := acceptwatchBin(t)
	for _, tc := range []struct {
		name  string
		args  []string
		setup func(*exec.Cmd)
		code  int
		want  string
	}{
		{"missing", []string{"--cgroup", "aw-no-such-cgroup"}, nil, 2, "--cgroup aw-no-such-cgroup: cgroup aw-no-such-cgroup: no such file or directory"},
		{"not cgroup2", []string{"--cgroup", "/etc"}, nil, 2, "--cgroup /etc: cgroup /etc: not in a cgroup v2 hierarchy"},
		{"a file", []string{"--cgroup", filepath.Join(mnt, "cgroup.procs")}, nil, 2, "not a directory"},
		{"v1 only", []string{"--cgroup", "/"}, func(c *exec.Cmd) {
			c.Path, c.Args = os.Args[0], append([]string{os.Args[0]}, c.Args[1:]...)
			c.Env = append(os.Environ(), "AW_TEST_NO_CGROUP2="+bin)
			c.SysProcAttr = &syscall.SysProcAttr{Unshareflags: syscall.CLONE_NEWNS}
		}, 1, "--cgroup /: no cgroup v2 hierarchy mounted (a cgroup v1-only host)"},
		{"cgroup namespace", []string{"--cgroup", "/"}, func(c *exec.Cmd) {
			c.SysProcAttr = &syscall.SysProcAttr{Unshareflags: syscall.CLONE_NEWCGROUP}
		}, 1, "cgroup namespace of its own"},
	} {
		cmd := exec.Command(bin, append([]string{"-port", "80"}, tc.args...)...)
		if tc.setup != nil {
			tc.setup(cmd)
		}
		var stderr strings.Builder
		cmd.Stderr = &stderr
		err := cmd.Run()
		code := -1
		if ee, ok := err.(*exec.ExitError); ok {
			code = ee.ExitCode()
		}
		s := stderr.String()
		if code != tc.code || !strings.HasPrefix(s, "acceptwatch: ") || strings.Count(s, "\n") != 1 || !strings.Contains(s, tc.want) {
			t.Errorf("%s: exit %d (%v), stderr %q; want exit %d and one line with %q", tc.name, code, err, s, tc.code, tc.want)
		}
	}
}
