//go:build linux

package vsockns_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"syscall"
	"testing"
	"time"

	"github.com/mdlayher/vsock"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/vsockns/vsockns"
	"github.com/vsockns/vsockns/internal/testenv"
)

// Only the zero handle and netns.None() mean "the calling thread's
// namespace". Every other negative handle is refused with EBADF by every
// entry point, before a socket, a device or a sysctl is touched (before
// the fix, Listen(-2), NamespaceMode(-7) and OpenVhost(-1000) succeeded in
// the caller's namespace). This needs no kernel feature but the entry
// points' own; it runs everywhere vsock does.
func TestNegativeHandlesRefused(t *testing.T) {
	namespacesExpected(t)
	ctx := context.Background()
	for _, h := range []netns.NsHandle{-2, -7, -1000} {
		t.Run(fmt.Sprint(int(h)), func(t *testing.T) {
			check := func(what string, err error) {
				t.Helper()
				assert.ErrorIs(t, err, syscall.EBADF, what)
				assert.ErrorContains(t, err, "only 0 and netns.None() mean the calling thread's namespace", what)
			}
			_, err := vsockns.Dial(h, vsock.Local, 1)
			check("Dial", err)
			_, err = vsockns.DialContext(ctx, h, vsock.Local, 1)
			check("DialContext", err)
			d := vsockns.Dialer{Namespace: h}
			_, err = d.DialContext(ctx, "vsock", "local:1")
			check("Dialer.DialContext", err)
			_, err = vsockns.Listen(h, 0)
			check("Listen", err)
			_, err = vsockns.ListenContextID(h, vsock.Local, 0)
			check("ListenContextID", err)
			lc := vsockns.ListenConfig{Namespace: h}
			_, err = lc.Listen(ctx, "vsock", ":0")
			check("ListenConfig.Listen", err)
			_, err = vsockns.NamespaceMode(h)
			check("NamespaceMode", err)
			_, err = vsockns.ChildMode(h)
			check("ChildMode", err)
			check("SetChildMode", vsockns.SetChildMode(h, vsockns.ModeLocal))
			_, err = vsockns.G2HFallback(h)
			check("G2HFallback", err)
			check("SetG2HFallback", vsockns.SetG2HFallback(h, true))
			_, err = vsockns.OpenVhost(h)
			check("OpenVhost", err)
			_, _, err = vsockns.AllocateGuestCID(h, 3, 10)
			check("AllocateGuestCID", err)
			_, err = vsockns.OpenNamespace(h)
			check("OpenNamespace", err)
		})
	}
	requireAllThreadsHome(t)
}

// An owning reference keeps meaning its namespace after the handle it was
// made from is closed and that descriptor number is reused for another
// namespace.
func TestNamespaceSurvivesHandleReuse(t *testing.T) {
	withNS := namespacesExpected(t)
	first := newPlainNS(t)
	if withNS {
		require.NoError(t, first.Close())
		var err error
		first, err = vsockns.NewNamespace(vsockns.ModeLocal)
		require.NoError(t, err)
	}
	n, err := vsockns.OpenNamespace(first)
	require.NoError(t, err)
	defer n.Close()
	l, err := n.ListenConfig().ListenVsock(context.Background(), vsock.Local, 0)
	require.NoError(t, err)
	echoServer(t, l)
	port := l.Addr().(*vsock.Addr).Port

	other := plainNS(t) // an ordinary (global) namespace
	id := nsIDOf(t, first)
	number := int(first)
	require.NoError(t, first.Close())
	fd, err := unix.Dup(int(other)) // the lowest free number: first's
	require.NoError(t, err)
	second := netns.NsHandle(fd)
	defer second.Close()
	require.Equal(t, number, int(second), "the kernel reused the descriptor number")

	// Through the handle, that number now means the other namespace; through
	// the reference, still the first.
	assert.Equal(t, id, n.ID())
	h, err := n.Handle()
	require.NoError(t, err)
	assert.Equal(t, id, nsIDOf(t, h), "the reference still holds the first namespace")
	h.Close()
	assert.NotEqual(t, id, nsIDOf(t, second))
	c, err := n.Dialer().DialVsock(context.Background(), vsock.Local, port)
	require.NoError(t, err)
	roundTrip(t, c, "the reference's own namespace")
	c.Close()
	if withNS {
		_, err = vsockns.Dial(second, vsock.Local, port)
		assert.ErrorIs(t, err, syscall.ECONNRESET, "the reused number is another namespace")
		m, err := n.Mode()
		require.NoError(t, err)
		assert.Equal(t, vsockns.ModeLocal, m)
		m, err = vsockns.NamespaceMode(second)
		require.NoError(t, err)
		assert.Equal(t, vsockns.ModeGlobal, m)
	}
	requireAllThreadsHome(t)
}

