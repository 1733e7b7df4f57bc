//go:build linux

package vsockns_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
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
	"github.com/vsockns/vsockns/vsocktest"
)

// helperPIDs lists this process's CreateUserNamespace helpers (children
// whose argv[0] is vsockns-helper).
func helperPIDs(t testing.TB) []int {
	t.Helper()
	return helpersOf(t, os.Getpid())
}

func helpersOf(t testing.TB, parent int) []int {
	t.Helper()
	entries, err := os.ReadDir("/proc")
	require.NoError(t, err)
	var pids []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			continue
		}
		// pid (comm) state ppid ...
		rest := string(stat[strings.LastIndexByte(string(stat), ')')+2:])
		f := strings.Fields(rest)
		if len(f) < 2 || f[1] != strconv.Itoa(parent) || f[0] == "Z" {
			continue
		}
		cmdline, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		if argv0, _, _ := strings.Cut(string(cmdline), "\x00"); argv0 == "vsockns-helper" {
			pids = append(pids, pid)
		}
	}
	return pids
}

// createUserNS is CreateUserNamespace, closed at cleanup.
func createUserNS(t testing.TB, m vsockns.Mode) *vsockns.Namespace {
	t.Helper()
	ns, err := vsockns.CreateUserNamespace(context.Background(), m)
	require.NoError(t, err)
	t.Cleanup(func() { ns.Close() })
	return ns
}

func openFDs(t testing.TB) int {
	t.Helper()
	entries, err := os.ReadDir("/proc/self/fd")
	require.NoError(t, err)
	return len(entries)
}

