//go:build linux

package vsockns_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/mdlayher/vsock"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/vishvananda/netns"
	"golang.org/x/net/nettest"
	"golang.org/x/sys/unix"

	"github.com/vsockns/vsockns"
)

// TestNamespaceMatrix is the kernel's namespace reach matrix over
// vsock_loopback (CID 1), through Listen and Dial. On kernels without vsock
// namespaces every pair connects (legacy: vsock ignores namespaces).
func TestNamespaceMatrix(t *testing.T) {
	withNS := namespacesExpected(t)
	init := netns.None()
	var g1, g2, l1, l2 netns.NsHandle
	if withNS {
		g1, g2 = newNS(t, vsockns.ModeGlobal), newNS(t, vsockns.ModeGlobal)
		l1, l2 = newNS(t, vsockns.ModeLocal), newNS(t, vsockns.ModeLocal)
	} else {
		// Legacy kernel: the namespaces are ordinary ones; no modes exist.
		g1, g2, l1, l2 = plainNS(t), plainNS(t), plainNS(t), plainNS(t)
	}
	for _, tc := range []struct {
		name           string
		listen, dialer netns.NsHandle
		ok             bool // on a kernel with vsock namespaces
	}{
		{"global_to_other_global", g1, g2, true},
		{"global_to_same_global", g1, g1, true},
		{"init_to_global", g1, init, true},
		{"global_to_init", init, g1, true},
		{"local_to_same_local", l1, l1, true},
		{"global_to_local", l1, g1, false},
		{"local_to_global", g1, l1, false},
		{"local_to_other_local", l2, l1, false},
		{"init_to_local", l1, init, false},
		{"local_to_init", init, l1, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l, err := vsockns.Listen(tc.listen, 0)
			require.NoError(t, err)
			echoServer(t, l)
			port := l.Addr().(*vsock.Addr).Port

			c, err := vsockns.Dial(tc.dialer, vsock.Local, port)
			if tc.ok || !withNS {
				require.NoError(t, err)
				defer c.Close()
				roundTrip(t, c, "hello across "+tc.name)
				assert.Equal(t, &vsock.Addr{ContextID: vsock.Local, Port: port}, c.RemoteAddr())
				// The kernel binds a dialing socket to VMADDR_CID_ANY and
				// an ephemeral port; LocalAddr reports what it says.
				assert.NotZero(t, c.LocalAddr().(*vsock.Addr).Port)
				return
			}
			require.Error(t, err)
			assert.Nil(t, c)
			assert.ErrorIs(t, err, syscall.ECONNRESET)
			var oe *net.OpError
			require.ErrorAs(t, err, &oe)
			assert.Equal(t, "dial", oe.Op)
			assert.Equal(t, "vsock", oe.Net)
			assert.Equal(t, &vsock.Addr{ContextID: vsock.Local, Port: port}, oe.Addr)
			assert.Contains(t, err.Error(), "local namespace reaches only its own sockets")
		})
	}
}

// Local namespaces have ports of their own; global ones share one space.
func TestPortSpaces(t *testing.T) {
	withNS := namespacesExpected(t)
	const port = 7001
	var a, b netns.NsHandle
	if withNS {
		a, b = newNS(t, vsockns.ModeLocal), newNS(t, vsockns.ModeLocal)
		la, err := vsockns.Listen(a, port)
		require.NoError(t, err)
		defer la.Close()
		lb, err := vsockns.Listen(b, port)
		require.NoError(t, err, "two local namespaces can both listen on port %d", port)
		defer lb.Close()
		a, b = newNS(t, vsockns.ModeGlobal), newNS(t, vsockns.ModeGlobal)
	} else {
		a, b = plainNS(t), plainNS(t)
	}
	la, err := vsockns.Listen(a, port+1)
	require.NoError(t, err)
	defer la.Close()
	_, err = vsockns.Listen(b, port+1)
	require.Error(t, err, "global namespaces share one port space")
	assert.ErrorIs(t, err, syscall.EADDRINUSE)
	var oe *net.OpError
	require.ErrorAs(t, err, &oe)
	assert.Equal(t, "listen", oe.Op)
}

