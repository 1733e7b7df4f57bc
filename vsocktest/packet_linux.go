package vsocktest

import "encoding/binary"

// virtio-vsock packet header (struct virtio_vsock_hdr): 44 bytes, packed,
// little-endian.
type header struct {
	srcCID, dstCID   uint64
	srcPort, dstPort uint32
	len              uint32
	typ, op          uint16
	flags            uint32
	bufAlloc, fwdCnt uint32
}

// Socket types.
const (
	typeStream    = 1 // VIRTIO_VSOCK_TYPE_STREAM
	typeSeqpacket = 2 // VIRTIO_VSOCK_TYPE_SEQPACKET
)

// Flags of a SOCK_SEQPACKET RW packet (VIRTIO_VSOCK_SEQ_EOM, _EOR).
const (
	seqEOM = 1 // the last packet of a message
	seqEOR = 2 // ... which ends a record (MSG_EOR)
)

// Operations.
const (
	opRequest       = 1
	opResponse      = 2
	opRST           = 3
	opShutdown      = 4
	opRW            = 5
	opCreditUpdate  = 6
	opCreditRequest = 7
)

// Shutdown flags: what the sender of the packet will no longer do.
const (
	shutdownRcv  = 1
	shutdownSend = 2
)

func (h *header) put(b []byte) {
	binary.LittleEndian.PutUint64(b[0:], h.srcCID)
	binary.LittleEndian.PutUint64(b[8:], h.dstCID)
	binary.LittleEndian.PutUint32(b[16:], h.srcPort)
	binary.LittleEndian.PutUint32(b[20:], h.dstPort)
	binary.LittleEndian.PutUint32(b[24:], h.len)
	binary.LittleEndian.PutUint16(b[28:], h.typ)
	binary.LittleEndian.PutUint16(b[30:], h.op)
	binary.LittleEndian.PutUint32(b[32:], h.flags)
	binary.LittleEndian.PutUint32(b[36:], h.bufAlloc)
	binary.LittleEndian.PutUint32(b[40:], h.fwdCnt)
}

func parseHeader(b []byte) header {
	return header{
		srcCID:   binary.LittleEndian.Uint64(b[0:]),
		dstCID:   binary.LittleEndian.Uint64(b[8:]),
		srcPort:  binary.LittleEndian.Uint32(b[16:]),
		dstPort:  binary.LittleEndian.Uint32(b[20:]),
		len:      binary.LittleEndian.Uint32(b[24:]),
		typ:      binary.LittleEndian.Uint16(b[28:]),
		op:       binary.LittleEndian.Uint16(b[30:]),
		flags:    binary.LittleEndian.Uint32(b[32:]),
		bufAlloc: binary.LittleEndian.Uint32(b[36:]),
		fwdCnt:   binary.LittleEndian.Uint32(b[40:]),
	}
}

// decodePacket reads the packet a device wrote into buf, n bytes of it:
// its header and as much of the payload as the header's len covers. It
// is not ok for a length the device cannot have written (less than a
// header, more than buf).
func decodePacket(buf []byte, n uint32) (h header, payload []byte, ok bool) {
	if n < hdrSize || uint64(n) > uint64(len(buf)) {
		return header{}, nil, false
	}
	h = parseHeader(buf)
	payload = buf[hdrSize:n]
	if uint64(h.len) < uint64(len(payload)) {
		payload = payload[:h.len]
	}
	return h, payload, true
}

// packet is a header and its payload, queued for the device.
type packet struct {
	h       header
	payload []byte
}
