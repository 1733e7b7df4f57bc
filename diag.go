package vsockns

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/mdlayher/vsock"
	"github.com/vishvananda/netns"
)

// The sockets of a namespace, as the kernel's vsock_diag module reports
// them: a sock_diag netlink dump (NETLINK_SOCK_DIAG, SOCK_DIAG_BY_FAMILY
// for AF_VSOCK) lists the sockets of the namespace the netlink socket was
// created in, and only those. So the netlink socket is created inside the
// namespace, the one step there, and the dump runs on the caller's
// goroutine.

// ErrDiagUnavailable means the kernel cannot list vsock sockets: the
// vsock_diag module is not loaded (and the kernel could not load it on
// demand). `modprobe vsock_diag` loads it. errors.Is(err,
// errors.ErrUnsupported) also holds.
var ErrDiagUnavailable error = diagUnavailable{}

type diagUnavailable struct{}

func (diagUnavailable) Error() string {
	return "the kernel lists no vsock sockets: the vsock_diag module is not loaded (modprobe vsock_diag)"
}
func (diagUnavailable) Is(target error) bool { return target == errors.ErrUnsupported }

// ErrIncomplete is wrapped by the error of [NodeSockets] when some
// namespaces could not be listed, or some processes' descriptors could
// not be read (so some owners are unknown): the listing it returns with
// the error holds what could be seen, and [IncompleteError] says what
// could not.
var ErrIncomplete = errors.New("the socket listing is incomplete")

// SocketType is a vsock socket's type, the socket(2) type numbers.
type SocketType uint8

const (
	TypeStream    SocketType = 1 // SOCK_STREAM
	TypeDatagram  SocketType = 2 // SOCK_DGRAM (the VMCI transport only)
	TypeSeqpacket SocketType = 5 // SOCK_SEQPACKET
)

// String returns "stream", "dgram" or "seqpacket" (or "type(N)").
func (t SocketType) String() string {
	switch t {
	case TypeStream:
		return "stream"
	case TypeDatagram:
		return "dgram"
	case TypeSeqpacket:
		return "seqpacket"
	}
	return "type(" + strconv.Itoa(int(t)) + ")"
}

// NetID is the type as ss(8) names vsock sockets in its Netid column:
// "v_str", "v_dgr", and "v_seq" for SOCK_SEQPACKET.
func (t SocketType) NetID() string {
	switch t {
	case TypeStream:
		return "v_str"
	case TypeDatagram:
		return "v_dgr"
	case TypeSeqpacket:
		return "v_seq"
	}
	return "v_" + strconv.Itoa(int(t))
}

// MarshalText implements encoding.TextMarshaler with String's names.
func (t SocketType) MarshalText() ([]byte, error) { return []byte(t.String()), nil }

// SocketState is a vsock socket's state (the kernel's sk_state, which
// vsock keeps in the numbering of TCP's states).
type SocketState uint8

const (
	StateConnected   SocketState = 1  // TCP_ESTABLISHED
	StateConnecting  SocketState = 2  // TCP_SYN_SENT: connect(2) in progress
	StateUnconnected SocketState = 7  // TCP_CLOSE: bound, not (or no longer) connected
	StateListening   SocketState = 10 // TCP_LISTEN
	StateClosing     SocketState = 11 // TCP_CLOSING: the connection is being torn down
)

// stateNames are ss(8)'s names of the states, indexed by number.
var stateNames = [...]string{"UNKNOWN", "ESTAB", "SYN-SENT", "SYN-RECV", "FIN-WAIT-1", "FIN-WAIT-2",
	"TIME-WAIT", "UNCONN", "CLOSE-WAIT", "LAST-ACK", "LISTEN", "CLOSING"}

// String returns the state as ss(8) prints it: "ESTAB", "SYN-SENT",
// "UNCONN", "LISTEN", "CLOSING" (or "state(N)").
func (s SocketState) String() string {
	if int(s) < len(stateNames) && s != 0 {
		return stateNames[s]
	}
	return "state(" + strconv.Itoa(int(s)) + ")"
}

