//go:build linux

package vsocktest

import (
	"bytes"
	"encoding/binary"
	"slices"
	"testing"
)

// FuzzDecodePacket: whatever a device wrote and whatever length it
// reported, decodePacket reads within the buffer, gives no more payload
// than the header's len, and its header is the buffer's first bytes.
func FuzzDecodePacket(f *testing.F) {
	p := make([]byte, hdrSize+5)
	(&header{srcCID: 2, dstCID: 3, srcPort: 1, dstPort: 1024, len: 5, typ: typeStream, op: opRW}).put(p)
	copy(p[hdrSize:], "hello")
	f.Add(p, uint32(len(p)))
	f.Add(p, uint32(hdrSize))
	f.Add(p, uint32(hdrSize-1))
	f.Add(p, uint32(len(p)+1))
	f.Add(p, ^uint32(0))
	f.Add(p[:hdrSize], uint32(hdrSize+3))
	f.Fuzz(func(t *testing.T, buf []byte, n uint32) {
		h, payload, ok := decodePacket(buf, n)
		if !ok {
			if n >= hdrSize && uint64(n) <= uint64(len(buf)) {
				t.Fatalf("decodePacket refused %d bytes of a %d-byte buffer", n, len(buf))
			}
			return
		}
		if n < hdrSize || uint64(n) > uint64(len(buf)) {
			t.Fatalf("decodePacket took length %d of a %d-byte buffer", n, len(buf))
		}
		want := int(n) - hdrSize
		if uint64(h.len) < uint64(want) {
			want = int(h.len)
		}
		if len(payload) != want {
			t.Fatalf("payload of %d bytes for len %d and %d bytes written", len(payload), h.len, n)
		}
		if !bytes.Equal(payload, buf[hdrSize:hdrSize+len(payload)]) {
			t.Fatalf("payload is not the buffer's")
		}
		var back [hdrSize]byte
		h.put(back[:])
		if !bytes.Equal(back[:], buf[:hdrSize]) {
			t.Fatalf("header %+v does not put back to the buffer's first bytes", h)
		}
	})
}

// FuzzUsedRing: whatever a device wrote into the used ring (entries and
// index), nextUsed hands out only descriptor ids the driver owns (below
// queueSize, so that a buffer is the driver's own and nothing else in
// guest memory), each entry once, and then says the ring is empty.
func FuzzUsedRing(f *testing.F) {
	entry := func(id, length uint32) []byte {
		return binary.LittleEndian.AppendUint32(binary.LittleEndian.AppendUint32(nil, id), length)
	}
	f.Add(uint16(0), uint16(1), entry(0, 64))
	f.Add(uint16(126), uint16(3), bytes.Join([][]byte{entry(127, 44), entry(1, 4096), entry(2, 0)}, nil))
	f.Add(uint16(0), uint16(1), entry(queueSize, 64))
	f.Add(uint16(0), uint16(2), append(entry(1<<16+3, 64), entry(200, 100)...))
	f.Add(uint16(65535), uint16(2), append(entry(5, 64), entry(6, 64)...))
	f.Add(uint16(0), uint16(300), entry(1, 1))
	mem := make([]byte, 3*ringPage)
	f.Fuzz(func(t *testing.T, last, idx uint16, entries []byte) {
		clear(mem)
		r := ring{mem: mem, used: 0, bufBase: 3 * ringPage, lastUsed: last}
		copy(mem[r.used+4:r.used+4+queueSize*8], entries)
		binary.LittleEndian.PutUint16(mem[r.used+2:], idx)
		// The pending entries with an id of the ring, in order (an entry
		// with another id is passed over: no buffer of ours is named).
		var want []uint32
		for k := last; k != idx; k++ {
			e := mem[r.used+4+uintptr(k%queueSize)*8:]
			if id := binary.LittleEndian.Uint32(e); id < queueSize {
				want = append(want, id, binary.LittleEndian.Uint32(e[4:]))
			}
		}
		var got []uint32
		for {
			id, length, ok := r.nextUsed()
			if !ok {
				break
			}
			if id >= queueSize {
				t.Fatalf("nextUsed handed out descriptor %d of a ring of %d", id, queueSize)
			}
			got = append(got, uint32(id), length)
			if len(got) > len(want) {
				break
			}
		}
		if !slices.Equal(got, want) {
			t.Fatalf("nextUsed handed out (id, length) %v, want %v", got, want)
		}
		if r.lastUsed != idx {
			t.Fatalf("ring empty at %d, used index %d", r.lastUsed, idx)
		}
	})
}

