//go:build linux

package nsthread

import (
	"errors"
	"os"
	"path/filepath"
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
	require.NoError(t, Run(-1, func() error {
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
	require.NoError(t, Run(target, func() error {
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
	assert.Same(t, boom, Run(target, func() error { return boom }))
	assert.Empty(t, foreignThreads(t))
}

func TestRunBadTarget(t *testing.T) {
	needRoot(t)
	called := false
	err := Run(1<<20, func() error { called = true; return nil })
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
	require.NoError(t, Run(outer, func() error {
		return Run(-1, func() error {
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
	err := Run(target, func() error { tid = unix.Gettid(); return nil })
	setns = orig
	require.Error(t, err)
	assert.ErrorIs(t, err, ErrRestore)
	assert.ErrorIs(t, err, syscall.EPERM)

	// The stranded thread goes away, and no thread is left abroad.
	assert.Empty(t, foreignThreads(t))
	_, statErr := os.Stat(filepath.Join("/proc/self/task", itoa(uint64(tid))))
	assert.ErrorIs(t, statErr, os.ErrNotExist, "thread %d was discarded", tid)
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
			err := Run(target, func() error {
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
