//go:build linux

package vsockns_test

import (
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mdlayher/socket"
	"github.com/mdlayher/vsock"
	"github.com/stretchr/testify/require"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/vsockns/vsockns"
	"github.com/vsockns/vsockns/internal/nsthread"
)

// The benchmarks compare, in one boot, the cost of a vsock dial:
//
//	floor         mdlayher/vsock's DialContext in the current namespace
//	vsockns       this package, into another (global or local) namespace
//	kubevirt      the whole vsock.Dial on a thread switched into the
//	              namespace (the pattern KubeVirt's virt-handler uses)
//	socket-netns  mdlayher/socket's Config.NetNS, then Connect
//	locked-caller the caller's own thread switched around socket() only
//	handoff-only  socket() on a goroutine of its own, in the current
//	              namespace: the hand-off vsockns's switch pays, alone
//
// `make bench` runs them in the VM and prints them side by side.

// dialFunc dials port on vsock loopback and returns something to close.
type dialFunc func(ctx context.Context, port uint32) (io.Closer, error)

type benchTarget struct {
	name string
	ns   netns.NsHandle // the listener's (and the namespaced dialers') namespace
	port uint32
	home netns.NsHandle // the benchmark's own namespace
}

// benchTargets sets up a listener (accepting and closing at once) in the
// current namespace and in a new global and a new local namespace.
func benchTargets(b *testing.B) (floor benchTarget, others []benchTarget) {
	b.Helper()
	needVsock(b)
	home, err := netns.Get()
	require.NoError(b, err)
	b.Cleanup(func() { home.Close() })
	mk := func(name string, ns netns.NsHandle) benchTarget {
		l, err := vsockns.Listen(ns, 0)
		require.NoError(b, err)
		// Several acceptors: connect completes without Accept, so 64
		// dialing goroutines can outpace a single acceptor until the
		// accept queue is full and the kernel resets new connections.
		closeAccepted(l, 16)
		b.Cleanup(func() { l.Close() })
		return benchTarget{name, ns, l.Addr().(*vsock.Addr).Port, home}
	}
	floor = mk("floor", netns.None())
	if vsockns.Supported() == nil {
		others = append(others,
			mk("global", newNS(b, vsockns.ModeGlobal)),
			mk("local", newNS(b, vsockns.ModeLocal)))
	} else {
		others = append(others, mk("other", plainNS(b)))
	}
	return floor, others
}

func dialFloor(ctx context.Context, port uint32) (io.Closer, error) {
	return vsock.DialContext(ctx, vsock.Local, port, nil)
}

func dialVsockns(ns netns.NsHandle) dialFunc {
	return func(ctx context.Context, port uint32) (io.Closer, error) {
		return vsockns.DialContext(ctx, ns, vsock.Local, port)
	}
}

// dialKubeVirt is the pattern of KubeVirt's virt-handler: lock a thread,
// enter the namespace, do the whole dial there, go back.
func dialKubeVirt(ns netns.NsHandle) dialFunc {
	return func(ctx context.Context, port uint32) (io.Closer, error) {
		return kubevirtDial(ctx, ns, vsock.Local, port)
	}
}

// kubevirtDial dials cid:port on a locked thread moved into ns, and moves
// it back (a thread that cannot be is left locked, so the runtime ends it).
func kubevirtDial(ctx context.Context, ns netns.NsHandle, cid, port uint32) (io.Closer, error) {
	type result struct {
		c   io.Closer
		err error
	}
	ch := make(chan result, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			runtime.UnlockOSThread()
			ch <- result{nil, err}
			return
		}
		defer orig.Close()
		if err := netns.Set(ns); err != nil {
			runtime.UnlockOSThread()
			ch <- result{nil, err}
			return
		}
		c, err := vsock.DialContext(ctx, cid, port, nil)
		if netns.Set(orig) == nil {
			runtime.UnlockOSThread()
		}
		ch <- result{c, err}
	}()
	r := <-ch
	return r.c, r.err
}

