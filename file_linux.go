//go:build linux

package vsockns

import (
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"syscall"

	"github.com/mdlayher/socket"
	"golang.org/x/sys/unix"
)

// fileSocket duplicates f's descriptor and checks that it is an AF_VSOCK
// socket of type t, connected (listening false) or listening (true).
func fileSocket(f *os.File, t sockType, listening bool) (*socket.Conn, error) {
	if f == nil {
		return nil, errors.New("nil *os.File")
	}
	rc, err := f.SyscallConn()
	if err != nil {
		return nil, err
	}
	fd, err := dupRaw(rc)
	if err != nil {
		var se *os.SyscallError
		if !errors.As(err, &se) {
			// The file's own error: it is closed ("use of closed file").
			return nil, &explained{os.NewSyscallError("fcntl", unix.EBADF), "the *os.File is closed", os.ErrClosed}
		}
		return nil, err
	}
	if err := checkSocket(fd, t, listening); err != nil {
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
func checkSocket(fd int, t sockType, listening bool) error {
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
	if typ != t.unix() {
		return &explained{os.NewSyscallError("getsockopt", unix.EPROTOTYPE), fmt.Sprintf("not a %s socket (socket type %d%s)", t.kind(), typ, typeHint(typ, t, listening)), nil}
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

// typeHint names the adopting function for a vsock socket of the other
// type.
func typeHint(typ int, want sockType, listening bool) string {
	var fn string
	switch {
	case typ == unix.SOCK_SEQPACKET && want == typeStream:
		fn = "FileSeqpacketConn"
	case typ == unix.SOCK_STREAM && want == typeSeqpacket:
		fn = "FileConn"
	default:
		return ""
	}
	if listening {
		fn = strings.Replace(fn, "Conn", "Listener", 1)
	}
	return "; use " + fn
}

// kind names the type in messages.
func (t sockType) kind() string {
	if t == typeSeqpacket {
		return "SOCK_SEQPACKET"
	}
	return "stream"
}

func fileConn(f *os.File, t sockType) (*Conn, error) {
	c, err := fileSocket(f, t, false)
	if err != nil {
		return nil, &net.OpError{Op: "file", Net: t.network(), Err: err}
	}
	lsa, lerr := c.Getsockname()
	rsa, rerr := c.Getpeername()
	if err := errors.Join(lerr, rerr); err != nil {
		c.Close()
		return nil, &net.OpError{Op: "file", Net: t.network(), Err: err}
	}
	conn, err := newConn(c, t, vmAddr(lsa), vmAddr(rsa))
	if err != nil {
		return nil, &net.OpError{Op: "file", Net: t.network(), Err: err}
	}
	return conn, nil
}

func fileListener(f *os.File, t sockType) (*Listener, error) {
	c, err := fileSocket(f, t, true)
	if err != nil {
		return nil, &net.OpError{Op: "file", Net: t.network(), Err: err}
	}
	lsa, err := c.Getsockname()
	if err != nil {
		c.Close()
		return nil, &net.OpError{Op: "file", Net: t.network(), Err: err}
	}
	return &Listener{c: c, typ: t, addr: vmAddr(lsa)}, nil
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