// TestUserNamespaceUnprivileged is the rootless story, as an ordinary user
// (uid 1000, /dev/vhost-vsock 0666): a local namespace of one's own to
// listen and dial in, guests at CID 3 in two of them at once, nothing of
// the init namespace reaching them, a guest answering its owner.
func TestUserNamespaceUnprivileged(t *testing.T) {
	if !testenv.AsUnprivileged(t) {
		return
	}
	ctx := context.Background()
	if !namespacesExpectedUnprivileged(t) {
		// Linux 6.1: no vsock namespaces. The legacy operations work for
		// the ordinary user; the namespace parts wrap ErrNotSupported.
		_, err := vsockns.CreateUserNamespace(ctx, vsockns.ModeLocal)
		require.ErrorIs(t, err, vsockns.ErrNotSupported)
		assert.Empty(t, helperPIDs(t), "no helper started")
		_, err = vsockns.NamespaceMode(netns.None())
		require.ErrorIs(t, err, vsockns.ErrNotSupported)
		l, err := vsockns.Listen(netns.None(), 5301)
		require.NoError(t, err)
		echoServer(t, l)
		c, err := vsockns.Dial(netns.None(), vsock.Local, 5301)
		require.NoError(t, err)
		roundTrip(t, c, "legacy")
		c.Close()
		v, cid, err := vsockns.AllocateGuestCID(netns.None(), 3, 100)
		require.NoError(t, err, "an ordinary user claims a CID in the global pool")
		assert.GreaterOrEqual(t, cid, uint32(3))
		v.Close()
		return
	}

	t.Run("ModesAndHelper", func(t *testing.T) {
		ns := createUserNS(t, vsockns.ModeLocal)
		m, err := ns.Mode()
		require.NoError(t, err)
		assert.Equal(t, vsockns.ModeLocal, m)
		cm, err := ns.ChildMode()
		require.NoError(t, err)
		assert.Equal(t, vsockns.ModeLocal, cm)
		assert.Contains(t, ns.String(), "user namespace")
		require.Len(t, helperPIDs(t), 1)
		err = ns.SetChildMode(vsockns.ModeGlobal)
		require.ErrorIs(t, err, syscall.EPERM, "a local namespace gives no global children")

		// The caller's own namespace is global and stays unwritten.
		own, err := vsockns.NamespaceMode(netns.None())
		require.NoError(t, err)
		assert.Equal(t, vsockns.ModeGlobal, own)
	})

	t.Run("GlobalOfItsOwn", func(t *testing.T) {
		ns := createUserNS(t, vsockns.ModeGlobal)
		m, err := ns.Mode()
		require.NoError(t, err)
		assert.Equal(t, vsockns.ModeGlobal, m)
	})

	t.Run("ListenAndDialInside", func(t *testing.T) {
		ns := createUserNS(t, vsockns.ModeLocal)
		l, err := ns.ListenConfig().ListenVsock(ctx, vsock.Local, 5302)
		require.NoError(t, err)
		echoServer(t, l)
		c, err := ns.Dialer().DialVsock(ctx, vsock.Local, 5302)
		require.NoError(t, err)
		defer c.Close()
		roundTrip(t, c, "inside my own namespace")

		// The network-name API too, as http.Transport would call it.
		nc, err := ns.Dialer().DialContext(ctx, vsockns.Network, "local:5302")
		require.NoError(t, err)
		roundTrip(t, nc, "by address")
		nc.Close()

		// Nothing outside reaches the port: the caller's own
		// namespace gets a reset.
		_, err = vsockns.Dial(netns.None(), vsock.Local, 5302)
		require.ErrorIs(t, err, syscall.ECONNRESET)
	})

	t.Run("ReservedPort", func(t *testing.T) {
		ns := createUserNS(t, vsockns.ModeLocal)
		_, err := ns.ListenConfig().ListenVsock(ctx, vsock.Local, 80)
		require.ErrorIs(t, err, syscall.EACCES)
		assert.Contains(t, err.Error(), "CAP_NET_BIND_SERVICE in the initial user namespace")
		l, err := ns.ListenConfig().ListenVsock(ctx, vsock.Local, 1024)
		require.NoError(t, err, "1024 is the first port anyone may bind")
		l.Close()
	})

	t.Run("EnteringIsRefusedAndExplained", func(t *testing.T) {
		ns := createUserNS(t, vsockns.ModeLocal)
		h, err := ns.Handle()
		require.NoError(t, err)
		defer h.Close()
		id := nsIDOf(t, h)
		assert.Equal(t, ns.ID(), id, "the handle is the namespace's")
		_, err = vsockns.NamespaceMode(h)
		require.ErrorIs(t, err, syscall.EPERM)
		assert.Contains(t, err.Error(), "CreateUserNamespace")
		_, err = vsockns.Dial(h, vsock.Local, 5302)
		require.ErrorIs(t, err, syscall.EPERM)
		requireAllThreadsHome(t)
	})

	t.Run("TwoUsersVMsAtCID3", func(t *testing.T) {
		a := createUserNS(t, vsockns.ModeLocal)
		b := createUserNS(t, vsockns.ModeLocal)
		ga := startUserGuest(t, a, 3)
		gb := startUserGuest(t, b, 3)
		require.Equal(t, uint32(3), ga.CID())
		require.Equal(t, uint32(3), gb.CID())
		guestEcho(t, ga, 5000, "A")
		guestEcho(t, gb, 5000, "B")

		// Each owner's agent reaches its own guest, and only that one.
		for _, tc := range []struct {
			ns   *vsockns.Namespace
			want string
		}{{a, "A"}, {b, "B"}} {
			c, err := tc.ns.Dialer().DialVsock(ctx, 3, 5000)
			require.NoError(t, err)
			buf := make([]byte, 1)
			_, err = c.Read(buf)
			require.NoError(t, err)
			assert.Equal(t, tc.want, string(buf), "the guest at CID 3 of %s", tc.ns)
			c.Close()
		}

		// The init namespace (this user's own, and anyone else's) reaches
		// neither guest.
		_, err := vsockns.DialContext(ctx, netns.None(), 3, 5000)
		require.Error(t, err)
		assert.True(t, errors.Is(err, syscall.ENODEV) || errors.Is(err, syscall.ECONNRESET),
			"the init namespace dialing CID 3: %v", err)

		// A third namespace of the same user claims CID 3 as well, and a
		// second claim in one namespace is refused.
		c := createUserNS(t, vsockns.ModeLocal)
		v, err := c.OpenVhost()
		require.NoError(t, err)
		require.NoError(t, v.SetGuestCID(3))
		v2, err := c.OpenVhost()
		require.NoError(t, err)
		require.ErrorIs(t, v2.SetGuestCID(3), vsockns.ErrCIDInUse)
		v2.Close()
		v.Close()

		// AllocateGuestCID picks from the namespace's own pool.
		v, cid, err := c.AllocateGuestCID(3, 10)
		require.NoError(t, err)
		assert.Equal(t, uint32(3), cid)
		v.Close()
	})

	t.Run("CloseKeepsConnections", func(t *testing.T) {
		ns, err := vsockns.CreateUserNamespace(ctx, vsockns.ModeLocal)
		require.NoError(t, err)
		helpers := helperPIDs(t)
		require.Len(t, helpers, 1)
		l, err := ns.ListenConfig().ListenVsock(ctx, vsock.Local, 5303)
		require.NoError(t, err)
		echoServer(t, l)
		c, err := ns.Dialer().DialVsock(ctx, vsock.Local, 5303)
		require.NoError(t, err)
		defer c.Close()
		require.NoError(t, ns.Close())
		assert.Empty(t, helperPIDs(t), "Close ends the helper (and waits for it)")
		roundTrip(t, c, "after Close")
		_, err = ns.Dialer().DialVsock(ctx, vsock.Local, 5303)
		require.ErrorIs(t, err, vsockns.ErrNamespaceClosed)
		require.ErrorIs(t, ns.Close(), vsockns.ErrNamespaceClosed)
	})

	t.Run("ConcurrentRequests", func(t *testing.T) {
		ns := createUserNS(t, vsockns.ModeLocal)
		l, err := ns.ListenConfig().ListenVsock(ctx, vsock.Local, 5304)
		require.NoError(t, err)
		echoServer(t, l)
		var wg sync.WaitGroup
		errs := make(chan error, 64)
		for i := range 64 {
			wg.Go(func() {
				c, err := ns.Dialer().DialVsock(ctx, vsock.Local, 5304)
				if err != nil {
					errs <- err
					return
				}
				defer c.Close()
				msg := fmt.Sprintf("dial %d", i)
				if _, err := c.Write([]byte(msg)); err != nil {
					errs <- err
					return
				}
				buf := make([]byte, len(msg))
				if _, err := c.Read(buf); err != nil || string(buf) != msg {
					errs <- fmt.Errorf("read %q, %v", buf, err)
				}
			})
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Error(err)
		}
	})

	t.Run("RequestsHonourTheirContext", func(t *testing.T) {
		ns := createUserNS(t, vsockns.ModeLocal)
		helpers := helperPIDs(t)
		require.Len(t, helpers, 1)
		before := openFDs(t)

		cancelled, cancel := context.WithCancel(ctx)
		cancel()
		_, err := ns.Dialer().DialVsock(cancelled, vsock.Local, 5305)
		require.ErrorIs(t, err, context.Canceled)

		// A helper that does not answer (stopped): the caller's deadline
		// ends the wait; the late answer is not leaked.
		require.NoError(t, syscall.Kill(helpers[0], syscall.SIGSTOP))
		short, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
		defer cancel()
		_, err = ns.Dialer().DialVsock(short, vsock.Local, 5305)
		require.ErrorIs(t, err, context.DeadlineExceeded)
		require.NoError(t, syscall.Kill(helpers[0], syscall.SIGCONT))

		m, err := ns.Mode()
		require.NoError(t, err, "the helper serves again")
		assert.Equal(t, vsockns.ModeLocal, m)
		// The abandoned socket's late answer is closed, not kept. The
		// helper serves requests concurrently, so Mode's answer may come
		// before it (seen in a fresh-clone CI run on 7.2.13: 11 descriptors
		// for 10 when the count was taken right after Mode): wait, bounded.
		deadline := time.Now().Add(5 * time.Second)
		for openFDs(t) != before && time.Now().Before(deadline) {
			time.Sleep(time.Millisecond)
		}
		assert.Equal(t, before, openFDs(t), "descriptors")
	})

	t.Run("ServedToAnotherProcess", func(t *testing.T) {
		ns := createUserNS(t, vsockns.ModeLocal)
		path := filepath.Join(t.TempDir(), "ns.sock")
		client := serveAt(t, ns, path)
		assert.Equal(t, ns.ID(), client.ID())
		m, err := client.Mode()
		require.NoError(t, err)
		assert.Equal(t, vsockns.ModeLocal, m)
		l, err := client.ListenConfig().ListenVsock(ctx, vsock.Local, 5306)
		require.NoError(t, err)
		echoServer(t, l)
		c, err := ns.Dialer().DialVsock(ctx, vsock.Local, 5306)
		require.NoError(t, err, "the client's listener is in the served namespace")
		roundTrip(t, c, "served")
		c.Close()
	})

	t.Run("KillingTheParentEndsTheHelper", func(t *testing.T) {
		cmd := exec.Command(os.Args[0], "-test.run=^TestUserNamespaceHolder$")
		cmd.Env = append(os.Environ(), "VSOCKNS_TEST_USERNS_HOLDER=1")
		out, err := cmd.StdoutPipe()
		require.NoError(t, err)
		require.NoError(t, cmd.Start())
		var helper int
		_, err = fmt.Fscan(out, &helper)
		require.NoError(t, err, "the holder names its helper")
		pidfd, err := unix.PidfdOpen(helper, 0)
		require.NoError(t, err)
		defer unix.Close(pidfd)
		require.NoError(t, cmd.Process.Kill())
		_ = cmd.Wait()
		fds := []unix.PollFd{{Fd: int32(pidfd), Events: unix.POLLIN}}
		n, err := unix.Poll(fds, 10_000)
		require.NoError(t, err)
		require.Equal(t, 1, n, "the helper %d has exited after its parent was killed", helper)
	})
}

