package vmtest

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

// loadModules loads the modules the host put in the initramfs, in order.
// Compressed ones (.ko.xz, 6.12 and later) are decompressed by the kernel.
func loadModules() error {
	b, err := os.ReadFile(guestModules + ".list")
	if err != nil {
		return nil // none
	}
	for _, name := range strings.Fields(string(b)) {
		f, err := os.Open(filepath.Join(guestModules, name))
		if err != nil {
			return err
		}
		flags := 0
		if !strings.HasSuffix(name, ".ko") {
			flags = unix.MODULE_INIT_COMPRESSED_FILE
		}
		err = unix.FinitModule(int(f.Fd()), "", flags)
		f.Close()
		if err != nil && err != unix.EEXIST {
			return fmt.Errorf("loading module %s: %w", name, err)
		}
	}
	return nil
}
