//go:build linux

package vsocktest

import (
	"bytes"
	"context"
	"io"
	"net"
	"os"
	"sync"
	"syscall"
	"time"

	"github.com/mdlayher/vsock"
)

// bufAlloc is the receive buffer each guest connection advertises.
const bufAlloc = 256 << 10

type connState int

const (
	stateConnecting connState = iota
	stateEstablished
)

// A Conn is the guest's end of a vsock connection: a stream, or a
// SOCK_SEQPACKET connection whose Read and Write move one message each.
type Conn struct {
	g             *Guest
	key           connKey
	typ           uint16 // typeStream or typeSeqpacket
	local, remote *vsock.Addr

	writeMu sync.Mutex // one Write at a time: their chunks never interleave

	mu           sync.Mutex
	state        connState
	rx           bytes.Buffer // stream
	msgs         []message    // SOCK_SEQPACKET: whole messages received
	partial      []byte       // ... and the start of the next
	fwdCnt       uint32       // bytes the application has read
	lastFwdSent  uint32       // fwdCnt last advertised to the host
	txCnt        uint32       // bytes sent
	peerBufAlloc uint32
	peerFwdCnt   uint32
	peerNoSend   bool  // the host will send no more (EOF after rx drains)
	peerNoRecv   bool  // the host will receive no more
	noSend       bool  // CloseWrite was called
	closed       bool  // Close was called
	err          error // reset or failed
	changed      chan struct{}

	readDL, writeDL *deadline
}

// message is a SOCK_SEQPACKET message received.
type message struct {
	data []byte
	eor  bool // sent with MSG_EOR
}

var _ net.Conn = (*Conn)(nil)

// network is the network name of a socket type, in errors.
func network(typ uint16) string {
	if typ == typeSeqpacket {
		return "vsockpacket"
	}
	return "vsock"
}

func newConn(g *Guest, key connKey, st connState, typ uint16) *Conn {
	return &Conn{
		g:       g,
		key:     key,
		typ:     typ,
		local:   &vsock.Addr{ContextID: g.cfg.CID, Port: key.localPort},
		remote:  &vsock.Addr{ContextID: hostCID, Port: key.peerPort},
		state:   st,
		changed: make(chan struct{}),
		readDL:  newDeadline(),
		writeDL: newDeadline(),
	}
}

// notify wakes everything waiting on c; c.mu is held.
func (c *Conn) notify() {
	close(c.changed)
	c.changed = make(chan struct{})
}

// control builds a packet of c without payload; c.mu need not be held for
// the addresses, and the credit fields are read under it.
func (c *Conn) control(op uint16, flags uint32) packet {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.packetLocked(op, flags, nil)
}

func (c *Conn) packetLocked(op uint16, flags uint32, payload []byte) packet {
	c.lastFwdSent = c.fwdCnt
	return packet{h: header{
		srcPort: c.key.localPort, dstPort: c.key.peerPort, typ: c.typ,
		op: op, flags: flags, bufAlloc: bufAlloc, fwdCnt: c.fwdCnt,
	}, payload: payload}
}

// receive handles a packet from the host for c (RX goroutine).
func (c *Conn) receive(h header, payload []byte) {
	c.mu.Lock()
	c.peerBufAlloc, c.peerFwdCnt = h.bufAlloc, h.fwdCnt
	var reply *packet
	forget := false
	switch h.op {
	case opResponse:
		if c.state == stateConnecting {
			c.state = stateEstablished
		}
	case opRW:
		switch {
		case c.err != nil || c.closed:
		case c.typ == typeSeqpacket:
			c.partial = append(c.partial, payload...) // copies: the RX buffer is reused
			if h.flags&seqEOM != 0 {
				c.msgs = append(c.msgs, message{c.partial, h.flags&seqEOR != 0})
				c.partial = nil
			}
		default:
			c.rx.Write(payload) // copies
		}
	case opCreditRequest:
		p := c.packetLocked(opCreditUpdate, 0, nil)
		reply = &p
	case opShutdown:
		c.peerNoRecv = c.peerNoRecv || h.flags&shutdownRcv != 0
		c.peerNoSend = c.peerNoSend || h.flags&shutdownSend != 0
		if c.closed && c.peerNoRecv && c.peerNoSend {
			p := c.packetLocked(opRST, 0, nil)
			reply, forget = &p, true
		}
	case opRST:
		if c.err == nil {
			c.err = syscall.ECONNRESET
		}
		forget = true
	}
	c.notify()
	c.mu.Unlock()
	if reply != nil {
		c.g.send(*reply)
	}
	if forget {
		c.g.forget(c.key)
	}
}

