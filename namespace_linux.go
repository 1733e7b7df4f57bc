//go:build linux

package vsockns

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"

	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/vsockns/vsockns/internal/nsthread"
)

func newNamespace(m Mode) (netns.NsHandle, error) {
	if err := supported(); err != nil {
		return netns.None(), fmt.Errorf("vsockns: new %s namespace: %w", m, err)
	}
	parent, err := parentFor(m)
	if err != nil {
		return netns.None(), fmt.Errorf("vsockns: new %s namespace: %w", m, err)
	}
	fd := -1
	err = nsthread.Run(context.Background(), nsthread.Long, nsthread.FD(parent), func() error {
		// The new namespace takes the parent's child_ns_mode, which
		// parentFor wrote and checked.
		if err := unshareNet(); err != nil {
			return err
		}
		var err error
		fd, err = nsthread.Current()
		return err
	})
	if err != nil {
		if fd >= 0 {
			unix.Close(fd)
		}
		return netns.None(), fmt.Errorf("vsockns: new %s namespace: %w", m, err)
	}
	return netns.NsHandle(fd), nil
}

// unshareNet is unshare(CLONE_NEWNET); this package's tests count it.
var unshareNet = func() error {
	return os.NewSyscallError("unshare", unix.Unshare(unix.CLONE_NEWNET))
}

// The private parents NewNamespace creates namespaces from, one per mode,
// for the life of the process. The kernel gives a new namespace the
// child_ns_mode of the namespace its creating thread is in, and
// child_ns_mode can be written once: so each parent is a namespace of this
// process's own whose child_ns_mode is written once, to its mode, and each
// new namespace is made by a thread moved into the parent. The caller's and
// the init namespace's child_ns_mode are never written.
//
// The mode rules stay the caller's: a namespace created from the caller's
// own thread would get the caller's child_ns_mode, and a local one cannot
// give global children. So a global namespace is made only for a caller
// whose child_ns_mode is global (read, never written); for others it fails
// with ErrModeNotPermitted, as the kernel would have it. A local namespace
// is allowed to everyone, and the local parent serves them all.
//
// The parents are held only by descriptors of this process: no bind mount
// (`ip netns` does not list them), no process runs in them, and nothing can
// enter them without those descriptors. They show as two net:[INODE] links
// in /proc/PID/fd (and to tools that scan open descriptors, such as newer
// lsns, as namespaces this process holds).
var parents struct {
	sync.Mutex
	fds map[Mode]int
}

// parentFor returns the parent for mode m, after checking that the calling
// thread's namespace may have children of mode m, creating the parent the
// first time.
func parentFor(m Mode) (int, error) {
	if m == ModeGlobal {
		child, err := callerChildMode()
		if err != nil {
			return -1, err
		}
		if child != ModeGlobal.String() {
			return -1, fmt.Errorf("%w: the calling thread's namespace gives its children %s mode (%w)", ErrModeNotPermitted, child, unix.EPERM)
		}
	}
	parents.Lock()
	defer parents.Unlock()
	if fd, ok := parents.fds[m]; ok {
		return fd, nil
	}
	fd := -1
	// Created from the caller's thread: for a global parent, the caller's
	// child_ns_mode was just found global, so the parent is global and may
	// give either mode.
	err := nsthread.Run(context.Background(), nsthread.Long, nsthread.Caller(), func() error {
		if err := unshareNet(); err != nil {
			return err
		}
		if err := writeSysctl("child_ns_mode", m.String()); err != nil {
			return err
		}
		// Checked once here rather than on every child: the parent is
		// private and its child_ns_mode cannot change again.
		if got, err := readSysctl("child_ns_mode"); err != nil {
			return err
		} else if got != m.String() {
			return fmt.Errorf("the kernel kept child_ns_mode %q after %q was written", got, m)
		}
		var err error
		fd, err = nsthread.Current()
		return err
	})
	if err != nil {
		if fd >= 0 {
			unix.Close(fd)
		}
		return -1, err
	}
	if parents.fds == nil {
		parents.fds = map[Mode]int{}
	}
	parents.fds[m] = fd
	return fd, nil
}

