//go:build linux

package vsockns

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/mdlayher/socket"
	"github.com/mdlayher/vsock"
	"golang.org/x/sys/unix"
)

// A Conn is a vsock connection: a stream (network "vsock") or a
// SOCK_SEQPACKET connection (network "vsockpacket"), which keeps message
// boundaries. Its namespace was fixed when it was created; it keeps working
// after the namespace's handles are closed, and even after the namespace
// itself is gone.
//
// A SOCK_SEQPACKET connection's descriptor is in blocking mode (its writes
// wait in the kernel; see WriteMsg), which SyscallConn's and File's users
// see; its reads still wait in Go's network poller.
type Conn struct {
	c             *socket.Conn
	typ           sockType
	local, remote *vsock.Addr
	closed        atomic.Bool

	// SOCK_SEQPACKET only (see seqpacket_linux.go): the write deadline,
	// in Unix nanoseconds (0: none), and the error that ended writing
	// after a message may have been cut.
	writeDeadline atomic.Int64
	sndTimeoutSet atomic.Bool // SO_SNDTIMEO is noTimeout
	cut           atomic.Pointer[error]
}

// Read implements net.Conn. On a SOCK_SEQPACKET connection it reads one
// message; what does not fit in b is discarded (ReadMsg reports it).
func (c *Conn) Read(b []byte) (int, error) {
	if c.typ == typeSeqpacket {
		n, _, err := c.recvmsg(b)
		return n, c.opError("read", err)
	}
	n, err := c.c.Read(b)
	return n, c.opError("read", err)
}

// Write implements net.Conn. On a SOCK_SEQPACKET connection b is one
// message, sent whole or not at all (see WriteMsg), with MSG_EOR.
func (c *Conn) Write(b []byte) (int, error) {
	if c.typ == typeSeqpacket {
		n, err := c.sendmsg(b, unix.MSG_EOR)
		return n, c.opError("write", err)
	}
	n, err := c.c.Write(b)
	return n, c.opError("write", err)
}

// ReadMsg reads one message into b, as recvmsg(2) does, and returns its
// length in b and the flags the kernel reported: syscall.MSG_TRUNC when
// the message was longer than b (the rest is discarded), syscall.MSG_EOR
// when the sender ended a record with it. On a stream it reads like Read,
// and the flags are zero. It is net.UnixConn's ReadMsgUnix without
// ancillary data, which vsock does not carry. As with package net, an
// empty b reads nothing.
func (c *Conn) ReadMsg(b []byte) (n, flags int, err error) {
	if c.typ != typeSeqpacket {
		n, err := c.Read(b)
		return n, 0, err
	}
	n, flags, err = c.recvmsg(b)
	return n, flags, c.opError("read", err)
}

// WriteMsg sends b as one message. flags may be 0 or syscall.MSG_EOR,
// which marks the message as the end of a record (the peer's ReadMsg
// reports it; Write always sets it); other flags are refused with EINVAL.
// On a stream it writes like Write.
//
// A SOCK_SEQPACKET message is sent whole: a write waits until the peer has
// room for all of it. A message larger than the smaller of the two ends'
// receive buffers (BufferSize; the kernel bounds what it sends by its own
// buffer as well as by the peer's) fails with EMSGSIZE (ENOMEM on Linux
// 6.1). A write that ends before that, at its
// deadline or interrupted, may have sent the start of its message (the
// kernel sends what fits and cannot take it back), so it also ends writing
// on the connection: it and every later write fail with ErrMessageCut. A
// write deadline bounds the writes that start after it is set (the kernel's
// send timeout is set as a write starts); Close ends a waiting write.
func (c *Conn) WriteMsg(b []byte, flags int) (int, error) {
	if flags&^unix.MSG_EOR != 0 {
		return 0, c.opError("write", &explained{unix.EINVAL, fmt.Sprintf("flags %#x: only syscall.MSG_EOR is allowed", flags), nil})
	}
	if c.typ != typeSeqpacket {
		return c.Write(b)
	}
	n, err := c.sendmsg(b, flags)
	return n, c.opError("write", err)
}

