//go:build linux

package vsockns_test

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"strconv"
	"syscall"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/vsockns/vsockns"
	"github.com/vsockns/vsockns/internal/nsthread"
	"github.com/vsockns/vsockns/internal/testenv"
)

func TestInitNamespaceIsGlobal(t *testing.T) {
	if !namespacesExpected(t) {
		_, err := vsockns.NamespaceMode(netns.None())
		require.ErrorIs(t, err, vsockns.ErrNotSupported)
		assert.ErrorContains(t, err, "Linux >= 7.0 is needed")
		assert.ErrorIs(t, err, syscall.ENOENT)
		return
	}
	m, err := vsockns.NamespaceMode(netns.None())
	require.NoError(t, err)
	assert.Equal(t, vsockns.ModeGlobal, m)
	// The zero handle means the same as netns.None().
	m, err = vsockns.NamespaceMode(0)
	require.NoError(t, err)
	assert.Equal(t, vsockns.ModeGlobal, m)
}

func TestNewNamespaceModes(t *testing.T) {
	if !namespacesExpected(t) {
		for _, m := range []vsockns.Mode{vsockns.ModeLocal, vsockns.ModeGlobal} {
			ns, err := vsockns.NewNamespace(m)
			require.ErrorIs(t, err, vsockns.ErrNotSupported, "a legacy kernel cannot give a %s namespace", m)
			assert.Equal(t, netns.None(), ns)
		}
		return
	}
	for _, m := range []vsockns.Mode{vsockns.ModeLocal, vsockns.ModeGlobal} {
		t.Run(m.String(), func(t *testing.T) {
			ns := newNS(t, m)
			got, err := vsockns.NamespaceMode(ns)
			require.NoError(t, err)
			assert.Equal(t, m, got)
			child, err := vsockns.ChildMode(ns)
			require.NoError(t, err)
			assert.Equal(t, m, child)
			// The caller stays where it was.
			here, err := vsockns.NamespaceMode(netns.None())
			require.NoError(t, err)
			assert.Equal(t, vsockns.ModeGlobal, here)
		})
	}
	requireAllThreadsHome(t)
}

// NewNamespace never writes the caller's child_ns_mode. The caller here is
// a thread inside a fresh namespace whose child_ns_mode is unwritten (the
// same state as the init namespace at boot, which this test must not lock):
// after many NewNamespace calls of both modes, that namespace still accepts
// either value. Two such namespaces check the two values, since writing one
// locks the other out.
func TestNewNamespaceLeavesCallerChildModeUnwritten(t *testing.T) {
	if !namespacesExpected(t) {
		// Legacy: NewNamespace refuses before touching anything, and there
		// is no child_ns_mode to write.
		caller := plainNS(t)
		err := nsthread.Run(context.Background(), nil, nsthread.FD(int(caller)), func() error {
			_, err := vsockns.NewNamespace(vsockns.ModeLocal)
			return err
		})
		require.ErrorIs(t, err, vsockns.ErrNotSupported)
		_, err = os.Stat("/proc/sys/net/vsock/child_ns_mode")
		assert.ErrorIs(t, err, fs.ErrNotExist)
		return
	}
	for _, final := range []vsockns.Mode{vsockns.ModeLocal, vsockns.ModeGlobal} {
		t.Run("then_"+final.String(), func(t *testing.T) {
			caller := plainNS(t)
			err := nsthread.Run(context.Background(), nil, nsthread.FD(int(caller)), func() error {
				for i := range 20 {
					m := vsockns.ModeLocal
					if i%2 == 1 {
						m = vsockns.ModeGlobal
					}
					ns, err := vsockns.NewNamespace(m)
					if err != nil {
						return err
					}
					got, err := vsockns.NamespaceMode(ns)
					ns.Close()
					if err != nil {
						return err
					}
					if got != m {
						return fmt.Errorf("asked for %s, got %s", m, got)
					}
				}
				return nil
			})
			require.NoError(t, err)
			require.NoError(t, vsockns.SetChildMode(caller, final), "child_ns_mode was left unwritten")
		})
	}
}

