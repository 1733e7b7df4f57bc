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
		require.NoError(t, sendMsg(server, reply{Version: protocolVersion, Err: encodeError(refusal)}))
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
			fds, _, err := recvMsg(server, &req, 1)
			closeFds(fds)
			if err == nil {
				err = sendMsg(server, reply{ID: req.ID, Value: "1"})
			}
			if err != nil {
				t.Errorf("server: %v", err)
			}
			server.Close()
		}()
		rep, fds, err := r.call(context.Background(), request{Op: opRead, Name: "ns_mode"})
		require.NoError(t, err)
		assert.Empty(t, fds)
		assert.Equal(t, "1", rep.Value)
		testHookBeforeWait = nil
		r.close()
		_, _, err = r.call(context.Background(), request{Op: opRead, Name: "ns_mode"})
		assert.True(t, errors.Is(err, net.ErrClosed), "%v", err)
	}
}

// lowestFreeFd is the descriptor number the kernel would give next.
func lowestFreeFd(t testing.TB) int {
	t.Helper()
	fd, err := unix.Dup(0)
	require.NoError(t, err)
	unix.Close(fd)
	return fd
}

// TestRemoteLostDescriptorsFailOneCall: a reply whose descriptors the
// kernel could not install in this process (out of descriptors: recvmsg
// sets MSG_CTRUNC) fails its one call with EMFILE, a batch keeps those
// that did arrive, and the connection stays up: the next call is answered.
// Before, such a reply was a protocol error that ended the connection, and
// every later call failed with net.ErrClosed (the soak's lost helpers).
func TestRemoteLostDescriptorsFailOneCall(t *testing.T) {
	ctx := context.Background()
	client, server := packetPair(t)
	defer server.Close()
	nsfd, err := unix.Open("/proc/self/ns/net", unix.O_RDONLY|unix.O_CLOEXEC, 0)
	require.NoError(t, err)
	require.NoError(t, sendMsg(server, reply{Version: protocolVersion}, nsfd))
	unix.Close(nsfd)
	r, fd, err := newRemote(ctx, client)
	require.NoError(t, err)
	unix.Close(fd)
	defer r.close()

	var orig unix.Rlimit
	require.NoError(t, unix.Getrlimit(unix.RLIMIT_NOFILE, &orig))
	t.Cleanup(func() { unix.Setrlimit(unix.RLIMIT_NOFILE, &orig) })
	// answer reads one request and answers it with n fresh descriptors,
	// sent while only free descriptors are free in this process; it
	// returns them, to be closed once the reply has been read (closed
	// sooner, they would free room for it).
	answer := func(n, free int) []int {
		t.Helper()
		var req request
		fds, _, err := recvMsg(server, &req, 1)
		require.NoError(t, err)
		closeFds(fds)
		var send []int
		for range n {
			fd, err := unix.MemfdCreate("vsockns-lost", unix.MFD_CLOEXEC)
			require.NoError(t, err)
			send = append(send, fd)
		}
		if free >= 0 {
			require.NoError(t, unix.Setrlimit(unix.RLIMIT_NOFILE, &unix.Rlimit{Cur: uint64(lowestFreeFd(t) + free), Max: orig.Max}))
		}
		require.NoError(t, sendMsg(server, reply{ID: req.ID, Value: "local"}, send...))
		return send
	}

	type got struct {
		fds []int
		err error
	}
	one := make(chan got, 1)
	go func() {
		fd, err := r.socket(ctx, unix.SOCK_STREAM)
		one <- got{[]int{fd}, err}
	}()
	sent := answer(1, 0)
	res := <-one
	require.NoError(t, unix.Setrlimit(unix.RLIMIT_NOFILE, &orig))
	closeFds(sent)
	require.ErrorIs(t, res.err, unix.EMFILE)
	assert.Equal(t, []int{-1}, res.fds)

	go func() {
		fds, err := r.sockets(ctx, unix.SOCK_STREAM, 5)
		one <- got{fds, err}
	}()
	sent = answer(5, 2)
	res = <-one
	require.NoError(t, unix.Setrlimit(unix.RLIMIT_NOFILE, &orig))
	closeFds(sent)
	require.NoError(t, res.err)
	assert.Len(t, res.fds, 2, "a batch keeps the descriptors that arrived")
	closeFds(res.fds)

	values := make(chan string, 1)
	go func() {
		v, err := r.readSysctl(ctx, "ns_mode")
		assert.NoError(t, err, "the connection is up")
		values <- v
	}()
	answer(0, -1)
	assert.Equal(t, "local", <-values)
}
