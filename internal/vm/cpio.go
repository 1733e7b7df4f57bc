package vm

import (
	"fmt"
	"io"
	"path"
	"strings"
)

// cpioWriter writes a "newc" (SVR4, no checksum) cpio archive, the format the
// Linux kernel unpacks as an initramfs. Only what an initramfs needs is
// supported: directories and regular files, all owned by root.
type cpioWriter struct {
	w    io.Writer
	ino  uint32
	dirs map[string]bool
	err  error
}

func newCPIOWriter(w io.Writer) *cpioWriter {
	return &cpioWriter{w: w, ino: 1, dirs: map[string]bool{".": true, "/": true, "": true}}
}

const (
	cpioModeDir  = 0o040000
	cpioModeFile = 0o100000
)

// Mkdir adds name and any missing parents as directories (mode 0755).
func (c *cpioWriter) Mkdir(name string) {
	name = strings.TrimPrefix(path.Clean(name), "/")
	if c.dirs[name] {
		return
	}
	c.Mkdir(path.Dir(name))
	c.dirs[name] = true
	c.entry(name, cpioModeDir|0o755, nil)
}

// File adds a regular file with the given permission bits, creating its
// parent directories first.
func (c *cpioWriter) File(name string, perm uint32, data []byte) {
	name = strings.TrimPrefix(path.Clean(name), "/")
	c.Mkdir(path.Dir(name))
	c.entry(name, cpioModeFile|perm&0o7777, data)
}

// Close writes the trailer. It returns the first error met while writing.
func (c *cpioWriter) Close() error {
	c.entry("TRAILER!!!", 0, nil)
	return c.err
}

func (c *cpioWriter) entry(name string, mode uint32, data []byte) {
	if c.err != nil {
		return
	}
	nlink := uint32(1)
	if mode&cpioModeDir != 0 {
		nlink = 2
	}
	ino := c.ino
	c.ino++
	// Fields: magic, ino, mode, uid, gid, nlink, mtime, filesize, devmajor,
	// devminor, rdevmajor, rdevminor, namesize (with its NUL), check.
	hdr := fmt.Sprintf("070701%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x",
		ino, mode, 0, 0, nlink, 0, len(data), 0, 0, 0, 0, len(name)+1, 0)
	c.write([]byte(hdr))
	c.write([]byte(name + "\x00"))
	c.pad(len(hdr) + len(name) + 1)
	c.write(data)
	c.pad(len(data))
}

func (c *cpioWriter) pad(n int) {
	if r := n % 4; r != 0 {
		c.write(make([]byte, 4-r))
	}
}

func (c *cpioWriter) write(b []byte) {
	if c.err == nil && len(b) > 0 {
		_, c.err = c.w.Write(b)
	}
}
