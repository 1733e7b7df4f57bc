//go:build linux

package vsockns_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/mdlayher/vsock"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/vsockns/vsockns"
)

// Sockets made ahead (Namespace.Prepare).

// waitUntil polls cond (every millisecond, for at most 10 s): the store
// fills on a goroutine of its own.
func waitUntil(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("not within 10 s: %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

// waitHeld waits until n's store holds want sockets.
func waitHeld(t testing.TB, n *vsockns.Namespace, seqpacket bool, want int) {
	t.Helper()
	waitUntil(t, fmt.Sprintf("the store holds %d", want), func() bool {
		held, _, _ := vsockns.ReadyStats(n, seqpacket)
		return held == want
	})
}

// settledFdCount waits until no store of an earlier test holds or is
// making sockets (a refill in flight when its namespace closed releases
// its batch a moment later), then counts this process's descriptors.
func settledFdCount(t testing.TB) int {
	t.Helper()
	waitUntil(t, "earlier tests' stores released", func() bool { return vsockns.ReadyHeld() == 0 })
	return fdCount(t)
}

// tokenServer answers every connection on l with token and closes it.
func tokenServer(t testing.TB, l net.Listener, token string) {
	t.Helper()
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			c.Write([]byte(token))
			c.Close()
		}
	}()
}

// tokenListener listens on a free port with listen (a ListenConfig's
// ListenVsock or ListenSeqpacket) and answers with token (tokenServer).
func tokenListener(t testing.TB, listen func(context.Context, uint32, uint32) (*vsockns.Listener, error), token string) *vsockns.Listener {
	t.Helper()
	l, err := listen(context.Background(), vsock.Local, 0)
	require.NoError(t, err)
	tokenServer(t, l, token)
	return l
}

// readToken dials through d and returns what the server said.
func readToken(t testing.TB, d *vsockns.Dialer, port uint32) string {
	t.Helper()
	c, err := d.DialVsock(context.Background(), vsock.Local, port)
	require.NoError(t, err)
	defer c.Close()
	b, err := io.ReadAll(c)
	require.NoError(t, err)
	return string(b)
}

// preparedNamespace is a new namespace of mode m (an ordinary one on
// kernels without vsock namespaces) as an owning reference.
func preparedNamespace(t testing.TB, m vsockns.Mode) *vsockns.Namespace {
	t.Helper()
	var n *vsockns.Namespace
	var err error
	if namespacesExpected(t) {
		n, err = vsockns.CreateNamespace(m)
	} else {
		n, err = vsockns.OpenNamespace(plainNS(t))
	}
	require.NoError(t, err)
	t.Cleanup(func() { n.Close() })
	return n
}

func TestPrepareServesOnlyItsNamespace(t *testing.T) {
	if !namespacesExpected(t) {
		t.Log("without vsock namespaces every namespace reaches every listener: nothing to tell apart")
		return
	}
	// Two local namespaces listen on the same port, each answering with
	// its name: a socket of A's store that served B's dial would read "A".
	const port = 5100
	a, b := preparedNamespace(t, vsockns.ModeLocal), preparedNamespace(t, vsockns.ModeLocal)
	for name, n := range map[string]*vsockns.Namespace{"A": a, "B": b} {
		l, err := n.ListenConfig().ListenVsock(context.Background(), vsock.Local, port)
		require.NoError(t, err)
		tokenServer(t, l, name)
		require.NoError(t, n.Prepare(8, 0))
	}
	da, db := a.Dialer(), b.Dialer()
	for i := range 100 {
		require.Equal(t, "A", readToken(t, da, port), "dial %d through A", i)
		require.Equal(t, "B", readToken(t, db, port), "dial %d through B", i)
	}
	_, madeA, _ := vsockns.ReadyStats(a, false)
	_, madeB, _ := vsockns.ReadyStats(b, false)
	assert.Greater(t, madeA, 0, "A's dials took sockets made ahead")
	assert.Greater(t, madeB, 0)

	// A closes with its store full; a new reference to B opened next
	// gets A's descriptor number (the lowest free), and its dials reach B
	// only: nothing of A's store is left to hand out.
	waitUntil(t, "A's store holds sockets", func() bool { held, _, _ := vsockns.ReadyStats(a, false); return held > 0 })
	require.NoError(t, a.Close())
	h, err := b.Handle()
	require.NoError(t, err)
	c, err := vsockns.OpenNamespace(h)
	require.NoError(t, err)
	h.Close()
	defer c.Close()
	require.NoError(t, c.Prepare(8, 0))
	for range 20 {
		require.Equal(t, "B", readToken(t, c.Dialer(), port))
	}
	_, err = da.DialVsock(context.Background(), vsock.Local, port)
	assert.ErrorIs(t, err, vsockns.ErrNamespaceClosed, "use after Close fails as without a store")
}