// dialLockedCaller is the fastest way to switch: the calling goroutine
// locks its own thread and moves it into the namespace for socket() only
// (home is a cached handle of the original namespace). vsockns does not
// do this, because a thread that could not be moved back would stay with
// the caller's goroutine (and run the caller's code in the foreign
// namespace) until that goroutine ends; its own switch runs on a
// goroutine of its own, which can end at once. This variant measures
// what that guarantee costs.
func dialLockedCaller(ns, home netns.NsHandle) dialFunc {
	return func(ctx context.Context, port uint32) (io.Closer, error) {
		runtime.LockOSThread()
		if err := netns.Set(ns); err != nil {
			runtime.UnlockOSThread()
			return nil, err
		}
		fd, err := newVsockSocket()
		if rerr := netns.Set(home); rerr != nil {
			// Left locked: the benchmark fails on this error, its
			// goroutine ends, and the runtime discards the thread.
			if err == nil {
				unix.Close(fd)
			}
			return nil, rerr
		}
		runtime.UnlockOSThread()
		if err != nil {
			return nil, err
		}
		return connectSocket(ctx, fd, port)
	}
}

// dialHandoffOnly creates the socket in the current namespace on a
// goroutine of its own, as vsockns's switch does, but with no namespace
// work: it measures what handing socket() to another goroutine costs.
func dialHandoffOnly(ctx context.Context, port uint32) (io.Closer, error) {
	type result struct {
		fd  int
		err error
	}
	ch := make(chan result, 1)
	go func() {
		fd, err := newVsockSocket()
		ch <- result{fd, err}
	}()
	r := <-ch
	if r.err != nil {
		return nil, r.err
	}
	return connectSocket(ctx, r.fd, port)
}

func newVsockSocket() (int, error) {
	return unix.Socket(unix.AF_VSOCK, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
}

// connectSocket is the rest of a dial after socket(): what vsockns does
// with the descriptor (connect, then getsockname for the local address).
func connectSocket(ctx context.Context, fd int, port uint32) (io.Closer, error) {
	c, err := socket.New(fd, "vsock")
	if err != nil {
		unix.Close(fd)
		return nil, err
	}
	if _, err := c.Connect(ctx, &unix.SockaddrVM{CID: vsock.Local, Port: port}); err != nil {
		c.Close()
		return nil, err
	}
	if _, err := c.Getsockname(); err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

// dialSocketNetNS uses mdlayher/socket's own namespace support.
func dialSocketNetNS(ns netns.NsHandle) dialFunc {
	return func(ctx context.Context, port uint32) (io.Closer, error) {
		c, err := socket.Socket(unix.AF_VSOCK, unix.SOCK_STREAM, 0, "vsock", &socket.Config{NetNS: int(ns)})
		if err != nil {
			return nil, err
		}
		if _, err := c.Connect(ctx, &unix.SockaddrVM{CID: vsock.Local, Port: port}); err != nil {
			c.Close()
			return nil, err
		}
		return c, nil
	}
}

func benchDial(b *testing.B, dial dialFunc, port uint32) {
	b.Helper()
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		c, err := dial(ctx, port)
		if err != nil {
			b.Fatal(err)
		}
		c.Close()
	}
}

// BenchmarkDial: one goroutine, socket + connect + close.
func BenchmarkDial(b *testing.B) {
	floor, others := benchTargets(b)
	b.Run("floor", func(b *testing.B) { benchDial(b, dialFloor, floor.port) })
	// Where the rest of the time goes: this package without a namespace
	// switch; the floor from a locked thread, at home and moved into the
	// target namespace (their ratio is the kernel's cost of that
	// namespace; locking alone costs scheduler hand-offs while connect
	// waits).
	b.Run("vsockns-current", func(b *testing.B) { benchDial(b, dialVsockns(netns.None()), floor.port) })
	b.Run("handoff-only", func(b *testing.B) { benchDial(b, dialHandoffOnly, floor.port) })
	b.Run("floor-locked", func(b *testing.B) {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread() // never moved: still at home
		benchDial(b, dialFloor, floor.port)
	})
	for _, t := range others {
		b.Run("floor-inside-"+t.name, func(b *testing.B) {
			runtime.LockOSThread() // this goroutine ends with the benchmark: the thread is discarded
			require.NoError(b, netns.Set(t.ns))
			benchDial(b, dialFloor, t.port)
		})
	}
	forVariants(others, func(name string, dial dialFunc, port uint32) {
		b.Run(name, func(b *testing.B) { benchDial(b, dial, port) })
	})
	// The floor again, last: how far the (emulated) machine drifted.
	b.Run("floor-again", func(b *testing.B) { benchDial(b, dialFloor, floor.port) })
}

// forVariants calls f for every namespaced dialer and target, this
// package's first: the reference patterns leave the process with many
// more OS threads, which would blur the thread counts of what follows.
func forVariants(targets []benchTarget, f func(name string, dial dialFunc, port uint32)) {
	for _, t := range targets {
		f("vsockns-"+t.name, dialVsockns(t.ns), t.port)
	}
	for _, t := range targets {
		f("locked-caller-"+t.name, dialLockedCaller(t.ns, t.home), t.port)
	}
	for _, t := range targets {
		f("kubevirt-"+t.name, dialKubeVirt(t.ns), t.port)
	}
	for _, t := range targets {
		f("socket-netns-"+t.name, dialSocketNetNS(t.ns), t.port)
	}
}

// BenchmarkDialParallel: 64 goroutines dialing at once. Reports dials/s,
// the process's OS threads at the end ("threads"; the runtime never gives
// threads back, so this is the most it needed so far) and how many of them
// this variant made the runtime create ("new-threads").
func BenchmarkDialParallel(b *testing.B) {
	floor, others := benchTargets(b)
	run := func(b *testing.B, dial dialFunc, port uint32) {
		b.ReportAllocs()
		b.SetParallelism(max(1, 64/runtime.GOMAXPROCS(0)))
		before := threadCount(b)
		start := time.Now()
		b.RunParallel(func(pb *testing.PB) {
			ctx := context.Background()
			for pb.Next() {
				c, err := dial(ctx, port)
				if err != nil {
					b.Error(err)
					return
				}
				c.Close()
			}
		})
		b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "dials/s")
		after := threadCount(b)
		b.ReportMetric(float64(after), "threads")
		b.ReportMetric(float64(after-before), "new-threads")
	}
	b.Run("floor", func(b *testing.B) { run(b, dialFloor, floor.port) })
	forVariants(others, func(name string, dial dialFunc, port uint32) {
		b.Run(name, func(b *testing.B) { run(b, dial, port) })
	})
	b.Run("floor-again", func(b *testing.B) { run(b, dialFloor, floor.port) })
}

