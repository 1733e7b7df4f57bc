package vsockns

import (
	"errors"
	"fmt"
	"os"

	"github.com/vishvananda/netns"
)

// VhostDevice is the vhost-vsock device node.
const VhostDevice = "/dev/vhost-vsock"

// OpenVhost opens /dev/vhost-vsock inside namespace ns, for a VMM to give a
// guest its vsock device.
//
// Why inside the namespace: a vhost-vsock device belongs to the network
// namespace of the thread that opened it, for good. That namespace decides
// which CID pool the guest's CID is claimed in (each local namespace has its
// own pool, so every VM can be CID 3; global namespaces share one) and which
// host sockets can reach the guest and be reached by it (in a local
// namespace, only sockets created in that namespace). A VMM that opens the
// device from the wrong thread silently puts its guest in the wrong place.
// Only open(2) runs in the namespace; the ioctls run on any thread.
//
// In a local namespace the guest is reachable from the host only through
// sockets created in that same namespace. The device keeps the namespace
// alive, but not reachable: once the last handle to it is closed, no new
// socket can be made there. A VMM (or the agent that talks to its guests)
// therefore keeps a reference to the namespace, a handle or better a
// [Namespace], for as long as it wants to dial or serve the guest.
//
// OpenVhost does not take ownership (VHOST_SET_OWNER): the process that
// drives the virtqueues must, and a VMM handed the descriptor (QEMU's
// vhost-vsock-pci,vhostfd=N) does it itself and fails if it was already
// done. A Go VMM that drives the device calls SetOwner.
func OpenVhost(ns netns.NsHandle) (*Vhost, error) {
	return openVhost(nsRef{h: ns})
}

// AllocateGuestCID opens /dev/vhost-vsock in ns and claims the first free
// CID in [lo, hi] of that namespace's CID pool, skipping reserved CIDs.
// The claim is the VHOST_VSOCK_SET_GUEST_CID ioctl itself, so concurrent
// allocators (in this process or others) never get the same CID. When no
// CID in the range is free, the error wraps ErrCIDInUse.
func AllocateGuestCID(ns netns.NsHandle, lo, hi uint32) (*Vhost, uint32, error) {
	return allocateGuestCID(nsRef{h: ns}, lo, hi)
}

func allocateGuestCID(ref nsRef, lo, hi uint32) (*Vhost, uint32, error) {
	if lo > hi {
		return nil, 0, &CIDError{CID: lo, Reason: fmt.Sprintf("empty range [%d, %d]", lo, hi)}
	}
	v, err := openVhost(ref)
	if err != nil {
		return nil, 0, err
	}
	for cid := uint64(lo); cid <= uint64(hi); cid++ {
		if reservedCID(uint32(cid)) {
			continue
		}
		err := v.SetGuestCID(uint32(cid))
		if err == nil {
			return v, uint32(cid), nil
		}
		if !errors.Is(err, ErrCIDInUse) {
			v.Close()
			return nil, 0, err
		}
	}
	v.Close()
	return nil, 0, fmt.Errorf("vsockns: no free guest CID in [%d, %d]: %w", lo, hi, ErrCIDInUse)
}

// CIDError reports a CID that cannot be given to a guest.
type CIDError struct {
	CID    uint32
	Reason string
}

func (e *CIDError) Error() string {
	return fmt.Sprintf("vsockns: guest CID %d: %s", e.CID, e.Reason)
}

// reservedCID reports CIDs no guest may have: hypervisor (0), local (1),
// host (2) and VMADDR_CID_ANY.
func reservedCID(cid uint32) bool {
	return cid <= 2 || cid == vmaddrCIDAny
}

// Virtio features of the vhost-vsock device (Vhost.Features, SetFeatures).
const (
	FeatureSeqpacket uint64 = 1 << 1  // VIRTIO_VSOCK_F_SEQPACKET
	FeatureVersion1  uint64 = 1 << 32 // VIRTIO_F_VERSION_1
)

// A MemoryRegion is a stretch of guest memory in this process, for
// Vhost.SetMemTable.
type MemoryRegion struct {
	GuestPhysAddr uint64 // where the guest sees it
	Size          uint64
	UserAddr      uint64 // where this process has it mapped
}

// VringAddr locates a split virtqueue's three parts in this process's
// memory, for Vhost.SetVringAddr.
type VringAddr struct {
	Desc, Avail, Used uint64
}

// FileVhost returns a Vhost for an open /dev/vhost-vsock, such as the
// descriptor a launcher passed to a VMM process (`vsockns vm` passes it as
// descriptor 3). It duplicates the descriptor: f stays the caller's to
// close. A file that is not the vhost-vsock device fails with EINVAL. Its
// GuestCID is 0 until SetGuestCID, whatever the device has claimed.
func FileVhost(f *os.File) (*Vhost, error) { return fileVhost(f) }
