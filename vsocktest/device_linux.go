//go:build linux

package vsocktest

import (
	"encoding/binary"
	"fmt"
	"os"
	"sync/atomic"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/vsockns/vsockns"
)

// vhost ioctls (linux/vhost.h, x86-64 numbering).
const (
	vhostGetFeatures     = 0x8008af00
	vhostSetFeatures     = 0x4008af00
	vhostSetMemTable     = 0x4008af03
	vhostSetVringNum     = 0x4008af10
	vhostSetVringAddr    = 0x4028af11
	vhostSetVringBase    = 0x4008af12
	vhostSetVringKick    = 0x4008af20
	vhostSetVringCall    = 0x4008af21
	vhostVsockSetRunning = 0x4004af61

	virtioFVersion1 = 1 << 32
)

// Guest memory layout. The whole region is one anonymous mapping the
// process owns; guest-physical address 0 is its first byte.
const (
	queueSize  = 128      // descriptors per virtqueue
	bufSize    = 4096     // bytes per packet buffer (header + payload)
	ringPage   = 0x1000   // each ring part gets a page of its own
	rxBufBase  = 0x10000  // RX buffers
	txBufBase  = 0x90000  // TX buffers
	memSize    = 0x200000 // 2 MiB
	hdrSize    = 44       // struct virtio_vsock_hdr, packed
	maxPayload = bufSize - hdrSize
)

// vq indexes: the device's RX queue carries host-to-guest packets.
const (
	rxQueue = 0
	txQueue = 1
)

// A ring is one split virtqueue in guest memory.
type ring struct {
	mem      []byte
	desc     uintptr // offsets into mem
	avail    uintptr
	used     uintptr
	bufBase  uintptr
	kick     *os.File // we write it after publishing buffers
	call     *os.File // the device writes it after using buffers
	availIdx uint16   // next avail index we publish
	lastUsed uint16   // next used index we consume
}

func (r *ring) setDesc(id uint16, addr uint64, length uint32, writable bool) {
	d := r.mem[r.desc+uintptr(id)*16:]
	binary.LittleEndian.PutUint64(d[0:], addr)
	binary.LittleEndian.PutUint32(d[8:], length)
	var flags uint16
	if writable {
		flags = 2 // VRING_DESC_F_WRITE: the device writes this buffer
	}
	binary.LittleEndian.PutUint16(d[12:], flags)
	binary.LittleEndian.PutUint16(d[14:], 0)
}

// buf returns descriptor id's buffer.
func (r *ring) buf(id uint16) []byte {
	off := r.bufBase + uintptr(id)*bufSize
	return r.mem[off : off+bufSize]
}

// publish adds descriptor id to the avail ring; commit makes all published
// entries visible to the device.
func (r *ring) publish(id uint16) {
	binary.LittleEndian.PutUint16(r.mem[r.avail+4+uintptr(r.availIdx%queueSize)*2:], id)
	r.availIdx++
}

func (r *ring) commit() {
	// flags (0) and idx share one aligned 32-bit word: one atomic store
	// orders the ring entries before the new index (Go has no 16-bit
	// atomics).
	atomic.StoreUint32((*uint32)(unsafe.Pointer(&r.mem[r.avail])), uint32(r.availIdx)<<16)
	_, _ = r.kick.Write(one[:])
}

// usedIdx reads the device's used index.
func (r *ring) usedIdx() uint16 {
	return uint16(atomic.LoadUint32((*uint32)(unsafe.Pointer(&r.mem[r.used]))) >> 16)
}

// nextUsed returns the next used descriptor id and length, if any.
func (r *ring) nextUsed() (id uint16, length uint32, ok bool) {
	if r.lastUsed == r.usedIdx() {
		return 0, 0, false
	}
	e := r.mem[r.used+4+uintptr(r.lastUsed%queueSize)*8:]
	r.lastUsed++
	return uint16(binary.LittleEndian.Uint32(e[0:])), binary.LittleEndian.Uint32(e[4:]), true
}

var one = [8]byte{1}

// device is the vhost-vsock device with its memory and rings.
type device struct {
	vhost *vsockns.Vhost
	mem   []byte
	rx    ring
	tx    ring
}

func ioctl(fd uintptr, req uintptr, arg unsafe.Pointer) error {
	if _, _, errno := unix.Syscall(unix.SYS_IOCTL, fd, req, uintptr(arg)); errno != 0 {
		return errno
	}
	return nil
}

func eventfd() (*os.File, error) {
	fd, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		return nil, os.NewSyscallError("eventfd", err)
	}
	return os.NewFile(uintptr(fd), "eventfd"), nil
}