// A connection keeps working after every handle of its namespace is closed
// (the namespace is then gone as far as user space can tell).
func TestConnOutlivesNamespaceHandles(t *testing.T) {
	withNS := namespacesExpected(t)
	var ns netns.NsHandle
	if withNS {
		var err error
		ns, err = vsockns.NewNamespace(vsockns.ModeLocal)
		require.NoError(t, err)
	} else {
		ns = newPlainNS(t)
	}
	l, err := vsockns.Listen(ns, 0)
	require.NoError(t, err)
	echoServer(t, l)
	c, err := vsockns.Dial(ns, vsock.Local, l.Addr().(*vsock.Addr).Port)
	require.NoError(t, err)
	defer c.Close()
	require.NoError(t, ns.Close())
	roundTrip(t, c, "still here after the namespace handle is gone")
}

// Only socket() runs in the namespace, on a thread that is handed back at
// once: a burst of concurrent dials into another namespace does not
// multiply the process's OS threads, and leaves none abroad.
func TestDialDoesNotHoldThreads(t *testing.T) {
	ns := nsOfMode(t, vsockns.ModeGlobal)
	l, err := vsockns.Listen(ns, 0)
	require.NoError(t, err)
	echoServer(t, l)
	port := l.Addr().(*vsock.Addr).Port

	before := threadCount(t)
	const n = 200
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for range n {
		wg.Go(func() {
			c, err := vsockns.Dial(ns, vsock.Local, port)
			if err != nil {
				errs <- err
				return
			}
			roundTripErr := func() error {
				defer c.Close()
				if _, err := c.Write([]byte("x")); err != nil {
					return err
				}
				b := make([]byte, 1)
				_, err := c.Read(b)
				return err
			}()
			if roundTripErr != nil {
				errs <- roundTripErr
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	after := threadCount(t)
	// GOMAXPROCS threads run goroutines, a few more sit in syscalls or
	// serve the runtime; a thread per dial would be hundreds.
	t.Logf("OS threads: %d before, %d after %d concurrent dials", before, after, n)
	assert.LessOrEqual(t, after, before+maxThreadGrowth(), "OS threads before %d, after %d", before, after)
	requireAllThreadsHome(t)
}

// Thousands of concurrent dials into several namespaces, a third of them
// to ports nobody listens on: afterwards every thread is home.
func TestConcurrentDialsLeaveNoThreadAbroad(t *testing.T) {
	withNS := namespacesExpected(t)
	var nss []netns.NsHandle
	for i := range 4 {
		switch {
		case !withNS:
			nss = append(nss, plainNS(t))
		case i%2 == 0:
			nss = append(nss, newNS(t, vsockns.ModeLocal))
		default:
			nss = append(nss, newNS(t, vsockns.ModeGlobal))
		}
	}
	ports := make([]uint32, len(nss))
	for i, ns := range nss {
		l, err := vsockns.Listen(ns, 0)
		require.NoError(t, err)
		echoServer(t, l)
		ports[i] = l.Addr().(*vsock.Addr).Port
	}
	const total = 3000
	var wg sync.WaitGroup
	var mu sync.Mutex
	var ok, refused int
	sem := make(chan struct{}, 256)
	for i := range total {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			k := i % len(nss)
			port := ports[k]
			wantOK := i%3 != 0
			if !wantOK {
				port = 50000 + uint32(k) // no listener
			}
			c, err := vsockns.Dial(nss[k], vsock.Local, port)
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err == nil:
				c.Close()
				ok++
			case errors.Is(err, syscall.ECONNRESET):
				refused++
			default:
				t.Errorf("dial %d: %v", i, err)
			}
		})
	}
	wg.Wait()
	assert.Equal(t, total-total/3, ok)
	assert.Equal(t, total/3, refused)
	requireAllThreadsHome(t)
}

// DialContext's deadline bounds the dial, and a context that is already
// done fails before any socket exists.
func TestDialContextDone(t *testing.T) {
	namespacesExpected(t)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := vsockns.DialContext(ctx, netns.None(), vsock.Local, 1)
	assert.ErrorIs(t, err, context.Canceled)
	var oe *net.OpError
	require.ErrorAs(t, err, &oe)

	ctx, cancel = context.WithDeadline(context.Background(), time.Now().Add(-time.Second))
	defer cancel()
	_, err = vsockns.DialContext(ctx, netns.None(), vsock.Local, 1)
	assert.ErrorIs(t, err, context.DeadlineExceeded)
	require.ErrorAs(t, err, &oe)
	assert.True(t, oe.Timeout())
}

// The socket's SO_VM_SOCKETS_CONNECT_TIMEOUT stays the kernel's default
// whatever the deadline: a cancelled connect keeps its socket in the
// kernel for that long (the vsocktest tests show a long deadline is still
// honoured, by connecting again).
func TestDialerLeavesConnectTimeout(t *testing.T) {
	namespacesExpected(t)
	l, err := vsockns.Listen(netns.None(), 0)
	require.NoError(t, err)
	echoServer(t, l)
	port := l.Addr().(*vsock.Addr).Port
	for _, timeout := range []time.Duration{0, time.Second, 30 * time.Second} {
		d := vsockns.Dialer{Timeout: timeout}
		c, err := d.DialVsock(context.Background(), vsock.Local, port)
		require.NoError(t, err)
		assert.Equal(t, 2*time.Second, connectTimeout(t, c), "Timeout %v", timeout)
		c.Close()
	}
}

// Errors of connections and listeners have package net's shape: the errno
// of a failed write inside an *os.SyscallError inside the *net.OpError, a
// second Close wrapping net.ErrClosed, and a nil context refused by
// AcceptContext as by DialVsock and ListenVsock.
func TestConnErrorShapes(t *testing.T) {
	namespacesExpected(t)
	l, err := vsockns.Listen(netns.None(), 0)
	require.NoError(t, err)
	defer l.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := l.Accept()
		if err == nil {
			accepted <- c
		}
		close(accepted)
	}()
	c, err := vsockns.Dial(netns.None(), vsock.Local, l.Addr().(*vsock.Addr).Port)
	require.NoError(t, err)
	peer := <-accepted
	require.NotNil(t, peer)
	require.NoError(t, peer.Close())
	// The peer's close (one shutdown of both directions) has arrived once
	// a read sees EOF; then a write fails with EPIPE, wrapped as package
	// net wraps it.
	require.NoError(t, c.SetDeadline(time.Now().Add(10*time.Second)))
	_, err = c.Read(make([]byte, 1))
	require.ErrorIs(t, err, io.EOF)
	_, werr := c.Write([]byte("x"))
	require.Error(t, werr)
	var oe *net.OpError
	require.ErrorAs(t, werr, &oe)
	assert.Equal(t, "write", oe.Op)
	var se *os.SyscallError
	require.ErrorAs(t, werr, &se, "%v", werr)
	assert.ErrorIs(t, werr, syscall.EPIPE)

	require.NoError(t, c.Close())
	err = c.Close()
	assert.ErrorIs(t, err, net.ErrClosed, "a second Close")
	require.ErrorAs(t, err, &oe)
	assert.Equal(t, "close", oe.Op)

	//lint:ignore SA1012 a nil context is exactly the bad input under test
	_, err = l.AcceptContext(nil)
	require.ErrorAs(t, err, &oe)
	assert.Equal(t, "accept", oe.Op)
	assert.ErrorContains(t, err, "nil context")

	require.NoError(t, l.Close())
	assert.ErrorIs(t, l.Close(), net.ErrClosed, "a second Close of a listener")
}

