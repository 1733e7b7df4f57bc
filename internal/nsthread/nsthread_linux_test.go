//go:build linux

package nsthread

import (
	"context"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

func needRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() == 0 {
		return
	}
	if os.Getenv("VSOCKNS_IN_VM") == "1" {
		t.Fatal("the VM runs tests as root")
	}
	t.Skip("needs root (it creates network namespaces); run `make test`, which runs it as root in a VM")
}

// newNamespace makes a namespace by unsharing on a Run thread.
func newNamespace(t testing.TB) int {
	t.Helper()
	fd := -1
	require.NoError(t, Run(context.Background(), nil, Caller(), func() error {
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			return err
		}
		var err error
		fd, err = Current()
		return err
	}))
	t.Cleanup(func() { unix.Close(fd) })
	return fd
}

func nsID(t *testing.T, path string) string {
	t.Helper()
	s, err := os.Readlink(path)
	require.NoError(t, err)
	return s
}

func fdID(t *testing.T, fd int) string {
	t.Helper()
	var st unix.Stat_t
	require.NoError(t, unix.Fstat(fd, &st))
	return "net:[" + itoa(st.Ino) + "]"
}

func itoa(v uint64) string {
	b := []byte{}
	for {
		b = append([]byte{byte('0' + v%10)}, b...)
		v /= 10
		if v == 0 {
			return string(b)
		}
	}
}