// TestUserNamespaceVhostNotAccessible: a device the user may not open is
// an EACCES that says who may.
func TestUserNamespaceVhostNotAccessible(t *testing.T) {
	if testenv.Unprivileged() {
		if !namespacesExpectedUnprivileged(t) {
			_, err := vsockns.OpenVhost(netns.None())
			require.ErrorIs(t, err, syscall.EACCES)
			assert.Contains(t, err.Error(), "mode 0600")
			return
		}
		ns := createUserNS(t, vsockns.ModeLocal)
		_, err := ns.OpenVhost()
		require.ErrorIs(t, err, syscall.EACCES)
		assert.Contains(t, err.Error(), "mode 0600")
		_, _, err = ns.AllocateGuestCID(3, 10)
		require.ErrorIs(t, err, syscall.EACCES)
		return
	}
	needVsock(t)
	st, err := os.Stat(vsockns.VhostDevice)
	require.NoError(t, err)
	require.NoError(t, os.Chmod(vsockns.VhostDevice, 0o600))
	t.Cleanup(func() { _ = os.Chmod(vsockns.VhostDevice, st.Mode().Perm()) })
	testenv.RunUnprivileged(t, t.Name())
}

// namespacesExpectedUnprivileged is NamespacesExpected for a process that
// is not root (NeedVsock asks for root).
func namespacesExpectedUnprivileged(t testing.TB) bool {
	t.Helper()
	want, err := strconv.ParseBool(os.Getenv("VSOCKNS_EXPECT_NAMESPACES"))
	require.NoError(t, err, "VSOCKNS_EXPECT_NAMESPACES from the harness")
	if want {
		require.NoError(t, vsockns.Supported())
	} else {
		require.ErrorIs(t, vsockns.Supported(), vsockns.ErrNotSupported)
	}
	return want
}

