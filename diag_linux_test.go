//go:build linux

package vsockns_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
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

// vmaddrAny is VMADDR_CID_ANY (and VMADDR_PORT_ANY).
const vmaddrAny = ^uint32(0)

// needDiag skips (outside the VM) or fails (inside, where the test bed
// loads vsock_diag) unless the kernel lists vsock sockets.
func needDiag(t testing.TB) {
	t.Helper()
	testenv.NeedVsock(t)
	_, err := vsockns.Sockets(context.Background(), netns.None())
	if errors.Is(err, vsockns.ErrDiagUnavailable) {
		if testenv.InVM() {
			t.Fatalf("inside the test VM vsock_diag must be loaded: %v", err)
		}
		t.Skipf("needs the vsock_diag module (%v); %s", err, testenv.RunInVM)
	}
	require.NoError(t, err)
}

// inode is the inode number of a socket's descriptor (socket:[INODE]).
func inode(t testing.TB, c syscall.Conn) uint64 {
	t.Helper()
	rc, err := c.SyscallConn()
	require.NoError(t, err)
	var st unix.Stat_t
	var serr error
	require.NoError(t, rc.Control(func(fd uintptr) { serr = unix.Fstat(int(fd), &st) }))
	require.NoError(t, serr)
	return st.Ino
}

// testSpace is a namespace with the sockets a test made in it.
type testSpace struct {
	name string
	h    netns.NsHandle
	id   vsockns.NamespaceID
	mode vsockns.Mode // zero on a kernel without vsock namespaces
	// want are the sockets made in it, by inode: what the listing must
	// say of each.
	want map[uint64]wantSocket
}

type wantSocket struct {
	what  string
	typ   vsockns.SocketType
	state vsockns.SocketState
	port  uint32 // the local port, or (for a dialing end) the remote one
	dial  bool
}

// makeSockets makes, in the init namespace, a global and two local ones (on
// 6.1: plain new ones), a stream listener, a connection (both ends) and a
// SOCK_SEQPACKET listener each, on ports of their own from base.
func makeSockets(t *testing.T, base uint32) []*testSpace {
	t.Helper()
	ns := testenv.NamespacesExpected(t)
	spaces := []*testSpace{
		{name: "init", h: netns.None()},
		{name: "global", h: testenv.NSOfMode(t, vsockns.ModeGlobal)},
		{name: "local-1", h: testenv.NSOfMode(t, vsockns.ModeLocal)},
		{name: "local-2", h: testenv.NSOfMode(t, vsockns.ModeLocal)},
	}
	ctx := context.Background()
	for i, sp := range spaces {
		n, err := vsockns.OpenNamespace(sp.h)
		require.NoError(t, err)
		t.Cleanup(func() { n.Close() })
		sp.id = n.ID()
		if ns {
			sp.mode = vsockns.ModeGlobal
			if strings.HasPrefix(sp.name, "local") {
				sp.mode = vsockns.ModeLocal
			}
		}
		port := base + uint32(10*i)
		lc := n.ListenConfig()
		l, err := lc.ListenVsock(ctx, vmaddrAny, port)
		require.NoError(t, err, sp.name)
		t.Cleanup(func() { l.Close() })
		c, err := n.Dialer().DialVsock(ctx, vsock.Local, port)
		require.NoError(t, err, sp.name)
		t.Cleanup(func() { c.Close() })
		a, err := l.AcceptContext(ctx)
		require.NoError(t, err, sp.name)
		t.Cleanup(func() { a.Close() })
		sl, err := lc.ListenSeqpacket(ctx, vmaddrAny, port+1)
		require.NoError(t, err, sp.name)
		t.Cleanup(func() { sl.Close() })
		sp.want = map[uint64]wantSocket{
			inode(t, l):  {"listener", vsockns.TypeStream, vsockns.StateListening, port, false},
			inode(t, c):  {"dialing end", vsockns.TypeStream, vsockns.StateConnected, port, true},
			inode(t, a):  {"accepted end", vsockns.TypeStream, vsockns.StateConnected, port, false},
			inode(t, sl): {"seqpacket listener", vsockns.TypeSeqpacket, vsockns.StateListening, port + 1, false},
		}
	}
	return spaces
}

