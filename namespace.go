package vsockns

import (
	"context"
	"fmt"
	"net"

	"github.com/vishvananda/netns"
)

// NewNamespace creates a network namespace whose vsock mode is m and
// returns a handle to it; close the handle when done (the namespace lives as
// long as a handle, a process or a bind mount refers to it). The calling
// thread and goroutine are not moved into it.
//
// The kernel gives a new namespace the child_ns_mode of the namespace its
// creating thread is in, and child_ns_mode can be written only once. So
// NewNamespace never writes the caller's (or the init namespace's)
// child_ns_mode: the process keeps one private parent namespace per mode
// (created the first time it is needed, its child_ns_mode written once to
// that mode, held by a descriptor of this process only: no bind mount, so
// `ip netns` does not list it), and each call creates one namespace from a
// thread moved into that parent. The caller's mode rules still hold: a
// caller whose own namespace gives local children (a local namespace, or
// a global one whose child_ns_mode is local) gets ErrModeNotPermitted
// (with EPERM) for ModeGlobal, as it would creating the namespace itself.
//
// On kernels without vsock namespaces it fails with ErrNotSupported rather
// than return a namespace that is not isolated.
func NewNamespace(m Mode) (netns.NsHandle, error) {
	if !m.Valid() {
		return netns.None(), &ModeError{Value: m.String()}
	}
	return newNamespace(m)
}

// NewNamedNamespace is NewNamespace plus a bind mount at /run/netns/name,
// as `ip netns add` makes: `ip netns exec name ...` and netns.GetFromName
// see it, and it outlives the returned handle until DeleteNamedNamespace.
// A taken name fails with an error for which errors.Is(err, fs.ErrExist).
func NewNamedNamespace(name string, m Mode) (netns.NsHandle, error) {
	if !m.Valid() {
		return netns.None(), &ModeError{Value: m.String()}
	}
	return newNamedNamespace(name, m)
}

// DeleteNamedNamespace removes the bind mount /run/netns/name, like
// `ip netns delete`. The namespace itself goes away once nothing else
// refers to it; connections made in it keep working.
func DeleteNamedNamespace(name string) error {
	return deleteNamedNamespace(name)
}

// NamespaceFromPID returns a handle to the network namespace of process
// pid. It opens a pidfd first and checks after opening /proc/PID/ns/net that
// the process is still alive, so a PID reused after the process exited is
// reported as an error instead of yielding another process's namespace.
func NamespaceFromPID(pid int) (netns.NsHandle, error) {
	return namespaceFromPID(pid)
}

// NamespaceFromPidfd returns a handle to the network namespace of the
// process pidfd refers to (see pidfd_open(2)); it fails if that process has
// exited.
func NamespaceFromPidfd(pidfd int) (netns.NsHandle, error) {
	return namespaceFromPidfd(pidfd, -1)
}

// OpenNamespace returns an owning reference to the namespace h refers to,
// with a descriptor of its own: h may be closed (and its number reused)
// afterwards. The zero handle and netns.None() mean the calling thread's
// namespace. Any other negative handle fails with an error wrapping
// syscall.EBADF, and a descriptor that is not a network namespace with one
// wrapping syscall.EINVAL.
func OpenNamespace(h netns.NsHandle) (*Namespace, error) { return openNamespace(h) }

// OpenNamespacePath returns an owning reference to the network namespace
// at path: a bind mount such as /run/netns/NAME (what `ip netns add`
// makes) or /proc/PID/ns/net.
func OpenNamespacePath(path string) (*Namespace, error) { return openNamespacePath(path) }

// OpenNamespacePID returns an owning reference to the network namespace of
// process pid, checked through a pidfd as [NamespaceFromPID] is: a PID that
// was reused is an error, never another process's namespace.
func OpenNamespacePID(pid int) (*Namespace, error) { return openNamespacePID(pid) }

// CreateNamespace is [NewNamespace] returning an owning reference.
func CreateNamespace(m Mode) (*Namespace, error) {
	if !m.Valid() {
		return nil, &ModeError{Value: m.String()}
	}
	return createNamespace(m)
}

// NameError reports an unusable namespace name.
type NameError struct {
	Name   string
	Reason string
}

func (e *NameError) Error() string {
	return fmt.Sprintf("vsockns: invalid namespace name %q: %s", e.Name, e.Reason)
}

// NamespaceID identifies a namespace for as long as it exists: the device
// and inode numbers of its nsfs file (what `readlink /proc/PID/ns/net`
// shows as net:[INODE]). Two references to one namespace have equal IDs;
// unlike a PID, an ID is never reused while the namespace lives. It is
// comparable, for use as a map key.
type NamespaceID struct {
	Dev, Ino uint64
}

// String formats id the way /proc/PID/ns/net names the namespace.
func (id NamespaceID) String() string { return fmt.Sprintf("net:[%d]", id.Ino) }

// ErrNamespaceClosed is the error of an operation on a closed (or zero)
// Namespace. errors.Is(err, net.ErrClosed) also holds.
var ErrNamespaceClosed error = closedError{}

type closedError struct{}

func (closedError) Error() string        { return "vsockns: use of a closed network namespace reference" }
func (closedError) Is(target error) bool { return target == net.ErrClosed }

// ID returns the namespace's identity (zero for the zero Namespace).
func (n *Namespace) ID() NamespaceID { return n.id }

// String describes the namespace for messages: "network namespace net:[INODE]".
func (n *Namespace) String() string {
	if n == nil || n.id == (NamespaceID{}) {
		return "no network namespace"
	}
	return "network namespace " + n.id.String() + n.kind
}

