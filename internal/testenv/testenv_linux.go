//go:build linux

// Package testenv holds the helpers the packages' kernel-dependent tests
// share: what the environment must provide (and whether the VM harness
// runs them), namespaces to test in, and checks that no thread was left in
// a foreign namespace.
package testenv

import (
	"context"
	"errors"
	"flag"
	"io"
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

	"github.com/stretchr/testify/require"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/vsockns/vsockns"
	"github.com/vsockns/vsockns/internal/nsthread"
)

// InVM reports whether the VM harness (internal/vm) runs this test binary.
func InVM() bool { return os.Getenv("VSOCKNS_IN_VM") == "1" }

// RunInVM is how to run a test that skipped for want of its environment.
const RunInVM = "run `make test` (it boots Linux >= 7.0 and 6.1 under QEMU and runs this test there)"

// NeedVsock skips (outside the VM) or fails (inside) unless the test runs
// as root with vsock_loopback usable.
func NeedVsock(t testing.TB) {
	t.Helper()
	missing := func(why string) {
		t.Helper()
		if InVM() {
			t.Fatalf("inside the test VM, %s", why)
		}
		t.Skipf("%s; %s", why, RunInVM)
	}
	if os.Geteuid() != 0 {
		missing("needs root (network namespaces)")
	}
	if _, err := os.Stat("/sys/module/vsock_loopback"); err != nil {
		missing("needs the vsock_loopback module")
	}
}

// NamespacesExpected returns whether the kernel has vsock namespaces. In the
// VM the harness says what the kernel must have, and Supported must agree,
// so a broken probe cannot turn every namespace test into a legacy one.
func NamespacesExpected(t testing.TB) bool {
	t.Helper()
	NeedVsock(t)
	err := vsockns.Supported()
	if InVM() {
		want, perr := strconv.ParseBool(os.Getenv("VSOCKNS_EXPECT_NAMESPACES"))
		require.NoError(t, perr, "VSOCKNS_EXPECT_NAMESPACES from the harness")
		if want {
			require.NoError(t, err, "kernel %s must have vsock namespaces", os.Getenv("VSOCKNS_KERNEL_RELEASE"))
		} else {
			require.ErrorIs(t, err, vsockns.ErrNotSupported, "kernel %s must not have vsock namespaces", os.Getenv("VSOCKNS_KERNEL_RELEASE"))
		}
		return want
	}
	return err == nil
}

// NewNS returns a fresh namespace of mode m, closed at cleanup.
func NewNS(t testing.TB, m vsockns.Mode) netns.NsHandle {
	t.Helper()
	ns, err := vsockns.NewNamespace(m)
	require.NoError(t, err)
	t.Cleanup(func() { ns.Close() })
	return ns
}

// PlainNS returns a fresh namespace made the ordinary way (unshare from a
// thread of the test's namespace), closed at cleanup. On 6.1 it is what
// every container gets; on 7.x it is global (the init namespace's
// child_ns_mode is never written by these tests).
func PlainNS(t testing.TB) netns.NsHandle {
	t.Helper()
	ns := NewPlainNS(t)
	t.Cleanup(func() { ns.Close() })
	return ns
}

// NewPlainNS is PlainNS without the cleanup: the caller closes it.
func NewPlainNS(t testing.TB) netns.NsHandle {
	t.Helper()
	fd := -1
	err := nsthread.Run(context.Background(), nil, nsthread.Caller(), func() error {
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			return err
		}
		var err error
		fd, err = nsthread.Current()
		return err
	})
	require.NoError(t, err)
	return netns.NsHandle(fd)
}

// ClosedHandle is a file descriptor number that is surely not open (it is
// above any RLIMIT_NOFILE), unlike a closed one, which the next open(2)
// reuses.
const ClosedHandle = netns.NsHandle(1 << 30)

// home is the network namespace the test process started in, read while
// package initialisation runs on the main thread, before any test can move
// a thread.
var home = func() string {
	s, err := os.Readlink("/proc/thread-self/ns/net")
	if err != nil {
		return "unknown: " + err.Error()
	}
	return s
}()