func TestPrepareBatchesOneSwitch(t *testing.T) {
	n := preparedNamespace(t, vsockns.ModeGlobal)
	l := tokenListener(t, n.ListenConfig().ListenVsock, "x")
	port := l.Addr().(*vsock.Addr).Port
	require.NoError(t, n.Prepare(16, 0))
	held, made, _ := vsockns.ReadyStats(n, false)
	assert.Zero(t, held+made, "nothing is made before the first dial")

	d := n.Dialer()
	readToken(t, d, port) // the store was empty: the usual path, and the refill starts
	waitHeld(t, n, false, 16)
	_, made, batches := vsockns.ReadyStats(n, false)
	assert.Equal(t, 16, made)
	assert.Equal(t, 1, batches, "16 sockets in one switch")

	for range 8 {
		readToken(t, d, port) // down to half: the refiller wakes
	}
	waitHeld(t, n, false, 16)
	_, made, batches = vsockns.ReadyStats(n, false)
	assert.Equal(t, 24, made)
	assert.Equal(t, 2, batches, "the 8 taken came back in one switch")
	assert.LessOrEqual(t, vsockns.ReadyHeld(), vsockns.ReadyLimit())
}

func TestPrepareDialOptionsApply(t *testing.T) {
	n := preparedNamespace(t, vsockns.ModeGlobal)
	l, err := n.ListenConfig().ListenVsock(context.Background(), vsock.Local, 0)
	require.NoError(t, err)
	peers := make(chan net.Addr, 4)
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			peers <- c.RemoteAddr()
			c.Close()
		}
	}()
	port := l.Addr().(*vsock.Addr).Port
	require.NoError(t, n.Prepare(4, 0))
	readToken0 := func() { // one dial to start the store
		c, err := n.Dialer().DialVsock(context.Background(), vsock.Local, port)
		require.NoError(t, err)
		c.Close()
		<-peers
	}
	readToken0()
	waitHeld(t, n, false, 4)

	var controlled []string
	d := n.Dialer()
	d.BufferSize = 1 << 20
	d.LocalAddr = &vsock.Addr{ContextID: unix.VMADDR_CID_ANY, Port: 7701}
	d.ToHost = true
	d.Timeout = 10 * time.Second
	d.Control = func(network, address string, rc syscall.RawConn) error {
		return rc.Control(func(fd uintptr) {
			_, err := unix.Getpeername(int(fd))
			controlled = append(controlled, fmt.Sprintf("%s %s %v", network, address, errors.Is(err, unix.ENOTCONN)))
		})
	}
	c, err := d.DialVsock(context.Background(), vsock.Local, port)
	require.NoError(t, err)
	defer c.Close()
	held, _, _ := vsockns.ReadyStats(n, false)
	assert.Less(t, held, 4, "the dial took a socket made ahead")
	assert.Equal(t, []string{"vsock local(1):" + fmt.Sprint(port) + " true"}, controlled, "Control saw it before connect")
	size, _, _, err := c.BufferSize()
	require.NoError(t, err)
	assert.Equal(t, uint64(1<<20), size)
	assert.Equal(t, uint32(7701), c.LocalAddr().(*vsock.Addr).Port)
	assert.Equal(t, uint32(7701), (<-peers).(*vsock.Addr).Port)
	flags, err := c.RemoteFlags()
	require.NoError(t, err)
	assert.Equal(t, uint8(unix.VMADDR_FLAG_TO_HOST), flags)
	rc, err := c.SyscallConn()
	require.NoError(t, err)
	require.NoError(t, rc.Control(func(fd uintptr) {
		fl, err := unix.FcntlInt(fd, unix.F_GETFD, 0)
		require.NoError(t, err)
		assert.NotZero(t, fl&unix.FD_CLOEXEC, "close-on-exec")
	}))

	// A deadline already past fails before a socket is taken.
	held, _, _ = vsockns.ReadyStats(n, false)
	ctx, cancel := context.WithDeadline(context.Background(), time.Now().Add(-time.Second))
	defer cancel()
	_, err = n.Dialer().DialVsock(ctx, vsock.Local, port)
	assert.ErrorIs(t, err, context.DeadlineExceeded)
	after, _, _ := vsockns.ReadyStats(n, false)
	assert.Equal(t, held, after)
}