// Close closes the connection. Closing it again returns an error wrapping
// net.ErrClosed, as package net's connections do.
func (c *Conn) Close() error {
	if c.closed.Swap(true) {
		return c.opError("close", net.ErrClosed)
	}
	if c.typ == typeSeqpacket {
		// A write waiting in the kernel for the peer's room (see
		// sendmsg) returns once the socket is shut down; close(2)
		// alone would wait for it.
		c.c.Shutdown(unix.SHUT_RDWR)
	}
	return c.opError("close", c.c.Close())
}

// CloseRead shuts down the reading side.
func (c *Conn) CloseRead() error { return c.opError("close", c.c.CloseRead()) }

// CloseWrite shuts down the writing side; the peer reads EOF.
func (c *Conn) CloseWrite() error { return c.opError("close", c.c.CloseWrite()) }

// LocalAddr returns the local address, a *vsock.Addr.
func (c *Conn) LocalAddr() net.Addr { return c.local }

// RemoteAddr returns the peer's address, a *vsock.Addr.
func (c *Conn) RemoteAddr() net.Addr { return c.remote }

// RemoteFlags returns the flags of the peer's address as the kernel keeps
// it (getpeername(2)'s svm_flags), which *vsock.Addr has no field for:
// VMADDR_FLAG_TO_HOST (unix.VMADDR_FLAG_TO_HOST, 1) on a connection dialed
// with Dialer.ToHost. The flag does not travel in the packets: on an
// accepted connection the kernel sets it itself, when it routed the
// connection through the guest-to-host transport (in a nested guest, for
// a connection between two CIDs above 2); the test VM has no such
// transport, so that case is untested.
func (c *Conn) RemoteFlags() (uint8, error) {
	sa, err := c.c.Getpeername()
	if err != nil {
		return 0, c.opError("getpeername", err)
	}
	vm, ok := sa.(*unix.SockaddrVM)
	if !ok {
		return 0, c.opError("getpeername", unix.EAFNOSUPPORT)
	}
	return vm.Flags, nil
}

// SetDeadline implements net.Conn.
func (c *Conn) SetDeadline(t time.Time) error {
	c.writeDeadline.Store(unixNano(t))
	return c.opError("set", c.c.SetDeadline(t))
}

// SetReadDeadline implements net.Conn.
func (c *Conn) SetReadDeadline(t time.Time) error { return c.opError("set", c.c.SetReadDeadline(t)) }

// SetWriteDeadline implements net.Conn.
func (c *Conn) SetWriteDeadline(t time.Time) error {
	c.writeDeadline.Store(unixNano(t))
	return c.opError("set", c.c.SetWriteDeadline(t))
}

// SyscallConn returns the raw connection, for socket options this package
// does not wrap.
func (c *Conn) SyscallConn() (syscall.RawConn, error) {
	rc, err := c.c.SyscallConn()
	if err != nil {
		return nil, c.opError("syscall-conn", err)
	}
	return rc, nil
}

func (c *Conn) opError(op string, err error) error {
	return opErrorNet(op, c.typ.network(), err, c.local, c.remote)
}

// A Listener accepts vsock connections in the namespace it was created in:
// streams, or SOCK_SEQPACKET connections from ListenSeqpacket.
type Listener struct {
	c      *socket.Conn
	typ    sockType
	addr   *vsock.Addr
	closed atomic.Bool
}

func (l *Listener) opError(op string, err error) error {
	return opErrorNet(op, l.typ.network(), err, l.addr, nil)
}

// Accept waits for the next connection; the net.Conn is a *Conn.
func (l *Listener) Accept() (net.Conn, error) {
	c, err := l.AcceptContext(context.Background())
	if err != nil {
		return nil, err
	}
	return c, nil
}

// AcceptContext waits for the next connection until ctx is done. A nil
// ctx is an error, as for DialVsock and ListenVsock.
func (l *Listener) AcceptContext(ctx context.Context) (*Conn, error) {
	if ctx == nil {
		return nil, l.opError("accept", errNilContext)
	}
	c, rsa, err := l.c.Accept(ctx, 0)
	if err != nil {
		return nil, l.opError("accept", err)
	}
	remote := vmAddr(rsa)
	// The local address of an accepted connection is the listener's,
	// except that a listener on VMADDR_CID_ANY accepts on concrete CIDs:
	// only then does it take a getsockname(2) to know which.
	local := &vsock.Addr{ContextID: l.addr.ContextID, Port: l.addr.Port}
	if l.addr.ContextID == unix.VMADDR_CID_ANY {
		if sa, err := c.Getsockname(); err == nil {
			if vm, ok := sa.(*unix.SockaddrVM); ok {
				local = &vsock.Addr{ContextID: vm.CID, Port: vm.Port}
			}
		}
	}
	conn, err := newConn(c, l.typ, local, remote)
	if err != nil {
		return nil, l.opError("accept", err)
	}
	return conn, nil
}