// IDs identify namespaces: equal for two references to one namespace,
// different for another, printed as /proc names them, usable as map keys.
func TestNamespaceIdentity(t *testing.T) {
	testenv.HoldIfAsked()
	namespacesExpected(t)
	here, err := vsockns.OpenNamespace(netns.None())
	require.NoError(t, err)
	defer here.Close()
	byPath, err := vsockns.OpenNamespacePath("/proc/self/ns/net")
	require.NoError(t, err)
	defer byPath.Close()
	assert.Equal(t, here.ID(), byPath.ID())
	link, err := os.Readlink("/proc/self/ns/net")
	require.NoError(t, err)
	assert.Equal(t, link, here.ID().String())

	pid := testenv.StartHolder(t, "TestNamespaceIdentity")
	byPID, err := vsockns.OpenNamespacePID(pid)
	require.NoError(t, err)
	defer byPID.Close()
	link, err = os.Readlink(fmt.Sprintf("/proc/%d/ns/net", pid))
	require.NoError(t, err)
	assert.Equal(t, link, byPID.ID().String())
	assert.NotEqual(t, here.ID(), byPID.ID())

	servers := map[vsockns.NamespaceID]string{here.ID(): "host", byPID.ID(): "pod"}
	assert.Equal(t, "pod", servers[byPID.ID()])

	h, err := byPID.Handle()
	require.NoError(t, err)
	want, err := netns.GetFromPid(pid)
	require.NoError(t, err)
	defer want.Close()
	assert.True(t, h.Equal(want), "Handle gives the same namespace")
	require.NoError(t, h.Close())

	testenv.StopHolder(t, pid)
	_, err = vsockns.OpenNamespacePID(pid)
	assert.ErrorIs(t, err, syscall.ESRCH, "a reused PID never yields another namespace")
}

// A named namespace (ip netns add) opened by path.
func TestNamespaceFromNamedPath(t *testing.T) {
	name := fmt.Sprintf("vsockns-ref-%d", os.Getpid())
	if !namespacesExpected(t) {
		_, err := vsockns.NewNamedNamespace(name, vsockns.ModeLocal)
		require.ErrorIs(t, err, vsockns.ErrNotSupported)
		_, err = vsockns.OpenNamespacePath("/run/netns/" + name)
		assert.ErrorIs(t, err, syscall.ENOENT)
		return
	}
	h, err := vsockns.NewNamedNamespace(name, vsockns.ModeLocal)
	require.NoError(t, err)
	h.Close()
	t.Cleanup(func() { _ = vsockns.DeleteNamedNamespace(name) })
	n, err := vsockns.OpenNamespacePath("/run/netns/" + name)
	require.NoError(t, err)
	defer n.Close()
	m, err := n.Mode()
	require.NoError(t, err)
	assert.Equal(t, vsockns.ModeLocal, m)
	child, err := n.ChildMode()
	require.NoError(t, err)
	assert.Equal(t, vsockns.ModeLocal, child)
}

// Use after Close is an error, never the caller's namespace; so is the zero
// Namespace. A second Close says so too.
func TestNamespaceUseAfterClose(t *testing.T) {
	withNS := namespacesExpected(t)
	var n *vsockns.Namespace
	var err error
	if withNS {
		n, err = vsockns.CreateNamespace(vsockns.ModeLocal)
	} else {
		n, err = vsockns.OpenNamespace(newPlainNS(t))
	}
	require.NoError(t, err)
	require.NoError(t, n.Close())
	for name, ns := range map[string]*vsockns.Namespace{"closed": n, "zero": new(vsockns.Namespace)} {
		t.Run(name, func(t *testing.T) {
			check := func(what string, err error) {
				t.Helper()
				assert.ErrorIs(t, err, vsockns.ErrNamespaceClosed, what)
				assert.ErrorIs(t, err, net.ErrClosed, what)
			}
			_, err := ns.Dialer().DialVsock(context.Background(), vsock.Local, 1)
			check("Dial", err)
			var oe *net.OpError
			assert.ErrorAs(t, err, &oe)
			_, err = ns.ListenConfig().Listen(context.Background(), "vsock", ":0")
			check("Listen", err)
			_, err = ns.Mode()
			check("Mode", err)
			_, err = ns.ChildMode()
			check("ChildMode", err)
			check("SetChildMode", ns.SetChildMode(vsockns.ModeLocal))
			_, err = ns.G2HFallback()
			check("G2HFallback", err)
			check("SetG2HFallback", ns.SetG2HFallback(true))
			_, err = ns.OpenVhost()
			check("OpenVhost", err)
			_, _, err = ns.AllocateGuestCID(3, 10)
			check("AllocateGuestCID", err)
			_, err = ns.Handle()
			check("Handle", err)
			check("Close", ns.Close())
		})
	}
	requireAllThreadsHome(t)
}

