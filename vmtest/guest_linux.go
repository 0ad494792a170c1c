package vmtest

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// IsGuestInit reports whether this process is the guest's /init.
func IsGuestInit() bool { return os.Getpid() == 1 }

// GuestMain is /init inside the VM: it sets the system up, runs the
// configured program with its output on its own serial port, prints the result line
// and powers off. It never returns. Any failure before the result line ends
// in a kernel panic (init exited), which the host reports as a failure.
func GuestMain() {
	t0 := time.Now()
	var gc guestConfig
	data, err := os.ReadFile(guestConfigPath)
	if err == nil {
		err = json.Unmarshal(data, &gc)
	}
	if err != nil || len(gc.Args) == 0 || gc.Out == "" {
		fmt.Fprintf(os.Stderr, "vmtest init: bad %s: %v\n", guestConfigPath, err)
		os.Exit(1) // init exits: kernel panic: the host sees no result line
	}
	out, err := guestSetup(gc.Out)
	if err != nil {
		fmt.Fprintf(os.Stderr, "vmtest init: %v\n", err)
		if out != nil {
			fmt.Fprintf(out, "vmtest init: %v\n", err)
			drain(out)
		}
		os.Exit(1)
	}
	if os.Getenv("VMTEST_DEBUG") != "" || hasEnv(gc.Env, "VMTEST_DEBUG") {
		fmt.Fprintf(out, "vmtest init: setup %s (uptime %s)\n", time.Since(t0), uptime())
	}

	cmd := exec.Command(gc.Args[0], gc.Args[1:]...)
	cmd.Dir = "/tmp/work"
	cmd.Env = append([]string{
		"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
		"HOME=/tmp",
		"TMPDIR=/tmp",
		"USER=root",
		"VMTEST_GUEST=1",
	}, gc.Env...)
	// Output goes through a pipe we copy to the serial port, so we know the
	// last byte and can put the result line on a line of its own.
	pr, pw, err := os.Pipe()
	if err != nil {
		fmt.Fprintf(out, "vmtest init: pipe: %v\n", err)
		os.Exit(1)
	}
	cmd.Stdout, cmd.Stderr = pw, pw
	code := 0
	if err := cmd.Start(); err != nil {
		fmt.Fprintf(out, "vmtest init: %v\n", err)
		code = 127
	}
	pw.Close()
	last := byte('\n')
	buf := make([]byte, 32<<10)
	for {
		n, err := pr.Read(buf)
		if n > 0 {
			out.Write(buf[:n])
			last = buf[n-1]
		}
		if err != nil {
			break
		}
	}
	if code == 0 {
		if err := cmd.Wait(); err != nil {
			code = 1
			if ee, ok := err.(*exec.ExitError); ok {
				if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
					fmt.Fprintf(out, "\nvmtest init: %s killed by signal %v\n", gc.Args[0], ws.Signal())
					code = 128 + int(ws.Signal())
					last = '\n'
				} else {
					code = ee.ExitCode()
				}
			} else {
				fmt.Fprintf(out, "\nvmtest init: %v\n", err)
				last = '\n'
			}
		}
	}
	if last != '\n' {
		out.Write([]byte{'\n'})
	}
	fmt.Fprintf(out, "%s%d\n", gc.Marker, code)
	drain(out)
	unix.Kill(-1, unix.SIGKILL)
	unix.Sync()
	unix.Reboot(unix.LINUX_REBOOT_CMD_POWER_OFF)
	select {} // not reached; exiting would panic the kernel
}

func hasEnv(env []string, key string) bool {
	for _, kv := range env {
		if len(kv) > len(key) && kv[:len(key)+1] == key+"=" {
			return true
		}
	}
	return false
}

func uptime() string {
	b, _ := os.ReadFile("/proc/uptime")
	var s float64
	fmt.Sscan(string(b), &s)
	return fmt.Sprintf("%.2fs", s)
}

// drain waits until the serial port has sent everything (tcdrain).
func drain(f *os.File) {
	unix.IoctlSetInt(int(f.Fd()), unix.TCSBRK, 1)
}

