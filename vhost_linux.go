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

// ioc encodes an ioctl number as the kernel's _IOC does on this
// architecture (see ioctl_*linux.go).
func ioc(dir, nr, size uintptr) uintptr {
	return dir<<iocDirPos | (size&iocSizeMax)<<16 | vhostVirtio<<8 | nr
}

// vhost ioctls (linux/vhost.h; x/sys/unix has none of them).
const vhostVirtio = 0xAF

var (
	vhostSetOwner         = ioc(iocNone, 0x01, 0)
	vhostGetFeatures      = ioc(iocRead, 0x00, 8)
	vhostSetFeatures      = ioc(iocWrite, 0x00, 8)
	vhostSetMemTable      = ioc(iocWrite, 0x03, 8) // sizeof(struct vhost_memory): the header
	vhostSetVringNum      = ioc(iocWrite, 0x10, 8) // struct vhost_vring_state
	vhostSetVringAddr     = ioc(iocWrite, 0x11, 40)
	vhostSetVringBase     = ioc(iocWrite, 0x12, 8)
	vhostSetVringKick     = ioc(iocWrite, 0x20, 8) // struct vhost_vring_file
	vhostSetVringCall     = ioc(iocWrite, 0x21, 8)
	vhostVsockSetGuestCID = ioc(iocWrite, 0x60, 8)
	vhostVsockSetRunning  = ioc(iocWrite, 0x61, 4)
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
		} else if errno == unix.EACCES {
			err = &explained{err, vhostAccess(), nil}
		}
		return nil, fmt.Errorf("vsockns: open %s in %s: %w", VhostDevice, b, err)
	}
	return &Vhost{f: os.NewFile(uintptr(fd), VhostDevice)}, nil
}