// A Dialer or ListenConfig given both a handle and a reference refuses.
func TestNamespaceAndHandleBothSet(t *testing.T) {
	namespacesExpected(t)
	n, err := vsockns.OpenNamespace(netns.None())
	require.NoError(t, err)
	defer n.Close()
	other := plainNS(t)
	d := vsockns.Dialer{Namespace: other, NetNS: n}
	_, err = d.DialVsock(context.Background(), vsock.Local, 1)
	assert.ErrorContains(t, err, "set one")
	lc := vsockns.ListenConfig{Namespace: other, NetNS: n}
	_, err = lc.ListenVsock(context.Background(), vsock.Local, 0)
	assert.ErrorContains(t, err, "set one")
}

// What is not a network namespace is refused when the reference is made.
func TestOpenNamespaceRefusesOtherFiles(t *testing.T) {
	namespacesExpected(t)
	devNull, err := os.Open(os.DevNull)
	require.NoError(t, err)
	defer devNull.Close()
	before := fdCount(t)
	_, err = vsockns.OpenNamespace(netns.NsHandle(devNull.Fd()))
	assert.ErrorIs(t, err, syscall.EINVAL)
	assert.ErrorContains(t, err, "not a network namespace")
	_, err = vsockns.OpenNamespacePath(os.DevNull)
	assert.ErrorIs(t, err, syscall.EINVAL)
	_, err = vsockns.OpenNamespacePath("/proc/self/ns/uts")
	assert.ErrorIs(t, err, syscall.EINVAL, "another kind of namespace")
	_, err = vsockns.OpenNamespacePath("/nonexistent/ns")
	assert.ErrorIs(t, err, syscall.ENOENT)
	_, err = vsockns.OpenNamespace(closedHandle)
	assert.ErrorIs(t, err, syscall.EBADF)
	assert.Equal(t, before, fdCount(t), "nothing leaked")
}

// Close waits for an operation inside the namespace, and the operations of
// many goroutines on one reference run side by side.
func TestNamespaceConcurrentUse(t *testing.T) {
	ns := nsOfMode(t, vsockns.ModeGlobal)
	n, err := vsockns.OpenNamespace(ns)
	require.NoError(t, err)
	l, err := n.ListenConfig().ListenVsock(context.Background(), vsock.Local, 0)
	require.NoError(t, err)
	echoServer(t, l)
	port := l.Addr().(*vsock.Addr).Port
	errs := make(chan error, 64)
	for range cap(errs) {
		go func() {
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			c, err := n.Dialer().DialVsock(ctx, vsock.Local, port)
			if err == nil {
				c.Close()
			}
			errs <- err
		}()
	}
	for range cap(errs) {
		require.NoError(t, <-errs)
	}
	require.NoError(t, n.Close())
	_, err = n.Dialer().DialVsock(context.Background(), vsock.Local, port)
	assert.True(t, errors.Is(err, vsockns.ErrNamespaceClosed))
}

// The vhost device through a reference: CID 3 in each of two local
// namespaces.
func TestNamespaceVhost(t *testing.T) {
	if !namespacesExpected(t) {
		n, err := vsockns.OpenNamespace(netns.None())
		require.NoError(t, err)
		defer n.Close()
		v, cid, err := n.AllocateGuestCID(3, 100)
		require.NoError(t, err)
		defer v.Close()
		assert.GreaterOrEqual(t, cid, uint32(3))
		return
	}
	for range 2 {
		n, err := vsockns.CreateNamespace(vsockns.ModeLocal)
		require.NoError(t, err)
		defer n.Close()
		v, cid, err := n.AllocateGuestCID(3, 3)
		require.NoError(t, err)
		defer v.Close()
		assert.Equal(t, uint32(3), cid)
		v2, err := n.OpenVhost()
		require.NoError(t, err)
		assert.ErrorIs(t, v2.SetGuestCID(3), vsockns.ErrCIDInUse)
		v2.Close()
	}
}

// nsIDOf is the identity of the namespace h refers to.
func nsIDOf(t testing.TB, h netns.NsHandle) vsockns.NamespaceID {
	t.Helper()
	var st unix.Stat_t
	require.NoError(t, unix.Fstat(int(h), &st))
	return vsockns.NamespaceID{Dev: st.Dev, Ino: st.Ino}
}