func TestPrepareFailedConnectDiscardsSocket(t *testing.T) {
	n := preparedNamespace(t, vsockns.ModeGlobal)
	l := tokenListener(t, n.ListenConfig().ListenVsock, "x")
	require.NoError(t, n.Prepare(4, 0))
	readToken(t, n.Dialer(), l.Addr().(*vsock.Addr).Port)
	waitHeld(t, n, false, 4)
	waitUntil(t, "only this store holds sockets", func() bool { return vsockns.ReadyHeld() == 4 })
	before := fdCount(t)
	_, err := n.Dialer().DialVsock(context.Background(), vsock.Local, 5999) // nobody listens
	require.ErrorIs(t, err, syscall.ECONNRESET)
	held, _, _ := vsockns.ReadyStats(n, false)
	assert.Equal(t, 3, held, "the failed dial's socket did not come back")
	assert.Equal(t, before-1, fdCount(t), "and it is closed")
}

func TestPrepareSeqpacketStoreSeparate(t *testing.T) {
	n := preparedNamespace(t, vsockns.ModeGlobal)
	sl := tokenListener(t, n.ListenConfig().ListenSeqpacket, "message")
	l := tokenListener(t, n.ListenConfig().ListenVsock, "stream")
	require.NoError(t, n.Prepare(0, 4))
	d := n.Dialer()
	for range 3 {
		assert.Equal(t, "stream", readToken(t, d, l.Addr().(*vsock.Addr).Port))
	}
	held, made, _ := vsockns.ReadyStats(n, false)
	assert.Zero(t, held+made, "no stream store was asked for")
	held, made, _ = vsockns.ReadyStats(n, true)
	assert.Zero(t, held+made, "stream dials leave the SOCK_SEQPACKET store alone")

	dial := func() {
		c, err := d.DialSeqpacket(context.Background(), vsock.Local, sl.Addr().(*vsock.Addr).Port)
		require.NoError(t, err)
		defer c.Close()
		buf := make([]byte, 64)
		k, err := c.Read(buf)
		require.NoError(t, err)
		assert.Equal(t, "message", string(buf[:k]))
		typ, err := unix.GetsockoptInt(connFd(t, c), unix.SOL_SOCKET, unix.SO_TYPE)
		require.NoError(t, err)
		assert.Equal(t, unix.SOCK_SEQPACKET, typ)
	}
	dial()
	waitHeld(t, n, true, 4)
	dial() // from the store
	held, _, _ = vsockns.ReadyStats(n, true)
	assert.Equal(t, 3, held)
}

