//go:build linux

package vsockns

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync/atomic"
	"unsafe"

	"golang.org/x/sys/unix"
)

// vhost ioctls (linux/vhost.h; x/sys/unix does not have the vsock ones).
const (
	vhostSetOwner         = 0xaf01     // _IO(VHOST_VIRTIO, 0x01)
	vhostVsockSetGuestCID = 0x4008af60 // _IOW(VHOST_VIRTIO, 0x60, __u64)
)

// A Vhost is an open /dev/vhost-vsock, bound to the network namespace it
// was opened in.
type Vhost struct {
	f   *os.File
	cid atomic.Uint32 // 0 until a CID is claimed
}

func openVhost(ref nsRef) (*Vhost, error) {
	b, err := ref.backend()
	if err != nil {
		return nil, fmt.Errorf("vsockns: open %s: %w", VhostDevice, err)
	}
	fd, err := b.openVhost(context.Background())
	if err != nil {
		var errno unix.Errno
		if errors.As(err, &errno) && (errno == unix.ENOENT || errno == unix.ENODEV) {
			err = fmt.Errorf("%w: %s is missing: load the vhost_vsock module (%w)", ErrNotSupported, VhostDevice, err)
		} else if errno == unix.EBADF || errno == unix.EINVAL {
			err = socketError(err) // a bad namespace handle, explained
		}
		return nil, fmt.Errorf("vsockns: open %s in %s: %w", VhostDevice, b, err)
	}
	return &Vhost{f: os.NewFile(uintptr(fd), VhostDevice)}, nil
}

// File returns the device file, for example to pass to a VMM process as
// an inherited descriptor (exec.Cmd.ExtraFiles). It stays owned by v.
func (v *Vhost) File() *os.File { return v.f }

// Fd returns the device's file descriptor (see os.File.Fd).
func (v *Vhost) Fd() uintptr { return v.f.Fd() }

// Close releases the device; its CID becomes free again.
func (v *Vhost) Close() error { return v.f.Close() }

// GuestCID returns the CID claimed with SetGuestCID, or 0.
func (v *Vhost) GuestCID() uint32 { return v.cid.Load() }

// SetOwner makes the calling process the device's owner
// (VHOST_SET_OWNER), as a VMM driving the virtqueues itself must. Do not
// call it on a device handed to another VMM process.
func (v *Vhost) SetOwner() error {
	// VHOST_SET_OWNER starts the device's worker thread, and the kernel
	// reports any failure to start it as ENOMEM. Under load some of those
	// are passing: in the scale benchmark on 7.3.4, 4 of about 300 claims
	// failed so, and each succeeded when repeated at once. So ENOMEM is
	// tried again, a few times.
	var err error
	for range setOwnerTries {
		if err = v.ioctl(vhostSetOwner, nil); err != unix.ENOMEM {
			break
		}
	}
	if err != nil {
		return fmt.Errorf("vsockns: %s: %w", VhostDevice, os.NewSyscallError("ioctl VHOST_SET_OWNER", err))
	}
	return nil
}

// setOwnerTries bounds SetOwner's attempts on ENOMEM.
const setOwnerTries = 5

// SetGuestCID claims cid for the guest in the device's namespace's CID pool
// (VHOST_VSOCK_SET_GUEST_CID). Reserved CIDs (0, 1, 2 and VMADDR_CID_ANY)
// are refused with a *CIDError before any system call; a CID already
// claimed in the same pool fails with ErrCIDInUse (and EADDRINUSE).
func (v *Vhost) SetGuestCID(cid uint32) error {
	if err := checkGuestCID(cid); err != nil {
		return err
	}
	c := uint64(cid)
	if err := v.ioctl(vhostVsockSetGuestCID, unsafe.Pointer(&c)); err != nil {
		serr := os.NewSyscallError("ioctl VHOST_VSOCK_SET_GUEST_CID", err)
		if errors.Is(err, unix.EADDRINUSE) {
			return fmt.Errorf("vsockns: guest CID %d: %w: %w", cid, ErrCIDInUse, serr)
		}
		return fmt.Errorf("vsockns: guest CID %d: %w", cid, serr)
	}
	v.cid.Store(cid)
	return nil
}

func (v *Vhost) ioctl(req uintptr, arg unsafe.Pointer) error {
	rc, err := v.f.SyscallConn()
	if err != nil {
		return err
	}
	var errno unix.Errno
	if err := rc.Control(func(fd uintptr) {
		_, _, errno = unix.Syscall(unix.SYS_IOCTL, fd, req, uintptr(arg))
	}); err != nil {
		return err
	}
	if errno != 0 {
		return errno
	}
	return nil
}

// checkGuestCID rejects the CIDs no guest may claim.
func checkGuestCID(cid uint32) error {
	switch {
	case cid == 0:
		return &CIDError{cid, "reserved for the hypervisor"}
	case cid == 1:
		return &CIDError{cid, "reserved for local loopback"}
	case cid == 2:
		return &CIDError{cid, "reserved for the host"}
	case cid == vmaddrCIDAny:
		return &CIDError{cid, "is VMADDR_CID_ANY"}
	}
	return nil
}
