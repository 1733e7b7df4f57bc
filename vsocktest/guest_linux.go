//go:build linux

package vsocktest

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"syscall"

	"github.com/mdlayher/vsock"
	"github.com/vishvananda/netns"

	"github.com/vsockns/vsockns"
)

const hostCID = 2 // the host as the guest sees it (VMADDR_CID_HOST)

// Config describes a fake guest.
type Config struct {
	// Namespace is where /dev/vhost-vsock is opened: the guest's CID lives
	// in that namespace's CID pool, and only host sockets the namespace's
	// mode allows can reach it. The zero handle and netns.None() mean the
	// calling thread's namespace.
	Namespace netns.NsHandle

	// NetNS, if set, is the namespace instead of Namespace (which must then
	// be zero): an owning reference, such as one from
	// vsockns.CreateUserNamespace for a guest of an unprivileged user.
	NetNS *vsockns.Namespace

	// Device, if set, is the device to drive instead of one opened in a
	// namespace (Namespace and NetNS must then be unset): one a launcher
	// opened and passed down (vsockns.FileVhost). The guest owns it from
	// then on and closes it with the guest.
	Device *vsockns.Vhost

	// CID is the guest's context ID (3 or more).
	CID uint32

	// Seqpacket negotiates VIRTIO_VSOCK_F_SEQPACKET with the device, so
	// that SOCK_SEQPACKET connections reach the guest (ListenSeqpacket,
	// DialSeqpacket). Without it the host's kernel refuses them
	// (ESOCKTNOSUPPORT), as for a guest whose driver lacks the feature.
	Seqpacket bool

	// Unresponsive makes the guest ignore connection requests from the
	// host entirely (no answer, no reset), like a guest that hangs: host
	// connects then end by the kernel's connect timeout or the caller's
	// deadline. The device itself runs.
	Unresponsive bool
}

// A Guest is the guest side of a running vhost-vsock device, driven from
// inside the test process. Host sockets (package vsockns or any other)
// reach it at its CID from the device's namespace; Listen and Dial give it
// connections of its own.
type Guest struct {
	cfg Config
	dev *device

	mu        sync.Mutex
	conns     map[connKey]*Conn
	listeners map[uint32]*Listener
	nextPort  uint32 // last ephemeral port of a guest Dial
	// last port Listen(0) picked
	nextListenPort uint32
	closed         bool

	sendMu   sync.Mutex
	queue    []packet
	txFree   []uint16
	sendWake chan struct{}

	requests     atomic.Int64 // connection requests received from the host
	unresponsive atomic.Bool  // Config.Unresponsive, or SetUnresponsive's
	resets       atomic.Int64 // RST packets sent to the host

	done      chan struct{}
	wg        sync.WaitGroup
	closeOnce sync.Once
	closeErr  error
}

// connKey names a connection from the guest's side.
type connKey struct {
	localPort, peerPort uint32
}

// NewGuest opens /dev/vhost-vsock in cfg.Namespace, sets it up the way a
// VMM and a guest driver together would (owner, features, a memory table
// over memory the package maps itself, the RX and TX virtqueues with their
// eventfds, the guest CID) and starts it. Close it when done.
func NewGuest(cfg Config) (*Guest, error) {
	if cfg.CID <= hostCID || cfg.CID == ^uint32(0) {
		return nil, fmt.Errorf("vsocktest: guest CID %d: want 3 or more", cfg.CID)
	}
	var v *vsockns.Vhost
	var err error
	handle := cfg.Namespace != 0 && cfg.Namespace != netns.None()
	switch {
	case cfg.Device != nil && (handle || cfg.NetNS != nil), cfg.NetNS != nil && handle:
		return nil, errors.New("vsocktest: more than one of Namespace, NetNS and Device is set; set one")
	case cfg.Device != nil:
		v = cfg.Device
	case cfg.NetNS != nil:
		v, err = cfg.NetNS.OpenVhost()
	default:
		v, err = vsockns.OpenVhost(cfg.Namespace)
	}
	if err != nil {
		return nil, err
	}
	dev, err := setupDevice(v, cfg.CID, cfg.Seqpacket)
	if err != nil {
		return nil, err
	}
	g := &Guest{
		cfg:       cfg,
		dev:       dev,
		conns:     map[connKey]*Conn{},
		listeners: map[uint32]*Listener{},
		nextPort:  49152,
		sendWake:  make(chan struct{}, 1),
		done:      make(chan struct{}),
	}
	g.unresponsive.Store(cfg.Unresponsive)
	for id := uint16(0); id < queueSize; id++ {
		g.txFree = append(g.txFree, id)
	}
	g.wg.Add(3)
	go g.rxLoop()
	go g.txLoop()
	go g.sendLoop()
	if err := dev.setRunning(true); err != nil {
		g.Close()
		return nil, err
	}
	return g, nil
}

