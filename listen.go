package vsockns

import (
	"context"
	"net"
	"os"
	"syscall"

	"github.com/mdlayher/vsock"

	"github.com/vishvananda/netns"
)

// ListenConfig creates vsock listeners inside a network namespace. The zero
// value listens in the calling thread's namespace.
type ListenConfig struct {
	// Namespace is the network namespace the listening socket is created
	// in. In a local namespace only peers of that namespace can connect.
	// The zero handle and netns.None() mean the calling thread's namespace.
	Namespace netns.NsHandle

	// NetNS, if not nil, is the namespace the listener is created in, as an
	// owning reference (see Namespace); then Namespace must be left zero.
	NetNS *Namespace

	// Backlog is listen(2)'s backlog; zero means SOMAXCONN.
	Backlog int

	// BufferSize, if not zero, is the listening socket's receive buffer
	// (SO_VM_SOCKETS_BUFFER_SIZE, its bounds adjusted as needed), which
	// accepted connections inherit. Zero keeps the kernel's 256 KiB.
	BufferSize uint64

	// Control, if not nil, is called after the socket is created in the
	// namespace and before it is bound, with network "vsock" or
	// "vsockpacket" and the
	// address to listen on, as net.ListenConfig's Control is. An error from
	// it ends the listen.
	Control func(network, address string, c syscall.RawConn) error
}

// Listen announces on address of the named network, "vsock" (streams) or
// "vsockpacket" (SOCK_SEQPACKET, as ListenSeqpacket).
// address is "CID:PORT" as for Dialer.DialContext, or ":PORT" for any CID
// (VMADDR_CID_ANY, which serves loopback and vhost-vsock peers alike and
// needs no /dev/vsock); port 0 picks a free port. The returned net.Listener
// is a *Listener.
func (lc *ListenConfig) Listen(ctx context.Context, network, address string) (net.Listener, error) {
	addr, t, err := resolve("listen", network, address)
	if err != nil {
		return nil, err
	}
	l, err := lc.listen(ctx, t, addr.ContextID, addr.Port)
	if err != nil {
		return nil, err
	}
	return l, nil
}

// ListenVsock listens on cid:port inside the ListenConfig's namespace. ctx
// is checked before the socket is created; it does not affect the listener
// once it exists. A nil ctx is an error, as for DialVsock.
func (lc *ListenConfig) ListenVsock(ctx context.Context, cid, port uint32) (*Listener, error) {
	return lc.listen(ctx, typeStream, cid, port)
}

// ListenSeqpacket is ListenVsock for SOCK_SEQPACKET connections (network
// "vsockpacket"); the listener accepts them as such.
func (lc *ListenConfig) ListenSeqpacket(ctx context.Context, cid, port uint32) (*Listener, error) {
	return lc.listen(ctx, typeSeqpacket, cid, port)
}

func (lc *ListenConfig) listen(ctx context.Context, t sockType, cid, port uint32) (*Listener, error) {
	if ctx == nil {
		return nil, &net.OpError{Op: "listen", Net: t.network(), Addr: &vsock.Addr{ContextID: cid, Port: port}, Err: errNilContext}
	}
	return listen(ctx, lc, t, cid, port)
}

// Listen listens on port for connections to any CID (VMADDR_CID_ANY) inside
// namespace ns; port 0 picks a free port.
func Listen(ns netns.NsHandle, port uint32) (*Listener, error) {
	return ListenContextID(ns, vmaddrCIDAny, port)
}

// ListenContextID listens on cid:port inside namespace ns.
func ListenContextID(ns netns.NsHandle, cid, port uint32) (*Listener, error) {
	lc := ListenConfig{Namespace: ns}
	return lc.ListenVsock(context.Background(), cid, port)
}

// ListenSeqpacket listens for SOCK_SEQPACKET connections on port, to any
// CID, inside namespace ns; port 0 picks a free port.
func ListenSeqpacket(ns netns.NsHandle, port uint32) (*Listener, error) {
	lc := ListenConfig{Namespace: ns}
	return lc.ListenSeqpacket(context.Background(), vmaddrCIDAny, port)
}

// FileListener returns a Listener for the listening AF_VSOCK stream socket
// open as f (from systemd socket activation, another process, Listener.File),
// with a descriptor of its own: closing f afterwards does not affect it. A
// descriptor that is not an AF_VSOCK socket, not a stream socket or not
// listening is refused with an error saying which (EAFNOSUPPORT,
// EPROTOTYPE, EINVAL; ENOTSOCK or EBADF for what is no socket at all).
func FileListener(f *os.File) (*Listener, error) { return fileListener(f, typeStream) }

// FileSeqpacketListener is FileListener for a listening AF_VSOCK
// SOCK_SEQPACKET socket; a stream socket is refused (EPROTOTYPE).
func FileSeqpacketListener(f *os.File) (*Listener, error) {
	return fileListener(f, typeSeqpacket)
}