func TestChildModeWriteOnce(t *testing.T) {
	if !namespacesExpected(t) {
		ns := plainNS(t)
		_, err := vsockns.ChildMode(ns)
		assert.ErrorIs(t, err, vsockns.ErrNotSupported)
		assert.ErrorIs(t, vsockns.SetChildMode(ns, vsockns.ModeLocal), vsockns.ErrNotSupported)
		_, err = vsockns.G2HFallback(ns)
		assert.ErrorIs(t, err, vsockns.ErrNotSupported)
		return
	}
	t.Run("global_namespace", func(t *testing.T) {
		ns := plainNS(t)
		require.NoError(t, vsockns.SetChildMode(ns, vsockns.ModeLocal))
		require.NoError(t, vsockns.SetChildMode(ns, vsockns.ModeLocal), "the same value again is fine")
		err := vsockns.SetChildMode(ns, vsockns.ModeGlobal)
		assert.ErrorIs(t, err, vsockns.ErrChildModeLocked)
		assert.ErrorIs(t, err, syscall.EBUSY)
		child, err := vsockns.ChildMode(ns)
		require.NoError(t, err)
		assert.Equal(t, vsockns.ModeLocal, child)
		own, err := vsockns.NamespaceMode(ns)
		require.NoError(t, err)
		assert.Equal(t, vsockns.ModeGlobal, own, "ns_mode never changes")
	})
	t.Run("local_namespace", func(t *testing.T) {
		ns := newNS(t, vsockns.ModeLocal)
		err := vsockns.SetChildMode(ns, vsockns.ModeGlobal)
		assert.ErrorIs(t, err, vsockns.ErrModeNotPermitted)
		assert.ErrorIs(t, err, syscall.EPERM)
		require.NoError(t, vsockns.SetChildMode(ns, vsockns.ModeLocal))
		own, err := vsockns.NamespaceMode(ns)
		require.NoError(t, err)
		assert.Equal(t, vsockns.ModeLocal, own)
	})
}

func TestG2HFallback(t *testing.T) {
	if !namespacesExpected(t) {
		_, err := vsockns.G2HFallback(netns.None())
		assert.ErrorIs(t, err, vsockns.ErrNotSupported)
		assert.ErrorIs(t, vsockns.SetG2HFallback(plainNS(t), false), vsockns.ErrNotSupported)
		return
	}
	on, err := vsockns.G2HFallback(netns.None())
	require.NoError(t, err)
	assert.True(t, on, "the kernel's default")
	ns := plainNS(t)
	require.NoError(t, vsockns.SetG2HFallback(ns, false))
	on, err = vsockns.G2HFallback(ns)
	require.NoError(t, err)
	assert.False(t, on)
	on, err = vsockns.G2HFallback(netns.None())
	require.NoError(t, err)
	assert.True(t, on, "only the target namespace changed")
}

func TestModeFunctionsOnBadHandles(t *testing.T) {
	namespacesExpected(t)
	closedFD := int(closedHandle)
	devNull, err := os.Open(os.DevNull)
	require.NoError(t, err)
	defer devNull.Close()
	for name, tc := range map[string]struct {
		ns    netns.NsHandle
		errno syscall.Errno
	}{
		"closed":          {netns.NsHandle(closedFD), syscall.EBADF},
		"not_a_namespace": {netns.NsHandle(devNull.Fd()), syscall.EINVAL},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := vsockns.NamespaceMode(tc.ns)
			assert.ErrorIs(t, err, tc.errno)
			_, err = vsockns.ChildMode(tc.ns)
			assert.ErrorIs(t, err, tc.errno)
			assert.ErrorIs(t, vsockns.SetChildMode(tc.ns, vsockns.ModeLocal), tc.errno)
			_, err = vsockns.G2HFallback(tc.ns)
			assert.ErrorIs(t, err, tc.errno)
			assert.ErrorIs(t, vsockns.SetG2HFallback(tc.ns, true), tc.errno)
		})
	}
	requireAllThreadsHome(t)
}

