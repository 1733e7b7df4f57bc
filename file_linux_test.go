//go:build linux

package vsockns_test

import (
	"net"
	"os"
	"syscall"
	"testing"

	"github.com/mdlayher/vsock"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/vsockns/vsockns"
)

// Descriptors travel: a listener and a connection made in a local
// namespace go out as files, through SCM_RIGHTS, and come back as a
// Listener and a Conn that work, with their addresses read back, while
// the originals and the passed files are closed.
func TestFileConnAndListener(t *testing.T) {
	ns := nsOfMode(t, vsockns.ModeLocal)
	l, err := vsockns.Listen(ns, 0)
	require.NoError(t, err)
	lf, err := l.File()
	require.NoError(t, err)
	require.NoError(t, l.Close())
	lf = passFile(t, lf)
	adopted, err := vsockns.FileListener(lf)
	require.NoError(t, err)
	require.NoError(t, lf.Close(), "the Listener has a descriptor of its own")
	echoServer(t, adopted)
	port := adopted.Addr().(*vsock.Addr).Port
	assert.NotZero(t, port)

	c, err := vsockns.Dial(ns, vsock.Local, port)
	require.NoError(t, err)
	cf, err := c.File()
	require.NoError(t, err)
	require.NoError(t, c.Close())
	cf = passFile(t, cf)
	ac, err := vsockns.FileConn(cf)
	require.NoError(t, err)
	require.NoError(t, cf.Close())
	defer ac.Close()
	roundTrip(t, ac, "through an adopted descriptor")
	assert.Equal(t, &vsock.Addr{ContextID: vsock.Local, Port: port}, ac.RemoteAddr())
	assert.NotZero(t, ac.LocalAddr().(*vsock.Addr).Port)
}

// What is not a connected (or listening) AF_VSOCK stream socket is refused,
// saying what it is, and nothing leaks.
func TestFileAdoptionRefusesOthers(t *testing.T) {
	namespacesExpected(t)
	tcp, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer tcp.Close()
	tcpFile, err := tcp.(*net.TCPListener).File()
	require.NoError(t, err)
	defer tcpFile.Close()

	unbound, err := unix.Socket(unix.AF_VSOCK, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	require.NoError(t, err)
	unboundFile := os.NewFile(uintptr(unbound), "unbound")
	defer unboundFile.Close()

	dgram, err := unix.Socket(unix.AF_UNIX, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	require.NoError(t, err)
	dgramFile := os.NewFile(uintptr(dgram), "unix-dgram")
	defer dgramFile.Close()

	l, err := vsockns.Listen(0, 0)
	require.NoError(t, err)
	defer l.Close()
	listenerFile, err := l.File()
	require.NoError(t, err)
	defer listenerFile.Close()

	devNull, err := os.Open(os.DevNull)
	require.NoError(t, err)
	defer devNull.Close()
	closed, err := os.Open(os.DevNull)
	require.NoError(t, err)
	closed.Close()

	before := fdCount(t)
	for _, tc := range []struct {
		name  string
		f     *os.File
		errno syscall.Errno
		why   string
	}{
		{"tcp", tcpFile, syscall.EAFNOSUPPORT, "not an AF_VSOCK socket"},
		{"unix_dgram", dgramFile, syscall.EAFNOSUPPORT, "not an AF_VSOCK socket"},
		{"unconnected_vsock", unboundFile, syscall.ENOTCONN, "not connected"},
		{"vsock_listener", listenerFile, syscall.EINVAL, "use FileListener"},
		{"not_a_socket", devNull, syscall.ENOTSOCK, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := vsockns.FileConn(tc.f)
			assert.ErrorIs(t, err, tc.errno)
			assert.ErrorContains(t, err, tc.why)
			var oe *net.OpError
			assert.ErrorAs(t, err, &oe)
		})
	}
	_, err = vsockns.FileListener(unboundFile)
	assert.ErrorIs(t, err, syscall.EINVAL)
	assert.ErrorContains(t, err, "not listening")
	_, err = vsockns.FileListener(tcpFile)
	assert.ErrorIs(t, err, syscall.EAFNOSUPPORT)
	_, err = vsockns.FileConn(closed)
	assert.Error(t, err, "a closed file")
	_, err = vsockns.FileConn(nil)
	assert.Error(t, err)
	assert.Equal(t, before, fdCount(t), "nothing leaked")

	// A closed Conn or Listener has no file.
	require.NoError(t, l.Close())
	_, err = l.File()
	assert.ErrorIs(t, err, net.ErrClosed)
}

// passFile sends f over a unix socketpair with SCM_RIGHTS and returns the
// received copy (f is closed).
func passFile(t *testing.T, f *os.File) *os.File {
	t.Helper()
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	require.NoError(t, err)
	defer unix.Close(fds[0])
	defer unix.Close(fds[1])
	require.NoError(t, unix.Sendmsg(fds[0], []byte{0}, unix.UnixRights(int(f.Fd())), nil, 0))
	require.NoError(t, f.Close())
	oob := make([]byte, unix.CmsgSpace(4))
	_, oobn, _, _, err := unix.Recvmsg(fds[1], make([]byte, 1), oob, 0)
	require.NoError(t, err)
	msgs, err := unix.ParseSocketControlMessage(oob[:oobn])
	require.NoError(t, err)
	require.Len(t, msgs, 1)
	got, err := unix.ParseUnixRights(&msgs[0])
	require.NoError(t, err)
	require.Len(t, got, 1)
	return os.NewFile(uintptr(got[0]), "passed")
}
