//go:build linux

// Package nsthread is the one place where vsockns moves an OS thread into
// another network namespace.
//
// A socket's namespace is fixed when socket(2) runs, and /dev/vhost-vsock's
// when open(2) runs; sysctls under /proc/sys/net are those of the thread
// that opens them. So only those calls need the foreign namespace: Run moves
// a locked thread there, runs them, and moves it back. Everything else
// (bind, connect, accept, I/O) then runs on ordinary goroutines.
package nsthread

import (
	"context"
	"errors"
	"fmt"
	"os"
	"runtime"
	"sync"
	"sync/atomic"

	"golang.org/x/sys/unix"
)

// ErrRestore is wrapped by Run's error when the thread could not be moved
// back to its original namespace. That thread is never handed back to the
// Go scheduler: its goroutine exits while still locked to it, and the
// runtime terminates the thread. The one thread the runtime cannot
// terminate is the main thread; it then stays parked in the foreign
// namespace, running nothing. (A program that wants even that excluded
// calls runtime.LockOSThread in main, so no other goroutine ever runs on
// the main thread.)
var ErrRestore = errors.New("could not restore the thread's network namespace; the thread was discarded")

// ErrGoexit is Run's error when fn called runtime.Goexit (t.FailNow does)
// instead of returning. The thread fn ran on is discarded like one that
// could not be restored.
var ErrGoexit = errors.New("the function run in the namespace called runtime.Goexit; its thread was discarded")

// A Target is the network namespace Run runs fn in: [Caller] or [FD]. The
// zero Target names no namespace, and Run refuses it.
type Target struct {
	fd   int
	kind targetKind
}

type targetKind uint8

const (
	kindNone   targetKind = iota // the zero Target
	kindFD                       // the namespace fd refers to
	kindCaller                   // the calling thread's namespace
)

// Caller is the calling thread's network namespace: fn runs on another
// thread, but in the same namespace as the caller's thread, which may differ
// from the process's when the caller locked its thread and moved it.
func Caller() Target { return Target{fd: -1, kind: kindCaller} }

// FD is the network namespace that the file descriptor fd refers to. A
// negative fd is refused by Run with EBADF.
func FD(fd int) Target { return Target{fd: fd, kind: kindFD} }

// A Pool bounds how many threads are inside Run at once for one kind of
// work. Each Run occupies an OS thread for its few system calls, and a slow
// one (or many at once) would otherwise make the runtime start a thread
// per concurrent caller. Waiting callers are parked goroutines, not threads,
// and give up when their context is done.
type Pool struct {
	slots chan struct{}
}

// NewPool returns a pool that lets n Runs in at once (at least one).
func NewPool(n int) *Pool { return &Pool{slots: make(chan struct{}, max(1, n))} }

// Size is how many Runs the pool lets in at once.
func (p *Pool) Size() int { return cap(p.slots) }

// Two pools, so that slow work cannot starve fast work:
var (
	// Short is for a few quick system calls (socket, open, a sysctl). Its
	// size is the number of Ps (at least two): more threads than Ps
	// cannot run these calls any sooner.
	Short = NewPool(max(2, runtime.GOMAXPROCS(0)))

	// Long is for namespace creation (unshare(2) twice and a sysctl
	// write), which the kernel serialises in part and which takes
	// milliseconds: it gets threads of its own, so creating many
	// namespaces never holds up a dial.
	Long = NewPool(max(1, runtime.GOMAXPROCS(0)/2))
)

// setns is replaced by this package's tests only.
var setns = rawSetns

// threadSelfPath names the calling thread's network namespace.
const threadSelfPath = "/proc/thread-self/ns/net"

// Current opens a handle to the calling thread's network namespace. The
// caller closes it; the thread should be locked if it may have moved.
func Current() (int, error) {
	fd, err := unix.Open(threadSelfPath, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, &os.PathError{Op: "open", Path: threadSelfPath, Err: err}
	}
	return fd, nil
}