// With /proc/sys hidden (a private mount namespace with a tmpfs over it),
// reading a mode fails saying so, not "kernel too old".
func TestModeWithoutProcfs(t *testing.T) {
	namespacesExpected(t)
	if os.Getenv("VSOCKNS_HELPER") == "noprocfs" {
		if err := unix.Mount("tmpfs", "/proc/sys", "tmpfs", 0, ""); err != nil {
			fmt.Println("mount:", err)
			os.Exit(3)
		}
		_, err := vsockns.NamespaceMode(netns.None())
		fmt.Printf("err=%v notsupported=%t enoent=%t\n", err, errors.Is(err, vsockns.ErrNotSupported), errors.Is(err, syscall.ENOENT))
		os.Exit(0)
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestModeWithoutProcfs$")
	cmd.Env = append(os.Environ(), "VSOCKNS_HELPER=noprocfs")
	cmd.SysProcAttr = &syscall.SysProcAttr{Unshareflags: syscall.CLONE_NEWNS}
	out, err := cmd.CombinedOutput()
	require.NoError(t, err, "%s", out)
	assert.Contains(t, string(out), "/proc/sys/net is not accessible (is procfs mounted at /proc?)")
	assert.Contains(t, string(out), "notsupported=false enoent=true")
}

func TestNamedNamespace(t *testing.T) {
	if !namespacesExpected(t) {
		_, err := vsockns.NewNamedNamespace("vsockns-legacy", vsockns.ModeLocal)
		require.ErrorIs(t, err, vsockns.ErrNotSupported)
		_, err = os.Stat("/run/netns/vsockns-legacy")
		assert.ErrorIs(t, err, fs.ErrNotExist, "nothing left behind")
		return
	}
	name := fmt.Sprintf("vsockns-test-%d", os.Getpid())
	ns, err := vsockns.NewNamedNamespace(name, vsockns.ModeLocal)
	require.NoError(t, err)
	t.Cleanup(func() { _ = vsockns.DeleteNamedNamespace(name) })
	require.NoError(t, ns.Close(), "the bind mount keeps the namespace")

	byName, err := netns.GetFromName(name)
	require.NoError(t, err)
	defer byName.Close()
	m, err := vsockns.NamespaceMode(byName)
	require.NoError(t, err)
	assert.Equal(t, vsockns.ModeLocal, m)

	_, err = vsockns.NewNamedNamespace(name, vsockns.ModeGlobal)
	assert.ErrorIs(t, err, fs.ErrExist)

	require.NoError(t, vsockns.DeleteNamedNamespace(name))
	_, err = netns.GetFromName(name)
	assert.Error(t, err)
	assert.Error(t, vsockns.DeleteNamedNamespace(name), "deleting twice")

	var ne *vsockns.NameError
	for _, bad := range []string{"", ".", "..", "a/b", "a\x00b"} {
		_, err := vsockns.NewNamedNamespace(bad, vsockns.ModeLocal)
		assert.ErrorAs(t, err, &ne, "%q", bad)
		assert.ErrorAs(t, vsockns.DeleteNamedNamespace(bad), &ne, "%q", bad)
	}
}

// A namespace found by PID: a child process in a namespace of its own, as a
// container's process would be.
func TestNamespaceFromPID(t *testing.T) {
	testenv.HoldIfAsked()
	namespacesExpected(t)
	pid := testenv.StartHolder(t, "TestNamespaceFromPID")

	ns, err := vsockns.NamespaceFromPID(pid)
	require.NoError(t, err)
	defer ns.Close()
	want, err := netns.GetFromPid(pid)
	require.NoError(t, err)
	defer want.Close()
	assert.True(t, ns.Equal(want), "the child's namespace")
	home, err := netns.Get()
	require.NoError(t, err)
	defer home.Close()
	assert.False(t, ns.Equal(home))

	pidfd, err := unix.PidfdOpen(pid, 0)
	require.NoError(t, err)
	defer unix.Close(pidfd)
	ns2, err := vsockns.NamespaceFromPidfd(pidfd)
	require.NoError(t, err)
	defer ns2.Close()
	assert.True(t, ns2.Equal(want))

	testenv.StopHolder(t, pid)
	_, err = vsockns.NamespaceFromPID(pid)
	assert.ErrorIs(t, err, syscall.ESRCH, "the process is gone")
	_, err = vsockns.NamespaceFromPidfd(pidfd)
	assert.ErrorIs(t, err, syscall.ESRCH, "the pidfd's process is gone")
	_, err = vsockns.NamespaceFromPID(-1)
	assert.ErrorIs(t, err, syscall.ESRCH)
}

var initNS = flag.Bool("vsockns.init-ns", false, "run TestInitNamespaceChildModeUnwritten, which writes the init namespace's child_ns_mode (the VM harness does, as its last step)")

// The init namespace's child_ns_mode is still unwritten after everything
// the suite did in this boot (NewNamespace calls of both modes among it,
// from this very namespace): writing "local" succeeds, where a "global"
// written by anything would make it fail with EBUSY. The VM harness runs
// this last, in a process of its own, because the write changes the mode
// of every namespace created afterwards; the "local" half is checked by
// TestNewNamespaceLeavesCallerChildModeUnwritten.
func TestInitNamespaceChildModeUnwritten(t *testing.T) {
	if !*initNS {
		t.Skip("writes the init namespace's child_ns_mode; the VM harness runs it last, with -vsockns.init-ns")
	}
	withNS := namespacesExpected(t)
	self, err := netns.Get()
	require.NoError(t, err)
	defer self.Close()
	init, err := netns.GetFromPath("/proc/1/ns/net")
	require.NoError(t, err)
	defer init.Close()
	require.True(t, self.Equal(init), "must run in the init namespace")

	if !withNS {
		assert.ErrorIs(t, vsockns.SetChildMode(netns.None(), vsockns.ModeLocal), vsockns.ErrNotSupported)
		return
	}
	for _, m := range []vsockns.Mode{vsockns.ModeGlobal, vsockns.ModeLocal, vsockns.ModeGlobal} {
		ns, err := vsockns.NewNamespace(m)
		require.NoError(t, err)
		ns.Close()
	}
	require.NoError(t, vsockns.SetChildMode(netns.None(), vsockns.ModeLocal), "the init namespace's child_ns_mode had been written")
	m, err := vsockns.NamespaceMode(plainNS(t))
	require.NoError(t, err)
	assert.Equal(t, vsockns.ModeLocal, m, "namespaces created now are local")
}

var autoload = flag.Bool("vsockns.autoload", false, "run TestSupportedAutoloadsVsock, which needs a boot where vsock is not loaded but can be autoloaded (the VM harness makes one)")

// Supported in a process where vsock is not loaded yet and the kernel can
// load it on demand: its own probe socket(AF_VSOCK) loads vsock, which
// creates ns_mode, so on a 7.x kernel the answer is "supported" (before
// the fix, "this kernel has no vsock namespaces" was found and cached).
func TestSupportedAutoloadsVsock(t *testing.T) {
	if !*autoload {
		t.Skip("needs a boot without vsock loaded; the VM harness runs it so, with -vsockns.autoload")
	}
	_, err := os.Stat("/sys/module/vsock")
	require.ErrorIs(t, err, fs.ErrNotExist, "vsock must not be loaded before the probe")
	_, err = os.Stat("/proc/sys/net/vsock")
	require.ErrorIs(t, err, fs.ErrNotExist)

	want, perr := strconv.ParseBool(os.Getenv("VSOCKNS_EXPECT_NAMESPACES"))
	require.NoError(t, perr)
	err = vsockns.Supported()
	_, modErr := os.Stat("/sys/module/vsock")
	require.NoError(t, modErr, "the probe loaded vsock")
	if !want {
		assert.ErrorIs(t, err, vsockns.ErrNotSupported)
		assert.ErrorContains(t, err, "Linux >= 7.0 is needed")
		return
	}
	require.NoError(t, err)
	m, err := vsockns.NamespaceMode(netns.None())
	require.NoError(t, err)
	assert.Equal(t, vsockns.ModeGlobal, m)
}
