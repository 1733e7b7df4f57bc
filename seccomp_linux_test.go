//go:build linux && amd64

package vsockns_test

import (
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"syscall"
	"testing"
	"unsafe"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/vsockns/vsockns"
)

// denyVsockSockets installs a seccomp filter on every thread of the
// process that makes socket(AF_VSOCK, ...) fail with EPERM, as container
// runtimes' default profiles may.
func denyVsockSockets() error {
	const (
		auditArchX8664 = 0xc000003e
		offNr          = 0
		offArch        = 4
		offArg0        = 16
	)
	stmt := func(code uint16, k uint32) unix.SockFilter { return unix.SockFilter{Code: code, K: k} }
	jeq := func(k uint32, jt, jf uint8) unix.SockFilter {
		return unix.SockFilter{Code: unix.BPF_JMP | unix.BPF_JEQ | unix.BPF_K, Jt: jt, Jf: jf, K: k}
	}
	prog := []unix.SockFilter{
		stmt(unix.BPF_LD|unix.BPF_W|unix.BPF_ABS, offArch),
		jeq(auditArchX8664, 0, 5),
		stmt(unix.BPF_LD|unix.BPF_W|unix.BPF_ABS, offNr),
		jeq(unix.SYS_SOCKET, 0, 3),
		stmt(unix.BPF_LD|unix.BPF_W|unix.BPF_ABS, offArg0),
		jeq(unix.AF_VSOCK, 0, 1),
		stmt(unix.BPF_RET|unix.BPF_K, unix.SECCOMP_RET_ERRNO|uint32(unix.EPERM)),
		stmt(unix.BPF_RET|unix.BPF_K, unix.SECCOMP_RET_ALLOW),
	}
	if err := unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0); err != nil {
		return fmt.Errorf("no_new_privs: %w", err)
	}
	fprog := unix.SockFprog{Len: uint16(len(prog)), Filter: &prog[0]}
	if _, _, errno := unix.Syscall(unix.SYS_SECCOMP, unix.SECCOMP_SET_MODE_FILTER,
		unix.SECCOMP_FILTER_FLAG_TSYNC, uintptr(unsafe.Pointer(&fprog))); errno != 0 {
		return fmt.Errorf("seccomp: %w", errno)
	}
	return nil
}

// Under a seccomp profile that denies AF_VSOCK, Dial and Listen fail with
// EPERM and say that seccomp may be why.
func TestSocketDeniedBySeccomp(t *testing.T) {
	namespacesExpected(t)
	if os.Getenv("VSOCKNS_HELPER") == "seccomp" {
		if err := denyVsockSockets(); err != nil {
			fmt.Println("setup:", err)
			os.Exit(3)
		}
		_, derr := vsockns.Dial(netns.None(), 1, 1234)
		_, lerr := vsockns.Listen(plainNS(t), 1234) // through a namespace switch too
		var oe *net.OpError
		fmt.Printf("dial: %v\neperm=%t opError=%t\n", derr, errors.Is(derr, syscall.EPERM), errors.As(derr, &oe))
		fmt.Printf("listen: %v\neperm=%t\n", lerr, errors.Is(lerr, syscall.EPERM))
		os.Exit(0)
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestSocketDeniedBySeccomp$")
	cmd.Env = append(os.Environ(), "VSOCKNS_HELPER=seccomp")
	out, err := cmd.CombinedOutput()
	require.NoError(t, err, "%s", out)
	s := string(out)
	assert.Contains(t, s, "dial: dial vsock local(1):1234: socket: operation not permitted: creating an AF_VSOCK socket was refused; a seccomp profile or LSM")
	assert.Contains(t, s, "eperm=true opError=true")
	assert.Contains(t, s, "listen: listen vsock vm(4294967295):1234: socket: operation not permitted")
	assert.Contains(t, s, "eperm=true\n")
}