// TestUserNamespaceHolder is the process KillingTheParentEndsTheHelper
// kills: it makes a user namespace, prints its helper's PID and waits.
func TestUserNamespaceHolder(t *testing.T) {
	if os.Getenv("VSOCKNS_TEST_USERNS_HOLDER") != "1" {
		return // run only as the holder process
	}
	ns, err := vsockns.CreateUserNamespace(context.Background(), vsockns.ModeLocal)
	require.NoError(t, err)
	defer ns.Close()
	h := helperPIDs(t)
	require.Len(t, h, 1)
	fmt.Println(h[0])
	select {} // until killed
}

// startUserGuest runs a vsocktest guest at cid on a device the namespace's
// helper opened.
func startUserGuest(t testing.TB, ns *vsockns.Namespace, cid uint32) *vsocktest.Guest {
	t.Helper()
	g, err := vsocktest.NewGuest(vsocktest.Config{NetNS: ns, CID: cid})
	require.NoError(t, err)
	t.Cleanup(func() { g.Close() })
	return g
}

// guestEcho makes g greet every connection to port with one byte, then
// close it.
func guestEcho(t testing.TB, g *vsocktest.Guest, port uint32, greeting string) {
	t.Helper()
	l, err := g.Listen(port)
	require.NoError(t, err)
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			c.Write([]byte(greeting))
			c.Close()
		}
	})
	t.Cleanup(func() {
		l.Close()
		wg.Wait()
	})
}