// BenchmarkThroughput: 64 KiB writes over an established connection.
func BenchmarkThroughput(b *testing.B) {
	floor, others := benchTargets(b)
	run := func(b *testing.B, ns netns.NsHandle, namespaced bool) {
		l, err := vsockns.Listen(ns, 0)
		require.NoError(b, err)
		defer l.Close()
		go discardOne(l)
		var c io.WriteCloser
		if namespaced {
			c, err = vsockns.Dial(ns, vsock.Local, l.Addr().(*vsock.Addr).Port)
		} else {
			c, err = vsock.Dial(vsock.Local, l.Addr().(*vsock.Addr).Port, nil)
		}
		require.NoError(b, err)
		defer c.Close()
		buf := make([]byte, 64<<10)
		b.SetBytes(int64(len(buf)))
		b.ReportAllocs()
		for b.Loop() {
			if _, err := c.Write(buf); err != nil {
				b.Fatal(err)
			}
		}
	}
	b.Run("floor", func(b *testing.B) { run(b, floor.ns, false) })
	for _, t := range others {
		b.Run("vsockns-"+t.name, func(b *testing.B) { run(b, t.ns, true) })
	}
}

// BenchmarkAccept: connections accepted per second by a listener. The
// dialer is the floor's in both variants (from the current namespace; the
// namespaced listener is in a global namespace, which it reaches), so only
// the listening side differs.
func BenchmarkAccept(b *testing.B) {
	needVsock(b)
	run := func(b *testing.B, listen func() (acceptor, error), dial dialFunc) {
		l, err := listen()
		require.NoError(b, err)
		defer l.Close()
		port := l.Addr().(*vsock.Addr).Port
		var stopped atomic.Bool
		dialErr := make(chan error, 1)
		go func() {
			for {
				c, err := dial(context.Background(), port)
				if err != nil {
					if !stopped.Load() {
						l.Close() // unblock Accept
					}
					dialErr <- err
					return
				}
				c.Close()
			}
		}()
		b.ReportAllocs()
		start := time.Now()
		for b.Loop() {
			c, err := l.Accept()
			if err != nil {
				b.Fatal(err, <-dialErr)
			}
			c.Close()
		}
		b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "accepts/s")
		stopped.Store(true)
		l.Close()
		<-dialErr
	}
	b.Run("floor", func(b *testing.B) {
		run(b, func() (acceptor, error) { return vsock.ListenContextID(anyCID, 0, nil) }, dialFloor)
	})
	ns := nsOfMode(b, vsockns.ModeGlobal)
	b.Run("vsockns", func(b *testing.B) {
		run(b, func() (acceptor, error) { return vsockns.Listen(ns, 0) }, dialFloor)
	})
}