// rawSetns is setns(2) without telling the scheduler about the system
// call: it never blocks, and a locked thread that the runtime sees in a
// system call may have its P taken away by sysmon, which then costs
// thread hand-offs to get back (measured under TCG).
func rawSetns(fd, nstype int) error {
	if _, _, errno := unix.RawSyscall(unix.SYS_SETNS, uintptr(fd), uintptr(nstype), 0); errno != 0 {
		return errno
	}
	return nil
}

// Run calls fn on a locked OS thread that is in target's network namespace
// while fn runs (fn may change it, e.g. with unshare(2); Run restores the
// thread all the same). It waits for a place in pool (nil means Short)
// until ctx is done; once fn has started, ctx no longer matters.
//
// Run runs fn on a goroutine of its own, so that a thread that cannot be
// restored is discarded without touching the caller's goroutine. That
// goroutine starts on an ordinary (unlocked) thread, which is in the
// process's home namespace; afterwards the thread is moved back there.
// fn must be short: it holds an OS thread. fn may call Run itself: a Run
// from inside Run takes no second place in a pool, so it cannot deadlock
// waiting for one.
//
// fn's error is returned as is. Errors of Run's own are ctx's error,
// *os.SyscallError ("setns", ...) or *os.PathError. If fn ran and the
// thread could not be restored, the error wraps ErrRestore (and fn's error,
// if any); whatever fn created is still the caller's to keep or close. If fn
// calls runtime.Goexit, Run returns ErrGoexit; if fn panics, Run panics on
// the caller's goroutine with the same value. In both cases fn's thread is
// discarded.
func Run(ctx context.Context, pool *Pool, target Target, fn func() error) error {
	switch target.kind {
	case kindNone:
		return os.NewSyscallError("setns", unix.EBADF)
	case kindFD:
		if target.fd < 0 {
			return os.NewSyscallError("setns", unix.EBADF)
		}
	case kindCaller:
		self, err := Current()
		if err != nil {
			return err
		}
		defer unix.Close(self)
		target.fd = self
	}
	if pool == nil {
		pool = Short
	}
	held, err := pool.acquire(ctx)
	if err != nil {
		return err
	}
	if held {
		defer pool.release()
	}

	done := make(chan outcome, 1)
	go runLocked(target.fd, fn, done)
	// Yield instead of parking at once: the new goroutine sits in this P's
	// run queue, and yielding runs it on this very thread; parking leaves a
	// window in which another P takes it, and each Run then costs
	// cross-thread wake-ups. If it is still not done after a few yields, it
	// runs elsewhere: park.
	for range 8 {
		select {
		case o := <-done:
			return o.result()
		default:
			runtime.Gosched()
		}
	}
	return (<-done).result()
}

// outcome is what runLocked reports back to Run.
type outcome struct {
	err        error
	panicked   bool
	panicValue any
}

// result is Run's return: fn's error, or fn's panic again on the caller's
// goroutine.
func (o outcome) result() error {
	if o.panicked {
		panic(o.panicValue)
	}
	return o.err
}