// connFd is c's descriptor, for a getsockopt.
func connFd(t testing.TB, c *vsockns.Conn) int {
	t.Helper()
	rc, err := c.SyscallConn()
	require.NoError(t, err)
	fd := -1
	require.NoError(t, rc.Control(func(f uintptr) { fd = int(f) }))
	return fd
}

func TestPrepareCloseFreesEveryDescriptor(t *testing.T) {
	n := preparedNamespace(t, vsockns.ModeGlobal)
	l := tokenListener(t, n.ListenConfig().ListenVsock, "x")
	sl := tokenListener(t, n.ListenConfig().ListenSeqpacket, "x")
	before := settledFdCount(t)
	heldBefore := vsockns.ReadyHeld()
	require.NoError(t, n.Prepare(32, 16))
	readToken(t, n.Dialer(), l.Addr().(*vsock.Addr).Port)
	c, err := n.Dialer().DialSeqpacket(context.Background(), vsock.Local, sl.Addr().(*vsock.Addr).Port)
	require.NoError(t, err)
	_, err = io.ReadAll(c) // to the end: the server has closed its side
	require.NoError(t, err)
	c.Close()
	waitHeld(t, n, false, 32)
	waitHeld(t, n, true, 16)
	// The servers' ends of the two dials close on their goroutines: the
	// counts are waited for (bounded), not read once.
	fds := func(want int) func() bool { return func() bool { return fdCount(t) == want } }
	waitUntil(t, "48 descriptors held", fds(before+48))
	assert.Equal(t, heldBefore+48, vsockns.ReadyHeld())

	require.NoError(t, n.Prepare(8, 0)) // fewer: the extra go at once
	waitUntil(t, "8 descriptors held", fds(before+8))
	require.NoError(t, n.Close())
	waitUntil(t, "the store's and the namespace's own descriptors closed", fds(before-1))
	waitUntil(t, "nothing held", func() bool { return vsockns.ReadyHeld() == heldBefore })
	assert.ErrorIs(t, n.Prepare(1, 1), vsockns.ErrNamespaceClosed)
}

func TestPrepareIdleStoreDrains(t *testing.T) {
	// Long enough to see the store full first (a batch under the race
	// detector in the VM takes most of 100 ms), short for a test.
	old := vsockns.SetReadyIdle(2 * time.Second)
	defer vsockns.SetReadyIdle(old)
	n := preparedNamespace(t, vsockns.ModeGlobal)
	l := tokenListener(t, n.ListenConfig().ListenVsock, "x")
	port := l.Addr().(*vsock.Addr).Port
	require.NoError(t, n.Prepare(8, 0))
	before := settledFdCount(t)
	readToken(t, n.Dialer(), port)
	waitHeld(t, n, false, 8)
	waitHeld(t, n, false, 0) // no dial for 2 s
	waitUntil(t, "the drained sockets closed", func() bool { return fdCount(t) <= before })
	readToken(t, n.Dialer(), port) // the next dial starts it again
	waitHeld(t, n, false, 8)
}

func TestPrepareDialRacingClose(t *testing.T) {
	for round := range 20 {
		n := preparedNamespace(t, vsockns.ModeGlobal)
		l, err := n.ListenConfig().ListenVsock(context.Background(), vsock.Local, 0)
		require.NoError(t, err)
		tokenServer(t, l, "x")
		port := l.Addr().(*vsock.Addr).Port
		require.NoError(t, n.Prepare(16, 0))
		readToken(t, n.Dialer(), port)
		before := fdCount(t)
		var (
			wg     sync.WaitGroup
			dialed atomic.Int64
		)
		errs := make(chan error, 64)
		for range 8 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for range 8 {
					c, err := n.Dialer().DialVsock(context.Background(), vsock.Local, port)
					if err != nil {
						errs <- err
						return
					}
					dialed.Add(1)
					c.Close()
				}
			}()
		}
		// Close after a different number of dials each round.
		waitUntil(t, "dials under way", func() bool { return dialed.Load() >= int64(round*3) })
		require.NoError(t, n.Close())
		wg.Wait()
		close(errs)
		for err := range errs {
			require.ErrorIs(t, err, vsockns.ErrNamespaceClosed, "round %d", round)
		}
		waitUntil(t, "the store's descriptors closed", func() bool { return fdCount(t) <= before })
		l.Close()
	}
	requireAllThreadsHome(t)
}