// callerChildMode reads the calling thread's child_ns_mode.
func callerChildMode() (string, error) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	return readSysctl("child_ns_mode")
}

// netnsRunDir is where ip-netns(8) keeps named namespaces.
var netnsRunDir = "/run/netns"

func newNamedNamespace(name string, m Mode) (netns.NsHandle, error) {
	if err := checkName(name); err != nil {
		return netns.None(), err
	}
	ns, err := newNamespace(m)
	if err != nil {
		return netns.None(), err
	}
	if err := mountNamespace(name, ns); err != nil {
		ns.Close()
		return netns.None(), fmt.Errorf("vsockns: name namespace %q: %w", name, err)
	}
	return ns, nil
}

// mountNamespace bind-mounts ns at /run/netns/name the way ip-netns does,
// with /run/netns a shared mount so other mount namespaces see it.
func mountNamespace(name string, ns netns.NsHandle) error {
	if err := os.MkdirAll(netnsRunDir, 0o755); err != nil {
		return err
	}
	if err := unix.Mount("", netnsRunDir, "none", unix.MS_SHARED|unix.MS_REC, ""); errors.Is(err, unix.EINVAL) {
		// Not a mount point yet: make it one, then shared.
		if err := unix.Mount(netnsRunDir, netnsRunDir, "none", unix.MS_BIND|unix.MS_REC, ""); err != nil {
			return os.NewSyscallError("mount", err)
		}
		if err := unix.Mount("", netnsRunDir, "none", unix.MS_SHARED|unix.MS_REC, ""); err != nil {
			return os.NewSyscallError("mount", err)
		}
	} else if err != nil {
		return os.NewSyscallError("mount", err)
	}
	path := filepath.Join(netnsRunDir, name)
	f, err := os.OpenFile(path, os.O_CREATE|os.O_EXCL|os.O_RDONLY, 0o444)
	if err != nil {
		return err // *os.PathError; errors.Is(err, fs.ErrExist) for a taken name
	}
	f.Close()
	src := fmt.Sprintf("/proc/self/fd/%d", int(ns))
	if err := unix.Mount(src, path, "none", unix.MS_BIND, ""); err != nil {
		os.Remove(path)
		return os.NewSyscallError("mount", err)
	}
	return nil
}

func deleteNamedNamespace(name string) error {
	if err := checkName(name); err != nil {
		return err
	}
	path := filepath.Join(netnsRunDir, name)
	if err := unix.Unmount(path, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) {
		if errors.Is(err, unix.ENOENT) {
			return fmt.Errorf("vsockns: delete namespace %q: %w", name, &os.PathError{Op: "umount", Path: path, Err: err})
		}
		return fmt.Errorf("vsockns: delete namespace %q: %w", name, os.NewSyscallError("umount", err))
	}
	if err := os.Remove(path); err != nil {
		return fmt.Errorf("vsockns: delete namespace %q: %w", name, err)
	}
	return nil
}

func namespaceFromPID(pid int) (netns.NsHandle, error) {
	if pid <= 0 {
		return netns.None(), fmt.Errorf("vsockns: namespace of pid %d: %w", pid, unix.ESRCH)
	}
	pidfd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		return netns.None(), fmt.Errorf("vsockns: namespace of pid %d: %w", pid, os.NewSyscallError("pidfd_open", err))
	}
	defer unix.Close(pidfd)
	return namespaceFromPidfd(pidfd, pid)
}