// CID returns the guest's context ID.
func (g *Guest) CID() uint32 { return g.cfg.CID }

// Requests returns how many connection requests the guest has received
// from the host, answered or not: a test can wait for a host's connects to
// be in flight (with Unresponsive, they stay so).
func (g *Guest) Requests() int { return int(g.requests.Load()) }

// SetUnresponsive changes, from the next connection request on, whether
// the guest ignores them (see Config.Unresponsive): a guest that hangs, or
// one that recovers.
func (g *Guest) SetUnresponsive(unresponsive bool) { g.unresponsive.Store(unresponsive) }

// Resets returns how many resets (RST packets) the guest has sent to the
// host: for refused connection requests, connections its listeners
// dropped, and closes.
func (g *Guest) Resets() int { return int(g.resets.Load()) }

// Close stops the device, resets every connection and listener, and
// releases the device, its eventfds and memory. It waits for the guest's
// goroutines to end.
func (g *Guest) Close() error {
	g.closeOnce.Do(func() {
		g.closeErr = g.dev.setRunning(false)
		g.mu.Lock()
		g.closed = true
		conns, listeners := g.conns, g.listeners
		g.conns, g.listeners = map[connKey]*Conn{}, map[uint32]*Listener{}
		g.mu.Unlock()
		for _, c := range conns {
			c.fail(syscall.ECONNRESET)
		}
		for _, l := range listeners {
			l.shut()
		}
		close(g.done)
		// Closing the device stops its workers; closing the call eventfds
		// ends the loops' reads. Only then is the memory unmapped.
		g.dev.vhost.Close()
		g.dev.rx.call.Close()
		g.dev.tx.call.Close()
		g.wg.Wait()
		g.dev.vhost = nil
		g.dev.release()
	})
	return g.closeErr
}

// rxLoop takes the packets the device put into RX buffers and gives the
// buffers back at once (the device stops reading TX while its replies
// cannot be delivered).
func (g *Guest) rxLoop() {
	defer g.wg.Done()
	var ev [8]byte
	r := &g.dev.rx
	for {
		if _, err := r.call.Read(ev[:]); err != nil && !errors.Is(err, syscall.EAGAIN) {
			return
		}
		for {
			id, n, ok := r.nextUsed()
			if !ok {
				break
			}
			if h, payload, ok := decodePacket(r.buf(id), n); ok {
				g.handle(h, payload)
			}
			r.publish(id)
		}
		r.commit()
	}
}

// txLoop returns TX buffers the device has consumed to the free list.
func (g *Guest) txLoop() {
	defer g.wg.Done()
	var ev [8]byte
	r := &g.dev.tx
	for {
		if _, err := r.call.Read(ev[:]); err != nil && !errors.Is(err, syscall.EAGAIN) {
			return
		}
		freed := false
		for {
			id, _, ok := r.nextUsed()
			if !ok {
				break
			}
			g.sendMu.Lock()
			g.txFree = append(g.txFree, id)
			g.sendMu.Unlock()
			freed = true
		}
		if freed {
			g.wake()
		}
	}
}

// sendLoop moves queued packets into free TX buffers. Packets are queued
// without bound (what a connection queues is bounded by its peer's
// credit), so the RX path never waits for TX space.
func (g *Guest) sendLoop() {
	defer g.wg.Done()
	r := &g.dev.tx
	for {
		n := 0
		g.sendMu.Lock()
		for len(g.queue) > 0 && len(g.txFree) > 0 {
			p := g.queue[0]
			g.queue[0] = packet{}
			g.queue = g.queue[1:]
			id := g.txFree[len(g.txFree)-1]
			g.txFree = g.txFree[:len(g.txFree)-1]
			buf := r.buf(id)
			p.h.len = uint32(len(p.payload))
			p.h.put(buf)
			copy(buf[hdrSize:], p.payload)
			r.setDesc(id, uint64(txBufBase)+uint64(id)*bufSize, uint32(hdrSize+len(p.payload)), false)
			r.publish(id)
			n++
		}
		g.sendMu.Unlock()
		if n > 0 {
			r.commit()
		}
		select {
		case <-g.sendWake:
		case <-g.done:
			return
		}
	}
}