func TestPrepareRefusesBadCounts(t *testing.T) {
	n := preparedNamespace(t, vsockns.ModeGlobal)
	assert.Error(t, n.Prepare(-1, 0))
	assert.Error(t, n.Prepare(0, -1))
	assert.NoError(t, n.Prepare(0, 0))
	var zero vsockns.Namespace
	assert.ErrorIs(t, zero.Prepare(1, 0), vsockns.ErrNamespaceClosed)
}

// setNoFile lowers RLIMIT_NOFILE's soft limit to limit for the rest of the
// test.
func setNoFile(t testing.TB, limit uint64) {
	t.Helper()
	var old unix.Rlimit
	require.NoError(t, unix.Getrlimit(unix.RLIMIT_NOFILE, &old))
	require.Less(t, limit, old.Cur)
	require.NoError(t, unix.Setrlimit(unix.RLIMIT_NOFILE, &unix.Rlimit{Cur: limit, Max: old.Max}))
	t.Cleanup(func() { unix.Setrlimit(unix.RLIMIT_NOFILE, &old) })
}

// Under 1000 namespaces, each asking for 8 sockets and dialed once, the
// stores together never hold more than their bound (a quarter of the
// descriptor limit, lowered here to bind), and dials still work.
func TestPrepareCapUnder1000Namespaces(t *testing.T) {
	mode := vsockns.ModeLocal
	if !namespacesExpected(t) {
		mode = vsockns.ModeGlobal
	}
	const count = 1000
	var refs []*vsockns.Namespace
	for range count {
		var n *vsockns.Namespace
		var err error
		if mode == vsockns.ModeLocal {
			n, err = vsockns.CreateNamespace(mode)
		} else {
			h := newPlainNS(t)
			n, err = vsockns.OpenNamespace(h)
			h.Close()
		}
		require.NoError(t, err)
		refs = append(refs, n)
	}
	t.Cleanup(func() {
		for _, n := range refs {
			n.Close()
		}
	})
	settledFdCount(t)
	setNoFile(t, uint64(fdCount(t)+1200))
	limit := vsockns.ReadyLimit()
	require.Less(t, limit, int64(count*8), "the bound binds")
	for _, n := range refs {
		require.NoError(t, n.Prepare(8, 0))
		// Nobody listens: the dial fails, and its store starts filling.
		_, err := n.Dialer().DialVsock(context.Background(), vsock.Local, 5999)
		require.ErrorIs(t, err, syscall.ECONNRESET)
		require.LessOrEqual(t, vsockns.ReadyHeld(), limit)
	}
	waitUntil(t, "the stores reach their bound", func() bool { return vsockns.ReadyHeld() >= limit-8 })
	require.LessOrEqual(t, vsockns.ReadyHeld(), limit)

	// A store left short by the bound still dials, the usual way.
	last := refs[count-1]
	l := tokenListener(t, last.ListenConfig().ListenVsock, "last")
	for range 10 {
		assert.Equal(t, "last", readToken(t, last.Dialer(), l.Addr().(*vsock.Addr).Port))
	}
	for _, n := range refs {
		require.NoError(t, n.Close())
	}
	refs = nil
	waitUntil(t, "every store closed with its namespace", func() bool { return vsockns.ReadyHeld() == 0 })
}