// MarshalText implements encoding.TextMarshaler with String's names.
func (s SocketState) MarshalText() ([]byte, error) { return []byte(s.String()), nil }

// ParseSocketState parses a name String returns (case-insensitive).
func ParseSocketState(name string) (SocketState, error) {
	for i, n := range stateNames {
		if i > 0 && strings.EqualFold(n, name) {
			return SocketState(i), nil
		}
	}
	return 0, fmt.Errorf("vsockns: unknown socket state %q (want one of %s)", name, strings.Join(stateNames[1:], ", "))
}

// A Socket is one vsock socket as the kernel lists it.
type Socket struct {
	Type  SocketType  `json:"type"`
	State SocketState `json:"state"`
	// Shutdown is the directions shut down: bit 0 receiving, bit 1
	// sending (the kernel's RCV_SHUTDOWN and SEND_SHUTDOWN).
	Shutdown uint8 `json:"shutdown,omitempty"`
	// Local and Remote are the socket's addresses; a listening or
	// unconnected socket's Remote is VMADDR_CID_ANY:VMADDR_PORT_ANY
	// (-1:-1), and so is an unbound Local.
	Local  *vsock.Addr `json:"local"`
	Remote *vsock.Addr `json:"remote"`
	// Inode is the socket's inode number, what /proc/PID/fd shows as
	// socket:[INODE]; Cookie the kernel's socket cookie.
	Inode  uint64 `json:"inode"`
	Cookie uint64 `json:"cookie"`
}

// Sockets lists the vsock sockets of the namespace ns refers to (the zero
// handle and netns.None(): the calling thread's), through the vsock_diag
// module: those bound (listening, or bound and not connected) and those
// connected, connecting or closing; a socket that was never bound nor
// connected is not listed. Without vsock_diag it fails with
// [ErrDiagUnavailable].
func Sockets(ctx context.Context, ns netns.NsHandle) ([]Socket, error) {
	return listSockets(ctx, nsRef{h: ns})
}

// Sockets lists the vsock sockets of n; see [Sockets].
func (n *Namespace) Sockets(ctx context.Context) ([]Socket, error) {
	return listSockets(ctx, nsRef{n: n})
}

// A Process is a process holding a descriptor of a socket.
type Process struct {
	PID     int    `json:"pid"`
	Command string `json:"command"` // /proc/PID/comm
}

// NamespaceInfo describes a network namespace found on the node.
type NamespaceInfo struct {
	ID NamespaceID `json:"id"`
	// Names are its names under /run/netns (what `ip netns` lists);
	// Paths its other bind mounts (such as a container runtime's
	// /run/docker/netns/ID).
	Names []string `json:"names,omitempty"`
	Paths []string `json:"paths,omitempty"`
	// Mode is its vsock mode; zero on a kernel without vsock
	// namespaces.
	Mode Mode `json:"mode,omitempty"`
	// PIDs are the processes whose network namespace it is.
	PIDs []int `json:"pids,omitempty"`
	// Held reports that some process holds a descriptor of it.
	Held bool `json:"held,omitempty"`
}

// Name is the namespace's first name under /run/netns, or its first other
// bind mount's path, or its ID.
func (ni *NamespaceInfo) Name() string {
	switch {
	case len(ni.Names) > 0:
		return ni.Names[0]
	case len(ni.Paths) > 0:
		return ni.Paths[0]
	}
	return ni.ID.String()
}

// A NodeSocket is a socket of a [NodeListing]: its namespace and the
// processes that hold it.
type NodeSocket struct {
	Socket
	Namespace *NamespaceInfo `json:"namespace"`
	// Owners are the processes holding a descriptor of the socket, by PID.
	// A socket no process holds (closed, still being torn down, or
	// accepted by the kernel and not yet by a program) has none.
	Owners []Process `json:"owners,omitempty"`
}

