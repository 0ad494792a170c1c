// Command vmrun runs a (test) binary inside a QEMU VM booting a real kernel,
// for use as `go test -exec`:
//
//	CGO_ENABLED=0 go test -exec "go run github.com/acceptwatch/acceptwatch/cmd/vmrun -kernel /path/vmlinuz" ./cmd/acceptwatch
//
// The same binary is the guest's /init (it is re-executed as PID 1); for a
// guest of another architecture (an arm64 kernel on an amd64 host), -init
// names a vmrun built for it. The program's output is copied to stdout and
// vmrun exits with its exit code; a panic, crash or timeout is a failure with
// the tail of the kernel log.
//
// Environment: VMTEST_KERNEL (default for -kernel; a path or a matrix kernel
// name such as 6.1 or arm64/6.1, fetched into the cache), VMTEST_INIT,
// VMTEST_TIMEOUT (default for -timeout), VMTEST_FILES
// (hostpath:guestpath,...), VMTEST_SYSROOT (where the libraries of files
// built for another architecture are), ACCEPTWATCH_* (passed to the guest),
// VMTEST_ENV (K=V,... also passed), VMTEST_QEMU.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"syscall"
	"time"

	"github.com/acceptwatch/acceptwatch/vmtest"
)

func main() {
	if vmtest.IsGuestInit() {
		vmtest.GuestMain()
	}
	os.Exit(host())
}

func host() int {
	fs := flag.NewFlagSet("vmrun", flag.ContinueOnError)
	kernel := fs.String("kernel", os.Getenv("VMTEST_KERNEL"), "kernel image, or a matrix kernel name to fetch: 5.10, 6.1, 6.12, 7.x (amd64), arm64/6.1, arm64/7.x ($VMTEST_KERNEL)")
	initBin := fs.String("init", os.Getenv("VMTEST_INIT"), "the guest's /init: a static vmrun built for the guest's architecture (default: this vmrun) ($VMTEST_INIT)")
	defTimeout := 10 * time.Minute
	if s := os.Getenv("VMTEST_TIMEOUT"); s != "" {
		d, err := time.ParseDuration(s)
		if err != nil {
			fmt.Fprintf(os.Stderr, "vmrun: VMTEST_TIMEOUT: %v\n", err)
			return 2
		}
		defTimeout = d
	}
	timeout := fs.Duration("timeout", defTimeout, "kill the VM after this long ($VMTEST_TIMEOUT)")
	klog := fs.String("kernel-log", "", "keep the kernel console log in this file")
	cmdline := fs.String("append", "", "extra kernel command line")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "usage: vmrun [flags] binary [args...]\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(os.Args[1:]); err != nil {
		return 2
	}
	if fs.NArg() < 1 || *kernel == "" {
		fs.Usage()
		if *kernel == "" {
			fmt.Fprintln(os.Stderr, "vmrun: no kernel: use -kernel or VMTEST_KERNEL")
		}
		return 2
	}
	kpath, err := resolveKernel(*kernel)
	if err != nil {
		fmt.Fprintf(os.Stderr, "vmrun: %v\n", err)
		return 2
	}
	initPath, err := guestInit(*initBin, kpath)
	if err != nil {
		fmt.Fprintf(os.Stderr, "vmrun: %v\n", err)
		return 2
	}
	bin, err := filepath.Abs(fs.Arg(0))
	if err != nil {
		fmt.Fprintf(os.Stderr, "vmrun: %v\n", err)
		return 2
	}
	files, err := vmtest.ParseFiles(os.Getenv("VMTEST_FILES"))
	if err != nil {
		fmt.Fprintf(os.Stderr, "vmrun: %v\n", err)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	code, err := vmtest.Run(ctx, vmtest.RunConfig{
		Kernel:    kpath,
		Init:      initPath,
		Binary:    bin,
		Args:      fs.Args()[1:],
		Files:     files,
		Modules:   vmtest.KernelModules(kpath),
		Env:       vmtest.GuestEnv(os.Environ()),
		Timeout:   *timeout,
		KernelLog: *klog,
		Cmdline:   *cmdline,
		Sysroot:   os.Getenv("VMTEST_SYSROOT"),
	})
	_ = err // Run already reported it, with the kernel log
	return code
}

// guestInit returns the guest's /init: the given binary, or this vmrun when
// it is built for the kernel's architecture.
func guestInit(given, kernel string) (string, error) {
	if given != "" {
		return filepath.Abs(given)
	}
	arch, err := vmtest.KernelArch(kernel)
	if err != nil {
		return "", err
	}
	if arch != runtime.GOARCH {
		return "", fmt.Errorf("the kernel is %s and this vmrun %s: give a vmrun built for %s as -init (GOARCH=%s CGO_ENABLED=0 go build -o vmrun-%s ./cmd/vmrun)", arch, runtime.GOARCH, arch, arch, arch)
	}
	return os.Executable()
}

// resolveKernel accepts a file path or a matrix kernel name.
func resolveKernel(k string) (string, error) {
	if _, err := os.Stat(k); err == nil {
		return filepath.Abs(k)
	}
	arch, err := vmtest.GuestArch(k)
	if err != nil {
		return "", err
	}
	spec, _ := vmtest.LookupKernel(arch, k)
	cache, err := vmtest.CacheDir()
	if err != nil {
		return "", err
	}
	f := &vmtest.Fetcher{Cache: cache, Log: os.Stderr}
	kern, err := f.Fetch(spec)
	if err != nil {
		return "", err
	}
	return kern.Vmlinuz, nil
}
