//go:build linux

package vsockns_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/vsockns/vsockns"
	"github.com/vsockns/vsockns/internal/testenv"
)

// The security checks of the rootless path: two ordinary users (1000 and
// 1001) on one machine, and what one can make the other's processes do.

// roleEnv names the part a test's run as another user plays.
const roleEnv = "VSOCKNS_TEST_ROLE"

// needRoot skips unless the test runs as root in the VM: it runs its own
// binary as users 1000 and 1001 (go test's build directory on the host is
// root's alone).
func needRoot(t *testing.T) {
	t.Helper()
	switch {
	case !testenv.InVM():
		t.Skipf("runs its test binary as users %d and %d; %s", testenv.UnprivilegedID, testenv.OtherUserID, testenv.RunInVM)
	case os.Geteuid() != 0:
		t.Fatal("inside the test VM, the test runs as root")
	}
}

// sharedDir is a directory every user may create files in, as /tmp is
// (sticky), removed at cleanup.
func sharedDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "shared-")
	require.NoError(t, err)
	t.Cleanup(func() { os.RemoveAll(dir) })
	require.NoError(t, os.Chmod(dir, 0o1777))
	return dir
}

// startAs starts this test binary's test named test as user uid, with
// env, and returns it once it has printed "ready"; it is killed at
// cleanup.
func startAs(t *testing.T, uid uint32, test string, env ...string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^"+test+"$", "-test.count=1")
	cmd.Env = append(os.Environ(), env...)
	cmd.Stderr = os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uid, Gid: uid, Groups: []uint32{}}}
	out, err := cmd.StdoutPipe()
	require.NoError(t, err)
	require.NoError(t, cmd.Start())
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
	})
	sc := bufio.NewScanner(out)
	for sc.Scan() {
		if sc.Text() == "ready" {
			go io.Copy(io.Discard, out)
			return cmd
		}
		t.Logf("uid %d| %s", uid, sc.Text())
	}
	t.Fatalf("the run of %s as uid %d ended before it was ready: %v", test, uid, sc.Err())
	return nil
}

// TestSecurityDialNamespaceChecksServer: user 1001 puts a socket where
// user 1000's DialNamespace will connect (a shared directory), and serves
// its own namespace there to anyone, as a hostile server would. User
// 1000's DialNamespace refuses it (EACCES): otherwise its sockets would be
// made in 1001's namespace. Before the check, the dial succeeded.
func TestSecurityDialNamespaceChecksServer(t *testing.T) {
	switch os.Getenv(roleEnv) {
	case "impostor":
		impostor(t, os.Getenv("VSOCKNS_TEST_SERVE_PATH"))
		return
	case "victim":
		ns, err := vsockns.DialNamespace(context.Background(), os.Getenv("VSOCKNS_TEST_SERVE_PATH"))
		if err == nil {
			ns.Close()
		}
		require.ErrorIs(t, err, syscall.EACCES)
		assert.Contains(t, err.Error(), fmt.Sprintf("the server runs as uid %d", testenv.OtherUserID))
		return
	}
	needRoot(t)
	path := filepath.Join(sharedDir(t), "ns.sock")
	startAs(t, testenv.OtherUserID, t.Name(), roleEnv+"=impostor", "VSOCKNS_TEST_SERVE_PATH="+path)
	testenv.RunAsUser(t, testenv.UnprivilegedID, t.Name(), roleEnv+"=victim", "VSOCKNS_TEST_SERVE_PATH="+path)
}

// impostor serves its own network namespace at path to anyone: the hello
// of the protocol (the JSON the protocol documents, with the namespace's
// descriptor), then nothing.
func impostor(t *testing.T, path string) {
	l, err := net.ListenUnix("unixpacket", &net.UnixAddr{Name: path, Net: "unixpacket"})
	require.NoError(t, err)
	require.NoError(t, os.Chmod(path, 0o777))
	nsfd, err := unix.Open("/proc/self/ns/net", unix.O_RDONLY|unix.O_CLOEXEC, 0)
	require.NoError(t, err)
	fmt.Println("ready")
	for {
		c, err := l.AcceptUnix()
		if err != nil {
			return
		}
		c.WriteMsgUnix([]byte(`{"id":0,"version":1}`), unix.UnixRights(nsfd), nil)
		defer c.Close()
	}
}

