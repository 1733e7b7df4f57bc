//go:build linux

package main

import (
	"fmt"
	"os"
	"os/exec"
	"syscall"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/vsockns/vsockns/internal/testenv"
)

// isInit answers right inside a PID namespace of its own, where /proc/1 is
// a container's init in a namespace of its own (before the fix, the init
// namespace passed by path was taken for "not init" there, and `child-mode
// set` would have written it without --init). The check runs in a child
// that is PID 1 of a new PID namespace, in a new network namespace, with a
// /proc of that PID namespace, and gets the init namespace as fd 3.
func TestIsInitInPIDNamespace(t *testing.T) {
	if os.Getenv("VSOCKNS_ISINIT_CHILD") == "1" {
		if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
			fmt.Println("mount private:", err)
			os.Exit(3)
		}
		if err := unix.Mount("proc", "/proc", "proc", 0, ""); err != nil {
			fmt.Println("mount proc:", err)
			os.Exit(3)
		}
		fmt.Printf("pid=%d init_by_fd=%t self=%t\n", os.Getpid(), isInit(netns.NsHandle(3)), isInit(netns.None()))
		os.Exit(0)
	}
	if os.Getenv("VSOCKNS_IN_VM") != "1" {
		t.Skip("needs root and new PID, mount and network namespaces; run `make test` (it runs this in a VM)")
	}
	assert.True(t, isInit(netns.None()), "the test runs in the init namespace")
	plain := testenv.PlainNS(t)
	assert.False(t, isInit(plain), "a new namespace seen from the init PID namespace")

	initNS, err := os.Open("/proc/self/ns/net")
	require.NoError(t, err)
	defer initNS.Close()
	cmd := exec.Command(os.Args[0], "-test.run=^TestIsInitInPIDNamespace$")
	cmd.Env = append(os.Environ(), "VSOCKNS_ISINIT_CHILD=1")
	cmd.ExtraFiles = []*os.File{initNS}
	cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWPID | syscall.CLONE_NEWNS | syscall.CLONE_NEWNET}
	out, err := cmd.CombinedOutput()
	require.NoError(t, err, "%s", out)
	assert.Contains(t, string(out), "pid=1 init_by_fd=true self=false")
}
