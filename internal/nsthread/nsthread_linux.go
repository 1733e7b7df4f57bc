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

// slots limits how many threads are inside Run at once.
var slots = make(chan struct{}, max(2, runtime.GOMAXPROCS(0)))

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

// Run calls fn on a locked OS thread. If target is a file descriptor (>= 0),
// the thread is in that network namespace while fn runs; if target < 0, it
// is in the calling thread's namespace (fn may change it, e.g. with
// unshare(2), and Run restores it all the same).
//
// Run runs fn on a goroutine of its own, so that a thread that cannot be
// restored is discarded without touching the caller's goroutine. That
// goroutine starts on an ordinary (unlocked) thread, which is in the
// process's home namespace; afterwards the thread is moved back there.
// fn must be short: it holds an OS thread.
//
// fn's error is returned as is. Errors of Run's own are *os.SyscallError
// ("setns", ...) or *os.PathError. If fn ran and the thread could not be
// restored, the error wraps ErrRestore (and fn's error, if any); whatever
// fn created is still the caller's to keep or close.
func Run(target int, fn func() error) error {
	if target < 0 {
		// fn runs on another thread; give it the caller's namespace, which
		// differs from the process's when the caller locked its thread and
		// moved it.
		self, err := Current()
		if err != nil {
			return err
		}
		defer unix.Close(self)
		target = self
	}

	// Bound the threads in use: each Run occupies an OS thread for its
	// few system calls, and a slow one (or many at once) would otherwise
	// make the runtime start a thread per concurrent caller. Waiting
	// callers are parked goroutines, not threads.
	slots <- struct{}{}
	defer func() { <-slots }()

	done := make(chan error, 1)
	go func() {
		// Not locked yet: this is an ordinary thread, in the home namespace.
		home, err := homeNamespace()
		if err != nil {
			done <- err
			return
		}
		runtime.LockOSThread()
		if err := setns(target, unix.CLONE_NEWNET); err != nil {
			// A failed setns leaves the thread where it was.
			runtime.UnlockOSThread()
			done <- os.NewSyscallError("setns", err)
			return
		}

		ferr := fn()

		if err := setns(home, unix.CLONE_NEWNET); err != nil {
			// Still locked: when this goroutine returns, the runtime
			// terminates the thread instead of reusing it.
			rerr := fmt.Errorf("%w: %w", ErrRestore, os.NewSyscallError("setns", err))
			done <- errors.Join(ferr, rerr)
			return
		}
		runtime.UnlockOSThread()
		done <- ferr
	}()
	// Yield instead of parking at once: the new goroutine sits in this P's
	// run queue, and yielding runs it on this very thread; parking leaves a
	// window in which another P takes it, and each Run then costs
	// cross-thread wake-ups. If it is still not done after a few yields, it
	// runs elsewhere: park.
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

// home is a handle to the network namespace of the process's ordinary
// threads, opened once from such a thread: restoring a thread is then one
// setns(2), with no open(2) of /proc on every call.
var home struct {
	fd atomic.Int32 // 0 until opened (fd 0 is never a namespace we opened: it is stdin's slot)
	mu sync.Mutex   // serialises the first open
}

// homeNamespace returns the home namespace handle, opening it from the
// calling (unlocked) thread the first time. An error is not remembered.
func homeNamespace() (int, error) {
	if fd := home.fd.Load(); fd > 0 {
		return int(fd), nil
	}
	home.mu.Lock()
	defer home.mu.Unlock()
	if fd := home.fd.Load(); fd > 0 {
		return int(fd), nil
	}
	fd, err := Current()
	if err != nil {
		return -1, err
	}
	home.fd.Store(int32(fd))
	return fd, nil
}