// A NodeListing is every vsock socket of the node, namespace by namespace.
type NodeListing struct {
	// Namespaces are the namespaces listed, each once, in the order of
	// their IDs' inode numbers.
	Namespaces []*NamespaceInfo `json:"namespaces"`
	// Sockets are their sockets, by namespace in that order.
	Sockets []NodeSocket `json:"sockets"`
}

// NamespaceError is a namespace that could not be listed.
type NamespaceError struct {
	Namespace *NamespaceInfo
	Err       error
}

func (e *NamespaceError) Error() string {
	return fmt.Sprintf("network namespace %s: %v", e.Namespace.Name(), e.Err)
}

func (e *NamespaceError) Unwrap() error { return e.Err }

// IncompleteError is [NodeSockets]'s error when the listing misses
// something: namespaces it found but could not list or not open (their
// IDs known, or, for a process's namespace that could not be opened, the
// PIDs), and processes whose descriptors it could not read (their
// sockets' owners are unknown). errors.Is(err, ErrIncomplete) holds, and
// so does errors.Is with each namespace's error.
type IncompleteError struct {
	Namespaces []*NamespaceError
	// UnreadPIDs are the processes whose descriptors could not be read.
	UnreadPIDs []int
	// Unopened are the processes whose network namespace could not be
	// opened (so which one it is, and its sockets, are unknown).
	Unopened []int
}

func (e *IncompleteError) Error() string {
	var parts []string
	if n := len(e.Namespaces); n > 0 {
		first := e.Namespaces[0].Error()
		if n > 1 {
			first += fmt.Sprintf(" (and %d more namespaces)", n-1)
		}
		parts = append(parts, fmt.Sprintf("%d namespaces not listed: %s", n, first))
	}
	if n := len(e.Unopened); n > 0 {
		parts = append(parts, fmt.Sprintf("the network namespaces of %d processes could not be opened (pid %d ...)", n, e.Unopened[0]))
	}
	if n := len(e.UnreadPIDs); n > 0 {
		parts = append(parts, fmt.Sprintf("the descriptors of %d processes could not be read, so owners may be missing (pid %d ...)", n, e.UnreadPIDs[0]))
	}
	return "vsockns: " + ErrIncomplete.Error() + ": " + strings.Join(parts, "; ")
}

func (e *IncompleteError) Unwrap() []error {
	errs := []error{ErrIncomplete}
	for _, ne := range e.Namespaces {
		errs = append(errs, ne)
	}
	return errs
}

// NodeSockets lists the vsock sockets of every network namespace this
// process can find, each namespace once however many ways it is found:
// those of all processes (/proc/PID/ns/net), those held by a process's
// descriptor (/proc/PID/fd), and those bind-mounted in this mount namespace
// (ip netns's /run/netns/NAME, a container runtime's path: every nsfs
// mount in /proc/self/mountinfo). Each socket comes with its namespace
// (identity, names, mode) and the processes holding it (found through
// /proc/PID/fd).
//
// What it cannot see, it says: if some namespace cannot be listed (an
// unprivileged caller cannot enter other users' namespaces, nor open
// their processes'), or some process's descriptors cannot be read, it
// returns the listing of what it could see together with an
// [*IncompleteError]. Without vsock_diag it fails with
// [ErrDiagUnavailable] and no listing.
func NodeSockets(ctx context.Context) (*NodeListing, error) { return nodeSockets(ctx) }

// SocketOwners returns the processes holding a descriptor of each socket,
// keyed by the socket's inode ([Socket.Inode]), from every process's
// /proc/PID/fd. Processes whose descriptors cannot be read (another
// user's, for an unprivileged caller) make it return what it found with
// an [*IncompleteError] naming them.
func SocketOwners() (map[uint64][]Process, error) { return socketOwners() }