// checkSocket checks what the listing says of a socket the test made.
func checkSocket(t *testing.T, sp *testSpace, s vsockns.Socket) {
	t.Helper()
	w := sp.want[s.Inode]
	assert.Equal(t, w.typ, s.Type, "%s %s", sp.name, w.what)
	assert.Equal(t, w.state, s.State, "%s %s", sp.name, w.what)
	if w.dial {
		assert.Equal(t, uint32(vsock.Local), s.Remote.ContextID, "%s %s", sp.name, w.what)
		assert.Equal(t, w.port, s.Remote.Port, "%s %s", sp.name, w.what)
	} else {
		assert.Equal(t, w.port, s.Local.Port, "%s %s", sp.name, w.what)
	}
	if w.state == vsockns.StateListening {
		assert.Equal(t, ^uint32(0), s.Remote.ContextID, "%s %s: no peer", sp.name, w.what)
	}
	assert.NotZero(t, s.Cookie, "%s %s", sp.name, w.what)
}

// Each namespace lists the sockets made in it, each once, and none of the
// others'; the handle and the *Namespace forms agree.
func TestSocketsOfNamespace(t *testing.T) {
	needDiag(t)
	spaces := makeSockets(t, 41000)
	ctx := context.Background()
	for _, sp := range spaces {
		socks, err := vsockns.Sockets(ctx, sp.h)
		require.NoError(t, err, sp.name)
		seen := map[uint64]int{}
		for _, s := range socks {
			seen[s.Inode]++
			if _, ok := sp.want[s.Inode]; ok {
				checkSocket(t, sp, s)
			}
		}
		for ino, w := range sp.want {
			assert.Equal(t, 1, seen[ino], "%s: the %s (inode %d) listed once", sp.name, w.what, ino)
		}
		for _, other := range spaces {
			if other == sp {
				continue
			}
			for ino, w := range other.want {
				assert.Zero(t, seen[ino], "%s lists %s's %s", sp.name, other.name, w.what)
			}
		}
		n, err := vsockns.OpenNamespace(sp.h)
		require.NoError(t, err)
		byRef, err := n.Sockets(ctx)
		n.Close()
		require.NoError(t, err, sp.name)
		var got []uint64
		for _, s := range byRef {
			if _, ok := sp.want[s.Inode]; ok {
				got = append(got, s.Inode)
			}
		}
		assert.Len(t, got, len(sp.want), "%s through a *Namespace", sp.name)
	}
	testenv.RequireAllThreadsHome(t)
}

// A closed Namespace, a bad handle and a cancelled context fail with their
// errors, not an empty list.
func TestSocketsErrors(t *testing.T) {
	needDiag(t)
	n, err := vsockns.OpenNamespace(netns.None())
	require.NoError(t, err)
	require.NoError(t, n.Close())
	_, err = n.Sockets(context.Background())
	require.ErrorIs(t, err, vsockns.ErrNamespaceClosed)
	_, err = vsockns.Sockets(context.Background(), netns.NsHandle(-2))
	require.ErrorIs(t, err, unix.EBADF)
	_, err = vsockns.Sockets(context.Background(), testenv.ClosedHandle)
	require.ErrorIs(t, err, unix.EBADF)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err = vsockns.Sockets(ctx, testenv.PlainNS(t))
	require.ErrorIs(t, err, context.Canceled)
}

// The node's listing has every namespace once and every socket once, in
// its namespace, with its mode and owners: this process, or the child that
// alone holds a socket it inherited.
func TestNodeSockets(t *testing.T) {
	testenv.HoldIfAsked()
	needDiag(t)
	spaces := makeSockets(t, 42000)
	// A listener in the second local namespace that only a child holds.
	n, err := vsockns.OpenNamespace(spaces[3].h)
	require.NoError(t, err)
	defer n.Close()
	l, err := n.ListenConfig().ListenVsock(context.Background(), vmaddrAny, 42099)
	require.NoError(t, err)
	held := inode(t, l)
	f, err := l.File()
	require.NoError(t, err)
	child := testenv.StartFileHolder(t, t.Name(), f)
	f.Close()
	l.Close()
	spaces[3].want[held] = wantSocket{"child's listener", vsockns.TypeStream, vsockns.StateListening, 42099, false}

	start := time.Now()
	list, err := vsockns.NodeSockets(context.Background())
	require.NoError(t, err)
	t.Logf("%d namespaces, %d sockets in %v", len(list.Namespaces), len(list.Sockets), time.Since(start))

	nsSeen := map[vsockns.NamespaceID]int{}
	for _, ni := range list.Namespaces {
		nsSeen[ni.ID]++
	}
	self := ownComm(t)
	seen := map[uint64]int{}
	for _, s := range list.Sockets {
		seen[s.Inode]++
		for _, sp := range spaces {
			w, ok := sp.want[s.Inode]
			if !ok {
				continue
			}
			assert.Equal(t, sp.id, s.Namespace.ID, "the %s of %s", w.what, sp.name)
			assert.Equal(t, sp.mode, s.Namespace.Mode, "the %s of %s", w.what, sp.name)
			checkSocket(t, sp, s.Socket)
			want := []vsockns.Process{{PID: os.Getpid(), Command: self}}
			if s.Inode == held {
				want = []vsockns.Process{{PID: child, Command: self}}
			}
			assert.Equal(t, want, s.Owners, "the %s of %s", w.what, sp.name)
		}
	}
	for _, sp := range spaces {
		assert.Equal(t, 1, nsSeen[sp.id], "namespace %s listed once", sp.name)
		for ino, w := range sp.want {
			assert.Equal(t, 1, seen[ino], "the %s of %s listed once", w.what, sp.name)
		}
	}
	// The init namespace is every process's; the others are held by
	// this process's descriptors only.
	for _, ni := range list.Namespaces {
		switch ni.ID {
		case spaces[0].id:
			assert.Contains(t, ni.PIDs, os.Getpid())
		case spaces[1].id, spaces[2].id, spaces[3].id:
			assert.True(t, ni.Held, "%s held", ni.ID)
			assert.Empty(t, ni.PIDs, "%s: no process in it", ni.ID)
		}
	}
	testenv.RequireAllThreadsHome(t)
}