// TestUserNamespaceAsRoot: root may have a namespace of a user namespace of
// its own too.
func TestUserNamespaceAsRoot(t *testing.T) {
	if !namespacesExpected(t) {
		_, err := vsockns.CreateUserNamespace(context.Background(), vsockns.ModeLocal)
		require.ErrorIs(t, err, vsockns.ErrNotSupported)
		return
	}
	ns := createUserNS(t, vsockns.ModeLocal)
	m, err := ns.Mode()
	require.NoError(t, err)
	assert.Equal(t, vsockns.ModeLocal, m)
	l, err := ns.ListenConfig().ListenVsock(context.Background(), vsock.Local, 5310)
	require.NoError(t, err)
	echoServer(t, l)
	c, err := ns.Dialer().DialVsock(context.Background(), vsock.Local, 5310)
	require.NoError(t, err)
	roundTrip(t, c, "root's user namespace")
	c.Close()

	// Root can enter it (it owns every user namespace it makes).
	h, err := ns.Handle()
	require.NoError(t, err)
	defer h.Close()
	hm, err := vsockns.NamespaceMode(h)
	require.NoError(t, err)
	assert.Equal(t, vsockns.ModeLocal, hm)

	//lint:ignore SA1012 a nil context is exactly the bad input under test
	_, err = vsockns.CreateUserNamespace(nil, vsockns.ModeLocal)
	require.Error(t, err)
	_, err = vsockns.CreateUserNamespace(context.Background(), vsockns.Mode(9))
	var me *vsockns.ModeError
	require.ErrorAs(t, err, &me)
	assert.Len(t, helperPIDs(t), 1, "the open namespace's helper, none for refused calls")
}