// Bad namespace handles fail with the errno wrapped and an explanation,
// leak no file descriptor and leave every thread home.
func TestBadNamespaceHandles(t *testing.T) {
	namespacesExpected(t)
	devNull, err := os.Open(os.DevNull)
	require.NoError(t, err)
	defer devNull.Close()
	closedFD := int(closedHandle)

	before := fdCount(t)
	for _, tc := range []struct {
		name  string
		ns    netns.NsHandle
		errno syscall.Errno
		why   string
	}{
		{"closed", netns.NsHandle(closedFD), syscall.EBADF, "not an open file descriptor"},
		{"not_a_namespace", netns.NsHandle(devNull.Fd()), syscall.EINVAL, "not a network namespace"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := vsockns.Dial(tc.ns, vsock.Local, 1)
			assert.ErrorIs(t, err, tc.errno)
			assert.ErrorContains(t, err, tc.why)
			var oe *net.OpError
			assert.ErrorAs(t, err, &oe)

			_, err = vsockns.Listen(tc.ns, 0)
			assert.ErrorIs(t, err, tc.errno)
			assert.ErrorAs(t, err, &oe)

			_, err = vsockns.NamespaceMode(tc.ns)
			assert.ErrorIs(t, err, tc.errno)
		})
	}
	assert.LessOrEqual(t, fdCount(t), before, "no file descriptor leaked")
	requireAllThreadsHome(t)
}