// With descriptors nearly exhausted the store stays short (EMFILE while
// filling is not an error) and dials go on as without it.
func TestPrepareDescriptorExhaustion(t *testing.T) {
	n := preparedNamespace(t, vsockns.ModeGlobal)
	l := tokenListener(t, n.ListenConfig().ListenVsock, "x")
	port := l.Addr().(*vsock.Addr).Port
	base := settledFdCount(t)
	require.NoError(t, n.Prepare(64, 0))
	// Room for a dial's socket, the accepted one and a few more.
	setNoFile(t, uint64(fdCount(t)+8))
	for i := range 50 {
		require.Equal(t, "x", readToken(t, n.Dialer(), port), "dial %d", i)
	}
	held, made, _ := vsockns.ReadyStats(n, false)
	assert.Less(t, held, 64, "the store is short")
	assert.Greater(t, made, 0, "and still made what it could")
	require.NoError(t, n.Close())
	waitUntil(t, "the store's and the namespace's descriptors closed", func() bool { return fdCount(t) == base-1 })
}

// A namespace served by a helper process (CreateUserNamespace): sockets
// made ahead come from the helper in batches (one request, one reply with
// the batch's descriptors), off the dialer's path; dials take them
// while the helper is stopped, and Close does not wait for a stopped or
// killed helper's refill.
func TestPrepareUserNamespace(t *testing.T) {
	if !namespacesExpected(t) {
		_, err := vsockns.CreateUserNamespace(context.Background(), vsockns.ModeLocal)
		require.ErrorIs(t, err, vsockns.ErrNotSupported)
		return
	}
	for _, fault := range []syscall.Signal{syscall.SIGSTOP, syscall.SIGKILL} {
		t.Run(fault.String(), func(t *testing.T) {
			settledFdCount(t)
			heldBefore := vsockns.ReadyHeld()
			n, err := vsockns.CreateUserNamespace(context.Background(), vsockns.ModeLocal)
			require.NoError(t, err)
			helpers := helperPIDs(t)
			require.Len(t, helpers, 1)
			l, err := n.ListenConfig().ListenVsock(context.Background(), vsock.Local, 5400)
			require.NoError(t, err)
			tokenServer(t, l, "inside")
			before := vsockns.HelperRequests(n)
			require.NoError(t, n.Prepare(8, 0))
			d := n.Dialer()
			require.Equal(t, "inside", readToken(t, d, 5400))
			waitHeld(t, n, false, 8)
			_, made, batches := vsockns.ReadyStats(n, false)
			assert.Equal(t, 8, made, "made by the helper")
			// One request for the first dial's own socket (the store was
			// empty), one per batch: not one per socket.
			assert.Equal(t, 1, batches)
			assert.Equal(t, int64(1+batches), vsockns.HelperRequests(n)-before, "requests to the helper")

			require.NoError(t, syscall.Kill(helpers[0], fault))
			if fault == syscall.SIGSTOP {
				defer syscall.Kill(helpers[0], syscall.SIGCONT)
			}
			// The sockets already made need no helper to connect.
			for range 8 {
				require.Equal(t, "inside", readToken(t, d, 5400))
			}
			// Then the usual path: a request the stopped helper never
			// answers ends at the deadline; a killed one's at once.
			ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
			defer cancel()
			_, err = d.DialVsock(ctx, vsock.Local, 5400)
			require.Error(t, err)
			if fault == syscall.SIGSTOP {
				assert.ErrorIs(t, err, context.DeadlineExceeded)
			} else {
				assert.ErrorIs(t, err, net.ErrClosed, "the helper has exited")
			}
			closed := make(chan error, 1)
			go func() { closed <- n.Close() }()
			select {
			case err := <-closed:
				require.NoError(t, err)
			case <-time.After(10 * time.Second):
				t.Fatal("Close waited for the helper's refill")
			}
			waitUntil(t, "nothing left held", func() bool { return vsockns.ReadyHeld() == heldBefore })
		})
	}
}
