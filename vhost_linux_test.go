//go:build linux

package vsockns_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/vishvananda/netns"

	"github.com/vsockns/vsockns"
)

func openVhost(t testing.TB, ns netns.NsHandle) *vsockns.Vhost {
	t.Helper()
	v, err := vsockns.OpenVhost(ns)
	require.NoError(t, err)
	t.Cleanup(func() { v.Close() })
	return v
}

// The kernel selftests' CID matrix: local namespaces have CID pools of
// their own, global namespaces share one. On a legacy kernel there is one
// pool for everything.
func TestGuestCIDPools(t *testing.T) {
	withNS := namespacesExpected(t)
	const cid = 42
	// claim's device stays open until the end of the (sub)test t.
	claim := func(t *testing.T, ns netns.NsHandle) error {
		return openVhost(t, ns).SetGuestCID(cid)
	}
	if !withNS {
		a, b := plainNS(t), plainNS(t)
		require.NoError(t, claim(t, a))
		err := claim(t, b)
		assert.ErrorIs(t, err, vsockns.ErrCIDInUse, "one host-wide pool before Linux 7.0")
		assert.ErrorIs(t, err, syscall.EADDRINUSE)
		return
	}
	t.Run("two_local", func(t *testing.T) {
		require.NoError(t, claim(t, newNS(t, vsockns.ModeLocal)))
		require.NoError(t, claim(t, newNS(t, vsockns.ModeLocal)))
	})
	t.Run("local_and_global", func(t *testing.T) {
		require.NoError(t, claim(t, newNS(t, vsockns.ModeLocal)))
		require.NoError(t, claim(t, newNS(t, vsockns.ModeGlobal)))
	})
	t.Run("two_global", func(t *testing.T) {
		require.NoError(t, claim(t, newNS(t, vsockns.ModeGlobal)))
		err := claim(t, newNS(t, vsockns.ModeGlobal))
		assert.ErrorIs(t, err, vsockns.ErrCIDInUse)
		assert.ErrorIs(t, err, syscall.EADDRINUSE)
	})
	t.Run("same_local_twice", func(t *testing.T) {
		ns := newNS(t, vsockns.ModeLocal)
		require.NoError(t, claim(t, ns))
		err := claim(t, ns)
		assert.ErrorIs(t, err, vsockns.ErrCIDInUse)
	})
	t.Run("freed_on_close", func(t *testing.T) {
		ns := newNS(t, vsockns.ModeLocal)
		v, err := vsockns.OpenVhost(ns)
		require.NoError(t, err)
		require.NoError(t, v.SetGuestCID(cid))
		assert.Equal(t, uint32(cid), v.GuestCID())
		require.NoError(t, v.Close())
		require.NoError(t, claim(t, ns))
	})
}

func TestSetGuestCIDReserved(t *testing.T) {
	namespacesExpected(t)
	v := openVhost(t, netns.None())
	for _, cid := range []uint32{0, 1, 2, 0xffffffff} {
		err := v.SetGuestCID(cid)
		var ce *vsockns.CIDError
		require.ErrorAs(t, err, &ce, "CID %d", cid)
		assert.Equal(t, cid, ce.CID)
		assert.Zero(t, v.GuestCID())
	}
}

// A claimed CID is known only in its device's namespace. With no guest
// driving the device the connect cannot complete, but where it fails tells
// the namespaces apart: in the device's own local namespace the CID exists
// and the device is not running (EHOSTUNREACH); from any other namespace
// no transport knows the CID (ENODEV). Data to and from a running guest,
// and a guest dialing host listeners in its own and other namespaces, are
// tested with a fake guest in package vsocktest.
func TestGuestCIDReachIsPerNamespace(t *testing.T) {
	withNS := namespacesExpected(t)
	const cid = 77
	var own, other netns.NsHandle
	if withNS {
		own, other = newNS(t, vsockns.ModeLocal), newNS(t, vsockns.ModeLocal)
	} else {
		own, other = plainNS(t), plainNS(t)
	}
	require.NoError(t, openVhost(t, own).SetGuestCID(cid))

	if !withNS {
		// Linux 6.1 queues the request for the stopped device and the
		// connect waits (ETIMEDOUT after 2 s); from every namespace alike,
		// since there is one CID space. A short deadline ends each wait.
		for name, ns := range map[string]netns.NsHandle{"own": own, "other": other, "init": netns.None()} {
			ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
			_, err := vsockns.DialContext(ctx, ns, cid, 1024)
			cancel()
			assert.ErrorIs(t, err, context.DeadlineExceeded, "%s: the CID is known everywhere", name)
		}
		return
	}
	_, err := vsockns.Dial(own, cid, 1024)
	assert.ErrorIs(t, err, syscall.EHOSTUNREACH, "the CID exists in its own namespace")
	for name, ns := range map[string]netns.NsHandle{"other_local": other, "init": netns.None()} {
		_, err := vsockns.Dial(ns, cid, 1024)
		assert.ErrorIs(t, err, syscall.ENODEV, "%s: the CID is unknown outside its local namespace", name)
	}
}