// A CID no transport serves: ENODEV, explained.
func TestDialUnreachableCID(t *testing.T) {
	namespacesExpected(t)
	_, err := vsockns.Dial(netns.None(), 4242, 1)
	require.Error(t, err)
	assert.ErrorIs(t, err, syscall.ENODEV)
	assert.ErrorContains(t, err, "no vsock transport reaches that CID")
}

func TestListenerAcceptContext(t *testing.T) {
	namespacesExpected(t)
	l, err := vsockns.Listen(netns.None(), 0)
	require.NoError(t, err)
	defer l.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	_, err = l.AcceptContext(ctx)
	assert.ErrorIs(t, err, context.DeadlineExceeded)
	var oe *net.OpError
	require.ErrorAs(t, err, &oe)
	assert.Equal(t, "accept", oe.Op)

	port := l.Addr().(*vsock.Addr).Port
	dialed := make(chan error, 1)
	go func() {
		c, err := vsockns.Dial(netns.None(), vsock.Local, port)
		if err == nil {
			defer c.Close()
			_, err = c.Write([]byte("hi"))
		}
		dialed <- err
	}()
	// Never wait without a deadline: a failed dial must fail the test, not
	// hang it until the suite's timeout.
	actx, acancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer acancel()
	c, err := l.AcceptContext(actx)
	if err != nil {
		// The dial ends by itself (the kernel's 2 s connect timeout at most).
		t.Fatalf("accept: %v (the dial: %v)", err, <-dialed)
	}
	require.NoError(t, <-dialed)
	defer c.Close()
	assert.Equal(t, &vsock.Addr{ContextID: vsock.Local, Port: port}, c.LocalAddr())
	assert.Equal(t, uint32(vsock.Local), c.RemoteAddr().(*vsock.Addr).ContextID)

	require.NoError(t, l.Close())
	_, err = l.Accept()
	assert.ErrorIs(t, err, net.ErrClosed)
}

// The net-style entry points, the way http.Transport and gRPC use them.
func TestDialerAndListenConfigStrings(t *testing.T) {
	ns := nsOfMode(t, vsockns.ModeLocal)
	lc := vsockns.ListenConfig{Namespace: ns, Backlog: 16}
	ln, err := lc.Listen(context.Background(), "vsock", ":0")
	require.NoError(t, err)
	l := ln.(*vsockns.Listener)
	echoServer(t, l)
	port := l.Addr().(*vsock.Addr).Port

	d := vsockns.Dialer{Namespace: ns, Timeout: 10 * time.Second}
	for _, addr := range []string{
		fmt.Sprintf("1:%d", port),
		fmt.Sprintf("local:%d", port),
		fmt.Sprintf("vsock://local:%d", port),
		(&vsock.Addr{ContextID: 1, Port: port}).String(),
	} {
		c, err := d.DialContext(context.Background(), "vsock", addr)
		require.NoError(t, err, addr)
		roundTrip(t, c, addr)
		require.NoError(t, c.Close())
	}
}

