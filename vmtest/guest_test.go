package vmtest

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"
)

// The tests below only run inside a vmtest VM (the guest init sets
// VMTEST_GUEST=1). They check the harness itself:
//
//	CGO_ENABLED=0 go test -exec "go run github.com/acceptwatch/acceptwatch/cmd/vmrun -kernel 6.1" -v ./vmtest
func guestOnly(t *testing.T) {
	t.Helper()
	if os.Getenv("VMTEST_GUEST") != "1" {
		t.Skip("runs only inside a vmtest VM")
	}
}

// TestGuestSelftest makes the harness fail on purpose, to check the host
// side notices: VMTEST_ENV=VMTEST_SELFTEST=exit3|hang|crash.
func TestGuestSelftest(t *testing.T) {
	guestOnly(t)
	switch os.Getenv("VMTEST_SELFTEST") {
	case "exit3":
		os.Exit(3)
	case "hang":
		time.Sleep(time.Hour)
	case "crash": // kernel panic via sysrq
		os.WriteFile("/proc/sys/kernel/sysrq", []byte("1"), 0)
		os.WriteFile("/proc/sysrq-trigger", []byte("c"), 0)
		time.Sleep(time.Minute)
	}
}

func TestGuestSystem(t *testing.T) {
	guestOnly(t)
	if p := os.Getppid(); p != 1 {
		t.Errorf("parent pid %d, want 1", p)
	}
	var u unix.Utsname
	unix.Uname(&u)
	t.Logf("uname: %s %s", unix.ByteSliceToString(u.Release[:]), unix.ByteSliceToString(u.Version[:]))
	for _, p := range []string{"/sys/kernel/btf/vmlinux", "/sys/kernel/tracing/events/sock", "/sys/kernel/debug/tracing", "/sys/fs/bpf", "/dev/null", "/tmp"} {
		if _, err := os.Stat(p); err != nil {
			t.Error(err)
		}
	}
	var rl unix.Rlimit
	unix.Getrlimit(unix.RLIMIT_MEMLOCK, &rl)
	if rl.Cur != unix.RLIM_INFINITY {
		t.Errorf("RLIMIT_MEMLOCK %d", rl.Cur)
	}
	wd, _ := os.Getwd()
	t.Logf("cwd %s, HOME=%s, PATH=%s", wd, os.Getenv("HOME"), os.Getenv("PATH"))
	if v := os.Getenv("ACCEPTWATCH_BIN"); v != "" {
		if _, err := exec.LookPath(v); err != nil {
			t.Errorf("ACCEPTWATCH_BIN: %v", err)
		}
	}
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "ACCEPTWATCH_") {
			t.Log(kv)
		}
	}
}

func TestGuestLoopback(t *testing.T) {
	guestOnly(t)
	for _, c := range []struct{ network, listen, src string }{
		{"tcp4", "127.0.0.1:0", "127.0.0.5"},
		{"tcp4", "127.3.2.1:0", "127.200.0.77"},
		{"tcp6", "[::1]:0", "::1"},
		{"tcp", "localhost:0", ""},
	} {
		ln, err := net.Listen(c.network, c.listen)
		if err != nil {
			t.Errorf("listen %s: %v", c.listen, err)
			continue
		}
		d := net.Dialer{Timeout: 5 * time.Second}
		if c.src != "" {
			d.LocalAddr = &net.TCPAddr{IP: net.ParseIP(c.src)}
		}
		conn, err := d.Dial(c.network, ln.Addr().String())
		if err != nil {
			t.Errorf("dial %s from %s: %v", ln.Addr(), c.src, err)
			ln.Close()
			continue
		}
		a, err := ln.Accept()
		if err != nil {
			t.Error(err)
		} else {
			t.Logf("%s: accepted %s -> %s", c.network, a.RemoteAddr(), a.LocalAddr())
			a.Close()
		}
		conn.Close()
		ln.Close()
	}
}

