//go:build linux

package vsockns

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/vsockns/vsockns/internal/nsthread"
)

func newNamespace(m Mode) (netns.NsHandle, error) {
	if err := supported(); err != nil {
		return netns.None(), fmt.Errorf("vsockns: new %s namespace: %w", m, err)
	}
	fd := -1
	err := nsthread.Run(-1, func() error {
		// A private parent whose child_ns_mode is ours to set: neither the
		// caller's namespace nor the init namespace is written.
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			return os.NewSyscallError("unshare", err)
		}
		if err := writeSysctl("child_ns_mode", m.String()); err != nil {
			return err
		}
		// The child takes the parent's child_ns_mode at creation.
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			return os.NewSyscallError("unshare", err)
		}
		var err error
		if fd, err = nsthread.Current(); err != nil {
			return err
		}
		got, err := readSysctl("ns_mode")
		if err != nil {
			return err
		}
		if got != m.String() {
			return fmt.Errorf("kernel created a %q namespace", got)
		}
		return nil
	})
	if err != nil {
		if fd >= 0 {
			unix.Close(fd)
		}
		return netns.None(), fmt.Errorf("vsockns: new %s namespace: %w", m, err)
	}
	// The thread is back in its own namespace; the parent, referenced by
	// nothing, is gone.
	return netns.NsHandle(fd), nil
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