func (g *Guest) wake() {
	select {
	case g.sendWake <- struct{}{}:
	default:
	}
}

// send queues a packet for the host.
func (g *Guest) send(p packet) {
	p.h.srcCID, p.h.dstCID = uint64(g.cfg.CID), hostCID
	if p.h.typ == 0 {
		p.h.typ = typeStream
	}
	if p.h.op == opRST {
		g.resets.Add(1)
	}
	g.sendMu.Lock()
	g.queue = append(g.queue, p)
	g.sendMu.Unlock()
	g.wake()
}

// reset answers a packet with RST.
func (g *Guest) reset(h header) {
	g.send(packet{h: header{srcPort: h.dstPort, dstPort: h.srcPort, op: opRST, typ: h.typ}})
}

// handle processes one packet from the host (on the RX goroutine).
func (g *Guest) handle(h header, payload []byte) {
	if h.typ != typeStream && (h.typ != typeSeqpacket || !g.cfg.Seqpacket) || h.dstCID != uint64(g.cfg.CID) {
		return
	}
	key := connKey{localPort: h.dstPort, peerPort: h.srcPort}
	g.mu.Lock()
	c := g.conns[key]
	if h.op == opRequest {
		g.requests.Add(1)
		if g.unresponsive.Load() {
			g.mu.Unlock()
			return
		}
		l := g.listeners[h.dstPort]
		if c != nil || l == nil || l.typ != h.typ || g.closed {
			g.mu.Unlock()
			g.reset(h)
			return
		}
		if len(l.queue) == cap(l.queue) { // backlog full
			g.mu.Unlock()
			g.reset(h)
			return
		}
		c = newConn(g, key, stateEstablished, h.typ)
		c.peerBufAlloc, c.peerFwdCnt = h.bufAlloc, h.fwdCnt
		g.conns[key] = c
		// RESPONSE is queued before Accept can return c: anything the
		// accepting code writes must reach the host after it (a host
		// socket still connecting takes any other packet as a protocol
		// error, EPROTO).
		g.send(c.control(opResponse, 0))
		l.queue <- c // never blocks: only this goroutine adds, under g.mu
		g.mu.Unlock()
		return
	}
	g.mu.Unlock()
	if c == nil {
		if h.op != opRST {
			g.reset(h)
		}
		return
	}
	c.receive(h, payload)
}

// forget removes a connection from the table.
func (g *Guest) forget(key connKey) {
	g.mu.Lock()
	delete(g.conns, key)
	g.mu.Unlock()
}

// Listen makes the guest accept host connections to port; port 0 picks a
// free one (Addr tells which), as vsockns.Listen does.
func (g *Guest) Listen(port uint32) (*Listener, error) { return g.listen(port, typeStream) }

// ListenSeqpacket is Listen for SOCK_SEQPACKET connections (Config.Seqpacket
// must be set). Streams and SOCK_SEQPACKET share the port space, as in the
// kernel.
func (g *Guest) ListenSeqpacket(port uint32) (*Listener, error) {
	if !g.cfg.Seqpacket {
		return nil, &net.OpError{Op: "listen", Net: "vsockpacket", Addr: &vsock.Addr{ContextID: g.cfg.CID, Port: port}, Err: errNoSeqpacket}
	}
	return g.listen(port, typeSeqpacket)
}

// errNoSeqpacket is the error of SOCK_SEQPACKET calls on a guest without
// Config.Seqpacket.
var errNoSeqpacket = fmt.Errorf("vsocktest: %w: the guest was made without Config.Seqpacket", syscall.ESOCKTNOSUPPORT)