// vhostAccess describes who may open VhostDevice, for an EACCES.
func vhostAccess() string {
	var st unix.Stat_t
	if err := unix.Stat(VhostDevice, &st); err != nil {
		return "this user may not open it"
	}
	return fmt.Sprintf("this user (uid %d) may not open it: it is mode %04o, uid %d, gid %d "+
		"(systemd's udev rules make it 0666; or give the user its group)", os.Geteuid(), st.Mode&0o7777, st.Uid, st.Gid)
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

// Features returns the virtio features the device offers
// (VHOST_GET_FEATURES): FeatureVersion1, FeatureSeqpacket, ...
func (v *Vhost) Features() (uint64, error) {
	var f uint64
	if err := v.ioctl(vhostGetFeatures, unsafe.Pointer(&f)); err != nil {
		return 0, v.ioctlError("VHOST_GET_FEATURES", err)
	}
	return f, nil
}

// SetFeatures acknowledges the features the driver uses
// (VHOST_SET_FEATURES), a subset of Features.
func (v *Vhost) SetFeatures(f uint64) error {
	return v.ioctlError("VHOST_SET_FEATURES", v.ioctl(vhostSetFeatures, unsafe.Pointer(&f)))
}

// SetMemTable tells the device where guest memory is in this process
// (VHOST_SET_MEM_TABLE). At least one region is needed.
func (v *Vhost) SetMemTable(regions []MemoryRegion) error {
	if len(regions) == 0 {
		return fmt.Errorf("vsockns: VHOST_SET_MEM_TABLE: no memory regions")
	}
	// struct vhost_memory: __u32 nregions, __u32 padding, then the regions.
	buf := make([]uint64, 1+4*len(regions))
	hdr := (*[2]uint32)(unsafe.Pointer(&buf[0]))
	hdr[0], hdr[1] = uint32(len(regions)), 0
	for i, r := range regions {
		copy(buf[1+4*i:], []uint64{r.GuestPhysAddr, r.Size, r.UserAddr, 0})
	}
	return v.ioctlError("VHOST_SET_MEM_TABLE", v.ioctl(vhostSetMemTable, unsafe.Pointer(&buf[0])))
}

// SetVringNum sets the size (number of descriptors) of virtqueue index
// (VHOST_SET_VRING_NUM).
func (v *Vhost) SetVringNum(index, num uint32) error {
	st := [2]uint32{index, num}
	return v.ioctlError("VHOST_SET_VRING_NUM", v.ioctl(vhostSetVringNum, unsafe.Pointer(&st)))
}

// SetVringBase sets the index the device starts reading virtqueue index's
// available ring at (VHOST_SET_VRING_BASE).
func (v *Vhost) SetVringBase(index, base uint32) error {
	st := [2]uint32{index, base}
	return v.ioctlError("VHOST_SET_VRING_BASE", v.ioctl(vhostSetVringBase, unsafe.Pointer(&st)))
}

// SetVringAddr tells the device where virtqueue index's rings are, as
// addresses in this process (VHOST_SET_VRING_ADDR).
func (v *Vhost) SetVringAddr(index uint32, a VringAddr) error {
	// struct vhost_vring_addr: index, flags, desc, used, avail, log.
	addr := struct {
		index, flags                    uint32
		desc, used, avail, logGuestAddr uint64
	}{index: index, desc: a.Desc, used: a.Used, avail: a.Avail}
	return v.ioctlError("VHOST_SET_VRING_ADDR", v.ioctl(vhostSetVringAddr, unsafe.Pointer(&addr)))
}

// SetVringKick gives the device the eventfd the driver signals when it
// adds buffers to virtqueue index (VHOST_SET_VRING_KICK).
func (v *Vhost) SetVringKick(index uint32, eventfd *os.File) error {
	return v.setVringFile(vhostSetVringKick, "VHOST_SET_VRING_KICK", index, eventfd)
}

// SetVringCall gives the device the eventfd it signals when it has used
// buffers of virtqueue index (VHOST_SET_VRING_CALL).
func (v *Vhost) SetVringCall(index uint32, eventfd *os.File) error {
	return v.setVringFile(vhostSetVringCall, "VHOST_SET_VRING_CALL", index, eventfd)
}

func (v *Vhost) setVringFile(req uintptr, name string, index uint32, f *os.File) error {
	if f == nil {
		return fmt.Errorf("vsockns: %s: nil eventfd", name)
	}
	vf := struct {
		index uint32
		fd    int32
	}{index, int32(f.Fd())}
	return v.ioctlError(name, v.ioctl(req, unsafe.Pointer(&vf)))
}

// SetRunning starts or stops the device's processing of its virtqueues
// (VHOST_VSOCK_SET_RUNNING).
func (v *Vhost) SetRunning(on bool) error {
	var r int32
	if on {
		r = 1
	}
	return v.ioctlError("VHOST_VSOCK_SET_RUNNING", v.ioctl(vhostVsockSetRunning, unsafe.Pointer(&r)))
}

func (v *Vhost) ioctlError(name string, err error) error {
	if err == nil {
		return nil
	}
	return fmt.Errorf("vsockns: %s: %w", VhostDevice, os.NewSyscallError("ioctl "+name, err))
}

func fileVhost(f *os.File) (*Vhost, error) {
	if f == nil {
		return nil, fmt.Errorf("vsockns: file vhost: %w", os.ErrInvalid)
	}
	rc, err := f.SyscallConn()
	if err != nil {
		return nil, fmt.Errorf("vsockns: file vhost %s: %w", f.Name(), err)
	}
	fd := -1
	var ferr error
	if err := rc.Control(func(raw uintptr) {
		var st, dev unix.Stat_t
		if ferr = unix.Fstat(int(raw), &st); ferr != nil {
			ferr = os.NewSyscallError("fstat", ferr)
			return
		}
		if st.Mode&unix.S_IFMT != unix.S_IFCHR || unix.Stat(VhostDevice, &dev) != nil || dev.Rdev != st.Rdev {
			ferr = &explained{unix.EINVAL, "not " + VhostDevice, nil}
			return
		}
		fd, ferr = unix.FcntlInt(raw, unix.F_DUPFD_CLOEXEC, 3)
		if ferr != nil {
			ferr = os.NewSyscallError("fcntl", ferr)
		}
	}); err != nil {
		ferr = err
	}
	if ferr != nil {
		return nil, fmt.Errorf("vsockns: file vhost %s: %w", f.Name(), ferr)
	}
	return &Vhost{f: os.NewFile(uintptr(fd), VhostDevice)}, nil
}