// reset ends c with a reset the host sees (a connection its listener
// never accepted).
func (c *Conn) reset() {
	c.mu.Lock()
	c.closed = true
	if c.err == nil {
		c.err = syscall.ECONNRESET
	}
	p := c.packetLocked(opRST, 0, nil)
	c.notify()
	c.mu.Unlock()
	c.g.send(p)
	c.g.forget(c.key)
}

// fail ends c with err (guest shut down).
func (c *Conn) fail(err error) {
	c.mu.Lock()
	if c.err == nil {
		c.err = err
	}
	c.notify()
	c.mu.Unlock()
}

func (c *Conn) waitConnected(ctx context.Context) error {
	for {
		c.mu.Lock()
		st, err, ch := c.state, c.err, c.changed
		c.mu.Unlock()
		switch {
		case err != nil:
			return os.NewSyscallError("connect", err)
		case st == stateEstablished:
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

func (c *Conn) opError(op string, err error) error {
	return &net.OpError{Op: op, Net: network(c.typ), Source: c.local, Addr: c.remote, Err: err}
}

// Read reads what the host sent: on a SOCK_SEQPACKET connection one
// message, of which what does not fit in b is dropped (ReadMsg says so).
// It returns io.EOF once the host has shut down its sending side and
// everything it sent has been read.
func (c *Conn) Read(b []byte) (int, error) {
	n, _, err := c.ReadMsg(b)
	return n, err
}

// ReadMsg is Read that also returns flags as vsockns.Conn.ReadMsg does:
// syscall.MSG_TRUNC for a message longer than b, syscall.MSG_EOR for one
// that ended a record. On a stream the flags are zero.
func (c *Conn) ReadMsg(b []byte) (n, flags int, err error) {
	for {
		c.mu.Lock()
		switch {
		case c.closed:
			c.mu.Unlock()
			return 0, 0, c.opError("read", net.ErrClosed)
		case c.readDL.expired():
			c.mu.Unlock()
			return 0, 0, c.opError("read", os.ErrDeadlineExceeded)
		case len(b) > 0 && (c.rx.Len() > 0 || len(c.msgs) > 0):
			var used int
			if c.typ == typeSeqpacket {
				m := c.msgs[0]
				c.msgs = c.msgs[1:]
				n, used = copy(b, m.data), len(m.data)
				if n < len(m.data) {
					flags |= syscall.MSG_TRUNC
				}
				if m.eor {
					flags |= syscall.MSG_EOR
				}
			} else {
				n, _ = c.rx.Read(b)
				used = n
			}
			c.fwdCnt += uint32(used)
			var update *packet
			// Tell the host about the space it may use again, before it
			// runs out of credit.
			if c.fwdCnt-c.lastFwdSent >= bufAlloc/4 || c.rx.Len() == 0 && len(c.msgs) == 0 && c.fwdCnt != c.lastFwdSent {
				p := c.packetLocked(opCreditUpdate, 0, nil)
				update = &p
			}
			c.mu.Unlock()
			if update != nil {
				c.g.send(*update)
			}
			return n, flags, nil
		case len(b) == 0:
			c.mu.Unlock()
			return 0, 0, nil
		case c.err != nil:
			err := c.err
			c.mu.Unlock()
			return 0, 0, c.opError("read", os.NewSyscallError("read", err))
		case c.peerNoSend:
			c.mu.Unlock()
			return 0, 0, io.EOF
		}
		ch, dl := c.changed, c.readDL.done()
		c.mu.Unlock()
		select {
		case <-ch:
		case <-dl:
		}
	}
}

// Write sends b to the host, as fast as the host's advertised credit
// allows; on a SOCK_SEQPACKET connection as one message, ended with
// MSG_EOR. Concurrent Writes are serialised, as package net's are: the
// bytes of one never interleave with another's.
func (c *Conn) Write(b []byte) (int, error) {
	return c.WriteMsg(b, syscall.MSG_EOR)
}

// WriteMsg is Write with flags, as vsockns.Conn.WriteMsg: 0 or
// syscall.MSG_EOR (which a SOCK_SEQPACKET peer's ReadMsg reports). A
// SOCK_SEQPACKET message larger than the host's receive buffer or the
// guest's own fails with EMSGSIZE, as in the kernel.
func (c *Conn) WriteMsg(b []byte, flags int) (int, error) {
	if flags&^syscall.MSG_EOR != 0 {
		return 0, c.opError("write", os.NewSyscallError("sendmsg", syscall.EINVAL))
	}
	c.writeMu.Lock()
	defer c.writeMu.Unlock()
	var last uint32 // the flags of a message's last packet
	if c.typ == typeSeqpacket {
		c.mu.Lock()
		tooBig := uint64(len(b)) > uint64(min(c.peerBufAlloc, bufAlloc))
		c.mu.Unlock()
		if tooBig {
			return 0, c.opError("write", os.NewSyscallError("sendmsg", syscall.EMSGSIZE))
		}
		last = seqEOM
		if flags&syscall.MSG_EOR != 0 {
			last |= seqEOR
		}
	}
	n := 0
	for {
		c.mu.Lock()
		switch {
		case c.closed:
			c.mu.Unlock()
			return n, c.opError("write", net.ErrClosed)
		case c.writeDL.expired():
			c.mu.Unlock()
			return n, c.opError("write", os.ErrDeadlineExceeded)
		case c.err != nil:
			err := c.err
			c.mu.Unlock()
			return n, c.opError("write", os.NewSyscallError("write", err))
		case c.noSend || c.peerNoRecv:
			c.mu.Unlock()
			return n, c.opError("write", os.NewSyscallError("write", syscall.EPIPE))
		case n == len(b):
			c.mu.Unlock()
			return n, nil
		}
		// In flight: sent, not yet consumed by the host (both counters
		// wrap; the difference does not). The host's buf_alloc may be up
		// to 4 GiB - 1, so the comparison is unsigned.
		if inFlight := c.txCnt - c.peerFwdCnt; inFlight < c.peerBufAlloc {
			credit := c.peerBufAlloc - inFlight
			chunk := int(min(credit, uint32(maxPayload), uint32(len(b)-n)))
			var f uint32
			if n+chunk == len(b) {
				f = last
			}
			p := c.packetLocked(opRW, f, append([]byte(nil), b[n:n+chunk]...))
			c.txCnt += uint32(chunk)
			c.mu.Unlock()
			c.g.send(p)
			n += chunk
			continue
		}
		ch, dl := c.changed, c.writeDL.done()
		c.mu.Unlock()
		select {
		case <-ch:
		case <-dl:
		}
	}
}

// Close closes the connection: the host reads EOF, then the connection is
// reset once the host closes its end too.
func (c *Conn) Close() error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return c.opError("close", net.ErrClosed)
	}
	c.closed = true
	var p packet
	forget := false
	switch {
	case c.err != nil:
		c.notify()
		c.mu.Unlock()
		c.g.forget(c.key)
		return nil
	case c.peerNoRecv && c.peerNoSend:
		p, forget = c.packetLocked(opRST, 0, nil), true
	default:
		p = c.packetLocked(opShutdown, shutdownRcv|shutdownSend, nil)
	}
	c.notify()
	c.mu.Unlock()
	c.g.send(p)
	if forget {
		c.g.forget(c.key)
	}
	return nil
}

// CloseWrite shuts down the sending side: the host reads EOF.
func (c *Conn) CloseWrite() error {
	c.mu.Lock()
	if c.closed || c.err != nil {
		c.mu.Unlock()
		return c.opError("close", net.ErrClosed)
	}
	c.noSend = true
	p := c.packetLocked(opShutdown, shutdownSend, nil)
	c.notify()
	c.mu.Unlock()
	c.g.send(p)
	return nil
}

// LocalAddr returns the guest's address, a *vsock.Addr.
func (c *Conn) LocalAddr() net.Addr { return c.local }

// RemoteAddr returns the host's address, a *vsock.Addr.
func (c *Conn) RemoteAddr() net.Addr { return c.remote }

// SetDeadline implements net.Conn.
func (c *Conn) SetDeadline(t time.Time) error {
	c.readDL.set(t)
	c.writeDL.set(t)
	return nil
}

// SetReadDeadline implements net.Conn.
func (c *Conn) SetReadDeadline(t time.Time) error { c.readDL.set(t); return nil }

// SetWriteDeadline implements net.Conn.
func (c *Conn) SetWriteDeadline(t time.Time) error { c.writeDL.set(t); return nil }
