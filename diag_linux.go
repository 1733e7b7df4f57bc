//go:build linux

package vsockns

import (
	"cmp"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"iter"
	"os"
	"slices"
	"syscall"
	"time"

	"github.com/mdlayher/netlink"
	"github.com/mdlayher/socket"
	"github.com/mdlayher/vsock"
	"golang.org/x/sys/unix"
)

// sock_diag's numbers (linux/sock_diag.h, linux/vm_sockets_diag.h).
const (
	sockDiagByFamily = 20 // SOCK_DIAG_BY_FAMILY
	diagReqLen       = 24 // struct vsock_diag_req
	diagMsgLen       = 32 // struct vsock_diag_msg
)

// diagSocket creates a NETLINK_SOCK_DIAG socket on the calling thread,
// non-blocking and close-on-exec: it answers for the thread's namespace.
func diagSocket() (int, error) {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, unix.NETLINK_SOCK_DIAG)
	if err != nil {
		return -1, os.NewSyscallError("socket", err)
	}
	return fd, nil
}

func (in inside) diagSocket(ctx context.Context) (int, error) {
	fd := -1
	err := in.run(ctx, func() (err error) {
		fd, err = diagSocket()
		return err
	})
	if err != nil && fd >= 0 {
		unix.Close(fd)
		fd = -1
	}
	return fd, err
}

func listSockets(ctx context.Context, ref nsRef) ([]Socket, error) {
	b, err := ref.backend()
	if err != nil {
		return nil, err
	}
	fd, err := b.diagSocket(ctx)
	if err != nil {
		return nil, fmt.Errorf("vsockns: list sockets in %s: %w", b, diagError(err))
	}
	socks, err := dumpSockets(ctx, fd)
	if err != nil {
		return nil, fmt.Errorf("vsockns: list sockets in %s: %w", b, err)
	}
	return socks, nil
}

// diagError explains the errors of creating the netlink socket and of the
// dump: the kernel answers a family without a sock_diag handler with
// ENOENT (after trying to load the module), and a kernel without sock_diag
// itself refuses the netlink protocol.
func diagError(err error) error {
	switch {
	case errors.Is(err, unix.ENOENT):
		return &explained{err, ErrDiagUnavailable.Error(), ErrDiagUnavailable}
	case errors.Is(err, unix.EPROTONOSUPPORT):
		return &explained{err, "the kernel has no sock_diag (NETLINK_SOCK_DIAG), so it lists no vsock sockets", ErrDiagUnavailable}
	}
	return explainSetns(err)
}