const anyCID = 0xffffffff // VMADDR_CID_ANY

// acceptor is what vsock.Listener and vsockns.Listener have in common.
type acceptor interface {
	Accept() (net.Conn, error)
	Addr() net.Addr
	Close() error
}

// BenchmarkNamespaceMode: reading ns_mode of another namespace (on a
// kernel without vsock namespaces: getting ErrNotSupported back).
func BenchmarkNamespaceMode(b *testing.B) {
	withNS := namespacesExpected(b)
	ns := nsOfMode(b, vsockns.ModeLocal)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := vsockns.NamespaceMode(ns); (err == nil) != withNS {
			b.Fatal(err)
		}
	}
}

// A dialVariant is one way of dialing, for the interleaved benchmarks.
type dialVariant struct {
	name string
	dial dialFunc
	port uint32
}

// dialVariants lists the floor and every namespaced dialer and target.
func dialVariants(floor benchTarget, others []benchTarget) []dialVariant {
	vs := []dialVariant{{"floor", dialFloor, floor.port}}
	forVariants(others, func(name string, dial dialFunc, port uint32) {
		vs = append(vs, dialVariant{name, dial, port})
	})
	return vs
}

// interleave runs round for every variant, again and again, in a new
// random order each time, and reports each variant's totals with report.
// On an emulated machine whose speed drifts by tens of percent from one
// second to the next, benchmarks that run one variant after the other for
// a second each compare different machines; rounds that take turns
// compare the same one. The order is shuffled because a dial leaves work
// behind (the listener accepting and closing, the kernel tearing down)
// that the next one pays for: a fixed order would bill each variant for
// the same predecessor every time.
func interleave(b *testing.B, vs []dialVariant, round func(v dialVariant) (n int, d time.Duration), report func(v dialVariant, n int, d time.Duration)) {
	b.Helper()
	n := make([]int, len(vs))
	d := make([]time.Duration, len(vs))
	order := make([]int, len(vs))
	for i := range order {
		order[i] = i
	}
	rng := rand.New(rand.NewPCG(1, 2))
	for b.Loop() {
		rng.Shuffle(len(order), func(i, j int) { order[i], order[j] = order[j], order[i] })
		for _, k := range order {
			rn, rd := round(vs[k])
			n[k] += rn
			d[k] += rd
		}
	}
	for i, v := range vs {
		report(v, n[i], d[i])
	}
}

// BenchmarkDialInterleaved is BenchmarkDial with the variants taking
// turns dial by dial. It reports "<variant>-ns/dial".
func BenchmarkDialInterleaved(b *testing.B) {
	floor, others := benchTargets(b)
	ctx := context.Background()
	vs := dialVariants(floor, others)
	vs = slices.Insert(vs, 1,
		dialVariant{"vsockns-current", dialVsockns(netns.None()), floor.port},
		dialVariant{"handoff-only", dialHandoffOnly, floor.port})
	interleave(b, vs,
		func(v dialVariant) (int, time.Duration) { return 1, timedDial(b, ctx, v) },
		func(v dialVariant, n int, d time.Duration) {
			b.ReportMetric(float64(d.Nanoseconds())/float64(n), v.name+"-ns/dial")
		})
}

// timedDial dials v once, closes the connection and returns how long the
// dial took.
func timedDial(b *testing.B, ctx context.Context, v dialVariant) time.Duration {
	start := time.Now()
	c, err := v.dial(ctx, v.port)
	if err != nil {
		b.Fatal(v.name, err)
	}
	c.Close()
	return time.Since(start)
}

// BenchmarkDialParallelInterleaved is BenchmarkDialParallel with the
// variants taking turns: in each turn 64 goroutines make 512 dials of one
// variant between them, and the turn lasts until the last one is closed.
// It reports "<variant>-dials/s" over all turns.
func BenchmarkDialParallelInterleaved(b *testing.B) {
	const workers, dialsPerTurn = 64, 512
	floor, others := benchTargets(b)
	interleave(b, dialVariants(floor, others),
		func(v dialVariant) (int, time.Duration) {
			return dialsPerTurn, dialBurst(b, v, workers, dialsPerTurn)
		},
		func(v dialVariant, n int, d time.Duration) {
			b.ReportMetric(float64(n)/d.Seconds(), v.name+"-dials/s")
		})
}