// foreignThreads lists threads not in the process's (main thread's)
// namespace, waiting (bounded) for discarded threads to finish exiting.
func foreignThreads(t *testing.T) []string {
	t.Helper()
	home := nsID(t, "/proc/self/ns/net")
	deadline := time.Now().Add(5 * time.Second)
	for {
		var bad []string
		paths, err := filepath.Glob("/proc/self/task/*/ns/net")
		require.NoError(t, err)
		for _, p := range paths {
			if s, err := os.Readlink(p); err == nil && s != home {
				bad = append(bad, p+" "+s)
			}
		}
		if len(bad) == 0 || time.Now().After(deadline) {
			return bad
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestRunEntersAndRestores(t *testing.T) {
	needRoot(t)
	target := newNamespace(t)
	var inside string
	require.NoError(t, Run(context.Background(), nil, FD(target), func() error {
		inside = nsID(t, "/proc/thread-self/ns/net")
		return nil
	}))
	assert.Equal(t, fdID(t, target), inside)
	assert.Empty(t, foreignThreads(t))
}

func TestRunPassesFnError(t *testing.T) {
	needRoot(t)
	target := newNamespace(t)
	boom := errors.New("boom")
	assert.Same(t, boom, Run(context.Background(), nil, FD(target), func() error { return boom }))
	assert.Empty(t, foreignThreads(t))
}

func TestRunBadTarget(t *testing.T) {
	needRoot(t)
	called := false
	err := Run(context.Background(), nil, FD(1<<20), func() error { called = true; return nil })
	assert.ErrorIs(t, err, syscall.EBADF)
	var se *os.SyscallError
	require.ErrorAs(t, err, &se)
	assert.Equal(t, "setns", se.Syscall)
	assert.False(t, called, "fn must not run outside the target")
}

// Run with no target runs fn in the caller's namespace, even when the
// caller is a locked thread that moved elsewhere.
func TestRunFollowsCallersNamespace(t *testing.T) {
	needRoot(t)
	outer := newNamespace(t)
	var inner string
	require.NoError(t, Run(context.Background(), nil, FD(outer), func() error {
		return Run(context.Background(), nil, Caller(), func() error {
			inner = nsID(t, "/proc/thread-self/ns/net")
			return nil
		})
	}))
	assert.Equal(t, fdID(t, outer), inner)
}

// If the thread cannot be moved back, Run says so and the thread is never
// reused: its goroutine exits locked and the runtime ends the thread.
func TestRunDiscardsUnrestorableThread(t *testing.T) {
	needRoot(t)
	target := newNamespace(t)
	orig := setns
	t.Cleanup(func() { setns = orig })
	calls := 0
	var mu sync.Mutex
	setns = func(fd, nstype int) error {
		mu.Lock()
		defer mu.Unlock()
		calls++
		if calls == 2 { // the restore
			return unix.EPERM
		}
		return orig(fd, nstype)
	}
	var tid int
	err := Run(context.Background(), nil, FD(target), func() error { tid = unix.Gettid(); return nil })
	setns = orig
	require.Error(t, err)
	assert.ErrorIs(t, err, ErrRestore)
	assert.ErrorIs(t, err, syscall.EPERM)

	// The stranded thread goes away, and no thread is left abroad.
	assert.Empty(t, foreignThreads(t))
	threadGone(t, tid)
}

// Many concurrent Runs into several namespaces, some failing: afterwards
// every thread is home.
func TestRunConcurrent(t *testing.T) {
	needRoot(t)
	targets := []int{newNamespace(t), newNamespace(t), newNamespace(t), 1 << 20}
	var wg sync.WaitGroup
	for i := range 2000 {
		wg.Go(func() {
			target := targets[i%len(targets)]
			err := Run(context.Background(), nil, FD(target), func() error {
				if i%7 == 0 {
					return errors.New("fn failed")
				}
				return nil
			})
			if target == 1<<20 {
				assert.ErrorIs(t, err, syscall.EBADF)
			}
		})
	}
	wg.Wait()
	assert.Empty(t, foreignThreads(t))
}

// The zero Target and negative descriptors are refused before any thread
// moves: only Caller means "the caller's namespace".
func TestRunRefusesNoTarget(t *testing.T) {
	for name, target := range map[string]Target{"zero": {}, "minus_one": FD(-1), "minus_two": FD(-2), "minus_1000": FD(-1000)} {
		t.Run(name, func(t *testing.T) {
			called := false
			err := Run(context.Background(), nil, target, func() error { called = true; return nil })
			assert.ErrorIs(t, err, syscall.EBADF)
			assert.False(t, called, "fn must not run")
		})
	}
}

// The home namespace handle is opened once, at package initialisation, and
// reused: with fd 0 free (stdin closed) a lazily opened handle landed on fd
// 0, was taken for "not opened yet", and a second one was opened. The check
// runs in a child process started with fd 0 closed; its first Run has a
// descriptor target, so nothing else opens a namespace before it.
func TestHomeHandleOpenedOnce(t *testing.T) {
	needRoot(t)
	if os.Getenv("NSTHREAD_HOME_CHILD") == "1" {
		fd, err := unix.Open("/proc/self/ns/net", unix.O_RDONLY|unix.O_CLOEXEC, 0)
		require.NoError(t, err)
		target, err := unix.FcntlInt(uintptr(fd), unix.F_DUPFD_CLOEXEC, 100)
		require.NoError(t, err)
		unix.Close(fd)
		defer unix.Close(target)
		before := netnsFDs(t)
		for range 5 {
			require.NoError(t, Run(context.Background(), nil, FD(target), func() error { return nil }))
		}
		assert.Equal(t, before, netnsFDs(t), "Run opened namespace handles of its own")
		return
	}
	exe, err := os.Executable()
	require.NoError(t, err)
	r, w, err := os.Pipe()
	require.NoError(t, err)
	p, err := os.StartProcess(exe, []string{exe, "-test.run=^TestHomeHandleOpenedOnce$"}, &os.ProcAttr{
		Env:   append(os.Environ(), "NSTHREAD_HOME_CHILD=1"),
		Files: []*os.File{nil, w, w}, // nil: fd 0 closed in the child
	})
	w.Close()
	require.NoError(t, err)
	out, _ := io.ReadAll(r)
	r.Close()
	st, err := p.Wait()
	require.NoError(t, err)
	assert.True(t, st.Success(), "child: %v\n%s", st, out)
}

// netnsFDs lists this process's descriptors that refer to network namespaces.
func netnsFDs(t *testing.T) []int {
	t.Helper()
	entries, err := os.ReadDir("/proc/self/fd")
	require.NoError(t, err)
	var fds []int
	for _, e := range entries {
		link, err := os.Readlink("/proc/self/fd/" + e.Name())
		if err != nil || !strings.HasPrefix(link, "net:[") {
			continue
		}
		fd, err := strconv.Atoi(e.Name())
		require.NoError(t, err)
		fds = append(fds, fd)
	}
	return fds
}

// blockPool fills p with Runs whose fn waits until the returned release is
// called; release waits for them to finish.
func blockPool(t *testing.T, p *Pool, target Target) (release func()) {
	t.Helper()
	gate := make(chan struct{})
	started := make(chan struct{}, p.Size())
	var wg sync.WaitGroup
	for range p.Size() {
		wg.Go(func() {
			assert.NoError(t, Run(context.Background(), p, target, func() error {
				started <- struct{}{}
				<-gate
				return nil
			}))
		})
	}
	for range p.Size() {
		<-started
	}
	var once sync.Once
	release = func() { once.Do(func() { close(gate); wg.Wait() }) }
	t.Cleanup(release)
	return release
}

// A caller queued behind a full pool gives up when its context is done,
// without running fn.
func TestRunQueuedCallerHonoursContext(t *testing.T) {
	needRoot(t)
	target := FD(newNamespace(t))
	p := NewPool(2)
	release := blockPool(t, p, target)
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	called := false
	err := Run(ctx, p, target, func() error { called = true; return nil })
	assert.ErrorIs(t, err, context.DeadlineExceeded)
	assert.False(t, called)
	release()
	require.NoError(t, Run(context.Background(), p, target, func() error { return nil }), "the pool works again")
}

// Every place of a pool held by a Run whose fn calls Run again: the inner
// Runs do not wait for a place, so nothing deadlocks.
func TestNestedRunDoesNotDeadlock(t *testing.T) {
	needRoot(t)
	outer, inner := FD(newNamespace(t)), newNamespace(t)
	p := NewPool(2)
	var (
		wg      sync.WaitGroup
		arrived sync.WaitGroup
	)
	arrived.Add(p.Size())
	got := make(chan string, p.Size())
	for range p.Size() {
		wg.Go(func() {
			assert.NoError(t, Run(context.Background(), p, outer, func() error {
				arrived.Done()
				arrived.Wait() // every place is now taken
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				defer cancel()
				return Run(ctx, p, FD(inner), func() error {
					got <- nsID(t, "/proc/thread-self/ns/net")
					return nil
				})
			}))
		})
	}
	wg.Wait()
	close(got)
	for id := range got {
		assert.Equal(t, fdID(t, inner), id)
	}
	assert.Empty(t, foreignThreads(t))
}

// Namespace creation runs in the Long pool: with every Long place taken by
// slow work, Runs in Short still go through at once.
func TestLongWorkDoesNotStarveShort(t *testing.T) {
	needRoot(t)
	target := FD(newNamespace(t))
	release := blockPool(t, Long, Caller())
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for range 2 * Short.Size() {
		require.NoError(t, Run(ctx, Short, target, func() error { return nil }))
	}
	release()
}

// An fn that calls runtime.Goexit (as t.FailNow does) ends Run with
// ErrGoexit instead of hanging it; its thread is discarded and its place
// in the pool freed.
func TestRunGoexit(t *testing.T) {
	needRoot(t)
	target := FD(newNamespace(t))
	p := NewPool(1)
	var tid int
	err := Run(context.Background(), p, target, func() error {
		tid = unix.Gettid()
		runtime.Goexit()
		return nil
	})
	assert.ErrorIs(t, err, ErrGoexit)
	assert.Empty(t, foreignThreads(t))
	threadGone(t, tid)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	require.NoError(t, Run(ctx, p, target, func() error { return nil }), "the place was freed")
}

// A panic in fn reaches the caller's goroutine, and fn's thread is discarded.
func TestRunPanicReachesCaller(t *testing.T) {
	needRoot(t)
	target := FD(newNamespace(t))
	var tid int
	func() {
		defer func() { assert.Equal(t, "deliberate", recover()) }()
		_ = Run(context.Background(), nil, target, func() error {
			tid = unix.Gettid()
			panic("deliberate")
		})
	}()
	assert.Empty(t, foreignThreads(t))
	threadGone(t, tid)
}

// threadGone waits (at most 5 s) for thread tid of this process to have
// exited: a discarded thread's /proc entry goes once the runtime has ended
// it, a moment after its goroutine.
func threadGone(t *testing.T, tid int) {
	t.Helper()
	path := filepath.Join("/proc/self/task", itoa(uint64(tid)))
	deadline := time.Now().Add(5 * time.Second)
	for {
		_, err := os.Stat(path)
		if errors.Is(err, os.ErrNotExist) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("thread %d was not discarded: %v", tid, err)
		}
		time.Sleep(time.Millisecond)
	}
}

// When the thread that ran an fn calling runtime.Goexit is the main
// thread, which the runtime parks for good instead of ending, it is moved
// out of the target namespace first: parked there, it would hold the
// namespace for the life of the process and be the namespace that
// /proc/PID/ns/net shows. (In this test binary the main thread never runs
// Run's goroutines; a process of its own does.)
func TestRunGoexitOnMainThread(t *testing.T) {
	needRoot(t)
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), mainThreadEnv+"=1")
	out, err := cmd.CombinedOutput()
	t.Logf("%s", out)
	require.NoError(t, err)
}