// runLocked is Run's goroutine: it moves its thread into target, runs fn
// and moves the thread home, or leaves it locked so that the runtime ends it.
func runLocked(target int, fn func() error, done chan<- outcome) {
	// Not locked yet: this is an ordinary thread, in the home namespace.
	home, err := homeNamespace()
	if err != nil {
		done <- outcome{err: err}
		return
	}
	runtime.LockOSThread()
	if err := setns(target, unix.CLONE_NEWNET); err != nil {
		// A failed setns leaves the thread where it was.
		runtime.UnlockOSThread()
		done <- outcome{err: os.NewSyscallError("setns", err)}
		return
	}
	mark := enter(unix.Gettid())
	returned := false
	defer func() {
		if returned {
			return
		}
		// fn panicked or called runtime.Goexit. The thread stays locked:
		// when this goroutine ends, the runtime terminates it instead of
		// reusing a thread in an unknown state. It goes home first all the
		// same (if it can): the main thread is never terminated but parked
		// for good, and parked in target it would hold that namespace for
		// the life of the process, and be the one /proc/PID/ns/net shows.
		setns(home, unix.CLONE_NEWNET)
		mark.leave()
		if v := recover(); v != nil {
			done <- outcome{panicked: true, panicValue: v}
			return
		}
		done <- outcome{err: ErrGoexit}
	}()

	ferr := fn()
	returned = true
	mark.leave()

	if err := setns(home, unix.CLONE_NEWNET); err != nil {
		// Still locked: when this goroutine returns, the runtime
		// terminates the thread instead of reusing it.
		rerr := fmt.Errorf("%w: %w", ErrRestore, os.NewSyscallError("setns", err))
		done <- outcome{err: errors.Join(ferr, rerr)}
		return
	}
	runtime.UnlockOSThread()
	done <- outcome{err: ferr}
}

// inside holds the thread IDs of the threads running an fn of Run, in the
// first free entries (0: free). Such a thread is locked to Run's goroutine,
// so a Run called from that thread is a Run from inside fn. A fixed array of
// atomics rather than a map: entering and leaving cost no allocation, and
// only a caller that finds its pool full looks.
var inside [maxInside]atomic.Int32

// maxInside bounds the threads that can be inside Run at once and be seen
// as such: the pools' sizes plus the nested Runs beyond them. A thread that
// finds no free entry runs unmarked (a Run inside its fn then waits for a
// place like any other).
const maxInside = 256

// insideMark is a thread's entry in inside, or -1.
type insideMark int

func enter(tid int) insideMark {
	for i := range inside {
		if inside[i].CompareAndSwap(0, int32(tid)) {
			return insideMark(i)
		}
	}
	return -1
}

func (m insideMark) leave() {
	if m >= 0 {
		inside[m].Store(0)
	}
}

// nested reports whether the caller is an fn of Run.
func nested() bool {
	tid := int32(unix.Gettid())
	for i := range inside {
		if inside[i].Load() == tid {
			return true
		}
	}
	return false
}

// acquire takes a place in p, waiting until ctx is done. held is false
// for a Run from inside Run: the outer Run's place covers it, and waiting
// for another could deadlock once every place is held by an outer Run.
func (p *Pool) acquire(ctx context.Context) (held bool, err error) {
	select {
	case p.slots <- struct{}{}:
		return true, nil
	default:
	}
	if nested() {
		return false, nil
	}
	if ctx == nil {
		ctx = context.Background()
	}
	select {
	case p.slots <- struct{}{}:
		return true, nil
	case <-ctx.Done():
		return false, ctx.Err()
	}
}

func (p *Pool) release() { <-p.slots }

// home is a handle to the network namespace of the process's ordinary
// threads. It is opened while the package is initialised, which the runtime
// does on the main thread before main runs (so before any goroutine can
// have moved a thread); restoring a thread is then one setns(2), with no
// open(2) of /proc on every call. If that open failed (no /proc yet), the
// first Run tries again from its ordinary thread.
var home struct {
	fd atomic.Int32 // -1 until opened
	mu sync.Mutex   // serialises a late open
}

func init() {
	home.fd.Store(-1)
	if fd, err := Current(); err == nil {
		home.fd.Store(int32(fd))
	}
}

// homeNamespace returns the home namespace handle.
func homeNamespace() (int, error) {
	if fd := home.fd.Load(); fd >= 0 {
		return int(fd), nil
	}
	home.mu.Lock()
	defer home.mu.Unlock()
	if fd := home.fd.Load(); fd >= 0 {
		return int(fd), nil
	}
	fd, err := Current()
	if err != nil {
		return -1, err
	}
	home.fd.Store(int32(fd))
	return fd, nil
}