// newConn makes a connected socket of type t a Conn: the one constructor of
// dial, accept and adoption. A SOCK_SEQPACKET socket is made blocking (see
// seqpacket_linux.go). On error c is closed.
func newConn(c *socket.Conn, t sockType, local, remote *vsock.Addr) (*Conn, error) {
	if t == typeSeqpacket {
		if err := seqpacketBlocking(c); err != nil {
			c.Close()
			return nil, err
		}
	}
	return &Conn{c: c, typ: t, local: local, remote: remote}, nil
}

// Addr returns the listening address, a *vsock.Addr.
func (l *Listener) Addr() net.Addr { return l.addr }

// Close stops listening; accepted connections stay open. Closing it again
// returns an error wrapping net.ErrClosed.
func (l *Listener) Close() error {
	if l.closed.Swap(true) {
		return l.opError("close", net.ErrClosed)
	}
	return l.opError("close", l.c.Close())
}

// SetDeadline sets the deadline for Accept.
func (l *Listener) SetDeadline(t time.Time) error {
	return l.opError("set", l.c.SetDeadline(t))
}

// SyscallConn returns the raw listening socket.
func (l *Listener) SyscallConn() (syscall.RawConn, error) {
	rc, err := l.c.SyscallConn()
	if err != nil {
		return nil, l.opError("syscall-conn", err)
	}
	return rc, nil
}

// vmAddr converts a vsock socket address (the zero address for another
// kind).
func vmAddr(sa unix.Sockaddr) *vsock.Addr {
	if vm, ok := sa.(*unix.SockaddrVM); ok {
		return &vsock.Addr{ContextID: vm.CID, Port: vm.Port}
	}
	return &vsock.Addr{}
}

// opError wraps err the way package net does: *net.OpError with Net
// "vsock", io.EOF left alone, closed-file errors as net.ErrClosed.
func opError(op string, err error, local, remote *vsock.Addr) error {
	return opErrorNet(op, Network, err, local, remote)
}

// opErrorNet is opError for the named network.
func opErrorNet(op, network string, err error, local, remote *vsock.Addr) error {
	if err == nil {
		return nil
	}
	var pe *os.PathError
	if errors.As(err, &pe) {
		// The os.File's name is ours; the op says enough. A system call's
		// errno stays inside an *os.SyscallError, as package net has it.
		err = pe.Err
		var errno syscall.Errno
		if errors.As(err, &errno) {
			err = os.NewSyscallError(pe.Op, errno)
		}
	}
	switch {
	case err == io.EOF:
		return io.EOF
	case op == "read" && errors.Is(err, unix.ENOTCONN):
		return io.EOF
	case op != "listen" && (errors.Is(err, os.ErrClosed) || errors.Is(err, unix.EBADF)):
		// Operations on a closed Conn or Listener, as package net reports
		// them. (For listen, EBADF is about the namespace handle.)
		err = net.ErrClosed
	}
	oe := &net.OpError{Op: op, Net: network, Err: err}
	switch op {
	case "accept", "listen", "set", "syscall-conn":
		if local != nil {
			oe.Addr = local
		}
	default:
		if local != nil {
			oe.Source = local
		}
		if remote != nil {
			oe.Addr = remote
		}
	}
	return oe
}

// newSocket creates a vsock socket of typ in ref's namespace. This is the
// only step that runs inside the namespace.
func newSocket(ctx context.Context, ref nsRef, typ int) (*socket.Conn, error) {
	b, err := ref.backend()
	if err != nil {
		return nil, err
	}
	fd, err := b.socket(ctx, typ)
	if err != nil {
		return nil, socketError(err)
	}
	c, err := socket.New(fd, Network)
	if err != nil {
		unix.Close(fd)
		return nil, err
	}
	return c, nil
}