// dumpSockets runs a vsock_diag dump on fd, a NETLINK_SOCK_DIAG socket it
// takes over (and closes), on the calling goroutine.
func dumpSockets(ctx context.Context, fd int) ([]Socket, error) {
	sc, err := socket.New(fd, "netlink")
	if err != nil {
		unix.Close(fd)
		return nil, err
	}
	if d, ok := ctx.Deadline(); ok {
		sc.SetDeadline(d)
	}
	stop := context.AfterFunc(ctx, func() { sc.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	c := netlink.NewConn(&diagConn{c: sc, ctx: ctx}, 0)
	defer c.Close()

	req := make([]byte, diagReqLen)
	req[0] = unix.AF_VSOCK
	binary.NativeEndian.PutUint32(req[4:], ^uint32(0)) // every state
	msgs, err := c.Execute(netlink.Message{
		Header: netlink.Header{Type: sockDiagByFamily, Flags: netlink.Request | netlink.Dump},
		Data:   req,
	})
	if err != nil {
		if cerr := ctx.Err(); cerr != nil && errors.Is(err, os.ErrDeadlineExceeded) {
			return nil, cerr
		}
		return nil, diagError(err)
	}
	socks := make([]Socket, 0, len(msgs))
	for _, m := range msgs {
		s, err := parseDiagMsg(m.Data)
		if err != nil {
			return nil, err
		}
		socks = append(socks, s)
	}
	sortSockets(socks)
	return socks, nil
}

// parseDiagMsg decodes a struct vsock_diag_msg.
func parseDiagMsg(b []byte) (Socket, error) {
	if len(b) < diagMsgLen {
		return Socket{}, fmt.Errorf("vsockns: vsock_diag: a %d-byte message, want %d", len(b), diagMsgLen)
	}
	if b[0] != unix.AF_VSOCK {
		return Socket{}, fmt.Errorf("vsockns: vsock_diag: a message of family %d", b[0])
	}
	u32 := func(off int) uint32 { return binary.NativeEndian.Uint32(b[off:]) }
	return Socket{
		Type:     SocketType(b[1]),
		State:    SocketState(b[2]),
		Shutdown: b[3],
		Local:    &vsock.Addr{ContextID: u32(4), Port: u32(8)},
		Remote:   &vsock.Addr{ContextID: u32(12), Port: u32(16)},
		Inode:    uint64(u32(20)),
		// sock_diag_save_cookie: the low half first.
		Cookie: uint64(u32(24)) | uint64(u32(28))<<32,
	}, nil
}

// sortSockets orders sockets by local address, then remote, then inode.
func sortSockets(socks []Socket) {
	slices.SortFunc(socks, func(a, b Socket) int {
		return cmp.Or(cmp.Compare(a.Local.ContextID, b.Local.ContextID), cmp.Compare(a.Local.Port, b.Local.Port),
			cmp.Compare(a.Remote.ContextID, b.Remote.ContextID), cmp.Compare(a.Remote.Port, b.Remote.Port),
			cmp.Compare(a.Inode, b.Inode))
	})
}

// diagConn is the transport of a netlink.Conn over a socket made elsewhere
// (netlink.Dial would create its own, in the caller's namespace): sends
// and receives through Go's poller, honouring ctx. The kernel's framing
// of a received datagram is split by the standard library's parser.
type diagConn struct {
	c   *socket.Conn
	ctx context.Context
}

// toKernel is the kernel's netlink address: a new one each time, as
// unix.Sendto writes its raw form into the value it is given.
func toKernel() unix.Sockaddr { return &unix.SockaddrNetlink{Family: unix.AF_NETLINK} }

func (d *diagConn) Close() error { return d.c.Close() }

func (d *diagConn) Send(m netlink.Message) error {
	b, err := m.MarshalBinary()
	if err != nil {
		return err
	}
	return d.c.Sendto(d.ctx, b, 0, toKernel())
}

func (d *diagConn) SendMessages(ms []netlink.Message) error {
	var buf []byte
	for _, m := range ms {
		b, err := m.MarshalBinary()
		if err != nil {
			return err
		}
		buf = append(buf, b...)
	}
	return d.c.Sendto(d.ctx, buf, 0, toKernel())
}

func (d *diagConn) Receive() ([]netlink.Message, error) {
	var ms []netlink.Message
	for m, err := range d.ReceiveIter() {
		if err != nil {
			return nil, err
		}
		ms = append(ms, m)
	}
	return ms, nil
}

// ReceiveIter reads one datagram and yields its messages.
func (d *diagConn) ReceiveIter() iter.Seq2[netlink.Message, error] {
	return func(yield func(netlink.Message, error) bool) {
		// The kernel's dump skbs are at most 32 KiB; a peek tells the
		// size all the same.
		n, _, _, _, err := d.c.Recvmsg(d.ctx, nil, nil, unix.MSG_PEEK|unix.MSG_TRUNC)
		if err != nil {
			yield(netlink.Message{}, err)
			return
		}
		buf := make([]byte, max(n, unix.NLMSG_HDRLEN))
		n, _, flags, _, err := d.c.Recvmsg(d.ctx, buf, nil, 0)
		if err != nil {
			yield(netlink.Message{}, err)
			return
		}
		if flags&unix.MSG_TRUNC != 0 {
			yield(netlink.Message{}, fmt.Errorf("vsockns: netlink: datagram truncated"))
			return
		}
		msgs, err := syscall.ParseNetlinkMessage(buf[:n])
		if err != nil {
			yield(netlink.Message{}, err)
			return
		}
		for _, m := range msgs {
			h := m.Header
			if !yield(netlink.Message{Header: netlink.Header{Length: h.Len, Type: netlink.HeaderType(h.Type),
				Flags: netlink.HeaderFlags(h.Flags), Sequence: h.Seq, PID: h.Pid}, Data: m.Data}, nil) {
				return
			}
		}
	}
}