// 1,000 CIDs across 100 local namespaces: every namespace gets the same
// low CIDs. Allocators racing in one namespace never share a CID.
func TestAllocateGuestCID(t *testing.T) {
	withNS := namespacesExpected(t)
	if !withNS {
		ns := plainNS(t)
		v1, c1, err := vsockns.AllocateGuestCID(ns, 3, 10)
		require.NoError(t, err)
		defer v1.Close()
		v2, c2, err := vsockns.AllocateGuestCID(plainNS(t), 3, 10)
		require.NoError(t, err)
		defer v2.Close()
		assert.Equal(t, uint32(3), c1)
		assert.Equal(t, uint32(4), c2, "one pool: the second namespace gets the next CID")
		return
	}
	t.Run("per_namespace_pools", func(t *testing.T) {
		for i := range 100 {
			ns := newNS(t, vsockns.ModeLocal)
			for j := range 10 {
				v, cid, err := vsockns.AllocateGuestCID(ns, 3, 1000)
				require.NoError(t, err)
				t.Cleanup(func() { v.Close() })
				require.Equal(t, uint32(3+j), cid, "namespace %d, allocation %d", i, j)
			}
		}
	})
	t.Run("concurrent_allocators", func(t *testing.T) {
		ns := newNS(t, vsockns.ModeLocal)
		const n = 50
		var mu sync.Mutex
		seen := map[uint32]bool{}
		var wg sync.WaitGroup
		for range n {
			wg.Go(func() {
				v, cid, err := vsockns.AllocateGuestCID(ns, 3, 3+n-1)
				if !assert.NoError(t, err) {
					return
				}
				mu.Lock()
				defer mu.Unlock()
				assert.False(t, seen[cid], "CID %d given twice", cid)
				seen[cid] = true
				t.Cleanup(func() { v.Close() })
			})
		}
		wg.Wait()
		assert.Len(t, seen, n)
		_, _, err := vsockns.AllocateGuestCID(ns, 3, 3+n-1)
		assert.ErrorIs(t, err, vsockns.ErrCIDInUse, "the range is full")
	})
	t.Run("reserved_skipped_and_bad_range", func(t *testing.T) {
		v, cid, err := vsockns.AllocateGuestCID(newNS(t, vsockns.ModeLocal), 0, 5)
		require.NoError(t, err)
		defer v.Close()
		assert.Equal(t, uint32(3), cid)
		_, _, err = vsockns.AllocateGuestCID(netns.None(), 9, 8)
		var ce *vsockns.CIDError
		assert.ErrorAs(t, err, &ce)
	})
}

func TestOpenVhostBadHandle(t *testing.T) {
	namespacesExpected(t)
	_, err := vsockns.OpenVhost(closedHandle)
	assert.ErrorIs(t, err, syscall.EBADF)
	assert.False(t, errors.Is(err, vsockns.ErrNotSupported))
	assert.Contains(t, fmt.Sprint(err), "not an open file descriptor")
	requireAllThreadsHome(t)
}

// The device's feature bits through the typed methods: both kernels'
// vhost-vsock offer VIRTIO_F_VERSION_1 and SEQPACKET; bad input to the
// vring and memory methods is refused before any ioctl.
func TestVhostFeaturesAndBadInput(t *testing.T) {
	namespacesExpected(t)
	v := openVhost(t, netns.None())
	require.NoError(t, v.SetOwner())
	f, err := v.Features()
	require.NoError(t, err)
	assert.NotZero(t, f&vsockns.FeatureVersion1, "features %#x", f)
	assert.NotZero(t, f&vsockns.FeatureSeqpacket, "features %#x", f)
	require.NoError(t, v.SetFeatures(vsockns.FeatureVersion1|vsockns.FeatureSeqpacket))
	assert.ErrorContains(t, v.SetMemTable(nil), "no memory regions")
	assert.ErrorContains(t, v.SetVringKick(0, nil), "nil eventfd")
	assert.ErrorContains(t, v.SetVringCall(0, nil), "nil eventfd")
	err = v.SetVringNum(7, 128) // a vhost-vsock device has two virtqueues
	assert.ErrorIs(t, err, syscall.ENOBUFS)
	assert.ErrorContains(t, err, "VHOST_SET_VRING_NUM")
}