// TestUserNamespaceDisabled: each setting that keeps user namespaces from a
// process gives ErrUserNamespacesDisabled naming it.
func TestUserNamespaceDisabled(t *testing.T) {
	if testenv.Unprivileged() {
		knob := os.Getenv("VSOCKNS_TEST_KNOB")
		_, err := vsockns.CreateUserNamespace(context.Background(), vsockns.ModeLocal)
		require.ErrorIs(t, err, vsockns.ErrUserNamespacesDisabled)
		assert.Contains(t, err.Error(), knob+"=0")
		assert.Empty(t, helperPIDs(t))
		return
	}
	if !namespacesExpected(t) {
		t.Log("legacy kernel: CreateUserNamespace fails with ErrNotSupported first (TestUserNamespaceAsRoot)")
		_, err := vsockns.CreateUserNamespace(context.Background(), vsockns.ModeLocal)
		require.ErrorIs(t, err, vsockns.ErrNotSupported)
		return
	}
	set := func(t *testing.T, path, v string) {
		old, err := os.ReadFile(path)
		require.NoError(t, err)
		require.NoError(t, os.WriteFile(path, []byte(v), 0))
		t.Cleanup(func() { require.NoError(t, os.WriteFile(path, old, 0)) })
	}
	t.Run("max_user_namespaces", func(t *testing.T) {
		set(t, "/proc/sys/user/max_user_namespaces", "0")
		_, err := vsockns.CreateUserNamespace(context.Background(), vsockns.ModeLocal)
		require.ErrorIs(t, err, vsockns.ErrUserNamespacesDisabled)
		require.ErrorIs(t, err, syscall.ENOSPC)
		assert.Contains(t, err.Error(), "user.max_user_namespaces=0")
	})
	t.Run("unprivileged_userns_clone", func(t *testing.T) {
		const p = "/proc/sys/kernel/unprivileged_userns_clone"
		if _, err := os.Stat(p); err != nil {
			t.Logf("this kernel has no %s (Debian's patch); the unprivileged case is asserted with user.max_user_namespaces", p)
			set(t, "/proc/sys/user/max_user_namespaces", "0")
			testenv.RunUnprivileged(t, "TestUserNamespaceDisabled", "VSOCKNS_TEST_KNOB=user.max_user_namespaces")
			return
		}
		set(t, p, "0")
		testenv.RunUnprivileged(t, "TestUserNamespaceDisabled", "VSOCKNS_TEST_KNOB=kernel.unprivileged_userns_clone")
	})
}

// serveAt serves ns at path (until the test ends) and returns a client of
// it.
func serveAt(t testing.TB, ns *vsockns.Namespace, path string) *vsockns.Namespace {
	t.Helper()
	l, err := net.ListenUnix("unixpacket", &net.UnixAddr{Name: path, Net: "unixpacket"})
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- ns.Serve(ctx, l) }()
	t.Cleanup(func() {
		cancel()
		require.ErrorIs(t, <-errc, context.Canceled)
	})
	client, err := vsockns.DialNamespace(ctx, path)
	require.NoError(t, err)
	t.Cleanup(func() { client.Close() })
	return client
}