// TestSecurityHelperKeepsNoParentDescriptor: a descriptor of the parent's
// without close-on-exec (one it inherited itself, say) is not the
// helper's: /proc/HELPER/fd has none of it. exec(2) passes such a
// descriptor on, and the helper kept it before it closed what it was not
// given. As users 1000 and 1001.
func TestSecurityHelperKeepsNoParentDescriptor(t *testing.T) {
	if testenv.Unprivileged() {
		if !namespacesExpectedUnprivileged(t) {
			return // no user-namespace helper on kernels without vsock namespaces
		}
		fd, err := unix.MemfdCreate("vsockns-parent-secret", 0) // no close-on-exec
		require.NoError(t, err)
		defer unix.Close(fd)
		createUserNS(t, vsockns.ModeLocal)
		helpers := helperPIDs(t)
		require.Len(t, helpers, 1)
		dir := fmt.Sprintf("/proc/%d/fd", helpers[0])
		ents, err := os.ReadDir(dir)
		require.NoError(t, err)
		for _, e := range ents {
			target, err := os.Readlink(filepath.Join(dir, e.Name()))
			require.NoError(t, err)
			assert.NotContains(t, target, "vsockns-parent-secret", "the helper's descriptor %s", e.Name())
		}
		return
	}
	needRoot(t)
	testenv.NeedVsock(t)
	if st, err := os.Stat(vsockns.VhostDevice); err == nil {
		mode := st.Mode().Perm()
		require.NoError(t, os.Chmod(vsockns.VhostDevice, 0o666))
		t.Cleanup(func() { _ = os.Chmod(vsockns.VhostDevice, mode) })
	}
	for _, uid := range []uint32{testenv.UnprivilegedID, testenv.OtherUserID} {
		testenv.RunAsUser(t, uid, t.Name())
	}
}

// TestSecurityHelperEnvironment: the variable that makes a binary the
// helper, set by someone other than CreateUserNamespace (users 1000 and
// 1001, and root in a namespace of its own) with a socket at descriptor 3,
// makes the binary refuse before it does anything: no hello, no
// namespace served, child_ns_mode of the caller's namespace unwritten.
// Before, it served the caller's own namespace (global), or wrote
// child_ns_mode of it and served a new child (local, where permitted).
func TestSecurityHelperEnvironment(t *testing.T) {
	needRoot(t)
	for _, tc := range []struct {
		name  string
		attr  *syscall.SysProcAttr
		modes []vsockns.Mode
	}{
		{"uid1000", &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: testenv.UnprivilegedID, Gid: testenv.UnprivilegedID, Groups: []uint32{}}}, []vsockns.Mode{vsockns.ModeGlobal, vsockns.ModeLocal}},
		{"uid1001", &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: testenv.OtherUserID, Gid: testenv.OtherUserID, Groups: []uint32{}}}, []vsockns.Mode{vsockns.ModeGlobal, vsockns.ModeLocal}},
		{"root", &syscall.SysProcAttr{Cloneflags: unix.CLONE_NEWNET}, []vsockns.Mode{vsockns.ModeGlobal, vsockns.ModeLocal}},
	} {
		for _, m := range tc.modes {
			for _, spec := range vsockns.HelperSpecs(m) {
				t.Run(tc.name+"/"+strings.ReplaceAll(spec, " ", "_"), func(t *testing.T) {
					helperRefuses(t, tc.attr, spec)
				})
			}
		}
	}
}

// helperRefuses starts this binary as the helper of stage spec, with
// attr, a socket at descriptor 3 and at 4 a pipe saying the maps are
// written (what the first stage waits for), and checks that it refuses
// before it does anything.
func helperRefuses(t *testing.T, attr *syscall.SysProcAttr, spec string) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	require.NoError(t, err)
	mine, theirs := os.NewFile(uintptr(fds[0]), "mine"), os.NewFile(uintptr(fds[1]), "theirs")
	defer mine.Close()
	mapped, goAhead, err := os.Pipe()
	require.NoError(t, err)
	defer goAhead.Close()
	_, err = goAhead.Write([]byte{1})
	require.NoError(t, err)
	var stderr strings.Builder
	cmd := exec.Command(os.Args[0])
	cmd.Env = []string{vsockns.HelperEnv + "=" + spec}
	cmd.ExtraFiles = []*os.File{theirs, mapped}
	cmd.Stderr = &stderr
	cmd.SysProcAttr = attr
	require.NoError(t, cmd.Start())
	theirs.Close()
	mapped.Close()
	// What the binary says on the socket, until it exits.
	buf := make([]byte, 1<<16)
	oob := make([]byte, unix.CmsgSpace(4))
	n, oobn, _, _, rerr := unix.Recvmsg(int(mine.Fd()), buf, oob, 0)
	mine.Close() // a binary that went on serving ends at its client's end
	werr := cmd.Wait()
	if oobn > 0 {
		msgs, _ := unix.ParseSocketControlMessage(oob[:oobn])
		for _, msg := range msgs {
			if rights, err := unix.ParseUnixRights(&msg); err == nil {
				for _, fd := range rights {
					unix.Close(fd)
				}
			}
		}
	}
	require.NoError(t, rerr)
	assert.Zero(t, n+oobn, "the binary answered as a helper: %q with %d bytes of descriptors", buf[:n], oobn)
	var ee *exec.ExitError
	require.True(t, errors.As(werr, &ee), "the binary exits with an error: %v", werr)
	assert.Equal(t, 2, ee.ExitCode())
	assert.Contains(t, stderr.String(), "not in a user namespace of its own")
}