// setupDevice opens the device in the namespace and configures it as a
// virtio driver would, up to (not including) SET_RUNNING.
func setupDevice(v *vsockns.Vhost, cid uint32) (_ *device, err error) {
	d := &device{vhost: v}
	defer func() {
		if err != nil {
			d.release()
		}
	}()
	if err := v.SetOwner(); err != nil {
		return nil, err
	}
	fd := v.Fd()
	step := func(name string, req uintptr, arg unsafe.Pointer) error {
		if err := ioctl(fd, req, arg); err != nil {
			return fmt.Errorf("vsocktest: %s: %w", name, os.NewSyscallError("ioctl", err))
		}
		return nil
	}
	var features uint64
	if err := step("VHOST_GET_FEATURES", vhostGetFeatures, unsafe.Pointer(&features)); err != nil {
		return nil, err
	}
	if features&virtioFVersion1 == 0 {
		return nil, fmt.Errorf("vsocktest: device does not offer VIRTIO_F_VERSION_1 (features %#x)", features)
	}
	ack := uint64(virtioFVersion1)
	if err := step("VHOST_SET_FEATURES", vhostSetFeatures, unsafe.Pointer(&ack)); err != nil {
		return nil, err
	}

	d.mem, err = unix.Mmap(-1, 0, memSize, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	if err != nil {
		return nil, fmt.Errorf("vsocktest: %w", os.NewSyscallError("mmap", err))
	}
	base := uint64(uintptr(unsafe.Pointer(&d.mem[0])))
	memTable := struct {
		nregions, padding uint32
		gpa, size, uaddr  uint64
		flagsPadding      uint64
	}{nregions: 1, gpa: 0, size: memSize, uaddr: base}
	if err := step("VHOST_SET_MEM_TABLE", vhostSetMemTable, unsafe.Pointer(&memTable)); err != nil {
		return nil, err
	}

	for i, r := range []*ring{&d.rx, &d.tx} {
		idx := uint32(i)
		r.mem = d.mem
		r.desc = uintptr(i) * 3 * ringPage
		r.avail = r.desc + ringPage
		r.used = r.avail + ringPage
		r.bufBase = rxBufBase
		if i == txQueue {
			r.bufBase = txBufBase
		}
		if r.kick, err = eventfd(); err != nil {
			return nil, err
		}
		if r.call, err = eventfd(); err != nil {
			return nil, err
		}
		state := struct{ index, num uint32 }{idx, queueSize}
		if err := step("VHOST_SET_VRING_NUM", vhostSetVringNum, unsafe.Pointer(&state)); err != nil {
			return nil, err
		}
		state.num = 0
		if err := step("VHOST_SET_VRING_BASE", vhostSetVringBase, unsafe.Pointer(&state)); err != nil {
			return nil, err
		}
		// struct vhost_vring_addr: the used ring's address precedes the
		// avail ring's. Ring addresses are the process's own.
		addr := struct {
			index, flags                    uint32
			desc, used, avail, logGuestAddr uint64
		}{index: idx, desc: base + uint64(r.desc), used: base + uint64(r.used), avail: base + uint64(r.avail)}
		if err := step("VHOST_SET_VRING_ADDR", vhostSetVringAddr, unsafe.Pointer(&addr)); err != nil {
			return nil, err
		}
		kick := struct {
			index uint32
			fd    int32
		}{idx, int32(r.kick.Fd())}
		if err := step("VHOST_SET_VRING_KICK", vhostSetVringKick, unsafe.Pointer(&kick)); err != nil {
			return nil, err
		}
		call := struct {
			index uint32
			fd    int32
		}{idx, int32(r.call.Fd())}
		if err := step("VHOST_SET_VRING_CALL", vhostSetVringCall, unsafe.Pointer(&call)); err != nil {
			return nil, err
		}
	}
	// Every RX descriptor is a device-writable buffer, all offered now.
	for id := uint16(0); id < queueSize; id++ {
		d.rx.setDesc(id, uint64(rxBufBase)+uint64(id)*bufSize, bufSize, true)
		d.rx.publish(id)
	}
	d.rx.commit()
	if err := v.SetGuestCID(cid); err != nil {
		return nil, err
	}
	return d, nil
}

func (d *device) setRunning(on bool) error {
	v := int32(0)
	if on {
		v = 1
	}
	if err := ioctl(d.vhost.Fd(), vhostVsockSetRunning, unsafe.Pointer(&v)); err != nil {
		return fmt.Errorf("vsocktest: VHOST_VSOCK_SET_RUNNING %d: %w", v, os.NewSyscallError("ioctl", err))
	}
	return nil
}

// release closes the device (which stops it), the eventfds and unmaps the
// memory. The device must not use the memory afterwards: closing the vhost
// file descriptor stops and flushes its workers first.
func (d *device) release() {
	if d.vhost != nil {
		d.vhost.Close()
	}
	for _, r := range []*ring{&d.rx, &d.tx} {
		if r.kick != nil {
			r.kick.Close()
		}
		if r.call != nil {
			r.call.Close()
		}
	}
	if d.mem != nil {
		_ = unix.Munmap(d.mem)
		d.mem = nil
	}
}