// ownComm is this process's command name (/proc/self/comm).
func ownComm(t testing.TB) string {
	t.Helper()
	b, err := os.ReadFile("/proc/self/comm")
	require.NoError(t, err)
	return strings.TrimSuffix(string(b), "\n")
}

// A bind-mounted namespace has its name under /run/netns, and its other
// mounts as paths.
func TestNodeSocketsNames(t *testing.T) {
	needDiag(t)
	h := testenv.PlainNS(t)
	named := "/run/netns/diag-names"
	other := filepath.Join(t.TempDir(), "bound")
	require.NoError(t, os.MkdirAll("/run/netns", 0o755))
	for _, p := range []string{named, other} {
		require.NoError(t, os.WriteFile(p, nil, 0o444))
		t.Cleanup(func() { os.Remove(p) })
		require.NoError(t, unix.Mount("/proc/self/fd/"+strconv.Itoa(int(h)), p, "none", unix.MS_BIND, ""))
		t.Cleanup(func() { unix.Unmount(p, unix.MNT_DETACH) })
	}
	n, err := vsockns.OpenNamespace(h)
	require.NoError(t, err)
	defer n.Close()
	list, err := vsockns.NodeSockets(context.Background())
	require.NoError(t, err)
	found := 0
	for _, ni := range list.Namespaces {
		if ni.ID == n.ID() {
			found++
			assert.Equal(t, []string{"diag-names"}, ni.Names)
			assert.Equal(t, []string{other}, ni.Paths)
			assert.Equal(t, "diag-names", ni.Name())
			if testenv.NamespacesExpected(t) {
				assert.Equal(t, vsockns.ModeGlobal, ni.Mode, "a plain namespace of the init namespace's")
			} else {
				assert.Zero(t, ni.Mode, "no vsock modes on this kernel")
			}
		}
	}
	assert.Equal(t, 1, found)
}

// vsock_diag unloaded: both forms fail with ErrDiagUnavailable, naming the
// module, and NodeSockets returns no partial listing. The module is loaded
// again from the test bed's copy at the end.
func TestSocketsWithoutDiagModule(t *testing.T) {
	needDiag(t)
	if !testenv.InVM() {
		t.Skip("unloads vsock_diag; " + testenv.RunInVM)
	}
	mods, _ := filepath.Glob("/lib/vsockns/vsock_diag.ko*")
	require.Len(t, mods, 1, "the test bed packs vsock_diag")
	require.NoError(t, unix.DeleteModule("vsock_diag", unix.O_NONBLOCK), "rmmod vsock_diag")
	t.Cleanup(func() {
		f, err := os.Open(mods[0])
		require.NoError(t, err)
		defer f.Close()
		flags := 0
		if !strings.HasSuffix(mods[0], ".ko") {
			flags = unix.MODULE_INIT_COMPRESSED_FILE
		}
		require.NoError(t, unix.FinitModule(int(f.Fd()), "", flags), "load %s again", mods[0])
	})
	_, err := vsockns.Sockets(context.Background(), netns.None())
	require.ErrorIs(t, err, vsockns.ErrDiagUnavailable)
	require.ErrorIs(t, err, errors.ErrUnsupported)
	require.ErrorIs(t, err, unix.ENOENT)
	assert.Contains(t, err.Error(), "modprobe vsock_diag")
	list, err := vsockns.NodeSockets(context.Background())
	require.ErrorIs(t, err, vsockns.ErrDiagUnavailable)
	assert.Nil(t, list)
}

