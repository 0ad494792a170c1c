package vmtest

import (
	"fmt"
	"io"
	"path"
	"strings"
)

// CPIOWriter writes a "newc" (SVR4, no CRC) cpio archive, the format the
// kernel unpacks as an initramfs. Parent directories are created implicitly.
type CPIOWriter struct {
	w    io.Writer
	ino  uint32
	dirs map[string]bool
	err  error
}

func NewCPIOWriter(w io.Writer) *CPIOWriter {
	return &CPIOWriter{w: w, ino: 1, dirs: map[string]bool{"": true, ".": true}}
}

const (
	sIFDIR = 0o040000
	sIFREG = 0o100000
	sIFLNK = 0o120000
	sIFCHR = 0o020000
)

var zeros [4]byte

func (c *CPIOWriter) header(name string, mode, size, nlink, rmajor, rminor uint32) {
	if c.err != nil {
		return
	}
	c.ino++
	hdr := fmt.Sprintf("070701%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x",
		c.ino, mode, 0, 0, nlink, 0, size, 0, 0, rmajor, rminor, len(name)+1, 0)
	if _, c.err = io.WriteString(c.w, hdr+name+"\x00"); c.err != nil {
		return
	}
	c.pad(len(hdr) + len(name) + 1)
}

func (c *CPIOWriter) pad(n int) {
	if c.err == nil && n%4 != 0 {
		_, c.err = c.w.Write(zeros[:4-n%4])
	}
}

func clean(name string) string {
	return strings.TrimPrefix(path.Clean("/"+name), "/")
}

func (c *CPIOWriter) parents(name string) {
	dir := path.Dir(name)
	if c.dirs[dir] {
		return
	}
	c.parents(dir)
	c.dirs[dir] = true
	c.header(dir, sIFDIR|0o755, 0, 2, 0, 0)
}

// Dir adds a directory.
func (c *CPIOWriter) Dir(name string, perm uint32) error {
	name = clean(name)
	if c.dirs[name] {
		return c.err
	}
	c.parents(name)
	c.dirs[name] = true
	c.header(name, sIFDIR|perm&0o7777, 0, 2, 0, 0)
	return c.err
}

// File adds a regular file of the given size read from r.
func (c *CPIOWriter) File(name string, perm uint32, size int64, r io.Reader) error {
	name = clean(name)
	if size >= 1<<32 {
		return fmt.Errorf("cpio: %s too large", name)
	}
	c.parents(name)
	c.header(name, sIFREG|perm&0o7777, uint32(size), 1, 0, 0)
	if c.err != nil {
		return c.err
	}
	n, err := io.CopyN(c.w, r, size)
	if err != nil {
		c.err = fmt.Errorf("cpio: %s: %w", name, err)
		return c.err
	}
	c.pad(int(n % 4))
	return c.err
}

// Bytes adds a regular file with the given content.
func (c *CPIOWriter) Bytes(name string, perm uint32, data []byte) error {
	return c.File(name, perm, int64(len(data)), strings.NewReader(string(data)))
}

// CharDev adds a character device node.
func (c *CPIOWriter) CharDev(name string, perm, major, minor uint32) error {
	name = clean(name)
	c.parents(name)
	c.header(name, sIFCHR|perm&0o7777, 0, 1, major, minor)
	return c.err
}

// Symlink adds a symbolic link.
func (c *CPIOWriter) Symlink(name, target string) error {
	name = clean(name)
	c.parents(name)
	c.header(name, sIFLNK|0o777, uint32(len(target)), 1, 0, 0)
	if c.err == nil {
		_, c.err = io.WriteString(c.w, target)
		c.pad(len(target))
	}
	return c.err
}

// Close writes the trailer. It does not close the underlying writer.
func (c *CPIOWriter) Close() error {
	c.header("TRAILER!!!", 0, 0, 1, 0, 0)
	return c.err
}
