//go:build linux

package vsockns

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"

	"golang.org/x/sys/unix"
)

const sysctlDir = "/proc/sys/net/vsock/"

// sysctlError describes a failed sysctl access in the namespace b names.
func sysctlError(op, name string, where fmt.Stringer, err error) error {
	return fmt.Errorf("vsockns: %s %s%s in %s: %w", op, sysctlDir, name, where, explainSetns(err))
}

// openSysctl opens a vsock sysctl of the calling thread's namespace. A
// missing one is explained; if the explanation's probe socket made the
// kernel load the vsock module (which creates the sysctls), the open is
// tried once more.
func openSysctl(name string, flags int) (int, error) {
	fd, err := unix.Open(sysctlDir+name, flags|unix.O_CLOEXEC, 0)
	if errors.Is(err, unix.ENOENT) {
		if _, loaded := whyMissing(); loaded {
			fd, err = unix.Open(sysctlDir+name, flags|unix.O_CLOEXEC, 0)
		}
	}
	if err != nil {
		return -1, missingSysctl(name, err)
	}
	return fd, nil
}

// readSysctl reads a vsock sysctl of the calling thread's namespace, without
// its trailing newline.
func readSysctl(name string) (string, error) {
	fd, err := openSysctl(name, unix.O_RDONLY)
	if err != nil {
		return "", err
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
	fd, err := openSysctl(name, unix.O_WRONLY)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	if _, err := unix.Write(fd, []byte(value)); err != nil {
		return os.NewSyscallError("write", err)
	}
	return nil
}

// missingSysctl turns ENOENT into ErrNotSupported, saying what is missing:
// procfs, vsock itself, vsock namespaces, or (on a kernel that has
// namespaces) this one sysctl.
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
	if name != "ns_mode" && unix.Stat(sysctlDir+"ns_mode", &st) == nil {
		why = fmt.Sprintf("this kernel has vsock network namespaces but no %s%s sysctl", sysctlDir, name)
	}
	return fmt.Errorf("%w: %s (%w)", ErrNotSupported, why, os.NewSyscallError("open", err))
}

// whyMissing tells apart "vsock is not loaded" from "this kernel has no
// vsock namespaces" when a vsock sysctl does not exist. Its probe socket
// may itself load the vsock module, where the kernel autoloads modules.
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

func readMode(ref nsRef, name string) (Mode, error) {
	b, err := ref.backend()
	if err != nil {
		return 0, err
	}
	s, err := b.readSysctl(context.Background(), name)
	if err != nil {
		return 0, sysctlError("read", name, b, err)
	}
	m, err := ParseMode(s)
	if err != nil {
		return 0, sysctlError("read", name, b, err)
	}
	return m, nil
}

func setChildMode(ref nsRef, m Mode) error {
	const name = "child_ns_mode"
	b, err := ref.backend()
	if err != nil {
		return err
	}
	ctx := context.Background()
	err = b.writeSysctl(ctx, name, m.String())
	switch {
	case errors.Is(err, unix.EBUSY):
		err = fmt.Errorf("%w: %w", ErrChildModeLocked, err)
	case errors.Is(err, unix.EPERM) && m == ModeGlobal:
		// EPERM is also what a missing CAP_NET_ADMIN gives; only a local
		// namespace asking for global children is the mode rule.
		if own, rerr := b.readSysctl(ctx, "ns_mode"); rerr == nil && own == "local" {
			err = fmt.Errorf("%w: %w", ErrModeNotPermitted, err)
		}
	}
	if err != nil {
		return sysctlError("write", name, b, err)
	}
	return nil
}

func g2hFallback(ref nsRef) (bool, error) {
	const name = "g2h_fallback"
	b, err := ref.backend()
	if err != nil {
		return false, err
	}
	s, err := b.readSysctl(context.Background(), name)
	if err != nil {
		return false, sysctlError("read", name, b, err)
	}
	switch s {
	case "0":
		return false, nil
	case "1":
		return true, nil
	}
	return false, sysctlError("read", name, b, fmt.Errorf("unexpected value %q", s))
}

func setG2HFallback(ref nsRef, on bool) error {
	const name = "g2h_fallback"
	b, err := ref.backend()
	if err != nil {
		return err
	}
	v := "0"
	if on {
		v = "1"
	}
	if err := b.writeSysctl(context.Background(), name, v); err != nil {
		return sysctlError("write", name, b, err)
	}
	return nil
}

var supportedCache struct {
	sync.Mutex
	known bool
	err   error
}

// supported probes the calling thread's namespace. A positive answer and
// "this kernel has no vsock namespaces" are remembered; "vsock is not
// loaded" is not (it may be loaded later). The probe's own socket(2) may
// load vsock (module autoloading), so ns_mode is looked for again after it
// before the kernel is called too old.
func supported() error {
	supportedCache.Lock()
	defer supportedCache.Unlock()
	if supportedCache.known {
		return supportedCache.err
	}
	var st unix.Stat_t
	err := unix.Stat(sysctlDir+"ns_mode", &st)
	if err != nil {
		if _, loaded := whyMissing(); loaded {
			err = unix.Stat(sysctlDir+"ns_mode", &st)
		}
	}
	if err == nil {
		supportedCache.known = true
		return nil
	}
	err = missingSysctl("ns_mode", err)
	if _, loaded := whyMissing(); loaded && errors.Is(err, ErrNotSupported) {
		// vsock is there and still has no ns_mode: the kernel lacks the
		// feature, which will not change.
		supportedCache.known, supportedCache.err = true, err
	}
	return err
}
