//go:build linux

package vsockns

import (
	"errors"
	"fmt"
	"net"
	"os"
	"syscall"

	"github.com/mdlayher/socket"
	"golang.org/x/sys/unix"
)

// fileSocket duplicates f's descriptor and checks that it is an AF_VSOCK
// stream socket, connected (listening false) or listening (true).
func fileSocket(f *os.File, listening bool) (*socket.Conn, error) {
	if f == nil {
		return nil, errors.New("nil *os.File")
	}
	rc, err := f.SyscallConn()
	if err != nil {
		return nil, err
	}
	fd, err := dupRaw(rc)
	if err != nil {
		return nil, err
	}
	if err := checkSocket(fd, listening); err != nil {
		unix.Close(fd)
		return nil, err
	}
	if err := unix.SetNonblock(fd, true); err != nil {
		unix.Close(fd)
		return nil, os.NewSyscallError("setnonblock", err)
	}
	c, err := socket.New(fd, Network)
	if err != nil {
		unix.Close(fd)
		return nil, err
	}
	return c, nil
}

// checkSocket says what fd is, if it is not the socket wanted.
func checkSocket(fd int, listening bool) error {
	domain, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_DOMAIN)
	if err != nil {
		return os.NewSyscallError("getsockopt", err) // ENOTSOCK for a file that is not a socket
	}
	if domain != unix.AF_VSOCK {
		return &explained{os.NewSyscallError("getsockopt", unix.EAFNOSUPPORT), fmt.Sprintf("not an AF_VSOCK socket (address family %d)", domain), nil}
	}
	typ, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_TYPE)
	if err != nil {
		return os.NewSyscallError("getsockopt", err)
	}
	if typ != unix.SOCK_STREAM {
		return &explained{os.NewSyscallError("getsockopt", unix.EPROTOTYPE), fmt.Sprintf("not a stream socket (socket type %d)", typ), nil}
	}
	acc, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_ACCEPTCONN)
	if err != nil {
		return os.NewSyscallError("getsockopt", err)
	}
	switch {
	case listening && acc == 0:
		return &explained{os.NewSyscallError("getsockopt", unix.EINVAL), "the socket is not listening", nil}
	case !listening && acc != 0:
		return &explained{os.NewSyscallError("getsockopt", unix.EINVAL), "the socket is listening, not connected (use FileListener)", nil}
	}
	if !listening {
		if _, err := unix.Getpeername(fd); err != nil {
			return &explained{os.NewSyscallError("getpeername", err), "the socket is not connected", nil}
		}
	}
	return nil
}

func fileConn(f *os.File) (*Conn, error) {
	c, err := fileSocket(f, false)
	if err != nil {
		return nil, &net.OpError{Op: "file", Net: Network, Err: err}
	}
	lsa, lerr := c.Getsockname()
	rsa, rerr := c.Getpeername()
	if err := errors.Join(lerr, rerr); err != nil {
		c.Close()
		return nil, &net.OpError{Op: "file", Net: Network, Err: err}
	}
	return &Conn{c: c, local: vmAddr(lsa), remote: vmAddr(rsa)}, nil
}

func fileListener(f *os.File) (*Listener, error) {
	c, err := fileSocket(f, true)
	if err != nil {
		return nil, &net.OpError{Op: "file", Net: Network, Err: err}
	}
	lsa, err := c.Getsockname()
	if err != nil {
		c.Close()
		return nil, &net.OpError{Op: "file", Net: Network, Err: err}
	}
	return &Listener{c: c, addr: vmAddr(lsa)}, nil
}

// socketFile returns a duplicate of c's descriptor as an *os.File.
func socketFile(c *socket.Conn, name string) (*os.File, error) {
	rc, err := c.SyscallConn()
	if err != nil {
		return nil, err
	}
	fd, err := dupRaw(rc)
	if err != nil {
		return nil, err
	}
	return os.NewFile(uintptr(fd), name), nil
}

// dupRaw duplicates rc's descriptor, close-on-exec, at 3 or above.
func dupRaw(rc syscall.RawConn) (int, error) {
	fd := -1
	var derr error
	if err := rc.Control(func(raw uintptr) {
		fd, derr = unix.FcntlInt(raw, unix.F_DUPFD_CLOEXEC, 3)
	}); err != nil {
		return -1, err
	}
	if derr != nil {
		return -1, os.NewSyscallError("fcntl", derr)
	}
	return fd, nil
}

// File returns a duplicate of the connection's descriptor, for example to
// pass to another process (exec.Cmd.ExtraFiles, SCM_RIGHTS); FileConn
// makes a Conn of it again. Closing one does not affect the other.
func (c *Conn) File() (*os.File, error) {
	f, err := socketFile(c.c, "vsock:"+c.remote.String())
	return f, c.opError("file", err)
}

// File returns a duplicate of the listening descriptor (see Conn.File);
// FileListener makes a Listener of it again.
func (l *Listener) File() (*os.File, error) {
	f, err := socketFile(l.c, "vsock-listener:"+l.addr.String())
	return f, opError("file", err, l.addr, nil)
}
