package vmtest

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// guestConfig is written to /vmtest/config.json in the initramfs.
type guestConfig struct {
	Args   []string // Args[0] is the guest path of the binary to run
	Env    []string
	Marker string // result line prefix, e.g. "VMTEST-EXIT-1a2b3c: "
	Out    string // the program's serial port, e.g. /dev/ttyS1
}

const guestConfigPath = "/vmtest/config.json"

// FileMap is a host file copied into the guest.
type FileMap struct{ Host, Guest string }

// ParseFiles parses VMTEST_FILES: "hostpath:guestpath,hostpath:guestpath".
func ParseFiles(s string) ([]FileMap, error) {
	var out []FileMap
	for _, item := range strings.Split(s, ",") {
		item = strings.TrimSpace(item)
		if item == "" {
			continue
		}
		h, g, ok := strings.Cut(item, ":")
		if !ok || h == "" || !strings.HasPrefix(g, "/") {
			return nil, fmt.Errorf("VMTEST_FILES entry %q: want hostpath:/guest/path", item)
		}
		abs, err := filepath.Abs(h)
		if err != nil {
			return nil, err
		}
		out = append(out, FileMap{abs, g})
	}
	return out, nil
}

// RunConfig describes one VM run.
type RunConfig struct {
	Kernel    string        // vmlinuz / bzImage (x86) or Image (arm64): its header gives the guest's architecture
	Init      string        // static binary used as /init (a vmrun build for the guest's architecture)
	Binary    string        // host path of the program to run in the guest
	Args      []string      // its arguments
	Files     []FileMap     // extra files
	Modules   []string      // kernel modules the guest loads at boot, in order (KernelModules)
	Env       []string      // guest environment additions (KEY=VALUE)
	Timeout   time.Duration // whole VM, boot included
	Stdout    io.Writer     // guest program output
	Stderr    io.Writer     // harness messages
	KernelLog string        // keep the kernel console log here (else a temp file, removed on success)
	Cmdline   string        // extra kernel command line
	Sysroot   string        // where the libraries of Files built for another architecture are (their paths below it are the guest's)
	QEMU      string        // default: the architecture's, or $VMTEST_QEMU
	Memory    string        // default 1G
	SMP       int           // default 2
}

// ExitUnknown is returned when the guest did not report an exit status.
const ExitUnknown = 125

func addHostFile(w *CPIOWriter, host, guest string) error {
	f, err := os.Open(host)
	if err != nil {
		return err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return err
	}
	if st.IsDir() {
		return filepath.Walk(host, func(p string, info os.FileInfo, err error) error {
			if err != nil {
				return err
			}
			rel, _ := filepath.Rel(host, p)
			g := path.Join(guest, filepath.ToSlash(rel))
			switch {
			case info.IsDir():
				return w.Dir(g, uint32(info.Mode().Perm()))
			case info.Mode().IsRegular():
				return addHostFile(w, p, g)
			}
			return nil
		})
	}
	return w.File(guest, uint32(st.Mode().Perm()), st.Size(), f)
}

// buildInitramfs writes the initramfs to w.
func buildInitramfs(w io.Writer, cfg RunConfig, gc guestConfig) error {
	c := NewCPIOWriter(w)
	for _, d := range []string{"/dev", "/proc", "/sys", "/tmp", "/run", "/root", "/etc", "/vmtest", "/usr/local/bin"} {
		c.Dir(d, 0o755)
	}
	c.Dir("/tmp", 0o1777)
	c.CharDev("/dev/console", 0o600, 5, 1)
	c.CharDev("/dev/null", 0o666, 1, 3)
	c.Bytes("/etc/hosts", 0o644, []byte("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n"))
	c.Bytes("/etc/passwd", 0o644, []byte("root:x:0:0:root:/tmp:/bin/sh\n"))
	c.Bytes("/etc/group", 0o644, []byte("root:x:0:\n"))
	if err := addHostFile(c, cfg.Init, "/init"); err != nil {
		return err
	}
	if err := addHostFile(c, cfg.Binary, gc.Args[0]); err != nil {
		return err
	}
	for _, f := range cfg.Files {
		if err := addHostFile(c, f.Host, f.Guest); err != nil {
			return err
		}
	}
	var mods []string
	for _, m := range cfg.Modules {
		if err := addHostFile(c, m, path.Join(guestModules, filepath.Base(m))); err != nil {
			return err
		}
		mods = append(mods, filepath.Base(m))
	}
	if len(mods) > 0 {
		c.Bytes(guestModules+".list", 0o644, []byte(strings.Join(mods, "\n")+"\n"))
	}
	js, _ := json.Marshal(gc)
	c.Bytes(guestConfigPath, 0o644, js)
	return c.Close()
}

