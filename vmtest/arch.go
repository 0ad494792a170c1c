package vmtest

import (
	"debug/elf"
	"encoding/binary"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
)

// Arch is a guest architecture: how QEMU emulates it and where the guest's
// two serial lines are (the kernel's console, and the program's output).
type Arch struct {
	Name    string      // GOARCH and Debian architecture: "amd64", "arm64"
	QEMU    string      // emulator binary
	Machine []string    // machine, accelerator and CPU arguments
	Console string      // kernel console (console=), wired to the first -serial
	OutDev  []string    // QEMU arguments of the program's port; %s is the chardev id
	Out     string      // that port in the guest
	ELF     elf.Machine // what its binaries must be built for
}

// Arches are the guest architectures the harness boots.
var Arches = map[string]Arch{
	"amd64": {
		Name: "amd64",
		QEMU: "qemu-system-x86_64",
		// Single-threaded TCG: with one host thread per vCPU, a guest that
		// patches kernel text (syscall tracepoints, text_poke_bp's int3)
		// while the other vCPU runs it was seen to oops on 7.x and lock up
		// on 6.1. The matrix runs two VMs at once, so no core idles.
		Machine: []string{"-machine", "q35", "-accel", "tcg,thread=single", "-cpu", "max"},
		Console: "ttyS0",
		OutDev:  []string{"-serial", "chardev:%s"}, // the second ISA UART
		Out:     "/dev/ttyS1",
		ELF:     elf.EM_X86_64,
	},
	"arm64": {
		Name: "arm64",
		QEMU: "qemu-system-aarch64",
		// virt has one UART (PL011, ttyAMA0) for the kernel. The program's
		// port is a PCI 16550: 8250_pci and the generic PCI host are built
		// into Debian's cloud-arm64 6.1 and 7.x, while virtio-console is a
		// module in 6.1. pauth-impdef: QEMU's own pointer
		// authentication hash in place of QARMA, which costs TCG much
		// time in a kernel that signs every return address. Single-threaded
		// TCG as on amd64: two VMs run at once anyway.
		Machine: []string{"-machine", "virt", "-accel", "tcg,thread=single", "-cpu", "max,pauth-impdef=on"},
		Console: "ttyAMA0",
		OutDev:  []string{"-device", "pci-serial,chardev=%s"},
		Out:     "/dev/ttyS0",
		ELF:     elf.EM_AARCH64,
	},
}

// ArchNames lists the known architectures, sorted.
func ArchNames() []string {
	var out []string
	for n := range Arches {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

// LookupArch returns the architecture called name.
func LookupArch(name string) (Arch, error) {
	a, ok := Arches[name]
	if !ok {
		return Arch{}, fmt.Errorf("unknown architecture %q (have %s)", name, strings.Join(ArchNames(), ", "))
	}
	return a, nil
}

// qemuArgs returns the machine and serial arguments: kernel console on
// chardev klog, the program's port on chardev out.
func (a Arch) qemuArgs(klog, out string) []string {
	args := append([]string{}, a.Machine...)
	args = append(args, "-serial", "chardev:"+klog)
	for _, v := range a.OutDev {
		if strings.Contains(v, "%s") {
			v = fmt.Sprintf(v, out)
		}
		args = append(args, v)
	}
	return args
}

// KernelArch tells a kernel image's architecture from its boot header: an
// x86 bzImage has "HdrS" at 0x202, an arm64 Image "ARM\x64" at 0x38 (a plain
// Image; Debian's vmlinuz is one, EFI stub included).
func KernelArch(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	hdr := make([]byte, 0x210)
	if _, err := io.ReadFull(f, hdr); err != nil {
		return "", fmt.Errorf("%s: not a kernel image: %w", path, err)
	}
	switch {
	case string(hdr[0x202:0x206]) == "HdrS":
		return "amd64", nil
	case binary.LittleEndian.Uint32(hdr[0x38:]) == 0x644d5241: // "ARM\x64"
		return "arm64", nil
	case hdr[0] == 0x1f && hdr[1] == 0x8b:
		return "", fmt.Errorf("%s is gzip-compressed: boot the uncompressed image (zcat it)", path)
	}
	return "", fmt.Errorf("%s: neither an x86 bzImage nor an arm64 Image", path)
}

// checkBinary reports an error if the ELF file at p is built for another
// machine than the guest's or, when static is set, needs a dynamic loader
// (the test binary and /init run before any library could be found).
// Other files (scripts, data) pass.
func checkBinary(p string, a Arch, static bool) error {
	f, err := elf.Open(p)
	if err != nil {
		return nil
	}
	defer f.Close()
	if f.Machine != a.ELF {
		return fmt.Errorf("%s is built for %v, the guest is %s (%v): build it with GOARCH=%s", p, f.Machine, a.Name, a.ELF, a.Name)
	}
	if !static {
		return nil
	}
	for _, prog := range f.Progs {
		if prog.Type == elf.PT_INTERP {
			return fmt.Errorf("%s is dynamically linked; the guest has no libc: build it with CGO_ENABLED=0", p)
		}
	}
	return nil
}