// ThreadsOutsideNamespace lists the threads of this process whose network
// namespace is not the one the process started in.
func ThreadsOutsideNamespace(t testing.TB) []string {
	t.Helper()
	tasks, err := filepath.Glob("/proc/self/task/*/ns/net")
	require.NoError(t, err)
	var bad []string
	for _, p := range tasks {
		got, err := os.Readlink(p)
		if errors.Is(err, os.ErrNotExist) {
			continue // the thread exited meanwhile
		}
		require.NoError(t, err)
		if got != home {
			bad = append(bad, p+" -> "+got+" (home "+home+")")
		}
	}
	return bad
}

// RequireAllThreadsHome fails if any thread of the process is in another
// network namespace. Threads the runtime is discarding may take a moment to
// exit, so it waits for that (bounded), polling the condition itself.
func RequireAllThreadsHome(t testing.TB) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		bad := ThreadsOutsideNamespace(t)
		if len(bad) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("threads left in a foreign network namespace: %v", bad)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// EchoServer accepts connections on l and echoes what it reads, until l is
// closed. At cleanup it closes l and every connection it accepted, and
// waits for its goroutines, so nothing of it outlives the test.
func EchoServer(t testing.TB, l net.Listener) {
	t.Helper()
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		conns = map[net.Conn]bool{}
	)
	wg.Go(func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns[c] = true
			mu.Unlock()
			wg.Go(func() {
				_, _ = io.Copy(c, c)
				mu.Lock()
				delete(conns, c)
				mu.Unlock()
				c.Close()
			})
		}
	})
	t.Cleanup(func() {
		l.Close()
		mu.Lock()
		for c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
}

// RoundTrip writes msg on c and reads it back from an echo server.
func RoundTrip(t testing.TB, c io.ReadWriter, msg string) {
	t.Helper()
	_, err := c.Write([]byte(msg))
	require.NoError(t, err)
	buf := make([]byte, len(msg))
	_, err = io.ReadFull(c, buf)
	require.NoError(t, err)
	require.Equal(t, msg, string(buf))
}

// SkipExamples adds the runnable examples to -test.skip (keeping what the
// command line already skips), for a TestMain that found their
// environment missing. Call it after flag.Parse.
func SkipExamples() {
	skip := "^Example"
	if cur := flag.Lookup("test.skip").Value.String(); cur != "" {
		skip = cur + "|" + skip
	}
	_ = flag.Set("test.skip", skip)
}

// NSOfMode returns a fresh namespace of mode m (closed at cleanup) where the
// kernel has vsock namespaces, and a plain new namespace on a legacy
// kernel, for tests that assert both behaviours.
func NSOfMode(t testing.TB, m vsockns.Mode) netns.NsHandle {
	t.Helper()
	if NamespacesExpected(t) {
		return NewNS(t, m)
	}
	return PlainNS(t)
}

const holderEnv = "VSOCKNS_TESTENV_HOLDER"

// StartHolder starts a process in a network namespace of its own, as a
// container's process would be, and returns its PID; it ends at cleanup.
// The process is this test binary running test again: test must call
// HoldIfAsked first thing.
func StartHolder(t testing.TB, test string) int {
	t.Helper()
	return startHolder(t, test, syscall.CLONE_NEWNET, nil)
}

// StartFileHolder is StartHolder for a process that stays in the test's
// namespace and holds files, as its descriptors 3, 4, ...
func StartFileHolder(t testing.TB, test string, files ...*os.File) int {
	t.Helper()
	return startHolder(t, test, 0, files)
}

func startHolder(t testing.TB, test string, cloneflags uintptr, files []*os.File) int {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^"+test+"$")
	cmd.Env = append(os.Environ(), holderEnv+"=1")
	cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: cloneflags}
	cmd.ExtraFiles = files
	stdin, err := cmd.StdinPipe()
	require.NoError(t, err)
	require.NoError(t, cmd.Start())
	t.Cleanup(func() {
		stdin.Close()
		_ = cmd.Wait()
	})
	return cmd.Process.Pid
}

// StopHolder ends a holder process early: it returns once the process has
// exited and been reaped.
func StopHolder(t testing.TB, pid int) {
	t.Helper()
	require.NoError(t, syscall.Kill(pid, syscall.SIGKILL))
	var ws syscall.WaitStatus
	_, err := syscall.Wait4(pid, &ws, 0, nil)
	require.NoError(t, err)
}

