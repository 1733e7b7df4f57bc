// Package vsockns makes Linux AF_VSOCK sockets network-namespace aware.
//
// Since Linux 7.0 every network namespace has a vsock mode (see [Mode]):
// a global namespace shares CIDs, ports and reach with every other global
// namespace, as all of vsock did before; a local namespace has CIDs and
// ports of its own and reaches nothing outside itself. A socket belongs to
// the namespace of the thread that called socket(2), and /dev/vhost-vsock to
// the namespace of the thread that opened it, so a program that serves or
// dials VMs living in other namespaces has to create them there.
//
// This package does that, and nothing more, inside the target namespace: a
// locked OS thread enters the namespace, creates the socket, and comes back;
// connect, accept and all I/O then run on ordinary goroutines through Go's
// network poller. A thread that cannot be moved back is never reused.
//
// [Dialer] and [ListenConfig] mirror package net; [Dial] and [Listen] are
// their zero values' shortcuts. Addresses are [*vsock.Addr] values from
// github.com/mdlayher/vsock, and namespaces are [netns.NsHandle] values from
// github.com/vishvananda/netns.
//
// # Which namespace
//
// Every function that takes a [netns.NsHandle] treats the zero handle and
// [netns.None]() (-1) as "the namespace of the calling thread": no switch
// happens. Any other negative value is refused with an error wrapping
// syscall.EBADF. A non-negative value must be an open file descriptor of a
// network namespace (from [netns.GetFromName], [netns.GetFromPath],
// [NamespaceFromPID], [NewNamespace], ...). The handle is only used while the
// call runs; closing it afterwards does not affect sockets created through
// it.
//
// A [Namespace] is the owning alternative for long-lived programs: it holds
// a descriptor of its own and the namespace's identity ([NamespaceID]), so
// the caller's handle being closed and its number reused for another
// namespace changes nothing, and it fails after Close instead of meaning
// the caller's namespace. [Dialer.NetNS] and [ListenConfig.NetNS] take one.
//
// # Errors
//
// Errors of sockets are [*net.OpError] values with Net "vsock" that wrap the
// system call error, so errors.Is(err, syscall.ECONNRESET) works; errors of
// the namespace and mode functions wrap [ErrNotSupported],
// [ErrChildModeLocked], [ErrModeNotPermitted] or [ErrCIDInUse] together with
// the errno the kernel returned.
//
// On systems other than Linux every function returns an error wrapping
// [ErrNotSupported].
package vsockns

import "errors"

// Sentinel errors. Each is wrapped together with the underlying errno (if
// any), so both errors.Is(err, vsockns.ErrChildModeLocked) and
// errors.Is(err, syscall.EBUSY) hold.
var (
	// ErrNotSupported means the kernel has no vsock network namespaces
	// (Linux < 7.0) or lacks one of their sysctls, vsock is not available
	// (module not loaded), or the platform is not Linux. The error's text
	// says which. errors.Is(err, errors.ErrUnsupported) also holds.
	ErrNotSupported error = notSupported{}

	// ErrChildModeLocked means child_ns_mode was already written with a
	// different value: it can be written once per namespace (EBUSY).
	ErrChildModeLocked = errors.New("child_ns_mode already set to a different value")

	// ErrModeNotPermitted means a local namespace tried to give its children
	// global mode (EPERM).
	ErrModeNotPermitted = errors.New("a local namespace cannot create global children")

	// ErrCIDInUse means the guest CID is already claimed in that namespace's
	// CID pool (EADDRINUSE).
	ErrCIDInUse = errors.New("guest CID already in use")

	// ErrUserNamespacesDisabled means the system does not let this process
	// make a user namespace: the error's text names the setting
	// (kernel.unprivileged_userns_clone, user.max_user_namespaces,
	// user.max_net_namespaces, or AppArmor's
	// kernel.apparmor_restrict_unprivileged_userns).
	ErrUserNamespacesDisabled = errors.New("user namespaces are not available to this process")

	// ErrMessageCut means a write on a SOCK_SEQPACKET connection ended
	// (at its deadline, or interrupted) before its whole message was
	// sent: the peer may have received the start of it, and the
	// connection takes no more writes. See Conn.WriteMsg.
	ErrMessageCut = errors.New("a SOCK_SEQPACKET write ended part-way, the peer may have the start of its message; the connection takes no more writes")
)

type notSupported struct{}

func (notSupported) Error() string        { return "vsock network namespaces not supported" }
func (notSupported) Is(target error) bool { return target == errors.ErrUnsupported }