// TestGuestBPF loads trivial programs and attaches them the ways acceptwatch
// does: fexit, kretprobe and a tracepoint. arm64 kernels before 6.4 have no
// BPF trampolines for kernel functions: there the fexit attach must fail.
func TestGuestBPF(t *testing.T) {
	guestOnly(t)
	ret0 := asm.Instructions{asm.Mov.Imm(asm.R0, 0), asm.Return()}
	t0 := time.Now()
	fexit, err := ebpf.NewProgram(&ebpf.ProgramSpec{Type: ebpf.Tracing, AttachType: ebpf.AttachTraceFExit,
		AttachTo: "inet_csk_accept", Instructions: ret0, License: "GPL"})
	if err != nil {
		t.Fatalf("fexit load: %v", err)
	}
	defer fexit.Close()
	t.Logf("fexit program loaded in %s (kernel BTF parsed)", time.Since(t0))
	l, err := link.AttachTracing(link.TracingOptions{Program: fexit})
	var u unix.Utsname
	unix.Uname(&u)
	var major, minor int
	fmt.Sscanf(unix.ByteSliceToString(u.Release[:]), "%d.%d", &major, &minor)
	if runtime.GOARCH == "arm64" && major*1000+minor < 6004 {
		if !errors.Is(err, ebpf.ErrNotSupported) {
			t.Errorf("fexit attach on arm64 %d.%d: %v, want not supported", major, minor, err)
		}
	} else if err != nil {
		t.Errorf("fexit attach: %v", err)
	}
	if err == nil {
		l.Close()
	}
	kp, err := ebpf.NewProgram(&ebpf.ProgramSpec{Type: ebpf.Kprobe, Instructions: ret0, License: "GPL"})
	if err != nil {
		t.Fatalf("kprobe load: %v", err)
	}
	defer kp.Close()
	if l, err := link.Kretprobe("inet_csk_accept", kp, nil); err != nil {
		t.Errorf("kretprobe: %v", err)
	} else {
		l.Close()
	}
	tp, err := ebpf.NewProgram(&ebpf.ProgramSpec{Type: ebpf.TracePoint, Instructions: ret0, License: "GPL"})
	if err != nil {
		t.Fatalf("tracepoint load: %v", err)
	}
	defer tp.Close()
	if l, err := link.Tracepoint("sock", "inet_sock_set_state", tp, nil); err != nil {
		t.Errorf("tracepoint: %v", err)
	} else {
		l.Close()
	}
}

// Host-side unit tests of the harness. In the guest they do nothing (a
// skip would count as a failure there).
func hostOnly(t *testing.T) bool {
	t.Helper()
	if os.Getenv("VMTEST_GUEST") == "1" {
		t.Log("host-only test")
		return false
	}
	return true
}

func TestParseSources(t *testing.T) {
	if !hostOnly(t) {
		return
	}
	deb822 := `Types: deb
# comment
URIs: http://mirror.example/debian
Suites: bookworm bookworm-updates
Components: main

Types: deb-src
URIs: http://src.example/debian
Suites: bookworm

Types: deb
URIs: http://sec.example/debian-security/
Suites: bookworm-security
Components: main
`
	oneLine := "deb [arch=amd64 signed-by=/x.gpg] http://one.example/debian bookworm main\n# deb http://no.example x main\n"
	srcs := append(parseOneLineSources(strings.NewReader(oneLine)), parseDeb822Sources(strings.NewReader(deb822))...)
	m, err := pickMirrors(srcs)
	if err != nil {
		t.Fatal(err)
	}
	if m.Archive != "http://one.example/debian" || m.Security != "http://sec.example/debian-security" {
		t.Errorf("got %+v", m)
	}
	if m.URIFor("trixie-backports") != m.Archive || m.URIFor("bullseye-security") != m.Security {
		t.Error("URIFor")
	}
	if _, err := pickMirrors(parseDeb822Sources(strings.NewReader(deb822))[1:]); err == nil {
		t.Error("want error without an archive")
	}
}

func TestCPIO(t *testing.T) {
	if !hostOnly(t) {
		return
	}
	if _, err := exec.LookPath("cpio"); err != nil {
		t.Skip("no cpio tool")
	}
	var buf bytes.Buffer
	w := NewCPIOWriter(&buf)
	w.CharDev("/dev/console", 0o600, 5, 1)
	w.Bytes("/usr/local/bin/x", 0o755, []byte("hello"))
	w.Symlink("/bin", "usr/local/bin")
	w.Dir("/tmp", 0o1777)
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("cpio", "-itv", "--quiet")
	cmd.Stdin = &buf
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("cpio: %v: %s", err, out)
	}
	got := string(out)
	for _, want := range []string{"crw-------", "5,", "dev/console", "usr/local/bin/x", "bin -> usr/local/bin", "drwxrwxrwt", "-rwxr-xr-x"} {
		if !strings.Contains(got, want) {
			t.Errorf("cpio listing lacks %q:\n%s", want, got)
		}
	}
	if n := strings.Count(got, "usr/local\n"); n > 1 {
		t.Errorf("duplicate dirs:\n%s", got)
	}
}