// socketError explains the errors socket(2) and the namespace switch give.
func socketError(err error) error {
	var errno unix.Errno
	if !errors.As(err, &errno) {
		return err
	}
	var se *os.SyscallError
	if !errors.As(err, &se) {
		err = os.NewSyscallError("socket", err)
	}
	switch errno {
	case unix.EAFNOSUPPORT:
		return &explained{err, "vsock is not available: load the vsock module (modprobe vsock)", ErrNotSupported}
	case unix.EPERM, unix.EACCES:
		if se == nil || se.Syscall == "socket" {
			return &explained{err, "creating an AF_VSOCK socket was refused; a seccomp profile or LSM (e.g. a container runtime's default) may be blocking AF_VSOCK", nil}
		}
	}
	return explainSetns(err)
}

// privilegedPorts: binding a vsock port below this needs
// CAP_NET_BIND_SERVICE in the initial user namespace (net/vmw_vsock's
// LAST_RESERVED_PORT is 1023).
const privilegedPorts = 1024

// bindError explains the EACCES of a reserved port.
func bindError(err error, port uint32) error {
	if port < privilegedPorts && errors.Is(err, unix.EACCES) {
		return &explained{err, fmt.Sprintf("vsock ports below %d need CAP_NET_BIND_SERVICE in the initial user namespace (root in a user namespace is not enough)", privilegedPorts), nil}
	}
	return err
}

// explainSetns says what a failed switch into a namespace handle means.
func explainSetns(err error) error {
	var se *os.SyscallError
	if !errors.As(err, &se) || se.Syscall != "setns" {
		return err
	}
	switch {
	case errors.Is(se.Err, unix.EBADF):
		return &explained{err, "the namespace handle is not an open file descriptor", nil}
	case errors.Is(se.Err, unix.EINVAL):
		return &explained{err, "the namespace handle is not a network namespace", nil}
	case errors.Is(se.Err, unix.EPERM):
		return &explained{err, "entering a network namespace needs CAP_SYS_ADMIN in the user namespace that owns it; " +
			"a process without it can have a namespace of its own with vsockns.CreateUserNamespace, or use one a privileged process serves (Namespace.Serve, DialNamespace)", nil}
	}
	return err
}

// explained adds a human explanation (and optionally a sentinel) to an error
// while keeping it unwrappable.
type explained struct {
	err      error
	why      string
	sentinel error
}

func (e *explained) Error() string { return e.err.Error() + ": " + e.why }

func (e *explained) Unwrap() []error {
	if e.sentinel != nil {
		return []error{e.err, e.sentinel}
	}
	return []error{e.err}
}

func dial(ctx context.Context, d *Dialer, t sockType, cid, port uint32) (*Conn, error) {
	if err := ctx.Err(); err != nil {
		return nil, dialError(t, cid, port, err)
	}
	c, err := dialSocket(ctx, d, t)
	if err != nil {
		return nil, dialError(t, cid, port, err)
	}
	if err := prepare(c, t, d.BufferSize, d.Control, &vsock.Addr{ContextID: cid, Port: port}); err != nil {
		c.Close()
		return nil, dialError(t, cid, port, err)
	}
	if la := d.LocalAddr; la != nil {
		if err := c.Bind(&unix.SockaddrVM{CID: la.ContextID, Port: la.Port}); err != nil {
			c.Close()
			return nil, dialError(t, cid, port, bindError(err, la.Port))
		}
	}
	sa := &unix.SockaddrVM{CID: cid, Port: port}
	if d.ToHost {
		sa.Flags = unix.VMADDR_FLAG_TO_HOST
	}
	rsa, err := connect(ctx, c, sa)
	if err != nil {
		c.Close()
		return nil, dialError(t, cid, port, connectError(err, t))
	}
	remote := &vsock.Addr{ContextID: cid, Port: port}
	if sa, ok := rsa.(*unix.SockaddrVM); ok {
		remote.ContextID, remote.Port = sa.CID, sa.Port
	}
	lsa, err := c.Getsockname()
	if err != nil {
		c.Close()
		return nil, dialError(t, cid, port, err)
	}
	conn, err := newConn(c, t, vmAddr(lsa), remote)
	if err != nil {
		return nil, dialError(t, cid, port, err)
	}
	return conn, nil
}

