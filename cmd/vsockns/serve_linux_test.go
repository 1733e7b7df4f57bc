//go:build linux

package main

import (
	"bytes"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"unsafe"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// attribChanges lists the names in the directory that inotify fd saw
// change attributes (a chmod) since it was set up.
func attribChanges(t *testing.T, fd int) []string {
	t.Helper()
	var names []string
	buf := make([]byte, 64<<10)
	for {
		n, err := unix.Read(fd, buf)
		if err == unix.EAGAIN {
			return names
		}
		require.NoError(t, err)
		for off := 0; off+unix.SizeofInotifyEvent <= n; {
			ev := (*unix.InotifyEvent)(unsafe.Pointer(&buf[off]))
			name := buf[off+unix.SizeofInotifyEvent : off+unix.SizeofInotifyEvent+int(ev.Len)]
			if ev.Mask&unix.IN_ATTRIB != 0 {
				names = append(names, string(bytes.TrimRight(name, "\x00")))
			}
			off += unix.SizeofInotifyEvent + int(ev.Len)
		}
	}
}

// TestListenPrivate: vm --serve's socket is private from the moment it
// exists, even with umask 0: its file appears with mode 0600 and is never
// chmodded (a chmod by path after bind, as before, left a moment in which
// anyone could connect, and would follow a path swapped meanwhile; the
// inotify watch saw that chmod). A path that exists (a file, a symlink to
// one, a socket) is refused with EADDRINUSE and left as it was.
func TestListenPrivate(t *testing.T) {
	old := syscall.Umask(0)
	defer syscall.Umask(old)
	dir := t.TempDir()
	in, err := unix.InotifyInit1(unix.IN_NONBLOCK | unix.IN_CLOEXEC)
	require.NoError(t, err)
	defer unix.Close(in)
	_, err = unix.InotifyAddWatch(in, dir, unix.IN_ATTRIB)
	require.NoError(t, err)

	path := filepath.Join(dir, "ns.sock")
	l, err := listenPrivate(path)
	require.NoError(t, err)
	st, err := os.Lstat(path)
	require.NoError(t, err)
	assert.Equal(t, os.ModeSocket|0o600, st.Mode(), "the socket's file")
	assert.Empty(t, attribChanges(t, in), "attributes changed after the socket appeared")

	_, err = listenPrivate(path)
	require.ErrorIs(t, err, syscall.EADDRINUSE, "a socket there already")
	l.Close()

	victim := filepath.Join(dir, "victim")
	require.NoError(t, os.WriteFile(victim, []byte("mine"), 0o644))
	link := filepath.Join(dir, "link.sock")
	require.NoError(t, os.Symlink(victim, link))
	for _, p := range []string{victim, link} {
		_, err := listenPrivate(p)
		require.ErrorIs(t, err, syscall.EADDRINUSE, "%s exists", p)
	}
	st, err = os.Stat(victim)
	require.NoError(t, err)
	assert.Equal(t, os.FileMode(0o644), st.Mode(), "the symlink's target is untouched")
	b, err := os.ReadFile(victim)
	require.NoError(t, err)
	assert.Equal(t, "mine", string(b))
	fi, err := os.Lstat(link)
	require.NoError(t, err)
	assert.Equal(t, os.ModeSymlink, fi.Mode().Type(), "the symlink is still one")
}