// BenchmarkPoolSize measures the bound on concurrent namespace switches
// (nsthread.Short's size): 64 goroutines dial into a global namespace, 512
// dials a turn, with the pool at each size in turn (the floor, a dial with
// no switch, takes turns with them). It reports "<variant>-dials/s". The
// default size is max(2, GOMAXPROCS); a larger pool lets more threads be
// inside namespaces at once (up to its size), which TestDialDoesNotHoldThreads
// bounds for the default.
func BenchmarkPoolSize(b *testing.B) {
	const workers, dialsPerTurn = 64, 512
	floor, others := benchTargets(b)
	target := others[0]
	orig := nsthread.Short
	b.Cleanup(func() { nsthread.Short = orig })
	sizes := map[string]*nsthread.Pool{}
	vs := []dialVariant{{"floor", dialFloor, floor.port}}
	for _, n := range []int{1, 2, 4, 8, 64} {
		name := fmt.Sprintf("pool-%d", n)
		sizes[name] = nsthread.NewPool(n)
		vs = append(vs, dialVariant{name, dialVsockns(target.ns), target.port})
	}
	interleave(b, vs,
		func(v dialVariant) (int, time.Duration) {
			if p := sizes[v.name]; p != nil {
				nsthread.Short = p
			}
			defer func() { nsthread.Short = orig }()
			return dialsPerTurn, dialBurst(b, v, workers, dialsPerTurn)
		},
		func(v dialVariant, n int, d time.Duration) {
			b.ReportMetric(float64(n)/d.Seconds(), v.name+"-dials/s")
		})
}

// BenchmarkNewNamespace: NewNamespace of each mode beside the floor, a bare
// unshare(CLONE_NEWNET) on a locked thread (which then opens the new
// namespace and moves back), taking turns 20 namespaces at a time. It
// reports "<variant>-ns/create".
func BenchmarkNewNamespace(b *testing.B) {
	if !namespacesExpected(b) {
		b.Skip("NewNamespace needs vsock namespaces")
	}
	const perTurn = 20
	bare := func() error {
		runtime.LockOSThread()
		home, err := netns.Get()
		if err != nil {
			runtime.UnlockOSThread()
			return err
		}
		defer home.Close()
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			runtime.UnlockOSThread()
			return err
		}
		if ns, err := netns.Get(); err == nil {
			ns.Close()
		}
		if err := netns.Set(home); err != nil {
			return err // still locked: the runtime ends the thread with the benchmark's goroutine
		}
		runtime.UnlockOSThread()
		return nil
	}
	create := func(m vsockns.Mode) func() error {
		return func() error {
			ns, err := vsockns.NewNamespace(m)
			if err == nil {
				ns.Close()
			}
			return err
		}
	}
	// A reference: the bare unshare on a goroutine of its own that the
	// caller waits for, the hand-off Run makes, without the move into the
	// parent.
	handoff := func() error {
		done := make(chan error, 1)
		go func() { done <- bare() }()
		return <-done
	}
	fns := map[string]func() error{
		"floor":          bare,
		"handoff-only":   handoff,
		"vsockns-local":  create(vsockns.ModeLocal),
		"vsockns-global": create(vsockns.ModeGlobal),
	}
	vs := []dialVariant{{name: "floor"}, {name: "handoff-only"}, {name: "vsockns-local"}, {name: "vsockns-global"}}
	interleave(b, vs,
		func(v dialVariant) (int, time.Duration) {
			start := time.Now()
			for range perTurn {
				if err := fns[v.name](); err != nil {
					b.Fatal(v.name, err)
				}
			}
			return perTurn, time.Since(start)
		},
		func(v dialVariant, n int, d time.Duration) {
			b.ReportMetric(float64(d.Nanoseconds())/float64(n), v.name+"-ns/create")
		})
}

// dialBurst makes n dials of v from workers goroutines between them, each
// closed at once, and returns how long that took.
func dialBurst(b *testing.B, v dialVariant, workers, n int) time.Duration {
	var left atomic.Int64
	left.Store(int64(n))
	var wg sync.WaitGroup
	start := time.Now()
	for range workers {
		wg.Go(func() {
			for left.Add(-1) >= 0 {
				c, err := v.dial(context.Background(), v.port)
				if err != nil {
					b.Error(v.name, err)
					return
				}
				c.Close()
			}
		})
	}
	wg.Wait()
	d := time.Since(start)
	if b.Failed() {
		b.FailNow()
	}
	return d
}

