//go:build linux

package vsockns_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"syscall"
	"testing"
	"time"

	"github.com/mdlayher/vsock"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/vsockns/vsockns"
)

// BufferSize on a Dialer and a ListenConfig: set before connect and bind
// (above the kernel's 256 KiB maximum, which is raised for it), read back
// with getsockopt, and inherited by accepted connections; SetBufferSize
// changes a connection's.
func TestBufferSize(t *testing.T) {
	ns := nsOfMode(t, vsockns.ModeLocal)
	const big = 4 << 20
	lc := vsockns.ListenConfig{Namespace: ns, BufferSize: big}
	l, err := lc.ListenVsock(context.Background(), vsock.Local, 0)
	require.NoError(t, err)
	defer l.Close()
	accepted := make(chan *vsockns.Conn, 1)
	go func() {
		c, err := l.AcceptContext(context.Background())
		if err == nil {
			accepted <- c
		}
		close(accepted)
	}()
	d := vsockns.Dialer{Namespace: ns, BufferSize: 1 << 20}
	c, err := d.DialVsock(context.Background(), vsock.Local, l.Addr().(*vsock.Addr).Port)
	require.NoError(t, err)
	defer c.Close()
	size, _, maxSize, err := c.BufferSize()
	require.NoError(t, err)
	assert.Equal(t, uint64(1<<20), size)
	assert.GreaterOrEqual(t, maxSize, uint64(1<<20))

	ac := <-accepted
	require.NotNil(t, ac)
	defer ac.Close()
	size, _, _, err = ac.BufferSize()
	require.NoError(t, err)
	assert.Equal(t, uint64(big), size, "accepted connections inherit the listener's")

	require.NoError(t, c.SetBufferSize(64<<10))
	size, _, _, err = c.BufferSize()
	require.NoError(t, err)
	assert.Equal(t, uint64(64<<10), size)
	require.NoError(t, c.SetBufferSize(64), "below the kernel's 128-byte minimum: the minimum is lowered")
	size, minSize, _, err := c.BufferSize()
	require.NoError(t, err)
	assert.Equal(t, uint64(64), size)
	assert.LessOrEqual(t, minSize, uint64(64))

	require.NoError(t, c.Close())
	_, _, _, err = c.BufferSize()
	assert.ErrorIs(t, err, net.ErrClosed)
}

// Control is called with package net's arguments before connect and before
// bind, on the socket that is then used; its error ends the dial or listen.
func TestControl(t *testing.T) {
	ns := nsOfMode(t, vsockns.ModeGlobal)
	var seen []string
	var fds []uintptr
	control := func(network, address string, rc syscall.RawConn) error {
		seen = append(seen, network+" "+address)
		return rc.Control(func(fd uintptr) {
			fds = append(fds, fd)
			// Not yet bound or connected: getsockname says port any.
			if sa, err := unix.Getsockname(int(fd)); err == nil {
				if vm, ok := sa.(*unix.SockaddrVM); ok && vm.Port != unix.VMADDR_PORT_ANY {
					seen = append(seen, fmt.Sprintf("already bound to %d", vm.Port))
				}
			}
		})
	}
	lc := vsockns.ListenConfig{Namespace: ns, Control: control}
	l, err := lc.ListenVsock(context.Background(), vsock.Local, 7501)
	require.NoError(t, err)
	echoServer(t, l)
	d := vsockns.Dialer{Namespace: ns, Control: control}
	c, err := d.DialVsock(context.Background(), vsock.Local, 7501)
	require.NoError(t, err)
	defer c.Close()
	assert.Equal(t, []string{"vsock local(1):7501", "vsock local(1):7501"}, seen)
	require.Len(t, fds, 2)
	rc, err := c.SyscallConn()
	require.NoError(t, err)
	require.NoError(t, rc.Control(func(fd uintptr) { assert.Equal(t, fds[1], fd, "Control saw the dialing socket") }))

	roundTrip(t, c, "accepted") // the echo server's descriptor for c exists now

	boom := errors.New("refused by Control")
	d.Control = func(string, string, syscall.RawConn) error { return boom }
	before := fdCount(t)
	_, err = d.DialVsock(context.Background(), vsock.Local, 7501)
	assert.ErrorIs(t, err, boom)
	var oe *net.OpError
	assert.ErrorAs(t, err, &oe)
	lc.Control = d.Control
	_, err = lc.ListenVsock(context.Background(), vsock.Local, 7502)
	assert.ErrorIs(t, err, boom)
	assert.Equal(t, before, fdCount(t), "the socket is closed")
}

// LocalAddr binds the dialing socket first: the peer sees that port.
func TestDialerLocalAddr(t *testing.T) {
	namespacesExpected(t)
	l, err := vsockns.Listen(netns.None(), 0)
	require.NoError(t, err)
	defer l.Close()
	got := make(chan net.Addr, 1)
	go func() {
		c, err := l.Accept()
		if err == nil {
			got <- c.RemoteAddr()
			c.Close()
		}
		close(got)
	}()
	d := vsockns.Dialer{LocalAddr: &vsock.Addr{ContextID: unix.VMADDR_CID_ANY, Port: 7601}, Timeout: 10 * time.Second}
	c, err := d.DialVsock(context.Background(), vsock.Local, l.Addr().(*vsock.Addr).Port)
	require.NoError(t, err)
	defer c.Close()
	assert.Equal(t, uint32(7601), c.LocalAddr().(*vsock.Addr).Port)
	peer := <-got
	require.NotNil(t, peer)
	assert.Equal(t, uint32(7601), peer.(*vsock.Addr).Port)

	// A taken local port fails the dial with EADDRINUSE.
	_, err = d.DialVsock(context.Background(), vsock.Local, l.Addr().(*vsock.Addr).Port)
	assert.ErrorIs(t, err, syscall.EADDRINUSE)
}
