package vsockns

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/mdlayher/vsock"
	"github.com/vishvananda/netns"
)

// Network is the network name of vsock stream sockets (SOCK_STREAM) that
// this package's Dialer and ListenConfig accept and report in errors.
const Network = "vsock"

// NetworkSeqpacket is the network name of vsock SOCK_SEQPACKET sockets:
// connections, like streams, that keep the boundaries of the messages
// written. The name follows package net's "unixpacket" for Unix
// SOCK_SEQPACKET sockets. (Addresses are *vsock.Addr whatever the type;
// their Network method says "vsock".)
const NetworkSeqpacket = "vsockpacket"

// A Dialer connects to vsock listeners from inside a network namespace.
//
// The zero value dials from the calling thread's namespace with the
// kernel's default connect timeout. A Dialer is safe for concurrent use;
// its fields must not change while it is in use.
type Dialer struct {
	// Namespace is the network namespace the socket is created in, which
	// decides what it can reach. The zero handle and netns.None() mean the
	// calling thread's namespace. The handle must stay open during each
	// dial; the resulting connections do not need it.
	Namespace netns.NsHandle

	// NetNS, if not nil, is the namespace the socket is created in, as an
	// owning reference (see Namespace); then Namespace must be left zero.
	NetNS *Namespace

	// Timeout bounds each dial, like net.Dialer's Timeout. Zero means no
	// timeout beyond the context's. Without any deadline the kernel gives
	// up after its own connect timeout (2 s by default); with one, the
	// deadline ends the dial (see DialVsock).
	Timeout time.Duration

	// Deadline, if non-zero, is an absolute time after which dials fail.
	Deadline time.Time

	// LocalAddr, if not nil, is the address the socket is bound to before
	// it connects (a CID of this machine, or VMADDR_CID_ANY, and a port),
	// like net.Dialer's LocalAddr. Nil lets the kernel pick (any CID, a
	// free port).
	LocalAddr *vsock.Addr

	// ToHost sets VMADDR_FLAG_TO_HOST on the address dialed: the
	// connection goes through the guest-to-host transport (to this
	// machine's hypervisor) even for a CID above 2, as a nested VM's
	// sibling is reached through the host that forwards it. Without a
	// guest-to-host transport the dial fails with ENODEV.
	ToHost bool

	// BufferSize, if not zero, is the socket's receive buffer
	// (SO_VM_SOCKETS_BUFFER_SIZE), set before it connects; its maximum is
	// raised (or minimum lowered) as needed. Zero keeps the kernel's
	// default, 256 KiB, which caps a connection's throughput.
	BufferSize uint64

	// Control, if not nil, is called after the socket is created in the
	// namespace and its options are set, before it connects, with network
	// "vsock" or "vsockpacket" and the address dialed in
	// (*vsock.Addr).String's form, as
	// net.Dialer's Control is. An error from it ends the dial.
	Control func(network, address string, c syscall.RawConn) error
}

// DialContext connects to address on the named network, "vsock" (a stream,
// as DialVsock) or "vsockpacket" (SOCK_SEQPACKET, as DialSeqpacket). Addresses are "CID:PORT", where CID may also be one of the names
// "hypervisor" (0), "local" (1) or "host" (2), or the form *vsock.Addr's
// String method prints ("vm(42):1024"); a "vsock://" prefix is accepted.
// It has the signature of http.Transport.DialContext and gRPC's dialer.
//
// The returned net.Conn is a *Conn.
func (d *Dialer) DialContext(ctx context.Context, network, address string) (net.Conn, error) {
	addr, t, err := resolve("dial", network, address)
	if err != nil {
		return nil, err
	}
	c, err := d.dial(ctx, t, addr.ContextID, addr.Port)
	if err != nil {
		return nil, err // a typed nil *Conn must not become a non-nil net.Conn
	}
	return c, nil
}

// Dial is DialContext with context.Background().
func (d *Dialer) Dial(network, address string) (net.Conn, error) {
	return d.DialContext(context.Background(), network, address)
}