// nettest's conformance suite on a pair of connections made in a local
// namespace (an ordinary namespace on legacy kernels).
func TestNettestConn(t *testing.T) {
	namespacesExpected(t)
	nettest.TestConn(t, func() (c1, c2 net.Conn, stop func(), err error) {
		ns := nsOfMode(t, vsockns.ModeLocal)
		l, err := vsockns.Listen(ns, 0)
		if err != nil {
			return nil, nil, nil, err
		}
		defer l.Close()
		type res struct {
			c   net.Conn
			err error
		}
		ch := make(chan res, 1)
		go func() {
			c, err := l.Accept()
			ch <- res{c, err}
		}()
		c1, err = vsockns.Dial(ns, vsock.Local, l.Addr().(*vsock.Addr).Port)
		if err != nil {
			return nil, nil, nil, err
		}
		r := <-ch
		if r.err != nil {
			c1.Close()
			return nil, nil, nil, r.err
		}
		return c1, r.c, func() { c1.Close(); r.c.Close() }, nil
	})
}

func threadCount(t testing.TB) int {
	t.Helper()
	entries, err := os.ReadDir("/proc/self/task")
	require.NoError(t, err)
	return len(entries)
}

func fdCount(t testing.TB) int {
	t.Helper()
	entries, err := os.ReadDir("/proc/self/fd")
	require.NoError(t, err)
	return len(entries)
}

// maxThreadGrowth is how many threads a burst of dials may add: the
// runtime's own spares, not one per dial.
func maxThreadGrowth() int { return 8 }

// connectTimeout reads c's SO_VM_SOCKETS_CONNECT_TIMEOUT.
func connectTimeout(t testing.TB, c *vsockns.Conn) time.Duration {
	t.Helper()
	rc, err := c.SyscallConn()
	require.NoError(t, err)
	var (
		tv   *unix.Timeval
		gerr error
	)
	require.NoError(t, rc.Control(func(fd uintptr) {
		tv, gerr = unix.GetsockoptTimeval(int(fd), unix.AF_VSOCK, unix.SO_VM_SOCKETS_CONNECT_TIMEOUT)
	}))
	require.NoError(t, gerr)
	return time.Duration(tv.Nano())
}

// Dialer.ToHost puts VMADDR_FLAG_TO_HOST on the address: getpeername(2)
// keeps it, and RemoteFlags reads it back. Over vsock_loopback the local
// transport is chosen before the flag is looked at, so the dial connects;
// the flag does not travel on the wire, so the accepting side's peer
// address has none (the kernel sets it there only for a connection it
// routed through the guest-to-host transport, which the test VM lacks).
// The vsocktest tests show the flag changing the route to a guest's CID.
func TestDialToHostFlag(t *testing.T) {
	needVsock(t)
	l, err := vsockns.Listen(netns.None(), 0)
	require.NoError(t, err)
	defer l.Close()
	port := l.Addr().(*vsock.Addr).Port
	for _, toHost := range []bool{false, true} {
		d := vsockns.Dialer{ToHost: toHost, Timeout: 10 * time.Second}
		c, err := d.DialVsock(context.Background(), vsock.Local, port)
		require.NoError(t, err)
		ac, err := l.Accept()
		require.NoError(t, err)
		flags, err := c.RemoteFlags()
		require.NoError(t, err)
		if toHost {
			assert.Equal(t, uint8(unix.VMADDR_FLAG_TO_HOST), flags)
		} else {
			assert.Zero(t, flags)
		}
		aflags, err := ac.(*vsockns.Conn).RemoteFlags()
		require.NoError(t, err)
		assert.Zero(t, aflags, "the accepted side's peer address")
		c.Close()
		ac.Close()
		_, err = c.RemoteFlags()
		assert.ErrorIs(t, err, net.ErrClosed)
	}
}
