//go:build linux

package vsockns

import (
	"context"
	"errors"
	"net"
	"os"
	"syscall"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// packetPair is a connected pair of unixpacket sockets.
func packetPair(t testing.TB) (client, server *net.UnixConn) {
	t.Helper()
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	require.NoError(t, err)
	conn := func(fd int) *net.UnixConn {
		f := os.NewFile(uintptr(fd), "unixpacket")
		defer f.Close()
		c, err := net.FileConn(f)
		require.NoError(t, err)
		return c.(*net.UnixConn)
	}
	return conn(fds[0]), conn(fds[1])
}

// A server's last word before it exits is not lost to its exit: a refusal
// sent in the hello, or a reply sent just before the connection closes,
// reaches the caller. Two ways it was lost: the caller's select saw the
// reply and the end ready at once and picked either; and the kernel
// reported the end before the queued reply (see recvMsg). Either way the
// caller heard only that the server had exited (the demo's "bob opens
// alice's namespace" failed so in CI; this test failed on every kernel in
// the VM before both fixes).
func TestRemoteReplyBeforeExitWins(t *testing.T) {
	// Each caller waits only once the connection has ended, when its reply
	// is in already.
	testHookBeforeWait = func(r *remote) { <-r.done }
	t.Cleanup(func() { testHookBeforeWait = nil })
	refusal := &explained{unix.EACCES, "not yours", nil}
	for range 500 {
		client, server := packetPair(t)
		require.NoError(t, sendMsg(server, reply{Version: protocolVersion, Err: encodeError(refusal)}, -1))
		server.Close()
		_, _, err := newRemote(context.Background(), client)
		require.ErrorIs(t, err, syscall.EACCES)
	}
	for range 500 {
		client, server := packetPair(t)
		nsfd, err := unix.Open("/proc/self/ns/net", unix.O_RDONLY|unix.O_CLOEXEC, 0)
		require.NoError(t, err)
		require.NoError(t, sendMsg(server, reply{Version: protocolVersion}, nsfd))
		unix.Close(nsfd)
		testHookBeforeWait = nil
		r, fd, err := newRemote(context.Background(), client)
		require.NoError(t, err)
		unix.Close(fd)
		testHookBeforeWait = func(r *remote) { <-r.done }
		go func() {
			var req request
			fd, err := recvMsg(server, &req)
			if fd >= 0 {
				unix.Close(fd)
			}
			if err == nil {
				err = sendMsg(server, reply{ID: req.ID, Value: "1"}, -1)
			}
			if err != nil {
				t.Errorf("server: %v", err)
			}
			server.Close()
		}()
		rep, fd, err := r.call(context.Background(), request{Op: opRead, Name: "ns_mode"})
		require.NoError(t, err)
		assert.Equal(t, -1, fd)
		assert.Equal(t, "1", rep.Value)
		testHookBeforeWait = nil
		r.close()
		_, _, err = r.call(context.Background(), request{Op: opRead, Name: "ns_mode"})
		assert.True(t, errors.Is(err, net.ErrClosed), "%v", err)
	}
}
