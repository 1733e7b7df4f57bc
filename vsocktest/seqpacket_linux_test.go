//go:build linux

package vsocktest_test

import (
	"bytes"
	"context"
	"net"
	"syscall"
	"testing"
	"time"

	"github.com/mdlayher/vsock"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/vishvananda/netns"

	"github.com/vsockns/vsockns"
	"github.com/vsockns/vsockns/internal/testenv"
	"github.com/vsockns/vsockns/vsocktest"
)

// newSeqpacketGuest starts a fake guest in ns that negotiated
// VIRTIO_VSOCK_F_SEQPACKET, closed at cleanup.
func newSeqpacketGuest(t testing.TB, ns netns.NsHandle) *vsocktest.Guest {
	t.Helper()
	return startGuest(t, vsocktest.Config{Namespace: ns, Seqpacket: true})
}

// message reads one message from c (a vsockns or vsocktest connection)
// into a buffer of size bytes, within 10 s.
var message = testenv.ReadMsg

// SOCK_SEQPACKET between the host and a guest through vhost-vsock, in the
// init namespace and in a global and a local one: the host dials the
// guest and the guest dials the host, and messages keep their boundaries
// both ways (a 64 KiB one crosses the device as several packets, the last
// with VIRTIO_VSOCK_SEQ_EOM), truncation and end-of-record included.
// Unlike vsock_loopback, vhost-vsock carries SOCK_SEQPACKET in a local
// namespace too.
func TestSeqpacketHostGuest(t *testing.T) {
	withNS := testenv.NamespacesExpected(t)
	spaces := []struct {
		name string
		ns   func() netns.NsHandle
	}{{"init", netns.None}}
	if withNS {
		spaces = append(spaces,
			struct {
				name string
				ns   func() netns.NsHandle
			}{"global", func() netns.NsHandle { return testenv.NewNS(t, vsockns.ModeGlobal) }},
			struct {
				name string
				ns   func() netns.NsHandle
			}{"local", func() netns.NsHandle { return testenv.NewNS(t, vsockns.ModeLocal) }})
	}
	big := bytes.Repeat([]byte("seqpacket!"), 64<<10/10)
	for _, sp := range spaces {
		t.Run(sp.name, func(t *testing.T) {
			ns := sp.ns()
			g := newSeqpacketGuest(t, ns)

			// Host to guest.
			gl, err := g.ListenSeqpacket(0)
			require.NoError(t, err)
			defer gl.Close()
			d := vsockns.Dialer{Namespace: ns, Timeout: 10 * time.Second}
			hc, err := d.DialSeqpacket(context.Background(), g.CID(), gl.Addr().(*vsock.Addr).Port)
			require.NoError(t, err)
			defer hc.Close()
			nc, err := gl.Accept()
			require.NoError(t, err)
			gc := nc.(*vsocktest.Conn)
			defer gc.Close()
			for _, m := range [][]byte{{'1'}, big, []byte("0123456789 and more")} {
				_, err := hc.Write(m)
				require.NoError(t, err)
			}
			_, err = hc.WriteMsg([]byte("no record end"), 0)
			require.NoError(t, err)
			got, flags := message(t, gc, 1<<20)
			assert.Equal(t, "1", string(got))
			assert.Equal(t, syscall.MSG_EOR, flags&syscall.MSG_EOR)
			got, _ = message(t, gc, 1<<20)
			assert.True(t, bytes.Equal(big, got), "the 64 KiB message whole: %d bytes", len(got))
			got, flags = message(t, gc, 10)
			assert.Equal(t, "0123456789", string(got))
			assert.Equal(t, syscall.MSG_TRUNC, flags&syscall.MSG_TRUNC)
			got, flags = message(t, gc, 100)
			assert.Equal(t, "no record end", string(got))
			assert.Zero(t, flags&syscall.MSG_EOR, "flags %#x", flags)

			// Guest to host, on the same connection and on one the guest
			// dials.
			for _, m := range [][]byte{{'2'}, big} {
				_, err := gc.Write(m)
				require.NoError(t, err)
			}
			_, err = gc.WriteMsg([]byte("no record end"), 0)
			require.NoError(t, err)
			got, flags = message(t, hc, 1<<20)
			assert.Equal(t, "2", string(got))
			assert.Equal(t, syscall.MSG_EOR, flags&syscall.MSG_EOR)
			got, _ = message(t, hc, 1<<20)
			assert.True(t, bytes.Equal(big, got), "the 64 KiB message whole: %d bytes", len(got))
			got, flags = message(t, hc, 100)
			assert.Equal(t, "no record end", string(got))
			assert.Zero(t, flags&syscall.MSG_EOR, "flags %#x", flags)

			hl, err := vsockns.ListenSeqpacket(ns, 0)
			require.NoError(t, err)
			defer hl.Close()
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			dc, err := g.DialSeqpacket(ctx, hl.Addr().(*vsock.Addr).Port)
			require.NoError(t, err)
			defer dc.Close()
			ac, err := hl.AcceptContext(ctx)
			require.NoError(t, err)
			defer ac.Close()
			_, err = dc.Write([]byte("one"))
			require.NoError(t, err)
			_, err = dc.Write([]byte("two"))
			require.NoError(t, err)
			got, _ = message(t, ac, 100)
			assert.Equal(t, "one", string(got))
			got, _ = message(t, ac, 100)
			assert.Equal(t, "two", string(got))
		})
	}
}

// A guest whose device did not negotiate VIRTIO_VSOCK_F_SEQPACKET is not
// reached by SOCK_SEQPACKET: the host's dial fails with ESOCKTNOSUPPORT,
// explained; the guest's own SOCK_SEQPACKET calls fail alike. A stream
// listener does not accept SOCK_SEQPACKET connections (reset), nor the
// other way round.
func TestSeqpacketNotNegotiated(t *testing.T) {
	testenv.NamespacesExpected(t)
	g := newGuest(t, netns.None(), false)
	guestEcho(t, g, 1024)
	_, err := vsockns.DialSeqpacket(netns.None(), g.CID(), 1024)
	require.Error(t, err)
	t.Logf("host dial: %v", err)
	assert.ErrorIs(t, err, syscall.ESOCKTNOSUPPORT)
	var oe *net.OpError
	require.ErrorAs(t, err, &oe)
	assert.Equal(t, vsockns.NetworkSeqpacket, oe.Net)
	_, err = g.ListenSeqpacket(0)
	assert.ErrorIs(t, err, syscall.ESOCKTNOSUPPORT)
	_, err = g.DialSeqpacket(context.Background(), 1024)
	assert.ErrorIs(t, err, syscall.ESOCKTNOSUPPORT)

	sg := newSeqpacketGuest(t, netns.None())
	sl, err := sg.Listen(0)
	require.NoError(t, err)
	defer sl.Close()
	_, err = vsockns.DialSeqpacket(netns.None(), sg.CID(), sl.Addr().(*vsock.Addr).Port)
	assert.ErrorIs(t, err, syscall.ECONNRESET, "a stream listener refuses SOCK_SEQPACKET")
	pl, err := sg.ListenSeqpacket(0)
	require.NoError(t, err)
	defer pl.Close()
	_, err = vsockns.Dial(netns.None(), sg.CID(), pl.Addr().(*vsock.Addr).Port)
	assert.ErrorIs(t, err, syscall.ECONNRESET, "a SOCK_SEQPACKET listener refuses streams")
}