func (g *Guest) listen(port uint32, typ uint16) (*Listener, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if port == 0 {
		port = g.freePortLocked()
	}
	addr := &vsock.Addr{ContextID: g.cfg.CID, Port: port}
	if g.closed {
		return nil, &net.OpError{Op: "listen", Net: network(typ), Addr: addr, Err: net.ErrClosed}
	}
	if _, taken := g.listeners[port]; taken {
		return nil, &net.OpError{Op: "listen", Net: network(typ), Addr: addr, Err: os.NewSyscallError("bind", syscall.EADDRINUSE)}
	}
	l := &Listener{g: g, typ: typ, addr: addr, queue: make(chan *Conn, 64), done: make(chan struct{})}
	g.listeners[port] = l
	return l, nil
}

// freePortLocked returns a port no listener of g has, from the dynamic
// range the kernel also uses for its own picks; g.mu is held.
func (g *Guest) freePortLocked() uint32 {
	for {
		g.nextListenPort++
		if g.nextListenPort < 1024 || g.nextListenPort == ^uint32(0) {
			g.nextListenPort = 1024
		}
		if _, taken := g.listeners[g.nextListenPort]; !taken {
			return g.nextListenPort
		}
	}
}

// Dial connects from the guest to a host listener on port (CID 2), in the
// device's namespace. A refused connection (no listener, or a listener the
// namespaces' modes keep apart) fails with ECONNRESET. A nil ctx is an
// error, as in package vsockns.
func (g *Guest) Dial(ctx context.Context, port uint32) (*Conn, error) {
	return g.dial(ctx, port, typeStream)
}

// DialSeqpacket is Dial for a SOCK_SEQPACKET connection (Config.Seqpacket
// must be set).
func (g *Guest) DialSeqpacket(ctx context.Context, port uint32) (*Conn, error) {
	if !g.cfg.Seqpacket {
		return nil, &net.OpError{Op: "dial", Net: "vsockpacket", Addr: &vsock.Addr{ContextID: hostCID, Port: port}, Err: errNoSeqpacket}
	}
	return g.dial(ctx, port, typeSeqpacket)
}

func (g *Guest) dial(ctx context.Context, port uint32, typ uint16) (*Conn, error) {
	remote := &vsock.Addr{ContextID: hostCID, Port: port}
	opErr := func(err error) error { return &net.OpError{Op: "dial", Net: network(typ), Addr: remote, Err: err} }
	if ctx == nil {
		return nil, opErr(errors.New("nil context"))
	}
	g.mu.Lock()
	if g.closed {
		g.mu.Unlock()
		return nil, opErr(net.ErrClosed)
	}
	var key connKey
	for {
		g.nextPort++
		if g.nextPort == 0 || g.nextPort == ^uint32(0) {
			g.nextPort = 49152
		}
		key = connKey{localPort: g.nextPort, peerPort: port}
		if g.conns[key] == nil {
			break
		}
	}
	c := newConn(g, key, stateConnecting, typ)
	g.conns[key] = c
	g.mu.Unlock()

	g.send(c.control(opRequest, 0))
	if err := c.waitConnected(ctx); err != nil {
		g.forget(key)
		g.send(c.control(opRST, 0))
		return nil, opErr(err)
	}
	return c, nil
}

// A Listener accepts host connections on one guest port.
type Listener struct {
	g         *Guest
	typ       uint16
	addr      *vsock.Addr
	queue     chan *Conn
	done      chan struct{}
	closeOnce sync.Once
}

var _ net.Listener = (*Listener)(nil)

// Accept waits for the next host connection; the net.Conn is a *Conn.
func (l *Listener) Accept() (net.Conn, error) {
	select {
	case c := <-l.queue:
		return c, nil
	case <-l.done:
		return nil, &net.OpError{Op: "accept", Net: network(l.typ), Addr: l.addr, Err: net.ErrClosed}
	}
}

// Addr returns the guest address listened on, a *vsock.Addr.
func (l *Listener) Addr() net.Addr { return l.addr }

// Close stops listening; connections not yet accepted are reset (the host
// reads ECONNRESET), as the kernel does.
func (l *Listener) Close() error {
	l.g.mu.Lock()
	if l.g.listeners[l.addr.Port] == l {
		delete(l.g.listeners, l.addr.Port)
	}
	l.g.mu.Unlock()
	l.shut()
	return nil
}

func (l *Listener) shut() {
	l.closeOnce.Do(func() {
		close(l.done)
		for {
			select {
			case c := <-l.queue:
				c.reset()
			default:
				return
			}
		}
	})
}