// BenchmarkThroughputBuffer: 64 KiB writes through a connection in a local
// namespace whose both ends have a receive buffer of 256 KiB (the kernel's
// default), 1 MiB or 4 MiB (ListenConfig.BufferSize, inherited by the
// accepted end, and Dialer.BufferSize), beside the floor: mdlayher/vsock
// at the default size in the current namespace.
func BenchmarkThroughputBuffer(b *testing.B) {
	floor, _ := benchTargets(b)
	ns := nsOfMode(b, vsockns.ModeLocal)
	run := func(b *testing.B, size uint64) {
		lns := ns
		if size == 0 {
			lns = floor.ns
		}
		lc := vsockns.ListenConfig{Namespace: lns, BufferSize: size}
		l, err := lc.ListenVsock(context.Background(), vsock.Local, 0)
		require.NoError(b, err)
		defer l.Close()
		go discardOne(l)
		var c io.WriteCloser
		if size == 0 {
			c, err = vsock.Dial(vsock.Local, l.Addr().(*vsock.Addr).Port, nil)
		} else {
			d := vsockns.Dialer{Namespace: ns, BufferSize: size}
			c, err = d.DialVsock(context.Background(), vsock.Local, l.Addr().(*vsock.Addr).Port)
		}
		require.NoError(b, err)
		defer c.Close()
		buf := make([]byte, 64<<10)
		b.SetBytes(int64(len(buf)))
		for b.Loop() {
			if _, err := c.Write(buf); err != nil {
				b.Fatal(err)
			}
		}
	}
	b.Run("floor", func(b *testing.B) { run(b, 0) })
	for _, size := range []uint64{256 << 10, 1 << 20, 4 << 20} {
		b.Run(fmt.Sprintf("vsockns-%dKiB", size>>10), func(b *testing.B) { run(b, size) })
	}
}

// discardOne accepts one connection on l and reads it to the end.
func discardOne(l net.Listener) {
	c, err := l.Accept()
	if err != nil {
		return
	}
	defer c.Close()
	_, _ = io.Copy(io.Discard, c)
}

// BenchmarkDialUserNamespace: a dial through CreateUserNamespace's helper
// (socket(2) is a request to another process, the descriptor comes back
// over SCM_RIGHTS) beside a dial into a local namespace this process
// enters, and the floor. Root runs it (the VM's benchmarks do); an
// unprivileged caller takes the same path.
func BenchmarkDialUserNamespace(b *testing.B) {
	floor, others := benchTargets(b)
	if len(others) == 0 {
		b.Skip("needs vsock namespaces")
	}
	n, port := userNamespaceTarget(b, 4)
	viaHelper := func(ctx context.Context, port uint32) (io.Closer, error) {
		return n.Dialer().DialVsock(ctx, vsock.Local, port)
	}
	local := others[len(others)-1]
	b.Run("floor", func(b *testing.B) { benchDial(b, dialFloor, floor.port) })
	b.Run("vsockns-"+local.name, func(b *testing.B) { benchDial(b, dialVsockns(local.ns), local.port) })
	b.Run("userns-helper", func(b *testing.B) { benchDial(b, viaHelper, port) })
	b.Run("floor-again", func(b *testing.B) { benchDial(b, dialFloor, floor.port) })
}

// userNamespaceTarget is a local namespace of CreateUserNamespace with a
// listener whose connections acceptors goroutines accept and close, and
// the listener's port; both closed at cleanup.
func userNamespaceTarget(b *testing.B, acceptors int) (*vsockns.Namespace, uint32) {
	n, err := vsockns.CreateUserNamespace(context.Background(), vsockns.ModeLocal)
	require.NoError(b, err)
	b.Cleanup(func() { n.Close() })
	l, err := n.ListenConfig().ListenVsock(context.Background(), vsock.Local, 0)
	require.NoError(b, err)
	b.Cleanup(func() { l.Close() })
	closeAccepted(l, acceptors)
	return n, l.Addr().(*vsock.Addr).Port
}

// closeAccepted runs n goroutines that accept connections on l and close
// them, until l is closed.
func closeAccepted(l net.Listener, n int) {
	for range n {
		go func() {
			for {
				c, err := l.Accept()
				if err != nil {
					return
				}
				c.Close()
			}
		}()
	}
}