func TestEnvAndFiles(t *testing.T) {
	if !hostOnly(t) {
		return
	}
	env := GuestEnv([]string{"ACCEPTWATCH_BIN=/b", "ACCEPTWATCH_CACHE=/c", "HOME=/root", "VMTEST_ENV=A=1,B=2"})
	if fmt.Sprint(env) != "[ACCEPTWATCH_BIN=/b A=1 B=2]" {
		t.Errorf("GuestEnv: %v", env)
	}
	f, err := ParseFiles("/a:/usr/local/bin/a, rel:/b")
	if err != nil || len(f) != 2 || f[0].Guest != "/usr/local/bin/a" || !strings.HasPrefix(f[1].Host, "/") {
		t.Errorf("ParseFiles: %v %v", f, err)
	}
	if _, err := ParseFiles("noguest"); err == nil {
		t.Error("want error")
	}
	host := Arches[runtime.GOARCH]
	if err := checkBinary("/bin/sh", host, false); err != nil {
		t.Errorf("/bin/sh as an extra file: %v", err)
	}
	if err := checkBinary("/bin/sh", host, true); err == nil || !strings.Contains(err.Error(), "dynamically linked") {
		t.Errorf("/bin/sh should be dynamic: %v", err)
	}
	self, _ := os.Executable()
	other := Arches["arm64"]
	if runtime.GOARCH == "arm64" {
		other = Arches["amd64"]
	}
	if err := checkBinary(self, other, false); err == nil || !strings.Contains(err.Error(), "GOARCH="+other.Name) {
		t.Errorf("a %s binary passed for a %s guest: %v", runtime.GOARCH, other.Name, err)
	}
}

func TestKernelArchAndLookup(t *testing.T) {
	if !hostOnly(t) {
		return
	}
	dir := t.TempDir()
	img := func(name string, at int, magic string) string {
		b := make([]byte, 4096)
		copy(b[at:], magic)
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	for _, c := range []struct{ path, want, err string }{
		{img("bzImage", 0x202, "HdrS"), "amd64", ""},
		{img("Image", 0x38, "ARM\x64"), "arm64", ""},
		{img("Image.gz", 0, "\x1f\x8b"), "", "gzip"},
		{img("junk", 0, "junk"), "", "neither"},
	} {
		got, err := KernelArch(c.path)
		if got != c.want || (c.err == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), c.err)) {
			t.Errorf("KernelArch(%s) = %q, %v; want %q, error with %q", filepath.Base(c.path), got, err, c.want, c.err)
		}
	}
	for _, c := range []struct{ arch, name, want string }{
		{"amd64", "6.1", "6.1"},
		{"amd64", "7", "7.x"},
		{"amd64", "arm64/6.1", "arm64/6.1"},
		{"arm64", "7.x", "arm64/7.x"},
		{"arm64", "5.10", ""},
		{"amd64", "4.19", ""},
	} {
		k, ok := LookupKernel(c.arch, c.name)
		if got := k.String(); ok != (c.want != "") || (ok && got != c.want) {
			t.Errorf("LookupKernel(%s, %s) = %s, %v; want %q", c.arch, c.name, got, ok, c.want)
		}
	}
	for _, k := range Kernels {
		if _, err := LookupArch(k.Arch); err != nil || k.Auto == "" || slices.Contains(k.Unsupported, k.Auto) {
			t.Errorf("kernel %s: arch %v, auto %q, unsupported %v", k, err, k.Auto, k.Unsupported)
		}
	}
}