// Run boots cfg.Kernel with an initramfs holding cfg.Binary and runs it as
// the only program. It returns the program's exit code; when the guest did
// not report one (panic, crash, timeout) it returns ExitUnknown and an error.
func Run(ctx context.Context, cfg RunConfig) (int, error) {
	if cfg.Stdout == nil {
		cfg.Stdout = os.Stdout
	}
	if cfg.Stderr == nil {
		cfg.Stderr = os.Stderr
	}
	if _, err := os.Stat(cfg.Kernel); err != nil {
		return ExitUnknown, fmt.Errorf("kernel: %w", err)
	}
	archName, err := KernelArch(cfg.Kernel)
	if err != nil {
		return ExitUnknown, err
	}
	arch := Arches[archName]
	if cfg.QEMU == "" {
		cfg.QEMU = os.Getenv("VMTEST_QEMU")
	}
	if cfg.QEMU == "" {
		cfg.QEMU = arch.QEMU
	}
	if cfg.Memory == "" {
		cfg.Memory = "1G"
	}
	if cfg.SMP == 0 {
		cfg.SMP = 2
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = 10 * time.Minute
	}
	for _, p := range []string{cfg.Init, cfg.Binary} {
		if err := checkBinary(p, arch, true); err != nil {
			return ExitUnknown, err
		}
	}
	// Extra files may be dynamic programs: their loader and libraries come
	// along (from cfg.Sysroot for another architecture's).
	var libs []FileMap
	for _, f := range cfg.Files {
		if err := checkBinary(f.Host, arch, false); err != nil {
			return ExitUnknown, err
		}
		l, err := sharedLibs(f.Host, cfg.Sysroot)
		if err != nil {
			return ExitUnknown, err
		}
		for _, m := range l {
			if !slices.Contains(libs, m) {
				libs = append(libs, m)
			}
		}
	}
	cfg.Files = append(slices.Clip(cfg.Files), libs...)

	var nonce [6]byte
	rand.Read(nonce[:])
	gc := guestConfig{
		Args:   append([]string{"/vmtest/bin/" + filepath.Base(cfg.Binary)}, cfg.Args...),
		Env:    cfg.Env,
		Marker: "VMTEST-EXIT-" + hex.EncodeToString(nonce[:]) + ": ",
		Out:    arch.Out,
	}

	tmp, err := os.MkdirTemp("", "vmrun-")
	if err != nil {
		return ExitUnknown, err
	}
	defer os.RemoveAll(tmp)
	initrd := filepath.Join(tmp, "initramfs.cpio")
	f, err := os.Create(initrd)
	if err != nil {
		return ExitUnknown, err
	}
	bw := bufio.NewWriterSize(f, 1<<20)
	err = buildInitramfs(bw, cfg, gc)
	if err == nil {
		err = bw.Flush()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return ExitUnknown, fmt.Errorf("initramfs: %w", err)
	}

	klog := cfg.KernelLog
	if klog == "" {
		klog = filepath.Join(tmp, "kernel.log")
	}
	cmdline := "console=" + arch.Console + " panic=-1 oops=panic quiet"
	if cfg.Cmdline != "" {
		cmdline += " " + cfg.Cmdline
	}
	args := []string{
		"-m", cfg.Memory, "-smp", strconv.Itoa(cfg.SMP),
		"-nodefaults", "-no-user-config", "-display", "none", "-no-reboot",
		"-kernel", cfg.Kernel, "-initrd", initrd, "-append", cmdline,
		"-chardev", "file,id=klog,path=" + klog,
		"-chardev", "stdio,id=out,signal=off",
	}
	args = append(args, arch.qemuArgs("klog", "out")...)
	ctx, cancel := context.WithTimeout(ctx, cfg.Timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, cfg.QEMU, args...)
	// QEMU must not outlive vmrun (e.g. vmrun killed by go test or the matrix).
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	var qerr bytes.Buffer
	cmd.Stderr = &qerr
	out, err := cmd.StdoutPipe()
	if err != nil {
		return ExitUnknown, err
	}
	start := time.Now()
	if err := cmd.Start(); err != nil {
		return ExitUnknown, err
	}

	code := -1
	r := bufio.NewReaderSize(out, 64<<10)
	for {
		line, rerr := r.ReadString('\n')
		if rest, ok := strings.CutPrefix(line, gc.Marker); ok {
			if n, err := strconv.Atoi(strings.TrimSpace(rest)); err == nil {
				code = n
			}
		} else if line != "" {
			cfg.Stdout.Write([]byte(line))
		}
		if rerr != nil {
			break
		}
	}
	werr := cmd.Wait()
	elapsed := time.Since(start).Round(100 * time.Millisecond)

	if code >= 0 {
		if code != 0 && os.Getenv("VMTEST_SHOW_KERNEL_LOG") != "" {
			printTail(cfg.Stderr, klog, 40)
		}
		return code, nil
	}
	var why string
	switch {
	case errors.Is(ctx.Err(), context.DeadlineExceeded):
		why = fmt.Sprintf("timeout (-timeout %s): VM killed", cfg.Timeout)
	case ctx.Err() != nil:
		why = "interrupted"
	case werr != nil:
		why = fmt.Sprintf("qemu failed: %v", werr)
	default:
		why = "the guest ended without a result line (kernel panic, init crash or power-off)"
	}
	fmt.Fprintf(cfg.Stderr, "vmrun: FAIL: %s after %s; kernel %s\n", why, elapsed, cfg.Kernel)
	if s := strings.TrimSpace(qerr.String()); s != "" {
		fmt.Fprintf(cfg.Stderr, "vmrun: qemu stderr:\n%s\n", s)
	}
	printTail(cfg.Stderr, klog, 40)
	return ExitUnknown, fmt.Errorf("%s", why)
}

func printTail(w io.Writer, p string, n int) {
	data, err := os.ReadFile(p)
	if err != nil {
		fmt.Fprintf(w, "vmrun: no kernel log: %v\n", err)
		return
	}
	lines := strings.Split(strings.TrimRight(strings.ReplaceAll(string(data), "\r", ""), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	fmt.Fprintf(w, "vmrun: last %d lines of the kernel log:\n", len(lines))
	for _, l := range lines {
		fmt.Fprintf(w, "  | %s\n", l)
	}
}

// GuestEnv returns the environment the host passes to the guest: every
// ACCEPTWATCH_* variable, plus VMTEST_ENV ("K=V,K=V") for anything else.
func GuestEnv(environ []string) []string {
	var env []string
	for _, kv := range environ {
		if strings.HasPrefix(kv, "ACCEPTWATCH_") && !strings.HasPrefix(kv, "ACCEPTWATCH_CACHE=") {
			env = append(env, kv)
		}
	}
	for _, kv := range environ {
		if v, ok := strings.CutPrefix(kv, "VMTEST_ENV="); ok {
			for _, item := range strings.Split(v, ",") {
				if strings.Contains(item, "=") {
					env = append(env, item)
				}
			}
		}
	}
	return env
}