// DialVsock connects to the listener at cid:port from the Dialer's
// namespace.
//
// Only the socket(2) call runs inside the namespace; the connect runs on
// the calling goroutine through Go's network poller and honours ctx. With
// a deadline, the deadline ends the connect: each time the kernel's own
// connect timeout (SO_VM_SOCKETS_CONNECT_TIMEOUT, 2 s by default) passes
// first, the connect starts again with a new connection request. The
// socket's timeout is left as it is, because the kernel keeps a cancelled
// connect's socket, and its namespace, until that timeout: a dial ended by
// its context outlives its return in the kernel by 2 s at most. Without a
// deadline, the kernel's timeout ends the dial (ETIMEDOUT). Dialing
// VMADDR_CID_ANY is refused before any socket exists.
//
// A connect that the namespaces' modes forbid fails with an error for which
// errors.Is(err, syscall.ECONNRESET) holds.
func (d *Dialer) DialVsock(ctx context.Context, cid, port uint32) (*Conn, error) {
	return d.dial(ctx, typeStream, cid, port)
}

// DialSeqpacket is DialVsock for a SOCK_SEQPACKET connection (network
// "vsockpacket"): each Write is one message, each Read returns one (see
// Conn.ReadMsg). Where the kernel has no SOCK_SEQPACKET path to the peer
// (vsock_loopback in a local namespace; a guest whose device did not
// negotiate VIRTIO_VSOCK_F_SEQPACKET) the dial fails with an error for which
// errors.Is(err, syscall.ESOCKTNOSUPPORT) holds.
func (d *Dialer) DialSeqpacket(ctx context.Context, cid, port uint32) (*Conn, error) {
	return d.dial(ctx, typeSeqpacket, cid, port)
}

func (d *Dialer) dial(ctx context.Context, t sockType, cid, port uint32) (*Conn, error) {
	if ctx == nil {
		return nil, dialError(t, cid, port, errNilContext)
	}
	if cid == vmaddrCIDAny {
		return nil, dialError(t, cid, port, &AddrError{Network: t.network(), Address: (&vsock.Addr{ContextID: cid, Port: port}).String(),
			Reason: "VMADDR_CID_ANY (4294967295) is for listening; a dial needs a CID"})
	}
	if d.Timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, d.Timeout)
		defer cancel()
	}
	if !d.Deadline.IsZero() {
		var cancel context.CancelFunc
		ctx, cancel = context.WithDeadline(ctx, d.Deadline)
		defer cancel()
	}
	return dial(ctx, d, t, cid, port)
}

// Dial connects to cid:port from namespace ns. It is the zero Dialer's
// DialVsock with that Namespace and context.Background().
func Dial(ns netns.NsHandle, cid, port uint32) (*Conn, error) {
	return DialContext(context.Background(), ns, cid, port)
}

// DialContext connects to cid:port from namespace ns, honouring ctx.
func DialContext(ctx context.Context, ns netns.NsHandle, cid, port uint32) (*Conn, error) {
	d := Dialer{Namespace: ns}
	return d.DialVsock(ctx, cid, port)
}

// DialSeqpacket connects a SOCK_SEQPACKET socket to cid:port from namespace
// ns. It is the zero Dialer's DialSeqpacket with that Namespace and
// context.Background().
func DialSeqpacket(ns netns.NsHandle, cid, port uint32) (*Conn, error) {
	d := Dialer{Namespace: ns}
	return d.DialSeqpacket(context.Background(), cid, port)
}

// errNilContext is the error of an operation given a nil context; dials,
// listens and accepts treat it alike.
var errNilContext = errors.New("nil context")

func dialError(t sockType, cid, port uint32, err error) error {
	return &net.OpError{Op: "dial", Net: t.network(), Addr: &vsock.Addr{ContextID: cid, Port: port}, Err: err}
}

// AddrError reports a malformed vsock address or a wrong network name.
type AddrError struct {
	Network, Address string
	Reason           string
}

func (e *AddrError) Error() string {
	return fmt.Sprintf("vsockns: %s %q: %s", e.Network, e.Address, e.Reason)
}