func guestSetup(outPath string) (*os.File, error) {
	type mnt struct{ src, dst, fstype, data string }
	mounts := []mnt{
		{"proc", "/proc", "proc", ""},
		{"sysfs", "/sys", "sysfs", ""},
		{"devtmpfs", "/dev", "devtmpfs", ""},
		{"tmpfs", "/tmp", "tmpfs", "mode=1777"},
		{"tmpfs", "/run", "tmpfs", "mode=755"},
		{"bpffs", "/sys/fs/bpf", "bpf", "mode=700"},
		{"tracefs", "/sys/kernel/tracing", "tracefs", ""},
		{"debugfs", "/sys/kernel/debug", "debugfs", ""},
		{"cgroup2", "/sys/fs/cgroup", "cgroup2", ""},
	}
	var errs []error
	for _, m := range mounts {
		os.MkdirAll(m.dst, 0o755)
		if err := unix.Mount(m.src, m.dst, m.fstype, 0, m.data); err != nil && err != unix.EBUSY {
			errs = append(errs, fmt.Errorf("mount %s on %s: %w", m.fstype, m.dst, err))
		}
	}
	os.MkdirAll("/dev/shm", 0o1777)
	unix.Mount("tmpfs", "/dev/shm", "tmpfs", 0, "mode=1777")

	out, err := os.OpenFile(outPath, os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		return nil, fmt.Errorf("open %s (the program's serial port): %w", outPath, err)
	}
	if err := makeRaw(int(out.Fd())); err != nil {
		return out, fmt.Errorf("%s: %w", outPath, err)
	}
	if len(errs) > 0 {
		return out, fmt.Errorf("%v", errs)
	}
	if err := loopbackUp(); err != nil {
		return out, err
	}
	if err := loadModules(); err != nil {
		return out, err
	}
	for _, r := range []struct {
		res int
		val uint64
	}{{unix.RLIMIT_MEMLOCK, unix.RLIM_INFINITY}, {unix.RLIMIT_NOFILE, 1 << 20}} {
		if err := unix.Setrlimit(r.res, &unix.Rlimit{Cur: r.val, Max: r.val}); err != nil {
			return out, fmt.Errorf("setrlimit %d: %w", r.res, err)
		}
	}
	if err := os.MkdirAll("/tmp/work", 0o755); err != nil {
		return out, err
	}
	return out, nil
}

// makeRaw puts the tty in raw mode (no \n -> \r\n, no echo).
func makeRaw(fd int) error {
	t, err := unix.IoctlGetTermios(fd, unix.TCGETS)
	if err != nil {
		return err
	}
	t.Iflag &^= unix.IGNBRK | unix.BRKINT | unix.PARMRK | unix.ISTRIP | unix.INLCR | unix.IGNCR | unix.ICRNL | unix.IXON
	t.Oflag &^= unix.OPOST
	t.Lflag &^= unix.ECHO | unix.ECHONL | unix.ICANON | unix.ISIG | unix.IEXTEN
	t.Cflag &^= unix.CSIZE | unix.PARENB
	t.Cflag |= unix.CS8 | unix.CLOCAL
	t.Cflag = t.Cflag&^unix.CBAUD | unix.B115200
	return unix.IoctlSetTermios(fd, unix.TCSETS, t)
}

// loopbackUp sets lo up; the kernel then adds 127.0.0.1/8 (so all of
// 127.0.0.0/8 is local) and ::1.
func loopbackUp() error {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("lo: %w", err)
	}
	defer unix.Close(fd)
	ifr, err := unix.NewIfreq("lo")
	if err != nil {
		return err
	}
	if err := unix.IoctlIfreq(fd, unix.SIOCGIFFLAGS, ifr); err != nil {
		return fmt.Errorf("lo: SIOCGIFFLAGS: %w", err)
	}
	ifr.SetUint16(ifr.Uint16() | unix.IFF_UP | unix.IFF_RUNNING)
	if err := unix.IoctlIfreq(fd, unix.SIOCSIFFLAGS, ifr); err != nil {
		return fmt.Errorf("lo: SIOCSIFFLAGS: %w", err)
	}
	return nil
}