// TestSharedLibs: a dynamic program brings its loader and libraries,
// transitively; a file that is not ELF brings nothing.
func TestSharedLibs(t *testing.T) {
	libs, err := sharedLibs("guest_test.go", "")
	if err != nil || len(libs) != 0 {
		t.Fatalf("not ELF: %v %v", libs, err)
	}
	ss, err := exec.LookPath("ss")
	if err != nil {
		t.Skip("needs ss (iproute2), a dynamically linked program")
	}
	libs, err = sharedLibs(ss, "")
	if err != nil {
		t.Fatal(err)
	}
	// The same program and libraries below a sysroot (as for another
	// architecture's): found there, put at their paths in the guest.
	sysroot := t.TempDir()
	for _, f := range append([]FileMap{{ss, "/usr/bin/ss"}}, libs...) {
		dst := filepath.Join(sysroot, f.Guest)
		b, err := os.ReadFile(f.Host)
		if err != nil {
			t.Fatal(err)
		}
		os.MkdirAll(filepath.Dir(dst), 0o755)
		if err := os.WriteFile(dst, b, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	inRoot, err := sharedLibs(filepath.Join(sysroot, "usr/bin/ss"), sysroot)
	if err != nil || len(inRoot) != len(libs) {
		t.Fatalf("below a sysroot: %v, %v; want %d files", inRoot, err, len(libs))
	}
	for i, f := range inRoot {
		if f.Guest != libs[i].Guest || f.Host != filepath.Join(sysroot, f.Guest) {
			t.Errorf("below a sysroot: %+v, want guest %s at %s", f, libs[i].Guest, filepath.Join(sysroot, libs[i].Guest))
		}
	}
	if _, err := sharedLibs(ss, t.TempDir()); err == nil {
		t.Error("libraries found below an empty sysroot")
	}
	var names []string
	for _, l := range libs {
		if l.Host != l.Guest {
			t.Errorf("%+v: guest path differs from host path", l)
		}
		names = append(names, filepath.Base(l.Host))
	}
	for _, want := range []string{"libc.so.6", "libmnl.so.0", "libpcre2-8.so.0"} { // libpcre2 only through libselinux
		if !slices.Contains(names, want) {
			t.Errorf("ss: %v lacks %s", names, want)
		}
	}
	if !strings.HasPrefix(names[0], "ld-linux") {
		t.Errorf("ss: first file %s, want the loader", names[0])
	}
}

// TestKeepModules: the guest's modules are found in either module tree,
// kept in load order, and listed beside the vmlinuz.
func TestKeepModules(t *testing.T) {
	root, dir := t.TempDir(), t.TempDir()
	for _, p := range []string{"lib/modules/6.1.0-1/kernel/net/ipv4/tcp_diag.ko", "usr/lib/modules/6.1.0-1/kernel/net/ipv4/inet_diag.ko.xz",
		"lib/modules/6.1.0-1/kernel/net/ipv4/udp_diag.ko", "lib/modules/9.9/kernel/net/ipv4/inet_diag.ko"} {
		os.MkdirAll(filepath.Join(root, filepath.Dir(p)), 0o755)
		os.WriteFile(filepath.Join(root, p), []byte(p), 0o644)
	}
	config := filepath.Join(root, "config")
	os.WriteFile(config, []byte("CONFIG_A=y\nCONFIG_INET_DIAG=m\nCONFIG_INET_TCP_DIAG=m\n"), 0o644)
	if err := keepModules(root, "6.1.0-1", dir, config); err != nil {
		t.Fatal(err)
	}
	// A module configured =m that no package holds is an error.
	if err := keepModules(root, "9.9", t.TempDir(), config); err == nil || !strings.Contains(err.Error(), "tcp_diag") {
		t.Errorf("missing tcp_diag: %v", err)
	}
	var got []string
	for _, m := range KernelModules(filepath.Join(dir, "vmlinuz")) {
		b, _ := os.ReadFile(m)
		got = append(got, string(b))
	}
	want := []string{"usr/lib/modules/6.1.0-1/kernel/net/ipv4/inet_diag.ko.xz", "lib/modules/6.1.0-1/kernel/net/ipv4/tcp_diag.ko"}
	if !slices.Equal(got, want) {
		t.Errorf("kept %q, want %q", got, want)
	}
	if KernelModules(filepath.Join(t.TempDir(), "vmlinuz")) != nil {
		t.Error("modules for a kernel without a list")
	}
}
