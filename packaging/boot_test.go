package packaging

import (
	"bufio"
	"context"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/acceptwatch/acceptwatch/vmtest"
)

// TestServiceBoot is the package on a fresh Debian machine: a bookworm
// system made with debootstrap (minbase plus systemd), the .deb installed
// with dpkg in it, booted in QEMU on bookworm's own kernel with systemd as
// PID 1. The packaged unit starts at boot as systemd runs it (DynamicUser,
// its capabilities, its sandbox); a check unit of the test's own
// (packaging/bootcheck) connects, scrapes the service and powers off. About
// 3 minutes (debootstrap, then a boot under software emulation).
func TestServiceBoot(t *testing.T) {
	requireRoot(t)
	debootstrap := requireTool(t, "debootstrap")
	requireTool(t, "qemu-system-x86_64")
	if testing.Short() {
		t.Skip("-short: boots a whole Debian system")
	}
	cache, err := vmtest.CacheDir()
	if err != nil {
		t.Fatal(err)
	}
	spec, _ := vmtest.LookupKernel("amd64", "6.1") // bookworm's kernel
	kernel, err := (&vmtest.Fetcher{Cache: cache, Log: os.Stderr}).Fetch(spec)
	if err != nil {
		t.Fatal(err)
	}
	mirrors, err := vmtest.SystemMirrors()
	if err != nil {
		t.Fatal(err)
	}

	tmp := t.TempDir()
	root := filepath.Join(tmp, "root")
	start := time.Now()
	// The packages debootstrap fetches are kept in the cache beside the
	// kernels (--make-tarball once, ~60 MB): later runs, in a network
	// namespace without the mirror too, unpack them.
	args := []string{"--variant=minbase", "--include=systemd,systemd-sysv,dbus"}
	tarball := filepath.Join(cache, "debootstrap", "bookworm-minbase-systemd.tgz")
	if _, err := os.Stat(tarball); err != nil {
		os.MkdirAll(filepath.Dir(tarball), 0o755)
		run(t, "", debootstrap, append(args, "--make-tarball="+tarball+".tmp", "bookworm", filepath.Join(tmp, "fetch"), mirrors.URIFor("bookworm"))...)
		if err := os.Rename(tarball+".tmp", tarball); err != nil {
			t.Fatal(err)
		}
	}
	run(t, "", debootstrap, append(args, "--unpack-tarball="+tarball, "bookworm", root, mirrors.URIFor("bookworm"))...)
	t.Logf("debootstrap: %v", time.Since(start).Round(time.Second))

	debPath := strings.TrimSpace(lastLine(run(t, repoRoot(t), "make", "-s", "deb", "DEB_OUT="+filepath.Join(tmp, "deb"))))
	run(t, "", "cp", debPath, filepath.Join(root, "tmp/acceptwatch.deb"))
	out := run(t, "", "chroot", root, "dpkg", "-i", "/tmp/acceptwatch.deb")
	if !strings.Contains(out, "multi-user.target.wants/acceptwatch.service") {
		t.Errorf("dpkg -i did not enable the service:\n%s", out)
	}
	check := filepath.Join(root, "usr/local/bin/bootcheck")
	cmd := exec.Command("go", "build", "-o", check, "./packaging/bootcheck")
	cmd.Dir = repoRoot(t)
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("building bootcheck: %v\n%s", err, out)
	}
	unit := "[Unit]\nDescription=acceptwatch package check\nWants=acceptwatch.service\nAfter=acceptwatch.service\n" +
		"[Service]\nType=oneshot\nExecStart=/usr/local/bin/bootcheck\nStandardOutput=journal+console\n"
	os.WriteFile(filepath.Join(root, "etc/systemd/system/bootcheck.service"), []byte(unit), 0o644)
	os.Symlink("/etc/systemd/system/bootcheck.service", filepath.Join(root, "etc/systemd/system/multi-user.target.wants/bootcheck.service"))

	initrd := filepath.Join(tmp, "root.cpio")
	if err := writeCPIO(root, initrd); err != nil {
		t.Fatal(err)
	}
	os.RemoveAll(root)

	// The whole system is the initramfs: systemd boots from it as from a
	// root file system (there is no /etc/initrd-release).
	console := filepath.Join(tmp, "console.log")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	start = time.Now()
	qemu := exec.CommandContext(ctx, "qemu-system-x86_64", "-machine", "q35", "-accel", "tcg,thread=single", "-cpu", "max",
		"-m", "2G", "-smp", "2", "-nodefaults", "-no-user-config", "-display", "none", "-no-reboot",
		"-kernel", kernel.Vmlinuz, "-initrd", initrd, "-append", "console=ttyS0 rdinit=/lib/systemd/systemd panic=-1 systemd.show_status=0",
		"-chardev", "file,id=con,path="+console, "-serial", "chardev:con")
	if out, err := qemu.CombinedOutput(); err != nil {
		t.Errorf("qemu: %v\n%s", err, out)
	}
	t.Logf("boot to power-off: %v", time.Since(start).Round(time.Second))
	f, err := os.Open(console)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var result, detail string
	var tail []string
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 1<<20)
	ansi := regexp.MustCompile(`\x1b\[[0-9;]*m|\r`)
	for sc.Scan() {
		l := ansi.ReplaceAllString(sc.Text(), "")
		if _, r, ok := strings.Cut(l, "bootcheck: detail "); ok {
			detail = r
		} else if _, r, ok := strings.Cut(l, "bootcheck: "); ok && (r == "ok" || strings.HasPrefix(r, "FAIL")) {
			result = r
		}
		if tail = append(tail, l); len(tail) > 60 {
			tail = tail[1:]
		}
	}
	if result != "ok" {
		t.Fatalf("bootcheck: %q; console:\n%s", result, strings.Join(tail, "\n"))
	}
	t.Logf("the packaged service under systemd: %s", detail)
	for _, want := range []string{"ActiveState=active", "DynamicUser=yes", "NoNewPrivileges=yes", "CapEff: 000000c000001004", "CapBnd: 000000c000001004", "NoNewPrivs: 1", "Seccomp: 2"} {
		if !strings.Contains(detail, want) {
			t.Errorf("the service runs without %q", want)
		}
	}
	if regexp.MustCompile(`Uid: 0\b`).MatchString(detail) {
		t.Errorf("the service runs as root: %s", detail)
	}
}