// TestNamespaceServe: a namespace served on a unix socket, to its own user
// only, ending with its context.
func TestNamespaceServe(t *testing.T) {
	if testenv.Unprivileged() {
		path := os.Getenv("VSOCKNS_TEST_SERVE_PATH")
		_, err := vsockns.DialNamespace(context.Background(), path)
		require.ErrorIs(t, err, syscall.EACCES)
		assert.Contains(t, err.Error(), "the server runs as uid 0", "the client refuses a server of another user")
		// The server refuses too, whoever dials it: its hello is the
		// refusal, with no descriptor.
		c, err := net.DialUnix("unixpacket", nil, &net.UnixAddr{Name: path, Net: "unixpacket"})
		require.NoError(t, err)
		defer c.Close()
		buf, oob := make([]byte, 4096), make([]byte, unix.CmsgSpace(4))
		n, oobn, _, _, err := c.ReadMsgUnix(buf, oob)
		require.NoError(t, err)
		assert.Zero(t, oobn, "no descriptor for another user")
		assert.Contains(t, string(buf[:n]), "served to uid 0 only")
		return
	}
	ctx := context.Background()
	var ns *vsockns.Namespace
	var err error
	if namespacesExpected(t) {
		ns, err = vsockns.CreateNamespace(vsockns.ModeLocal)
	} else {
		ns, err = vsockns.OpenNamespace(netns.None()) // legacy: served all the same
	}
	require.NoError(t, err)
	defer ns.Close()

	dir, err := os.MkdirTemp("", "serve-")
	require.NoError(t, err)
	defer os.RemoveAll(dir)
	require.NoError(t, os.Chmod(dir, 0o777))
	path := filepath.Join(dir, "ns.sock")
	l, err := net.ListenUnix("unixpacket", &net.UnixAddr{Name: path, Net: "unixpacket"})
	require.NoError(t, err)
	require.NoError(t, os.Chmod(path, 0o777), "open to all: the server's own check refuses other users")
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	errc := make(chan error, 1)
	go func() { errc <- ns.Serve(sctx, l) }()

	client, err := vsockns.DialNamespace(ctx, path)
	require.NoError(t, err)
	defer client.Close()
	assert.Equal(t, ns.ID(), client.ID())
	assert.Contains(t, client.String(), "served at "+path)
	l2, err := client.ListenConfig().ListenVsock(ctx, vsock.Local, 5320)
	require.NoError(t, err)
	echoServer(t, l2)
	c, err := ns.Dialer().DialVsock(ctx, vsock.Local, 5320)
	require.NoError(t, err)
	defer c.Close()
	roundTrip(t, c, "through the served namespace")

	testenv.RunUnprivileged(t, t.Name(), "VSOCKNS_TEST_SERVE_PATH="+path)

	// A stream listener is refused.
	sl, err := net.ListenUnix("unix", &net.UnixAddr{Name: filepath.Join(dir, "stream.sock"), Net: "unix"})
	require.NoError(t, err)
	defer sl.Close()
	require.ErrorIs(t, ns.Serve(ctx, sl), syscall.EPROTOTYPE)

	cancel()
	require.ErrorIs(t, <-errc, context.Canceled)
	_, err = client.Dialer().DialVsock(ctx, vsock.Local, 5320)
	require.ErrorIs(t, err, net.ErrClosed, "the server is gone")
	roundTrip(t, c, "a connection outlives the server")
}

// TestUserNamespaceHelperLivesInItsNamespace: every thread of the helper
// is in the namespace it serves, so no request switches one (before, the
// helper stayed in the first namespace made with its user namespace and
// moved a thread into the local child it served for every request).
func TestUserNamespaceHelperLivesInItsNamespace(t *testing.T) {
	needRoot(t)
	if !namespacesExpected(t) {
		_, err := vsockns.CreateUserNamespace(context.Background(), vsockns.ModeLocal)
		require.ErrorIs(t, err, vsockns.ErrNotSupported)
		return
	}
	for _, m := range []vsockns.Mode{vsockns.ModeLocal, vsockns.ModeGlobal} {
		t.Run(m.String(), func(t *testing.T) {
			ns := createUserNS(t, m)
			h, err := ns.Handle()
			require.NoError(t, err)
			defer h.Close()
			var st unix.Stat_t
			require.NoError(t, unix.Fstat(int(h), &st))
			want := fmt.Sprintf("net:[%d]", st.Ino)
			// Work for the helper's threads: concurrent requests.
			l, err := ns.ListenConfig().ListenVsock(context.Background(), vsock.Local, 5320)
			require.NoError(t, err)
			echoServer(t, l)
			var wg sync.WaitGroup
			for range 8 {
				wg.Go(func() {
					c, err := ns.Dialer().DialVsock(context.Background(), vsock.Local, 5320)
					if assert.NoError(t, err) {
						c.Close()
					}
				})
			}
			wg.Wait()
			pid := vsockns.HelperPid(ns)
			require.NotZero(t, pid)
			tasks, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
			require.NoError(t, err)
			require.NotEmpty(t, tasks)
			for _, task := range tasks {
				got, err := os.Readlink(fmt.Sprintf("/proc/%d/task/%s/ns/net", pid, task.Name()))
				require.NoError(t, err)
				assert.Equal(t, want, got, "thread %s of the helper (pid %d)", task.Name(), pid)
			}
		})
	}
}

