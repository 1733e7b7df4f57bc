//go:build linux

package vsockns

import (
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"

	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/vsockns/vsockns/internal/nsthread"
)

const sysctlDir = "/proc/sys/net/vsock/"

// inNamespace runs fn in ns: directly for the calling thread's namespace,
// otherwise on a thread moved into ns. It is the only bridge from this
// package to internal/nsthread.
func inNamespace(ns netns.NsHandle, fn func() error) error {
	if current(ns) {
		return fn()
	}
	return nsthread.Run(int(ns), fn)
}

// sysctlError describes a failed sysctl access in ns.
func sysctlError(op, name string, ns netns.NsHandle, err error) error {
	return fmt.Errorf("vsockns: %s %s%s in %s: %w", op, sysctlDir, name, nsName(ns), err)
}

func nsName(ns netns.NsHandle) string {
	if current(ns) {
		return "the current network namespace"
	}
	return fmt.Sprintf("network namespace fd %d", int(ns))
}

// readSysctl reads a vsock sysctl of the calling thread's namespace, without
// its trailing newline.
func readSysctl(name string) (string, error) {
	fd, err := unix.Open(sysctlDir+name, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return "", missingSysctl(name, err)
	}
	f := os.NewFile(uintptr(fd), sysctlDir+name)
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, 64))
	if err != nil {
		return "", err
	}
	return strings.TrimSuffix(string(b), "\n"), nil
}

// writeSysctl writes a vsock sysctl of the calling thread's namespace.
func writeSysctl(name, value string) error {
	fd, err := unix.Open(sysctlDir+name, unix.O_WRONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return missingSysctl(name, err)
	}
	defer unix.Close(fd)
	if _, err := unix.Write(fd, []byte(value)); err != nil {
		return os.NewSyscallError("write", err)
	}
	return nil
}

// missingSysctl turns ENOENT into ErrNotSupported with the reason.
func missingSysctl(name string, err error) error {
	if !errors.Is(err, unix.ENOENT) {
		return os.NewSyscallError("open", err)
	}
	var st unix.Stat_t
	if serr := unix.Stat("/proc/sys/net", &st); serr != nil {
		// Not a kernel question: the process cannot see procfs.
		return fmt.Errorf("/proc/sys/net is not accessible (is procfs mounted at /proc?): %w", os.NewSyscallError("open", err))
	}
	why, _ := whyMissing()
	return fmt.Errorf("%w: %s (%w)", ErrNotSupported, why, os.NewSyscallError("open", err))
}

// whyMissing tells apart "vsock is not loaded" from "this kernel has no
// vsock namespaces" when a vsock sysctl does not exist.
func whyMissing() (reason string, vsockLoaded bool) {
	fd, err := unix.Socket(unix.AF_VSOCK, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err == nil {
		unix.Close(fd)
	}
	if errors.Is(err, unix.EAFNOSUPPORT) {
		return "vsock is not available: load the vsock module (modprobe vsock)", false
	}
	return "this kernel has no vsock network namespaces (Linux >= 7.0 is needed)", true
}

func readMode(ns netns.NsHandle, name string) (Mode, error) {
	var s string
	err := inNamespace(ns, func() (err error) {
		s, err = readSysctl(name)
		return err
	})
	if err != nil {
		return 0, sysctlError("read", name, ns, err)
	}
	m, err := ParseMode(s)
	if err != nil {
		return 0, sysctlError("read", name, ns, err)
	}
	return m, nil
}

func setChildMode(ns netns.NsHandle, m Mode) error {
	const name = "child_ns_mode"
	err := inNamespace(ns, func() error {
		err := writeSysctl(name, m.String())
		switch {
		case errors.Is(err, unix.EBUSY):
			return fmt.Errorf("%w: %w", ErrChildModeLocked, err)
		case errors.Is(err, unix.EPERM) && m == ModeGlobal:
			// EPERM is also what a missing CAP_NET_ADMIN gives; only a
			// local namespace asking for global children is the mode rule.
			if own, rerr := readSysctl("ns_mode"); rerr == nil && own == "local" {
				return fmt.Errorf("%w: %w", ErrModeNotPermitted, err)
			}
		}
		return err
	})
	if err != nil {
		return sysctlError("write", name, ns, err)
	}
	return nil
}

func g2hFallback(ns netns.NsHandle) (bool, error) {
	const name = "g2h_fallback"
	var s string
	err := inNamespace(ns, func() (err error) {
		s, err = readSysctl(name)
		return err
	})
	if err != nil {
		return false, sysctlError("read", name, ns, err)
	}
	switch s {
	case "0":
		return false, nil
	case "1":
		return true, nil
	}
	return false, sysctlError("read", name, ns, fmt.Errorf("unexpected value %q", s))
}

func setG2HFallback(ns netns.NsHandle, on bool) error {
	const name = "g2h_fallback"
	v := "0"
	if on {
		v = "1"
	}
	err := inNamespace(ns, func() error { return writeSysctl(name, v) })
	if err != nil {
		return sysctlError("write", name, ns, err)
	}
	return nil
}

var supportedCache struct {
	sync.Mutex
	known bool
	err   error
}

func supported() error {
	supportedCache.Lock()
	defer supportedCache.Unlock()
	if supportedCache.known {
		return supportedCache.err
	}
	var st unix.Stat_t
	err := unix.Stat(sysctlDir+"ns_mode", &st)
	if err == nil {
		supportedCache.known = true
		return nil
	}
	err = missingSysctl("ns_mode", err)
	if _, loaded := whyMissing(); loaded && errors.Is(err, ErrNotSupported) {
		// The kernel lacks the feature: that will not change.
		supportedCache.known, supportedCache.err = true, err
	}
	return err
}

// current reports whether ns means "the calling thread's namespace".
func current(ns netns.NsHandle) bool {
	return ns == 0 || ns == netns.None()
}
