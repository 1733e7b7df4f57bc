//go:build linux

package vsockns_test

import (
	"context"
	"io"
	"net"
	"runtime"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mdlayher/socket"
	"github.com/mdlayher/vsock"
	"github.com/stretchr/testify/require"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/vsockns/vsockns"
)

// The benchmarks compare, in one boot, the cost of a vsock dial:
//
//	floor         mdlayher/vsock's DialContext in the current namespace
//	vsockns       this package, into another (global or local) namespace
//	kubevirt      the whole vsock.Dial on a thread switched into the
//	              namespace (the pattern KubeVirt's virt-handler uses)
//	socket-netns  mdlayher/socket's Config.NetNS, then Connect
//
// `make bench` runs them in the VM and prints them side by side.

// dialFunc dials port on vsock loopback and returns something to close.
type dialFunc func(ctx context.Context, port uint32) (io.Closer, error)

type benchTarget struct {
	name string
	ns   netns.NsHandle // the listener's (and the namespaced dialers') namespace
	port uint32
}

// benchTargets sets up a listener (accepting and closing at once) in the
// current namespace and in a new global and a new local namespace.
func benchTargets(b *testing.B) (floor benchTarget, others []benchTarget) {
	b.Helper()
	needVsock(b)
	mk := func(name string, ns netns.NsHandle) benchTarget {
		l, err := vsockns.Listen(ns, 0)
		require.NoError(b, err)
		go func() {
			for {
				c, err := l.Accept()
				if err != nil {
					return
				}
				c.Close()
			}
		}()
		b.Cleanup(func() { l.Close() })
		return benchTarget{name, ns, l.Addr().(*vsock.Addr).Port}
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
			c, err := vsock.DialContext(ctx, vsock.Local, port, nil)
			if netns.Set(orig) == nil {
				runtime.UnlockOSThread()
			}
			ch <- result{c, err}
		}()
		r := <-ch
		return r.c, r.err
	}
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
	// switch, and the floor with the whole benchmark goroutine parked in
	// the target namespace (the kernel's cost of that namespace).
	b.Run("vsockns-current", func(b *testing.B) { benchDial(b, dialVsockns(netns.None()), floor.port) })
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
		go func() {
			c, err := l.Accept()
			if err != nil {
				return
			}
			defer c.Close()
			_, _ = io.Copy(io.Discard, c)
		}()
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