// ParseAddr parses a vsock address: "CID:PORT", with CID a number, one of
// "hypervisor", "local", "host", the "vm(42)"-style form of
// (*vsock.Addr).String, or empty (any CID, VMADDR_CID_ANY); an optional
// "vsock://" prefix is removed. PORT is a decimal number. In the "vm(42)"
// form the name must match the number as String prints it ("host(2)",
// not "host(7)" or "vm(2)"), and the number must be there ("vm()" is
// refused).
func ParseAddr(address string) (*vsock.Addr, error) {
	bad := func(reason string) (*vsock.Addr, error) {
		return nil, &AddrError{Network: Network, Address: address, Reason: reason}
	}
	s := strings.TrimPrefix(address, "vsock://")
	i := strings.LastIndexByte(s, ':')
	if i < 0 {
		return bad("missing port (want CID:PORT)")
	}
	host, portStr := s[:i], s[i+1:]
	port, err := strconv.ParseUint(portStr, 10, 32)
	if err != nil {
		return bad("port must be a number from 0 to 4294967295")
	}
	cid, ok := parseCID(host)
	if !ok {
		return bad("CID must be a number, \"hypervisor\", \"local\" or \"host\"")
	}
	return &vsock.Addr{ContextID: cid, Port: uint32(port)}, nil
}

func parseCID(s string) (uint32, bool) {
	if name, num, ok := strings.Cut(s, "("); ok {
		// "host(2)", "vm(42)": the form (*vsock.Addr).String prints. The
		// name must be the one String gives that number.
		num, ok = strings.CutSuffix(num, ")")
		if !ok || num == "" {
			return 0, false
		}
		v, err := strconv.ParseUint(num, 10, 32)
		if err != nil || cidName(uint32(v)) != name {
			return 0, false
		}
		return uint32(v), true
	}
	switch s {
	case "":
		return vmaddrCIDAny, true
	case "hypervisor":
		return vsock.Hypervisor, true
	case "local":
		return vsock.Local, true
	case "host":
		return vsock.Host, true
	}
	v, err := strconv.ParseUint(s, 10, 32)
	return uint32(v), err == nil
}

// cidName is the name (*vsock.Addr).String gives cid.
func cidName(cid uint32) string {
	switch cid {
	case vsock.Hypervisor:
		return "hypervisor"
	case vsock.Local:
		return "local"
	case vsock.Host:
		return "host"
	}
	return "vm"
}

// vmaddrCIDAny is VMADDR_CID_ANY, defined here for all platforms.
const vmaddrCIDAny = ^uint32(0)

// resolve checks network and parses address for op ("dial" or "listen").
func resolve(op, network, address string) (*vsock.Addr, sockType, error) {
	var t sockType
	switch network {
	case Network:
		t = typeStream
	case NetworkSeqpacket:
		t = typeSeqpacket
	default:
		return nil, 0, &net.OpError{Op: op, Net: network, Err: net.UnknownNetworkError(network)}
	}
	a, err := ParseAddr(address)
	if err != nil {
		return nil, 0, &net.OpError{Op: op, Net: network, Err: err}
	}
	if op == "dial" && strings.HasPrefix(strings.TrimPrefix(address, "vsock://"), ":") {
		return nil, 0, &net.OpError{Op: op, Net: network, Err: &AddrError{Network: network, Address: address, Reason: "missing CID"}}
	}
	return a, t, nil
}

// FileConn returns a Conn for the connected AF_VSOCK stream socket open as
// f (handed over by a helper or a parent, or from Conn.File), with a
// descriptor of its own: closing f afterwards does not affect it. Its
// namespace is the one the socket was created in. A descriptor that is not
// a connected AF_VSOCK stream socket is refused with an error saying which
// (EAFNOSUPPORT, EPROTOTYPE, EINVAL for a listener, ENOTCONN; ENOTSOCK or
// EBADF for what is no socket at all).
func FileConn(f *os.File) (*Conn, error) { return fileConn(f, typeStream) }

// FileSeqpacketConn is FileConn for a connected AF_VSOCK SOCK_SEQPACKET
// socket; a stream socket is refused (EPROTOTYPE), as FileConn refuses a
// SOCK_SEQPACKET one.
func FileSeqpacketConn(f *os.File) (*Conn, error) { return fileConn(f, typeSeqpacket) }