// An ordinary user lists its own namespace in full; NodeSockets gives it
// what it can see (its namespace) with an IncompleteError for the rest,
// and a named namespace it cannot enter fails with EPERM.
func TestNodeSocketsUnprivileged(t *testing.T) {
	const name, port = "diag-unpriv", 43000
	if !testenv.Unprivileged() {
		needDiag(t)
		l, err := vsockns.Listen(netns.None(), port)
		require.NoError(t, err)
		defer l.Close()
		named := testenv.NamespacesExpected(t)
		if named {
			h, err := vsockns.NewNamedNamespace(name, vsockns.ModeLocal)
			require.NoError(t, err)
			h.Close()
			defer vsockns.DeleteNamedNamespace(name)
		}
		testenv.AsUnprivileged(t, "DIAG_NAMED="+strconv.FormatBool(named))
		return
	}
	require.True(t, testenv.AsUnprivileged(t))
	socks, err := vsockns.Sockets(context.Background(), netns.None())
	require.NoError(t, err)
	assert.True(t, hasListener(socks, port), "root's listener in the init namespace, seen by an ordinary user")
	list, err := vsockns.NodeSockets(context.Background())
	var inc *vsockns.IncompleteError
	require.ErrorAs(t, err, &inc)
	require.ErrorIs(t, err, vsockns.ErrIncomplete)
	t.Logf("as uid %d: %v", os.Getuid(), err)
	require.NotNil(t, list)
	assert.NotEmpty(t, inc.Unopened, "other users' processes")
	var seen []vsockns.Socket
	for _, s := range list.Sockets {
		seen = append(seen, s.Socket)
	}
	assert.True(t, hasListener(seen, port), "the init namespace is listed")
	if named, _ := strconv.ParseBool(os.Getenv("DIAG_NAMED")); named {
		h, err := netns.GetFromName(name)
		require.NoError(t, err)
		defer h.Close()
		_, err = vsockns.Sockets(context.Background(), h)
		require.ErrorIs(t, err, unix.EPERM)
		require.ErrorIs(t, inc, unix.EPERM, "the named namespace is among those not listed")
		found := false
		for _, ne := range inc.Namespaces {
			found = found || slices.Contains(ne.Namespace.Names, name)
		}
		assert.True(t, found, "%s among the namespaces not listed", name)
	}
}

func hasListener(socks []vsockns.Socket, port uint32) bool {
	for _, s := range socks {
		if s.State == vsockns.StateListening && s.Local.Port == port {
			return true
		}
	}
	return false
}

// A namespace CreateUserNamespace made lists its sockets through its
// helper (the remote protocol's diag request): the netlink socket is made
// in the namespace by the helper, the dump runs here.
func TestSocketsOfUserNamespace(t *testing.T) {
	needDiag(t)
	ctx := context.Background()
	if !testenv.NamespacesExpected(t) {
		_, err := vsockns.CreateUserNamespace(ctx, vsockns.ModeLocal)
		require.ErrorIs(t, err, vsockns.ErrNotSupported)
		return
	}
	ns, err := vsockns.CreateUserNamespace(ctx, vsockns.ModeLocal)
	require.NoError(t, err)
	defer ns.Close()
	l, err := ns.ListenConfig().ListenVsock(ctx, vmaddrAny, 44000)
	require.NoError(t, err)
	defer l.Close()
	ino := inode(t, l)
	socks, err := ns.Sockets(ctx)
	require.NoError(t, err)
	found := 0
	for _, s := range socks {
		if s.Inode == ino {
			found++
			assert.Equal(t, vsockns.StateListening, s.State)
			assert.Equal(t, uint32(44000), s.Local.Port)
		}
	}
	assert.Equal(t, 1, found, "the listener, through the helper")
	here, err := vsockns.Sockets(ctx, netns.None())
	require.NoError(t, err)
	for _, s := range here {
		assert.NotEqual(t, ino, s.Inode, "the user namespace's listener in the init namespace's list")
	}
	require.NoError(t, ns.Close())
	_, err = ns.Sockets(ctx)
	require.ErrorIs(t, err, vsockns.ErrNamespaceClosed)
}