// fuzzGuest is a Guest without a device: what it sends stays in its
// queue, for the test to read.
func fuzzGuest(cid uint32) *Guest {
	return &Guest{
		cfg:       Config{CID: cid, Seqpacket: true},
		conns:     map[connKey]*Conn{},
		listeners: map[uint32]*Listener{},
		nextPort:  49152,
		sendWake:  make(chan struct{}, 1),
		done:      make(chan struct{}),
	}
}

// FuzzGuestHandle: any sequence of packets from the host (each a header
// and a payload the header's len says, cut at the input's end) leaves the
// guest consistent: a packet for another CID changes nothing and is not
// answered; everything the guest sends goes from its CID to the host's
// with a type it speaks; each connection is in the table under its own
// key; no listener's backlog is over its bound.
func FuzzGuestHandle(f *testing.F) {
	pkt := func(h header, payload string) []byte {
		h.len = uint32(len(payload))
		b := make([]byte, hdrSize, hdrSize+len(payload))
		h.put(b)
		return append(b, payload...)
	}
	req := header{srcCID: 2, dstCID: 3, srcPort: 5000, dstPort: 1024, typ: typeStream, op: opRequest, bufAlloc: 1 << 18}
	rw := req
	rw.op = opRW
	seq := header{srcCID: 2, dstCID: 3, srcPort: 5001, dstPort: 1025, typ: typeSeqpacket, op: opRequest, bufAlloc: 1 << 18}
	seqRW := seq
	seqRW.op, seqRW.flags = opRW, seqEOM|seqEOR
	shut := req
	shut.op, shut.flags = opShutdown, shutdownRcv|shutdownSend
	rst := req
	rst.op = opRST
	other := req
	other.dstCID = 4
	credit := req
	credit.op = opCreditRequest
	f.Add(pkt(req, ""))
	f.Add(slices.Concat(pkt(req, ""), pkt(rw, "hello"), pkt(credit, ""), pkt(shut, ""), pkt(rst, "")))
	f.Add(slices.Concat(pkt(seq, ""), pkt(seqRW, "one"), pkt(seqRW, ""), pkt(seq, "")))
	f.Add(slices.Concat(pkt(other, ""), pkt(rw, "no connection")))
	f.Add(slices.Concat(pkt(req, ""), pkt(req, ""), pkt(seq, "wrong port type")))
	bad := req
	bad.typ = 9
	f.Add(slices.Concat(pkt(bad, ""), pkt(req, "x")[:hdrSize+1]))
	f.Fuzz(func(t *testing.T, in []byte) {
		g := fuzzGuest(3)
		ls, err := g.Listen(1024)
		if err != nil {
			t.Fatal(err)
		}
		lq, err := g.ListenSeqpacket(1025)
		if err != nil {
			t.Fatal(err)
		}
		for len(in) >= hdrSize {
			h := parseHeader(in)
			n := min(uint64(h.len), uint64(len(in)-hdrSize))
			payload := in[hdrSize : hdrSize+int(n)]
			in = in[hdrSize+int(n):]
			g.mu.Lock()
			before := len(g.conns)
			g.mu.Unlock()
			g.sendMu.Lock()
			queued := len(g.queue)
			g.sendMu.Unlock()
			g.handle(h, payload)
			g.mu.Lock()
			after := len(g.conns)
			for key, c := range g.conns {
				if c.key != key {
					t.Fatalf("connection %+v in the table under %+v", c.key, key)
				}
			}
			g.mu.Unlock()
			g.sendMu.Lock()
			sent := g.queue[queued:]
			for _, p := range sent {
				if p.h.srcCID != 3 || p.h.dstCID != hostCID || (p.h.typ != typeStream && p.h.typ != typeSeqpacket) {
					t.Fatalf("the guest sent %+v", p.h)
				}
			}
			g.sendMu.Unlock()
			if h.dstCID != 3 && (after != before || len(sent) > 0) {
				t.Fatalf("a packet for CID %d reached guest 3: %d connections became %d, %d packets sent", h.dstCID, before, after, len(sent))
			}
			for _, l := range []*Listener{ls, lq} {
				if len(l.queue) > cap(l.queue) {
					t.Fatalf("backlog %d over %d", len(l.queue), cap(l.queue))
				}
			}
		}
	})
}
