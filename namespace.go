package vsockns

import (
	"fmt"

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
// child_ns_mode: it creates a private parent namespace, sets the parent's
// child_ns_mode to m, creates the new namespace from a thread inside the
// parent, and lets the parent go.
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

// NameError reports an unusable namespace name.
type NameError struct {
	Name   string
	Reason string
}

func (e *NameError) Error() string {
	return fmt.Sprintf("vsockns: invalid namespace name %q: %s", e.Name, e.Reason)
}