func namespaceFromPidfd(pidfd, pid int) (netns.NsHandle, error) {
	if pid < 0 {
		p, err := pidOfPidfd(pidfd)
		if err != nil {
			return netns.None(), fmt.Errorf("vsockns: namespace of pidfd %d: %w", pidfd, err)
		}
		pid = p
	}
	path := fmt.Sprintf("/proc/%d/ns/net", pid)
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return netns.None(), fmt.Errorf("vsockns: namespace of pid %d: %w", pid, &os.PathError{Op: "open", Path: path, Err: err})
	}
	// The pidfd pins the process, not its PID: if the process exited
	// before the open, the PID may now name another process. A signal 0
	// through the pidfd fails with ESRCH exactly then.
	if err := unix.PidfdSendSignal(pidfd, 0, nil, 0); err != nil {
		unix.Close(fd)
		return netns.None(), fmt.Errorf("vsockns: namespace of pid %d: process exited: %w", pid, os.NewSyscallError("pidfd_send_signal", err))
	}
	return netns.NsHandle(fd), nil
}

// pidOfPidfd reads the "Pid:" line of /proc/self/fdinfo/<pidfd>.
func pidOfPidfd(pidfd int) (int, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/self/fdinfo/%d", pidfd))
	if err != nil {
		return 0, err
	}
	var pid int
	for _, line := range strings.Split(string(b), "\n") {
		if n, _ := fmt.Sscanf(line, "Pid:\t%d", &pid); n == 1 {
			if pid <= 0 {
				return 0, os.NewSyscallError("pidfd", unix.ESRCH)
			}
			return pid, nil
		}
	}
	return 0, fmt.Errorf("fd %d is not a pidfd", pidfd)
}

// checkName accepts what ip-netns accepts as a file name under /run/netns.
func checkName(name string) error {
	switch {
	case name == "":
		return &NameError{name, "empty"}
	case name == "." || name == "..":
		return &NameError{name, "not a file name"}
	case strings.ContainsAny(name, "/\x00"):
		return &NameError{name, "contains '/' or NUL"}
	case len(name) > 255:
		return &NameError{name, "longer than 255 bytes"}
	}
	return nil
}

// A Namespace is an owning reference to a network namespace: a file
// descriptor of its own (duplicated from whatever it was made from, so
// closing the original handle, and the kernel reusing that descriptor
// number for another namespace, change nothing), and the namespace's
// identity. It offers everything the handle functions offer. A long-lived
// agent that serves VMs in many namespaces keeps one per namespace, keyed
// by [Namespace.ID].
//
// Make one with [OpenNamespace], [OpenNamespacePath], [OpenNamespacePID] or
// [CreateNamespace]; the zero Namespace refers to nothing. A Namespace is
// safe for concurrent use. Close releases it: operations after Close fail
// with [ErrNamespaceClosed], and Close waits for operations still inside
// the namespace. Sockets and devices created through it do not need it.
type Namespace struct {
	mu   sync.RWMutex
	fd   int
	open bool // false for the zero Namespace and after Close
	id   NamespaceID
	kind string // how String describes the reference beyond its ID

	// Sockets made ahead for dials (Prepare), by sockType.
	readyMu sync.Mutex
	ready   [2]*readyStore

	// For a namespace this process cannot enter (CreateUserNamespace):
	// the server that performs its calls, and what ends that server.
	remote     *remote
	stopRemote func()
	helperPid  int // CreateUserNamespace's helper process, if any
}

// The bridge from the package's entry points to internal/nsthread: every
// call that must run inside a namespace (socket(2), open(2) of
// /dev/vhost-vsock, a sysctl) goes through a backend, resolved from what the
// entry point was given.

// A backend performs the calls that must happen inside one namespace.
type backend interface {
	// socket creates an AF_VSOCK socket of typ, non-blocking and
	// close-on-exec.
	socket(ctx context.Context, typ int) (int, error)
	// sockets creates up to k sockets of typ as socket does, all in one
	// go (one switch into the namespace, one request to its server). It
	// returns those made; err says why there are fewer than k.
	sockets(ctx context.Context, typ, k int) ([]int, error)
	// openVhost opens VhostDevice read-write, close-on-exec.
	openVhost(ctx context.Context) (int, error)
	readSysctl(ctx context.Context, name string) (string, error)
	writeSysctl(ctx context.Context, name, value string) error
	// diagSocket creates a NETLINK_SOCK_DIAG socket (non-blocking,
	// close-on-exec), which lists the namespace's sockets.
	diagSocket(ctx context.Context) (int, error)
	// String names the namespace in error messages.
	String() string
}