// BenchmarkRoundTrip: a 64-byte request and its 64-byte reply on one
// connection, over vsock_loopback: the floor (mdlayher/vsock streams in the
// init namespace), vsockns streams, and vsockns SOCK_SEQPACKET (each write a
// blocking sendmsg on a locked thread, see seqpacket_linux.go), both in a
// global namespace where there is one (SOCK_SEQPACKET has no loopback in a
// local one).
func BenchmarkRoundTrip(b *testing.B) {
	floor, others := benchTargets(b)
	ns := floor.ns
	if len(others) > 0 {
		ns = others[0].ns // global (or, before 7.0, another plain namespace)
	}
	const size = 64
	echo := func(c net.Conn, seqpacket bool) {
		defer c.Close()
		buf := make([]byte, size)
		for {
			var err error
			if seqpacket {
				_, err = c.Read(buf)
			} else {
				_, err = io.ReadFull(c, buf)
			}
			if err != nil {
				return
			}
			if _, err := c.Write(buf); err != nil {
				return
			}
		}
	}
	run := func(b *testing.B, l net.Listener, dial func() (net.Conn, error), seqpacket bool) {
		defer l.Close()
		go func() {
			c, err := l.Accept()
			if err == nil {
				echo(c, seqpacket)
			}
		}()
		c, err := dial()
		require.NoError(b, err)
		defer c.Close()
		req, rep := make([]byte, size), make([]byte, size)
		for b.Loop() {
			if _, err := c.Write(req); err != nil {
				b.Fatal(err)
			}
			if seqpacket {
				_, err = c.Read(rep)
			} else {
				_, err = io.ReadFull(c, rep)
			}
			if err != nil {
				b.Fatal(err)
			}
		}
	}
	b.Run("floor", func(b *testing.B) {
		l, err := vsock.ListenContextID(vsock.Local, 0, nil)
		require.NoError(b, err)
		run(b, l, func() (net.Conn, error) { return vsock.Dial(vsock.Local, l.Addr().(*vsock.Addr).Port, nil) }, false)
	})
	b.Run("vsockns-stream", func(b *testing.B) {
		l, err := vsockns.ListenContextID(ns, vsock.Local, 0)
		require.NoError(b, err)
		run(b, l, func() (net.Conn, error) { return vsockns.Dial(ns, vsock.Local, l.Addr().(*vsock.Addr).Port) }, false)
	})
	b.Run("vsockns-seqpacket", func(b *testing.B) {
		lc := vsockns.ListenConfig{Namespace: ns}
		l, err := lc.ListenSeqpacket(context.Background(), vsock.Local, 0)
		require.NoError(b, err)
		run(b, l, func() (net.Conn, error) { return vsockns.DialSeqpacket(ns, vsock.Local, l.Addr().(*vsock.Addr).Port) }, true)
	})
	// A reference, not a way to write: the same connection written with a
	// plain write(2) on the calling goroutine's thread (no locked thread,
	// no signal mask), which a signal could cut mid-message.
	b.Run("seqpacket-plain-write", func(b *testing.B) {
		lc := vsockns.ListenConfig{Namespace: ns}
		l, err := lc.ListenSeqpacket(context.Background(), vsock.Local, 0)
		require.NoError(b, err)
		run(b, l, func() (net.Conn, error) {
			c, err := vsockns.DialSeqpacket(ns, vsock.Local, l.Addr().(*vsock.Addr).Port)
			if err != nil {
				return nil, err
			}
			return plainWriter{c}, nil
		}, true)
	})
}

// plainWriter writes with write(2) through the raw connection.
type plainWriter struct{ *vsockns.Conn }

func (w plainWriter) Write(p []byte) (int, error) {
	rc, err := w.SyscallConn()
	if err != nil {
		return 0, err
	}
	var n int
	var werr error
	if err := rc.Write(func(fd uintptr) bool { n, werr = unix.Write(int(fd), p); return true }); err != nil {
		return 0, err
	}
	return n, werr
}