// Dialer returns a Dialer whose sockets are created in n.
func (n *Namespace) Dialer() *Dialer { return &Dialer{NetNS: n} }

// ListenConfig returns a ListenConfig whose listeners are created in n.
func (n *Namespace) ListenConfig() *ListenConfig { return &ListenConfig{NetNS: n} }

// Mode returns n's vsock mode; see [NamespaceMode].
func (n *Namespace) Mode() (Mode, error) { return readMode(nsRef{n: n}, "ns_mode") }

// ChildMode returns n's child_ns_mode; see [ChildMode].
func (n *Namespace) ChildMode() (Mode, error) { return readMode(nsRef{n: n}, "child_ns_mode") }

// SetChildMode writes n's child_ns_mode; see [SetChildMode].
func (n *Namespace) SetChildMode(m Mode) error {
	if !m.Valid() {
		return &ModeError{Value: m.String()}
	}
	return setChildMode(nsRef{n: n}, m)
}

// G2HFallback reports n's g2h_fallback sysctl; see [G2HFallback].
func (n *Namespace) G2HFallback() (bool, error) { return g2hFallback(nsRef{n: n}) }

// SetG2HFallback writes n's g2h_fallback sysctl.
func (n *Namespace) SetG2HFallback(on bool) error { return setG2HFallback(nsRef{n: n}, on) }

// OpenVhost opens /dev/vhost-vsock in n; see [OpenVhost].
func (n *Namespace) OpenVhost() (*Vhost, error) { return openVhost(nsRef{n: n}) }

// AllocateGuestCID claims the first free guest CID in [lo, hi] of n's CID
// pool; see [AllocateGuestCID].
func (n *Namespace) AllocateGuestCID(lo, hi uint32) (*Vhost, uint32, error) {
	return allocateGuestCID(nsRef{n: n}, lo, hi)
}

// nsRef is the namespace an entry point was given: a handle (the zero
// handle and netns.None() meaning the calling thread's namespace) or an
// owning reference, never both.
type nsRef struct {
	h netns.NsHandle
	n *Namespace
}

// CreateUserNamespace returns a network namespace of vsock mode m that
// belongs to a new user namespace of its own, for a process that cannot
// enter namespaces (one without privileges, which cannot setns(2) into a
// network namespace nor, being multi-threaded, enter a user namespace).
// A local one gives the caller's VMs CIDs and ports that no other user's
// sockets reach, and that no other user's VMs collide with.
//
// A helper process performs what must happen inside the namespace: it is
// this program's own binary, started again (from /proc/self/exe) with
// CLONE_NEWUSER|CLONE_NEWNET, the caller's user and group mapped to root
// of the new user namespace and nobody else. It runs before main, in this
// package's initialisation, when it finds [HelperEnv] in its environment;
// the program needs no code of its own for it. It executes itself once
// more when mapped (to have its capabilities) and, for a local namespace,
// once more from inside the namespace it made, so that all its threads
// live there. The helper creates sockets (in batches for
// [Namespace.Prepare]), opens [VhostDevice] and reads sysctls in the
// namespace and hands back descriptors over a socket pair, for any number
// of goroutines at once; it dies with the process, and Close ends it. The namespace then lives as
// long as sockets and devices made in it are open: connections and VMs
// keep working.
//
// The Namespace does everything other Namespaces do (Dialer, ListenConfig,
// OpenVhost, AllocateGuestCID, modes), each call honouring its context
// while it waits for the helper. Its Handle refers to the namespace, but
// entering it fails with EPERM for the unprivileged. A root process may use
// CreateUserNamespace too, for a namespace not tied to its own user
// namespace.
//
// The namespace is made from the process's own namespace (that of its
// threads outside this package's calls): ModeLocal always can be, ModeGlobal
// only when that namespace's child_ns_mode is global (else
// [ErrModeNotPermitted]). On kernels without vsock namespaces it fails with
// [ErrNotSupported]; where user namespaces are disabled, with
// [ErrUserNamespacesDisabled], naming the setting. vsock ports below 1024
// cannot be bound in it (EACCES): the kernel asks for CAP_NET_BIND_SERVICE
// in the initial user namespace.
func CreateUserNamespace(ctx context.Context, m Mode) (*Namespace, error) {
	if !m.Valid() {
		return nil, &ModeError{Value: m.String()}
	}
	return createUserNamespace(ctx, m)
}

// Serve makes n usable by other processes of the same user through l, a
// listener of network "unixpacket" (net.ListenUnix): each client's
// [DialNamespace] gets a Namespace that creates its sockets and devices in
// n, as the helper of [CreateUserNamespace] serves its parent. It is how
// more than one process reaches a namespace that only one process can
// enter or hold: say, a VMM launcher's namespace, dialed from a shell.
// Clients of other users are refused (their DialNamespace fails with
// EACCES); the socket file's permissions are a first gate, not the only
// one.
//
// Serve returns when ctx ends (with ctx's error), or when l fails; l is
// closed then, and so are the clients' connections (their Namespaces then
// fail, while their sockets and devices keep working).
func (n *Namespace) Serve(ctx context.Context, l *net.UnixListener) error { return n.serve(ctx, l) }

// DialNamespace connects to a namespace that [Namespace.Serve] serves at
// path and returns it as a Namespace: its Dialer, ListenConfig, OpenVhost
// and modes act in the served namespace. Close it when done; it does not
// end the server.
func DialNamespace(ctx context.Context, path string) (*Namespace, error) {
	return dialNamespace(ctx, path)
}
