package vsockns

import "github.com/vishvananda/netns"

// The vsock sysctls live in /proc/sys/net/vsock and belong to the network
// namespace of the thread that opens them, so each function below reads or
// writes them from a thread inside ns (see the package documentation for
// what ns may be; the same methods exist on *Namespace).

// NamespaceMode returns ns's vsock mode (ns_mode). It never changes during
// the namespace's life; the init namespace is always ModeGlobal.
// On kernels without vsock namespaces it returns an error wrapping
// ErrNotSupported (not ModeGlobal: callers decide what that means for them).
func NamespaceMode(ns netns.NsHandle) (Mode, error) {
	return readMode(nsRef{h: ns}, "ns_mode")
}

// ChildMode returns ns's child_ns_mode: the mode that namespaces created by
// threads inside ns will get.
func ChildMode(ns netns.NsHandle) (Mode, error) {
	return readMode(nsRef{h: ns}, "child_ns_mode")
}

// SetChildMode writes ns's child_ns_mode. The kernel accepts one value per
// namespace: writing the same value again succeeds, a different one fails
// with ErrChildModeLocked, and a local namespace cannot choose global
// (ErrModeNotPermitted).
//
// Writing it in the init namespace changes the mode of every namespace
// created on the host afterwards, until reboot. To get one namespace of a
// given mode, use NewNamespace, which never writes the caller's
// child_ns_mode.
func SetChildMode(ns netns.NsHandle, m Mode) error {
	if !m.Valid() {
		return &ModeError{Value: m.String()}
	}
	return setChildMode(nsRef{h: ns}, m)
}

// G2HFallback reports ns's g2h_fallback sysctl (whether a socket may fall
// back to the guest-to-host transport), where the kernel has it. A kernel
// can have vsock namespaces without it: the error then wraps
// ErrNotSupported and names the sysctl.
func G2HFallback(ns netns.NsHandle) (bool, error) {
	return g2hFallback(nsRef{h: ns})
}

// SetG2HFallback writes ns's g2h_fallback sysctl.
func SetG2HFallback(ns netns.NsHandle, on bool) error {
	return setG2HFallback(nsRef{h: ns}, on)
}

// Supported returns nil if the kernel has vsock network namespaces and
// vsock is available, or an error wrapping ErrNotSupported that says what is
// missing. It looks at the calling thread's namespace; a positive answer
// and "kernel too old" are remembered, "vsock not loaded" is not (the module
// may be loaded later).
func Supported() error {
	return supported()
}