// openFdSet lists this process's descriptors by number, with what each
// refers to (the listing's own directory left out).
func openFdSet(t testing.TB) map[int]string {
	t.Helper()
	entries, err := os.ReadDir("/proc/self/fd")
	require.NoError(t, err)
	set := map[int]string{}
	for _, e := range entries {
		fd, err := strconv.Atoi(e.Name())
		require.NoError(t, err)
		target, err := os.Readlink("/proc/self/fd/" + e.Name())
		if err != nil || strings.HasSuffix(target, "/fd") && strings.HasPrefix(target, "/proc/") {
			continue // the listing's own
		}
		set[fd] = target
	}
	return set
}

// TestCreateUserNamespaceOutOfDescriptors: CreateUserNamespace with 0 to
// 12 descriptors free fails cleanly or succeeds, and leaves no descriptor
// and no helper behind. Before, Go's fork with SysProcAttr's uid and gid
// maps left the pipe it makes for them open whenever clone failed, as it
// does with EMFILE (for the pidfd, the last descriptor a start makes: with
// 8 free here): the soak's leak.
func TestCreateUserNamespaceOutOfDescriptors(t *testing.T) {
	needRoot(t)
	if !namespacesExpected(t) {
		// CreateUserNamespace fails before it makes anything.
		base := openFdSet(t)
		_, err := vsockns.CreateUserNamespace(context.Background(), vsockns.ModeLocal)
		require.ErrorIs(t, err, vsockns.ErrNotSupported)
		assert.Equal(t, base, openFdSet(t))
		return
	}
	// A first start with descriptors to spare: Go checks once per process
	// whether pidfds work (the check needs descriptors, and failing under
	// the limits below would turn them off, and the clone that fails with
	// EMFILE with them).
	require.NoError(t, createUserNS(t, vsockns.ModeLocal).Close())
	settledFdCount(t)
	base := openFdSet(t)
	var orig unix.Rlimit
	require.NoError(t, unix.Getrlimit(unix.RLIMIT_NOFILE, &orig))
	t.Cleanup(func() { unix.Setrlimit(unix.RLIMIT_NOFILE, &orig) })
	var failed, made int
	for free := range 13 {
		// The limit that leaves exactly free descriptor numbers unused.
		limit := 0
		for left := free; ; limit++ {
			if _, used := base[limit]; !used {
				if left == 0 {
					break
				}
				left--
			}
		}
		require.NoError(t, unix.Setrlimit(unix.RLIMIT_NOFILE, &unix.Rlimit{Cur: uint64(limit), Max: orig.Max}))
		for range 3 {
			ns, err := vsockns.CreateUserNamespace(context.Background(), vsockns.ModeLocal)
			if err != nil {
				failed++
				continue
			}
			made++
			assert.NoError(t, ns.Close())
		}
		require.NoError(t, unix.Setrlimit(unix.RLIMIT_NOFILE, &orig))
	}
	t.Logf("%d made, %d failed", made, failed)
	assert.NotZero(t, failed, "the limits were tight enough to fail")
	// New descriptors are the leak; one of an earlier test's that closes
	// meanwhile (a store draining, a guest ending) is not this test's.
	added := func() map[int]string {
		extra := map[int]string{}
		for fd, target := range openFdSet(t) {
			if base[fd] != target {
				extra[fd] = target
			}
		}
		return extra
	}
	waitUntil(t, "no descriptor beyond those of before", func() bool { return len(added()) == 0 })
	assert.Empty(t, added())
	assert.Empty(t, helperPIDs(t))
}