// writeCPIO packs a directory tree as a newc cpio archive (an initramfs).
func writeCPIO(root, path string) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	defer f.Close()
	bw := bufio.NewWriterSize(f, 1<<20)
	w := vmtest.NewCPIOWriter(bw)
	err = filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil || p == root {
			return err
		}
		name := strings.TrimPrefix(p, root+"/")
		info, err := d.Info()
		if err != nil {
			return err
		}
		perm := uint32(info.Mode().Perm())
		if info.Mode()&fs.ModeSetuid != 0 {
			perm |= 0o4000
		}
		if info.Mode()&fs.ModeSetgid != 0 {
			perm |= 0o2000
		}
		if info.Mode()&fs.ModeSticky != 0 {
			perm |= 0o1000
		}
		switch {
		case d.IsDir():
			return w.Dir(name, perm)
		case info.Mode()&fs.ModeSymlink != 0:
			target, err := os.Readlink(p)
			if err != nil {
				return err
			}
			return w.Symlink(name, target)
		case info.Mode().IsRegular():
			r, err := os.Open(p)
			if err != nil {
				return err
			}
			defer r.Close()
			return w.File(name, perm, info.Size(), r)
		}
		return nil // devices, fifos, sockets: devtmpfs and systemd make their own
	})
	if err == nil {
		// The kernel opens the console before anything is mounted.
		err = w.CharDev("dev/console", 0o600, 5, 1)
	}
	if err == nil {
		err = w.Close()
	}
	if err == nil {
		err = bw.Flush()
	}
	if err != nil {
		return fmt.Errorf("packing %s: %w", root, err)
	}
	return nil
}