// preparedVariants are the floor and, into a global and a local namespace,
// dials through an owning reference with sockets made ahead
// (Namespace.Prepare, 64 per namespace) and through the same kind of
// reference without them; and the same two into a local namespace of
// CreateUserNamespace (every socket a request to its helper; made ahead,
// one request a batch).
func preparedVariants(b *testing.B) []dialVariant {
	floor, others := benchTargets(b)
	vs := []dialVariant{{"floor", dialFloor, floor.port}}
	variant := func(name string, n *vsockns.Namespace, prepared bool, port uint32) {
		if prepared {
			require.NoError(b, n.Prepare(64, 0))
			name = "prepared-" + name
		} else {
			name = "ref-" + name
		}
		d := n.Dialer()
		vs = append(vs, dialVariant{name, func(ctx context.Context, port uint32) (io.Closer, error) {
			return d.DialVsock(ctx, vsock.Local, port)
		}, port})
	}
	for _, t := range others {
		for _, prepared := range []bool{false, true} {
			n, err := vsockns.OpenNamespace(t.ns)
			require.NoError(b, err)
			b.Cleanup(func() { n.Close() })
			variant(t.name, n, prepared, t.port)
		}
	}
	if vsockns.Supported() != nil {
		return vs
	}
	for _, prepared := range []bool{false, true} {
		n, port := userNamespaceTarget(b, 16)
		variant("userns", n, prepared, port)
	}
	return vs
}

// BenchmarkDialPreparedSerial: one dial at a time, the variants of
// preparedVariants taking turns dial by dial (the store refills between
// its turns: it is warm). It reports "<variant>-ns/dial".
func BenchmarkDialPreparedSerial(b *testing.B) {
	ctx := context.Background()
	interleave(b, preparedVariants(b),
		func(v dialVariant) (int, time.Duration) { return 1, timedDial(b, ctx, v) },
		func(v dialVariant, n int, d time.Duration) {
			b.ReportMetric(float64(d.Nanoseconds())/float64(n), v.name+"-ns/dial")
		})
}

// BenchmarkDialPreparedStorm: 64 goroutines make 512 dials a turn, eight
// times the store, so the refill's switches are paid inside the turn (the
// steady state). It reports "<variant>-dials/s", "<variant>-cpu-us/dial"
// (the process's CPU, user and system, per dial) and
// "<variant>-machine-cpu-us/dial" (every CPU's busy time: the kernel's
// loopback workers, and a helper process's share for the userns rows).
func BenchmarkDialPreparedStorm(b *testing.B) {
	const workers, dialsPerTurn = 64, 512
	cpu := map[string]time.Duration{}
	machine := map[string]time.Duration{}
	interleave(b, preparedVariants(b),
		func(v dialVariant) (int, time.Duration) {
			before := processCPU()
			busy, _ := machineCPU()
			d := dialBurst(b, v, workers, dialsPerTurn)
			cpu[v.name] += processCPU() - before
			busyAfter, _ := machineCPU()
			machine[v.name] += busyAfter - busy
			return dialsPerTurn, d
		},
		func(v dialVariant, n int, d time.Duration) {
			b.ReportMetric(float64(n)/d.Seconds(), v.name+"-dials/s")
			b.ReportMetric(float64(cpu[v.name].Microseconds())/float64(n), v.name+"-cpu-us/dial")
			b.ReportMetric(float64(machine[v.name].Microseconds())/float64(n), v.name+"-machine-cpu-us/dial")
		})
}

// meminfoKiB reads one field of /proc/meminfo, in KiB.
func meminfoKiB(b *testing.B, field string) int64 {
	b.Helper()
	data, err := os.ReadFile("/proc/meminfo")
	require.NoError(b, err)
	for _, line := range strings.Split(string(data), "\n") {
		if name, rest, ok := strings.Cut(line, ":"); ok && name == field {
			v, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			require.NoError(b, err)
			return v
		}
	}
	b.Fatalf("no %s in /proc/meminfo", field)
	return 0
}

// BenchmarkReadySocketMemory: what a socket made ahead costs the kernel,
// as Namespace.Prepare's stores hold them (an unconnected AF_VSOCK stream
// socket, non-blocking, close-on-exec): 2000 made at once, the growth of
// the kernel's slab memory (the socket, its inode, dentry and file) per
// socket. It reports "slab-bytes/socket" (and the descriptor each costs
// is the store's count against RLIMIT_NOFILE).
func BenchmarkReadySocketMemory(b *testing.B) {
	needVsock(b)
	const sockets = 2000
	var total int64
	for b.Loop() {
		before := meminfoKiB(b, "Slab")
		fds := make([]int, 0, sockets)
		for range sockets {
			fd, err := unix.Socket(unix.AF_VSOCK, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
			require.NoError(b, err)
			fds = append(fds, fd)
		}
		total += meminfoKiB(b, "Slab") - before
		for _, fd := range fds {
			unix.Close(fd)
		}
	}
	b.ReportMetric(float64(total*1024)/float64(int64(b.N)*sockets), "slab-bytes/socket")
}