// dialSocket is a socket made ahead in the Dialer's Namespace
// (Namespace.Prepare) if one is ready, else a new one.
func dialSocket(ctx context.Context, d *Dialer, t sockType) (*socket.Conn, error) {
	if d.NetNS != nil && callerHandle(d.Namespace) {
		if fd := d.NetNS.takeReady(t); fd >= 0 {
			c, err := socket.New(fd, Network)
			if err != nil {
				unix.Close(fd)
				return nil, err
			}
			return c, nil
		}
	}
	return newSocket(ctx, nsRef{d.Namespace, d.NetNS}, t.unix())
}

// connectError adds the likely reason to the errors vsock's connect gives.
func connectError(err error, t sockType) error {
	switch {
	case t == typeSeqpacket && errors.Is(err, unix.ESOCKTNOSUPPORT):
		return &explained{err, "the transport to that CID has no SOCK_SEQPACKET (vsock_loopback in a local namespace; a guest whose device did not negotiate VIRTIO_VSOCK_F_SEQPACKET)", nil}
	case errors.Is(err, unix.ECONNRESET):
		return &explained{err, "no listener on that port, or the namespaces' vsock modes keep them apart (a local namespace reaches only its own sockets)", nil}
	case errors.Is(err, unix.ENODEV):
		return &explained{err, "no vsock transport reaches that CID from this namespace (is vsock_loopback or vhost_vsock loaded, and the guest's CID claimed in this namespace's pool?)", nil}
	case errors.Is(err, unix.EHOSTUNREACH):
		return &explained{err, "the CID is claimed but its device is not running", nil}
	}
	return err
}

// prepare applies a Dialer's or ListenConfig's socket options to a new
// socket, then calls its Control hook, before connect or bind.
func prepare(c *socket.Conn, t sockType, bufferSize uint64, control func(network, address string, c syscall.RawConn) error, addr *vsock.Addr) error {
	if bufferSize > 0 {
		if err := setBufferSize(c, bufferSize); err != nil {
			return err
		}
	}
	if control != nil {
		rc, err := c.SyscallConn()
		if err != nil {
			return err
		}
		if err := control(t.network(), addr.String(), rc); err != nil {
			return err
		}
	}
	return nil
}

// setBufferSize sets SO_VM_SOCKETS_BUFFER_SIZE to n, first raising
// SO_VM_SOCKETS_BUFFER_MAX_SIZE (or lowering _MIN_) where n is outside
// them: the kernel clamps the size to those bounds silently.
func setBufferSize(c *socket.Conn, n uint64) error {
	lo, err := vsockOption(c, unix.SO_VM_SOCKETS_BUFFER_MIN_SIZE)
	if err != nil {
		return err
	}
	hi, err := vsockOption(c, unix.SO_VM_SOCKETS_BUFFER_MAX_SIZE)
	if err != nil {
		return err
	}
	if n > hi {
		if err := setVsockOption(c, unix.SO_VM_SOCKETS_BUFFER_MAX_SIZE, n); err != nil {
			return err
		}
	}
	if n < lo {
		if err := setVsockOption(c, unix.SO_VM_SOCKETS_BUFFER_MIN_SIZE, n); err != nil {
			return err
		}
	}
	return setVsockOption(c, unix.SO_VM_SOCKETS_BUFFER_SIZE, n)
}

// control runs the system call fn on c's descriptor, its errno wrapped as
// an *os.SyscallError named call.
func control(c *socket.Conn, call string, fn func(fd int) error) error {
	rc, err := c.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	if err := rc.Control(func(fd uintptr) { serr = fn(int(fd)) }); err != nil {
		return err
	}
	return os.NewSyscallError(call, serr)
}

// vsockOption reads a 64-bit AF_VSOCK socket option.
func vsockOption(c *socket.Conn, opt int) (v uint64, err error) {
	err = control(c, "getsockopt", func(fd int) (err error) {
		v, err = unix.GetsockoptUint64(fd, unix.AF_VSOCK, opt)
		return err
	})
	return v, err
}

// setVsockOption writes a 64-bit AF_VSOCK socket option.
func setVsockOption(c *socket.Conn, opt int, v uint64) error {
	return control(c, "setsockopt", func(fd int) error { return unix.SetsockoptUint64(fd, unix.AF_VSOCK, opt, v) })
}

