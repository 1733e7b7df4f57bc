//go:build linux

package nsthread

import (
	"context"
	"fmt"
	"runtime"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// These measure the parts of Run, to know where a namespaced dial's extra
// time goes (run them in the VM: `make bench` prints the root package's;
// VSOCKNS_VM_RUN='^$' VSOCKNS_VM_ARGS=-test.bench=. make vm-test these).

func BenchmarkRunNoop(b *testing.B) {
	needRoot(b)
	target := newNamespace(b)
	for b.Loop() {
		if err := Run(context.Background(), nil, FD(target), func() error { return nil }); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkRunSocket(b *testing.B) {
	needRoot(b)
	target := newNamespace(b)
	for b.Loop() {
		var fd int
		if err := Run(context.Background(), nil, FD(target), func() (err error) {
			fd, err = unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
			return err
		}); err != nil {
			b.Fatal(err)
		}
		unix.Close(fd)
	}
}

func BenchmarkOpenThreadSelf(b *testing.B) {
	for b.Loop() {
		fd, err := unix.Open(threadSelfPath, unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			b.Fatal(err)
		}
		unix.Close(fd)
	}
}

func BenchmarkSetnsThereAndBack(b *testing.B) {
	needRoot(b)
	target := newNamespace(b)
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	home, err := unix.Open(threadSelfPath, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		b.Fatal(err)
	}
	defer unix.Close(home)
	for b.Loop() {
		if err := unix.Setns(target, unix.CLONE_NEWNET); err != nil {
			b.Fatal(err)
		}
		if err := unix.Setns(home, unix.CLONE_NEWNET); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkGoroutineLockHandoff(b *testing.B) {
	for b.Loop() {
		done := make(chan struct{})
		go func() {
			runtime.LockOSThread()
			runtime.UnlockOSThread()
			close(done)
		}()
		<-done
	}
}

func vsockSocket() (int, error) {
	return unix.Socket(unix.AF_VSOCK, unix.SOCK_STREAM|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, 0)
}

// BenchmarkVsockSocket and BenchmarkRunVsockSocket: creating (and closing)
// a vsock socket here, and inside another namespace through Run.
func BenchmarkVsockSocket(b *testing.B) {
	needRoot(b)
	for b.Loop() {
		fd, err := vsockSocket()
		if err != nil {
			b.Skip("no vsock:", err)
		}
		unix.Close(fd)
	}
}

func BenchmarkRunVsockSocket(b *testing.B) {
	needRoot(b)
	target := newNamespace(b)
	for b.Loop() {
		var fd int
		if err := Run(context.Background(), nil, FD(target), func() (err error) {
			fd, err = vsockSocket()
			return err
		}); err != nil {
			b.Skip("no vsock:", err)
		}
		unix.Close(fd)
	}
}

// BenchmarkLockedCallerVsockSocket is the switch without Run's goroutine:
// the benchmark's own goroutine locks its thread and moves it, which is
// cheaper but could not discard a thread that failed to come back without
// ending the caller's goroutine. The difference to BenchmarkRunVsockSocket
// is what that guarantee costs.
func BenchmarkLockedCallerVsockSocket(b *testing.B) {
	needRoot(b)
	target := newNamespace(b)
	home, err := homeNamespace()
	if err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		runtime.LockOSThread()
		if err := rawSetns(target, unix.CLONE_NEWNET); err != nil {
			b.Fatal(err)
		}
		fd, err := vsockSocket()
		if err := rawSetns(home, unix.CLONE_NEWNET); err != nil {
			b.Fatal(err) // the goroutine ends locked: the thread is discarded
		}
		runtime.UnlockOSThread()
		if err != nil {
			b.Skip("no vsock:", err)
		}
		unix.Close(fd)
	}
}

// BenchmarkRunAcrossNamespaces: a switch into one namespace again and
// again, against switches round-robin over a thousand, through Run and as
// bare setns(2) there and back on a locked thread. It tells how much of a
// dial's cost at node scale is the kernel's (colder namespaces) and how
// much Run's own.
func BenchmarkRunAcrossNamespaces(b *testing.B) {
	needRoot(b)
	targets := make([]int, 1000)
	for i := range targets {
		targets[i] = newNamespace(b)
	}
	home, err := Current()
	if err != nil {
		b.Fatal(err)
	}
	defer unix.Close(home)
	for _, n := range []int{1, 1000} {
		b.Run(fmt.Sprintf("Run/N=%d", n), func(b *testing.B) {
			i := 0
			for b.Loop() {
				if err := Run(context.Background(), nil, FD(targets[i%n]), func() error { return nil }); err != nil {
					b.Fatal(err)
				}
				i++
			}
		})
		b.Run(fmt.Sprintf("setns/N=%d", n), func(b *testing.B) {
			runtime.LockOSThread()
			i := 0
			for b.Loop() {
				if err := rawSetns(targets[i%n], unix.CLONE_NEWNET); err != nil {
					b.Fatal(err)
				}
				if err := rawSetns(home, unix.CLONE_NEWNET); err != nil {
					b.Fatal(err) // still locked: the thread goes with the goroutine
				}
				i++
			}
			runtime.UnlockOSThread()
		})
	}
}

// runPrevious is Run as it was before contexts, pools, the nested-Run
// registry and the Goexit/panic handling, kept here only as the baseline
// of BenchmarkRunVsPrevious.
func runPrevious(slots chan struct{}, target int, fn func() error) error {
	slots <- struct{}{}
	defer func() { <-slots }()
	done := make(chan error, 1)
	go func() {
		home, err := homeNamespace()
		if err != nil {
			done <- err
			return
		}
		runtime.LockOSThread()
		if err := setns(target, unix.CLONE_NEWNET); err != nil {
			runtime.UnlockOSThread()
			done <- err
			return
		}
		ferr := fn()
		if err := setns(home, unix.CLONE_NEWNET); err != nil {
			done <- err // still locked: discarded
			return
		}
		runtime.UnlockOSThread()
		done <- ferr
	}()
	for range 8 {
		select {
		case err := <-done:
			return err
		default:
			runtime.Gosched()
		}
	}
	return <-done
}

// BenchmarkRunVsPrevious: Run and runPrevious creating a vsock socket in
// another namespace, taking turns call by call, so both see the same
// machine state. It reports "current-ns/switch" and "previous-ns/switch".
func BenchmarkRunVsPrevious(b *testing.B) {
	needRoot(b)
	target := newNamespace(b)
	slots := make(chan struct{}, max(2, runtime.GOMAXPROCS(0)))
	var fd int
	mk := func() (err error) {
		fd, err = vsockSocket()
		return err
	}
	var cur, prev time.Duration
	n := 0
	for b.Loop() {
		t0 := time.Now()
		if err := Run(context.Background(), nil, FD(target), mk); err != nil {
			b.Fatal(err)
		}
		t1 := time.Now()
		unix.Close(fd)
		t2 := time.Now()
		if err := runPrevious(slots, target, mk); err != nil {
			b.Fatal(err)
		}
		t3 := time.Now()
		unix.Close(fd)
		cur += t1.Sub(t0)
		prev += t3.Sub(t2)
		n++
	}
	b.ReportMetric(float64(cur.Nanoseconds())/float64(n), "current-ns/switch")
	b.ReportMetric(float64(prev.Nanoseconds())/float64(n), "previous-ns/switch")
}
