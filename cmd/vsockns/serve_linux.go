//go:build linux

package main

import (
	"net"
	"os"

	"golang.org/x/sys/unix"
)

// listenPrivate listens for unixpacket connections at path, a socket file
// that only this user can connect to from the moment it exists: the
// socket's mode is set before bind(2) gives it a name (the file takes the
// socket's mode, less the umask), so no chmod by path follows, which a
// path swapped meanwhile would redirect. bind(2) creates the file and
// follows no symlink: a path that exists already (a file, a symlink,
// another socket) fails with EADDRINUSE.
func listenPrivate(path string) (*net.UnixListener, error) {
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, os.NewSyscallError("socket", err)
	}
	f := os.NewFile(uintptr(fd), path)
	defer f.Close()
	if err := unix.Fchmod(fd, 0o600); err != nil {
		return nil, os.NewSyscallError("fchmod", err)
	}
	if err := unix.Bind(fd, &unix.SockaddrUnix{Name: path}); err != nil {
		return nil, &os.PathError{Op: "bind", Path: path, Err: err}
	}
	if err := unix.Listen(fd, unix.SOMAXCONN); err != nil {
		os.Remove(path)
		return nil, os.NewSyscallError("listen", err)
	}
	l, err := net.FileListener(f)
	if err != nil {
		os.Remove(path)
		return nil, err
	}
	return l.(*net.UnixListener), nil
}