// HoldIfAsked makes the process StartHolder started wait until its test
// ends, then exit; in any other process it does nothing.
func HoldIfAsked() {
	if os.Getenv(holderEnv) == "1" {
		_, _ = os.Stdin.Read(make([]byte, 1))
		os.Exit(0)
	}
}

const unprivilegedEnv = "VSOCKNS_TESTENV_UNPRIVILEGED"

// UnprivilegedID is the user and group the unprivileged half of a test runs
// as: an ordinary user's, with no capabilities.
const UnprivilegedID = 1000

// Unprivileged reports whether this process is the unprivileged run of a
// test that AsUnprivileged started.
func Unprivileged() bool { return os.Getenv(unprivilegedEnv) == "1" }

// AsUnprivileged runs the calling (top-level) test again as the ordinary
// user (RunUnprivileged), with /dev/vhost-vsock usable by everyone
// meanwhile, as systemd's udev rules make it (mode 0666). In that run it
// returns true: the test goes on as the ordinary user. In the calling
// process (root, with vsock) it returns false once the run has passed.
func AsUnprivileged(t *testing.T, env ...string) bool {
	t.Helper()
	if Unprivileged() {
		require.NotZero(t, os.Geteuid(), "the unprivileged run must not be root")
		return true
	}
	NeedVsock(t)
	if st, err := os.Stat(vsockns.VhostDevice); err == nil {
		mode := st.Mode().Perm()
		require.NoError(t, os.Chmod(vsockns.VhostDevice, 0o666))
		t.Cleanup(func() { _ = os.Chmod(vsockns.VhostDevice, mode) })
	}
	RunUnprivileged(t, t.Name(), env...)
	return false
}

// RunUnprivileged runs the top-level test named test in a process of user
// and group UnprivilegedID without capabilities or supplementary groups
// (where Unprivileged reports true), logs its output and fails t if it
// failed. Extra environment variables go to the run.
func RunUnprivileged(t testing.TB, test string, env ...string) {
	t.Helper()
	RunAsUser(t, UnprivilegedID, test, env...)
}

// OtherUserID is a second ordinary user: another tenant of the machine,
// for the checks that one user cannot reach another's namespaces.
const OtherUserID = 1001

// RunAsUser is RunUnprivileged as user and group uid.
func RunAsUser(t testing.TB, uid uint32, test string, env ...string) {
	t.Helper()
	// Not t.TempDir: its parent directory is private to root.
	dir, err := os.MkdirTemp("", "unprivileged-")
	require.NoError(t, err)
	t.Cleanup(func() { os.RemoveAll(dir) })
	require.NoError(t, os.Chmod(dir, 0o777))
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^"+test+"$", "-test.v", "-test.count=1")
	cmd.Dir = dir
	cmd.Env = append(append(os.Environ(), unprivilegedEnv+"=1", "TMPDIR="+dir, "HOME="+dir), env...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{
		Uid: uid, Gid: uid, Groups: []uint32{},
	}}
	out, err := cmd.CombinedOutput()
	for _, line := range strings.Split(strings.TrimRight(string(out), "\n"), "\n") {
		// Prefixed: the run's own "--- PASS" lines are not this test's.
		t.Log("unprivileged| " + line)
	}
	require.NoError(t, err, "the unprivileged run of %s", test)
}

// A MessageReader reads SOCK_SEQPACKET messages: a *vsockns.Conn or a
// *vsocktest.Conn.
type MessageReader interface {
	ReadMsg(b []byte) (n, flags int, err error)
	SetReadDeadline(t time.Time) error
}

// ReadMsg reads one message of at most size bytes from c, failing the test
// after 10 s, and returns it with ReadMsg's flags.
func ReadMsg(t testing.TB, c MessageReader, size int) ([]byte, int) {
	t.Helper()
	require.NoError(t, c.SetReadDeadline(time.Now().Add(10*time.Second)))
	b := make([]byte, size)
	n, flags, err := c.ReadMsg(b)
	require.NoError(t, err)
	return b[:n], flags
}
