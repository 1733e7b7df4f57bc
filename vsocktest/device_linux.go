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

// nextUsed returns the next used descriptor id and length, if any. An
// entry naming no descriptor of the ring (a device's bug) is passed over:
// its id, taken as one, would make a buffer of whatever memory lies
// beyond the ring's.
func (r *ring) nextUsed() (id uint16, length uint32, ok bool) {
	for end := r.usedIdx(); r.lastUsed != end; {
		e := r.mem[r.used+4+uintptr(r.lastUsed%queueSize)*8:]
		r.lastUsed++
		if id := binary.LittleEndian.Uint32(e[0:]); id < queueSize {
			return uint16(id), binary.LittleEndian.Uint32(e[4:]), true
		}
	}
	return 0, 0, false
}

var one = [8]byte{1}

// device is the vhost-vsock device with its memory and rings.
type device struct {
	vhost *vsockns.Vhost
	mem   []byte
	rx    ring
	tx    ring
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
func setupDevice(v *vsockns.Vhost, cid uint32, seqpacket bool) (_ *device, err error) {
	d := &device{vhost: v}
	defer func() {
		if err != nil {
			d.release()
		}
	}()
	if err := v.SetOwner(); err != nil {
		return nil, err
	}
	features, err := v.Features()
	if err != nil {
		return nil, err
	}
	if features&vsockns.FeatureVersion1 == 0 {
		return nil, fmt.Errorf("vsocktest: device does not offer VIRTIO_F_VERSION_1 (features %#x)", features)
	}
	want := vsockns.FeatureVersion1
	if seqpacket {
		if features&vsockns.FeatureSeqpacket == 0 {
			return nil, fmt.Errorf("vsocktest: device does not offer VIRTIO_VSOCK_F_SEQPACKET (features %#x)", features)
		}
		want |= vsockns.FeatureSeqpacket
	}
	if err := v.SetFeatures(want); err != nil {
		return nil, err
	}

	d.mem, err = unix.Mmap(-1, 0, memSize, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	if err != nil {
		return nil, fmt.Errorf("vsocktest: %w", os.NewSyscallError("mmap", err))
	}
	base := uint64(uintptr(unsafe.Pointer(&d.mem[0])))
	if err := v.SetMemTable([]vsockns.MemoryRegion{{GuestPhysAddr: 0, Size: memSize, UserAddr: base}}); err != nil {
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
		if err := v.SetVringNum(idx, queueSize); err != nil {
			return nil, err
		}
		if err := v.SetVringBase(idx, 0); err != nil {
			return nil, err
		}
		// Ring addresses are the process's own.
		if err := v.SetVringAddr(idx, vsockns.VringAddr{Desc: base + uint64(r.desc), Avail: base + uint64(r.avail), Used: base + uint64(r.used)}); err != nil {
			return nil, err
		}
		if err := v.SetVringKick(idx, r.kick); err != nil {
			return nil, err
		}
		if err := v.SetVringCall(idx, r.call); err != nil {
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

func (d *device) setRunning(on bool) error { return d.vhost.SetRunning(on) }

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