// backend resolves ref, refusing a negative handle other than netns.None()
// before any thread moves, and a ref naming both a handle and a Namespace.
func (ref nsRef) backend() (backend, error) {
	if ref.n != nil {
		if !callerHandle(ref.h) {
			return nil, errors.New("vsockns: both a namespace handle and a *Namespace were given; set one")
		}
		return ref.n.backend(), nil
	}
	if callerHandle(ref.h) {
		return inside{func(_ context.Context, fn func() error) error { return fn() }, "the current network namespace"}, nil
	}
	if ref.h < 0 {
		return nil, badHandle(ref.h)
	}
	target := nsthread.FD(int(ref.h))
	return inside{func(ctx context.Context, fn func() error) error {
		return nsthread.Run(ctx, nsthread.Short, target, fn)
	}, fmt.Sprintf("network namespace fd %d", int(ref.h))}, nil
}

// callerHandle reports whether h means "the calling thread's namespace".
func callerHandle(h netns.NsHandle) bool { return h == 0 || h == netns.None() }

// badHandle is the error for a negative handle other than netns.None().
func badHandle(h netns.NsHandle) error {
	return &explained{os.NewSyscallError("setns", unix.EBADF),
		fmt.Sprintf("namespace handle %d is not a file descriptor (only 0 and netns.None() mean the calling thread's namespace)", int(h)), nil}
}

// inside is the backend of a namespace that this process can enter: each
// call runs through run, on the calling thread (the caller's own
// namespace) or on a thread nsthread moves into the namespace.
type inside struct {
	run  func(ctx context.Context, fn func() error) error
	name string
}

func (in inside) socket(ctx context.Context, typ int) (int, error) {
	fd := -1
	err := in.run(ctx, func() (err error) {
		fd, err = unix.Socket(unix.AF_VSOCK, typ|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			err = os.NewSyscallError("socket", err)
		}
		return err
	})
	if err != nil && fd >= 0 {
		unix.Close(fd) // created, but the thread could not be restored
		fd = -1
	}
	return fd, err
}