// SetBufferSize sets the connection's receive buffer
// (SO_VM_SOCKETS_BUFFER_SIZE; the kernel's default is 256 KiB), raising its
// maximum (or lowering its minimum) where n is outside them. The peer
// learns the new size with the next packet it receives.
func (c *Conn) SetBufferSize(n uint64) error {
	return c.opError("set", setBufferSize(c.c, n))
}

// BufferSize returns the connection's receive buffer size and its bounds
// (SO_VM_SOCKETS_BUFFER_SIZE, _MIN_SIZE and _MAX_SIZE).
func (c *Conn) BufferSize() (size, minSize, maxSize uint64, err error) {
	for _, o := range []struct {
		opt int
		v   *uint64
	}{{unix.SO_VM_SOCKETS_BUFFER_SIZE, &size}, {unix.SO_VM_SOCKETS_BUFFER_MIN_SIZE, &minSize}, {unix.SO_VM_SOCKETS_BUFFER_MAX_SIZE, &maxSize}} {
		if *o.v, err = vsockOption(c.c, o.opt); err != nil {
			return 0, 0, 0, c.opError("get", err)
		}
	}
	return size, minSize, maxSize, nil
}

// connect connects c to sa. The caller's deadline, not the kernel's
// connect timeout, ends it: when the kernel gives up (ETIMEDOUT, after
// SO_VM_SOCKETS_CONNECT_TIMEOUT, 2 s by default) while ctx's deadline is
// still ahead, the connect starts again, sending a new connection request.
// Without a deadline the kernel's timeout is the answer.
//
// The socket's timeout is never raised to the deadline: a non-blocking
// connect arms a kernel timer that holds the socket, and with it the
// socket's network namespace, until it fires, even after a cancelled dial
// closed it, and nothing from user space re-arms or cancels it (a second
// connect returns EALREADY). Left at the kernel's 2 s, that is how long a
// cancelled dial can outlive its return in the kernel; raised to a long
// deadline, it would be that long.
func connect(ctx context.Context, c *socket.Conn, sa unix.Sockaddr) (unix.Sockaddr, error) {
	for {
		rsa, err := c.Connect(ctx, sa)
		if !errors.Is(err, unix.ETIMEDOUT) {
			return rsa, err
		}
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		if _, ok := ctx.Deadline(); !ok {
			return nil, err
		}
		// The kernel's timeout put the socket back to unconnected (its
		// request, if still queued, withdrawn): connect again.
	}
}

func listen(ctx context.Context, lc *ListenConfig, t sockType, cid, port uint32) (*Listener, error) {
	laddr := &vsock.Addr{ContextID: cid, Port: port}
	opError := func(op string, err error, local, remote *vsock.Addr) error {
		return opErrorNet(op, t.network(), err, local, remote)
	}
	if err := ctx.Err(); err != nil {
		return nil, opError("listen", err, laddr, nil)
	}
	c, err := newSocket(ctx, nsRef{lc.Namespace, lc.NetNS}, t.unix())
	if err != nil {
		return nil, opError("listen", err, laddr, nil)
	}
	if err := prepare(c, t, lc.BufferSize, lc.Control, laddr); err != nil {
		c.Close()
		return nil, opError("listen", err, laddr, nil)
	}
	if port == 0 {
		port = unix.VMADDR_PORT_ANY
	}
	if err := c.Bind(&unix.SockaddrVM{CID: cid, Port: port}); err != nil {
		c.Close()
		return nil, opError("listen", bindError(err, port), laddr, nil)
	}
	backlog := lc.Backlog
	if backlog <= 0 {
		backlog = unix.SOMAXCONN
	}
	if err := c.Listen(backlog); err != nil {
		c.Close()
		return nil, opError("listen", err, laddr, nil)
	}
	if sa, err := c.Getsockname(); err == nil {
		if vm, ok := sa.(*unix.SockaddrVM); ok {
			laddr = &vsock.Addr{ContextID: vm.CID, Port: vm.Port}
		}
	}
	return &Listener{c: c, typ: t, addr: laddr}, nil
}

// unix is the type's socket(2) type.
func (t sockType) unix() int {
	if t == typeSeqpacket {
		return unix.SOCK_SEQPACKET
	}
	return unix.SOCK_STREAM
}