func (in inside) sockets(ctx context.Context, typ, k int) ([]int, error) {
	fds := make([]int, 0, k)
	var serr error
	err := in.run(ctx, func() error {
		for range k {
			fd, err := unix.Socket(unix.AF_VSOCK, typ|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
			if err != nil {
				serr = os.NewSyscallError("socket", err)
				break
			}
			fds = append(fds, fd)
		}
		return nil
	})
	if err != nil {
		// The namespace is closed, or the thread could not be moved back:
		// nothing made there is kept.
		closeFds(fds)
		return nil, err
	}
	return fds, serr
}

func (in inside) openVhost(ctx context.Context) (int, error) {
	fd := -1
	err := in.run(ctx, func() (err error) {
		fd, err = unix.Open(VhostDevice, unix.O_RDWR|unix.O_CLOEXEC, 0)
		return err
	})
	if err != nil && fd >= 0 {
		unix.Close(fd)
		fd = -1
	}
	return fd, err
}

func (in inside) readSysctl(ctx context.Context, name string) (string, error) {
	var s string
	err := in.run(ctx, func() (err error) {
		s, err = readSysctl(name)
		return err
	})
	return s, err
}

func (in inside) writeSysctl(ctx context.Context, name, value string) error {
	return in.run(ctx, func() error { return writeSysctl(name, value) })
}

func (in inside) String() string { return in.name }

// backend is n's: its server's when n is served, else n entered by a
// thread.
func (n *Namespace) backend() backend {
	if n.remote != nil {
		return remoteNamespace{n}
	}
	return inside{n.do, n.String()}
}

// do runs fn in n, holding n open (Close waits) for as long as fn runs.
func (n *Namespace) do(ctx context.Context, fn func() error) error {
	n.mu.RLock()
	defer n.mu.RUnlock()
	if !n.open {
		return ErrNamespaceClosed
	}
	return nsthread.Run(ctx, nsthread.Short, nsthread.FD(n.fd), fn)
}

// Close releases n's descriptor, once every operation still inside the
// namespace has finished. A second Close returns ErrNamespaceClosed.
func (n *Namespace) Close() error {
	// The stores first: a refill in flight is one of the operations Close
	// waits for, and a request to a stopped server would never end.
	n.closeReady()
	n.mu.Lock()
	defer n.mu.Unlock()
	if !n.open {
		return ErrNamespaceClosed
	}
	n.open = false
	if n.remote != nil {
		// The server goes first: its namespace then lives on only in
		// the sockets and devices made in it.
		n.remote.close()
		n.stopRemote()
	}
	if err := unix.Close(n.fd); err != nil {
		return fmt.Errorf("vsockns: close %s: %w", n, os.NewSyscallError("close", err))
	}
	return nil
}

// Handle returns a new handle (a duplicate descriptor) to n's namespace,
// for APIs that take a netns.NsHandle; the caller closes it.
func (n *Namespace) Handle() (netns.NsHandle, error) {
	n.mu.RLock()
	defer n.mu.RUnlock()
	if !n.open {
		return netns.None(), ErrNamespaceClosed
	}
	fd, err := unix.FcntlInt(uintptr(n.fd), unix.F_DUPFD_CLOEXEC, 3)
	if err != nil {
		return netns.None(), fmt.Errorf("vsockns: %s: %w", n, os.NewSyscallError("fcntl", err))
	}
	return netns.NsHandle(fd), nil
}

// adoptNamespace makes a Namespace of fd, which it owns from then on
// (closed on error), after checking that fd is a network namespace.
func adoptNamespace(fd int, what string) (*Namespace, error) {
	if t, err := unix.IoctlRetInt(fd, unix.NS_GET_NSTYPE); err != nil || t != unix.CLONE_NEWNET {
		unix.Close(fd)
		return nil, fmt.Errorf("vsockns: %s: %w", what, &explained{unix.EINVAL, "not a network namespace", nil})
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("vsockns: %s: %w", what, os.NewSyscallError("fstat", err))
	}
	return &Namespace{fd: fd, open: true, id: NamespaceID{Dev: st.Dev, Ino: st.Ino}}, nil
}

func openNamespace(h netns.NsHandle) (*Namespace, error) {
	if callerHandle(h) {
		fd, err := threadNamespace()
		if err != nil {
			return nil, fmt.Errorf("vsockns: open the current network namespace: %w", err)
		}
		return adoptNamespace(fd, "the current network namespace")
	}
	what := fmt.Sprintf("namespace handle %d", int(h))
	if h < 0 {
		return nil, fmt.Errorf("vsockns: %s: %w", what, badHandle(h))
	}
	// At 3 or above: a reference never takes a standard stream's number.
	fd, err := unix.FcntlInt(uintptr(h), unix.F_DUPFD_CLOEXEC, 3)
	if err != nil {
		return nil, fmt.Errorf("vsockns: %s: %w", what, os.NewSyscallError("fcntl", err))
	}
	return adoptNamespace(fd, what)
}

// threadNamespace opens the calling thread's namespace, with the goroutine
// locked meanwhile so that "the calling thread" is one thread.
func threadNamespace() (int, error) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	return nsthread.Current()
}

func openNamespacePath(path string) (*Namespace, error) {
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("vsockns: open network namespace: %w", &os.PathError{Op: "open", Path: path, Err: err})
	}
	return adoptNamespace(fd, path)
}

func openNamespacePID(pid int) (*Namespace, error) {
	h, err := namespaceFromPID(pid)
	if err != nil {
		return nil, err
	}
	return adoptNamespace(int(h), fmt.Sprintf("namespace of pid %d", pid))
}

func createNamespace(m Mode) (*Namespace, error) {
	h, err := newNamespace(m)
	if err != nil {
		return nil, err
	}
	return adoptNamespace(int(h), fmt.Sprintf("new %s namespace", m))
}
