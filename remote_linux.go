//go:build linux

package vsockns

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"

	"golang.org/x/sys/unix"
)

// The remote protocol: how a process reaches a namespace it cannot enter.
// A server in (or able to enter) the namespace performs the calls that must
// happen inside it, and hands the results back as descriptors. It is what
// the user-namespace helper serves to the process that started it, and what
// [Namespace.Serve] offers other processes on a unix socket.
//
// One SOCK_SEQPACKET message per request and per reply, each a JSON
// object; a reply's descriptors, if any, ride in the same message
// (SCM_RIGHTS): one, or for a batch of sockets up to maxBatch. The server speaks first: a hello (id 0) carrying the
// namespace's own descriptor, or the error that kept it from serving.
// Requests are served concurrently; a cancel request ends the wait of the
// one it names. Servers and clients are one program's binary, or two of
// this package's builds speaking the same protocolVersion.

const protocolVersion = 2 // 2: batches of sockets (opSockets)

// errProtocol is what every error of a malformed message wraps.
var errProtocol = errors.New("vsockns: protocol")

// maxMessage bounds one message: requests and replies are a few hundred
// bytes.
const maxMessage = 16 << 10

// maxBatch is the most sockets one opSockets request asks for, and so the
// most descriptors a reply carries (the kernel's own limit per message,
// SCM_MAX_FD, is 253).
const maxBatch = 64

type request struct {
	ID    uint64 `json:"id"`
	Op    string `json:"op"` // opSocket, opSockets, opVhost, opRead, opWrite, opDiag, opCancel
	Type  int    `json:"type,omitempty"`
	Count int    `json:"count,omitempty"` // opSockets: 1 to maxBatch
	Name  string `json:"name,omitempty"`
	Value string `json:"value,omitempty"`
}

const (
	opSocket  = "socket"
	opSockets = "sockets" // up to Count sockets of Type, in one reply
	opVhost   = "vhost"
	opRead    = "read"
	opWrite   = "write"
	opDiag    = "diag" // a NETLINK_SOCK_DIAG socket
	opCancel  = "cancel"
)

type reply struct {
	ID      uint64     `json:"id"`
	Version int        `json:"version,omitempty"` // hello only
	Value   string     `json:"value,omitempty"`
	Err     *wireError `json:"err,omitempty"`
}

// wireError carries an error across the protocol with what errors.Is and
// errors.As need on the other side: the errno, the system call or path
// operation it came from, and the package's sentinels it matched.
type wireError struct {
	Text      string   `json:"text"`
	Errno     int      `json:"errno,omitempty"`
	Syscall   string   `json:"syscall,omitempty"`
	PathOp    string   `json:"path_op,omitempty"`
	Path      string   `json:"path,omitempty"`
	Sentinels []string `json:"is,omitempty"`
}

// wireSentinels are the errors a wireError names by key.
var wireSentinels = map[string]error{
	"not-supported":      ErrNotSupported,
	"mode-not-permitted": ErrModeNotPermitted,
	"child-mode-locked":  ErrChildModeLocked,
	"cid-in-use":         ErrCIDInUse,
	"userns-disabled":    ErrUserNamespacesDisabled,
	"canceled":           context.Canceled,
	"deadline":           context.DeadlineExceeded,
}

func encodeError(err error) *wireError {
	if err == nil {
		return nil
	}
	w := &wireError{Text: err.Error()}
	var errno unix.Errno
	if errors.As(err, &errno) {
		w.Errno = int(errno)
	}
	var se *os.SyscallError
	var pe *os.PathError
	if errors.As(err, &se) {
		w.Syscall = se.Syscall
	} else if errors.As(err, &pe) {
		w.PathOp, w.Path = pe.Op, pe.Path
	}
	for key, s := range wireSentinels {
		if errors.Is(err, s) {
			w.Sentinels = append(w.Sentinels, key)
		}
	}
	return w
}

// remoteError is a decoded wireError: its text, and the errors it wraps.
type remoteError struct {
	text string
	errs []error
}

func (e *remoteError) Error() string   { return e.text }
func (e *remoteError) Unwrap() []error { return e.errs }

func (w *wireError) decode() error {
	e := &remoteError{text: w.Text}
	if w.Errno != 0 {
		var inner error = unix.Errno(w.Errno)
		switch {
		case w.Syscall != "":
			inner = os.NewSyscallError(w.Syscall, inner)
		case w.PathOp != "":
			inner = &os.PathError{Op: w.PathOp, Path: w.Path, Err: inner}
		}
		e.errs = append(e.errs, inner)
	}
	for _, key := range w.Sentinels {
		if s, ok := wireSentinels[key]; ok {
			e.errs = append(e.errs, s)
		}
	}
	return e
}

// sendMsg sends v as one message, with fds attached.
func sendMsg(c *net.UnixConn, v any, fds ...int) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	var oob []byte
	if len(fds) > 0 {
		oob = unix.UnixRights(fds...)
	}
	_, _, err = c.WriteMsgUnix(b, oob, nil)
	return err
}

// errLost is a reply's error when the kernel could not give this process
// the descriptors the reply carried (recvmsg(2) set MSG_CTRUNC with room
// left for them): the process is out of descriptors.
var errLost = &explained{unix.EMFILE, "the reply's descriptors could not be received (MSG_CTRUNC): the process has no descriptor free", nil}

// recvMsg reads one message into v and returns the descriptors it
// carried. A message that is too long, carries more than maxFDs
// descriptors or is not JSON is a protocol error: the descriptors are
// closed and the connection is not to be used again. lost reports a
// message whose descriptors the kernel could not install (this process
// is out of descriptors): the message itself is good, and fds holds those
// that did arrive, if any.
func recvMsg(c *net.UnixConn, v any, maxFDs int) (fds []int, lost bool, err error) {
	buf := make([]byte, maxMessage)
	// Room for maxFDs and at least one more, so that a message with too
	// many is seen as such (MSG_CTRUNC with the room filled) and not as
	// lost descriptors (MSG_CTRUNC with room left).
	oob := make([]byte, unix.CmsgSpace(4*(maxFDs+1)))
	n, oobn, flags, _, err := c.ReadMsgUnix(buf, oob)
	if errors.Is(err, io.EOF) {
		// The kernel can report the end of an AF_UNIX SOCK_SEQPACKET
		// connection while the peer's last message is still queued: a
		// non-blocking recvmsg(2) that finds the queue empty and then,
		// the peer having sent and closed meanwhile, the connection shut
		// down, returns 0 (seen on 6.1, 7.2 and 7.3 under QEMU: a second
		// recvmsg returns the message). Once the end is signalled,
		// everything the peer sent is queued, so a second end is the end.
		n, oobn, flags, _, err = c.ReadMsgUnix(buf, oob)
	}
	if err != nil {
		return nil, false, err
	}
	if oobn > 0 {
		msgs, perr := unix.ParseSocketControlMessage(oob[:oobn])
		if perr != nil {
			return nil, false, fmt.Errorf("%w: control message: %w", errProtocol, perr)
		}
		for _, m := range msgs {
			if r, perr := unix.ParseUnixRights(&m); perr == nil {
				fds = append(fds, r...)
			}
		}
	}
	fail := func(format string, args ...any) ([]int, bool, error) {
		closeFds(fds)
		return nil, false, fmt.Errorf("%w: "+format, append([]any{errProtocol}, args...)...)
	}
	room := (len(oob) - unix.CmsgSpace(0)) / 4
	switch {
	case n == 0 && oobn == 0 && flags&unix.MSG_CTRUNC == 0:
		return nil, false, io.EOF // the peer closed its end
	case flags&unix.MSG_TRUNC != 0:
		return fail("message truncated")
	case flags&unix.MSG_CTRUNC != 0 && len(fds) >= room, len(fds) > maxFDs:
		return fail("more than %d descriptors in one message", maxFDs)
	}
	lost = flags&unix.MSG_CTRUNC != 0
	if err := json.Unmarshal(buf[:n], v); err != nil {
		return fail("%w", err)
	}
	return fds, lost, nil
}

// A remote is the client side of the protocol: a backend whose calls are
// requests to a server.
type remote struct {
	conn *net.UnixConn

	mu      sync.Mutex
	nextID  uint64
	pending map[uint64]chan result
	err     error         // why the connection ended, once it has
	done    chan struct{} // closed when the connection has ended

	requests atomic.Int64 // requests sent, for tests
}

type result struct {
	r    reply
	fds  []int
	lost bool // the kernel could not install (all of) the reply's descriptors
}

// release closes what the result carries.
func (res result) release() { closeFds(res.fds) }

// newRemote starts the client on conn and waits for the server's hello,
// which carries the namespace's descriptor; it returns the remote and that
// descriptor. On error conn is closed.
func newRemote(ctx context.Context, conn *net.UnixConn) (*remote, int, error) {
	r := &remote{conn: conn, pending: map[uint64]chan result{}, done: make(chan struct{})}
	hello := make(chan result, 1)
	r.pending[0] = hello
	go r.read()
	if testHookBeforeWait != nil {
		testHookBeforeWait(r)
	}
	select {
	case res := <-hello:
		switch {
		case res.r.Err != nil:
			res.release() // a refusal carries nothing to keep
			r.close()
			return nil, -1, res.r.Err.decode()
		case res.r.Version == protocolVersion && res.lost && len(res.fds) == 0:
			r.close()
			return nil, -1, errLost
		case res.r.Version != protocolVersion || len(res.fds) != 1:
			res.release()
			r.close()
			return nil, -1, fmt.Errorf("%w: hello of version %d (want %d) with %d descriptors", errProtocol, res.r.Version, protocolVersion, len(res.fds))
		}
		return r, res.fds[0], nil
	case <-r.done:
		r.conn.Close()
		select {
		case res := <-hello: // a refusal sent just before the server closed
			res.release()
			if res.r.Err != nil {
				return nil, -1, res.r.Err.decode()
			}
		default:
		}
		return nil, -1, r.err
	case <-ctx.Done():
		r.close()
		select {
		case res := <-hello:
			res.release()
		default:
		}
		return nil, -1, ctx.Err()
	}
}

// testHookBeforeWait, if set, runs before a caller waits for its reply (a
// test holds it there until the connection has ended).
var testHookBeforeWait func(*remote)

// read delivers replies to their callers until the connection ends. A
// reply whose descriptors were lost (the process is out of them) is still
// delivered: its one call fails, the connection goes on.
func (r *remote) read() {
	var err error
	for {
		var rep reply
		fds, lost, rerr := recvMsg(r.conn, &rep, maxBatch)
		if rerr != nil {
			err = rerr
			break
		}
		// Delivered under the lock (the channel has room for the one
		// reply), so that a caller that gives up knows, once it holds the
		// lock, whether its reply is in its channel.
		r.mu.Lock()
		ch, ok := r.pending[rep.ID]
		delete(r.pending, rep.ID)
		if ok {
			ch <- result{rep, fds, lost}
		}
		r.mu.Unlock()
		if !ok {
			closeFds(fds) // a reply nobody waits for any more (its caller gave up)
		}
	}
	why := "the namespace's server has exited"
	if !errors.Is(err, io.EOF) && !errors.Is(err, net.ErrClosed) {
		why = err.Error()
	}
	r.mu.Lock()
	r.err = &explained{net.ErrClosed, why, nil}
	r.pending = nil
	r.mu.Unlock()
	close(r.done)
}

// call sends req and waits for its reply, or for ctx. It returns the
// reply's descriptors, at least one unless the reply carries none.
func (r *remote) call(ctx context.Context, req request) (reply, []int, error) {
	if err := ctx.Err(); err != nil {
		return reply{}, nil, err
	}
	ch := make(chan result, 1)
	r.mu.Lock()
	if r.pending == nil {
		r.mu.Unlock()
		return reply{}, nil, r.err
	}
	r.nextID++
	req.ID = r.nextID
	r.pending[req.ID] = ch
	r.mu.Unlock()
	r.requests.Add(1)
	if err := sendMsg(r.conn, req); err != nil {
		// The connection is broken (the server has gone, typically before
		// read has seen it): end it, and report it ended.
		r.forget(req.ID)
		r.conn.Close()
		<-r.done
		return reply{}, nil, r.err
	}
	if testHookBeforeWait != nil {
		testHookBeforeWait(r)
	}
	select {
	case res := <-ch:
		return res.result()
	case <-r.done:
		// A reply delivered before the connection ended is the answer
		// (both are ready, and select would pick either).
		select {
		case res := <-ch:
			return res.result()
		default:
		}
		return reply{}, nil, r.err
	case <-ctx.Done():
		if r.forget(req.ID) {
			sendMsg(r.conn, request{ID: req.ID, Op: opCancel}) // best effort: the server stops waiting too
		}
		// A reply delivered meanwhile: release what it carries.
		select {
		case res := <-ch:
			res.release()
		default:
		}
		return reply{}, nil, ctx.Err()
	}
}

// result is a call's return for its reply.
func (res result) result() (reply, []int, error) {
	switch {
	case res.r.Err != nil:
		res.release()
		return reply{}, nil, res.r.Err.decode()
	case res.lost && len(res.fds) == 0:
		return reply{}, nil, errLost
	}
	return res.r, res.fds, nil
}

// forget drops a pending call, reporting whether it was still waiting
// (false: its reply is in its channel, or the connection has ended).
func (r *remote) forget(id uint64) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	_, ok := r.pending[id]
	delete(r.pending, id)
	return ok
}

// close ends the connection; read then fails every pending call.
func (r *remote) close() {
	r.conn.Close()
	<-r.done
}

// one is the descriptor of a call that must return exactly one.
func one(what string, fds []int, err error) (int, error) {
	if err != nil {
		return -1, err
	}
	if len(fds) != 1 {
		closeFds(fds)
		return -1, fmt.Errorf("%w: a %s reply with %d descriptors", errProtocol, what, len(fds))
	}
	return fds[0], nil
}

// none is the error of a call whose reply carries no descriptor.
func none(what string, fds []int, err error) error {
	if err == nil && len(fds) > 0 {
		err = fmt.Errorf("%w: a %s reply with %d descriptors", errProtocol, what, len(fds))
	}
	closeFds(fds)
	return err
}

func (r *remote) socket(ctx context.Context, typ int) (int, error) {
	_, fds, err := r.call(ctx, request{Op: opSocket, Type: typ})
	return one("socket", fds, err)
}

// sockets makes up to k sockets of typ, in requests of up to maxBatch; it
// returns those made, ending short at the first request answered short or
// refused (err says why when it made none).
func (r *remote) sockets(ctx context.Context, typ, k int) ([]int, error) {
	var made []int
	for len(made) < k {
		want := min(k-len(made), maxBatch)
		_, fds, err := r.call(ctx, request{Op: opSockets, Type: typ, Count: want})
		if err == nil && (len(fds) == 0 || len(fds) > want) {
			closeFds(fds)
			fds, err = nil, fmt.Errorf("%w: %d descriptors for a batch of %d", errProtocol, len(fds), want)
		}
		made = append(made, fds...)
		if err != nil {
			return made, err
		}
		if len(fds) < want {
			break
		}
	}
	return made, nil
}

func (r *remote) openVhost(ctx context.Context) (int, error) {
	_, fds, err := r.call(ctx, request{Op: opVhost})
	return one("vhost", fds, err)
}

func (r *remote) diagSocket(ctx context.Context) (int, error) {
	_, fds, err := r.call(ctx, request{Op: opDiag})
	return one("diag", fds, err)
}

func (r *remote) readSysctl(ctx context.Context, name string) (string, error) {
	rep, fds, err := r.call(ctx, request{Op: opRead, Name: name})
	return rep.Value, none("read", fds, err)
}

func (r *remote) writeSysctl(ctx context.Context, name, value string) error {
	_, fds, err := r.call(ctx, request{Op: opWrite, Name: name, Value: value})
	return none("write", fds, err)
}

// serve answers requests on conn with b until the client closes its end
// (or conn fails), after sending the hello with nsfd. Requests run
// concurrently; serve returns once all of them have finished.
func serve(conn *net.UnixConn, b backend, nsfd int) error {
	if err := sendMsg(conn, reply{ID: 0, Version: protocolVersion}, nsfd); err != nil {
		return err
	}
	var (
		wg      sync.WaitGroup
		mu      sync.Mutex
		cancels = map[uint64]context.CancelFunc{}
	)
	defer func() {
		mu.Lock()
		for _, cancel := range cancels {
			cancel()
		}
		mu.Unlock()
		wg.Wait()
	}()
	for {
		var req request
		// Requests carry no descriptor: one attached is closed, and one
		// the kernel could not install here is as good as closed.
		fds, _, err := recvMsg(conn, &req, 1)
		closeFds(fds)
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		if req.Op == opCancel {
			mu.Lock()
			if cancel, ok := cancels[req.ID]; ok {
				cancel()
			}
			mu.Unlock()
			continue
		}
		ctx, cancel := context.WithCancel(context.Background())
		mu.Lock()
		_, busy := cancels[req.ID]
		if !busy {
			cancels[req.ID] = cancel
		}
		mu.Unlock()
		if busy {
			// Taking it would lose the first one's cancel, which the end
			// of the connection then could not stop: serve waited for it
			// forever.
			cancel()
			sendMsg(conn, reply{ID: req.ID, Err: encodeError(fmt.Errorf("request %d: %w: a request of that id is in progress", req.ID, unix.EINVAL))})
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			rep, fds := perform(ctx, b, req)
			mu.Lock()
			delete(cancels, req.ID)
			mu.Unlock()
			cancel()
			sendMsg(conn, rep, fds...) // a client that is gone is seen by the next read
			closeFds(fds)
		}()
	}
}

// perform runs one request with b. Only the operations and names the
// package itself asks for are served: sockets of the vsock types (one, or
// a batch of up to maxBatch), the vhost device, a sock_diag netlink
// socket (which lists the namespace's sockets) and sysctls under
// /proc/sys/net/vsock.
func perform(ctx context.Context, b backend, req request) (reply, []int) {
	rep := reply{ID: req.ID}
	var fds []int
	fd := -1
	var err error
	switch req.Op {
	case opSocket, opSockets:
		switch {
		case req.Type != unix.SOCK_STREAM && req.Type != unix.SOCK_SEQPACKET && req.Type != unix.SOCK_DGRAM:
			err = fmt.Errorf("socket type %d: %w", req.Type, unix.EINVAL)
		case req.Op == opSocket:
			fd, err = b.socket(ctx, req.Type)
		case req.Count < 1 || req.Count > maxBatch:
			err = fmt.Errorf("a batch of %d sockets (1 to %d): %w", req.Count, maxBatch, unix.EINVAL)
		default:
			// A batch made short is answered with what was made; only
			// a batch of none is refused.
			if fds, err = b.sockets(ctx, req.Type, req.Count); len(fds) > 0 {
				err = nil
			}
		}
	case opVhost:
		fd, err = b.openVhost(ctx)
	case opDiag:
		fd, err = b.diagSocket(ctx)
	case opRead, opWrite:
		if !sysctlName(req.Name) {
			err = fmt.Errorf("sysctl name %q: %w", req.Name, unix.EINVAL)
		} else if req.Op == opRead {
			rep.Value, err = b.readSysctl(ctx, req.Name)
		} else {
			err = b.writeSysctl(ctx, req.Name, req.Value)
		}
	default:
		err = fmt.Errorf("unknown request %q: %w", req.Op, unix.EINVAL)
	}
	if fd >= 0 {
		fds = append(fds, fd)
	}
	if err != nil {
		closeFds(fds)
		return reply{ID: req.ID, Err: encodeError(err)}, nil
	}
	return rep, fds
}

// sysctlName accepts the names of the vsock sysctls: lower-case words
// joined by '_', nothing that could leave /proc/sys/net/vsock.
func sysctlName(s string) bool {
	if s == "" || len(s) > 64 {
		return false
	}
	for _, c := range s {
		if (c < 'a' || c > 'z') && (c < '0' || c > '9') && c != '_' {
			return false
		}
	}
	return true
}

func (n *Namespace) serve(ctx context.Context, l *net.UnixListener) error {
	if ctx == nil {
		return errors.New("vsockns: serve: nil context")
	}
	if l == nil {
		return errors.New("vsockns: serve: nil listener")
	}
	if typ, err := socketType(l); err != nil {
		return fmt.Errorf("vsockns: serve %s: %w", n, err)
	} else if typ != unix.SOCK_SEQPACKET {
		return fmt.Errorf("vsockns: serve %s: %w", n, &explained{unix.EPROTOTYPE, `the listener must be of network "unixpacket"`, nil})
	}
	n.mu.RLock()
	open := n.open
	n.mu.RUnlock()
	if !open {
		return ErrNamespaceClosed
	}
	stop := context.AfterFunc(ctx, func() { l.Close() })
	defer stop()
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		conns = map[*net.UnixConn]bool{}
	)
	defer func() {
		mu.Lock()
		for c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	}()
	for {
		c, err := l.AcceptUnix()
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return fmt.Errorf("vsockns: serve %s: %w", n, err)
		}
		mu.Lock()
		conns[c] = true
		mu.Unlock()
		wg.Go(func() {
			defer func() {
				mu.Lock()
				delete(conns, c)
				mu.Unlock()
				c.Close()
			}()
			if err := samePeer(c); err != nil {
				sendMsg(c, reply{Version: protocolVersion, Err: encodeError(err)})
				return
			}
			h, err := n.Handle()
			if err != nil {
				sendMsg(c, reply{Version: protocolVersion, Err: encodeError(err)})
				return
			}
			defer h.Close()
			serve(c, n.backend(), int(h))
		})
	}
}

// samePeer admits a client of the server's own user only: a namespace
// served is its user's, as the processes in it are.
func samePeer(c *net.UnixConn) error {
	uid, err := peerUID(c)
	if err != nil {
		return err
	}
	if int(uid) != os.Geteuid() {
		return &explained{unix.EACCES, fmt.Sprintf("the namespace is served to uid %d only, not to uid %d", os.Geteuid(), uid), nil}
	}
	return nil
}

// peerUID is the user of c's peer (SO_PEERCRED: who connected, or who
// listened).
func peerUID(c *net.UnixConn) (uint32, error) {
	rc, err := c.SyscallConn()
	if err != nil {
		return 0, err
	}
	var cred *unix.Ucred
	var cerr error
	if err := rc.Control(func(fd uintptr) {
		cred, cerr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	}); err != nil {
		return 0, err
	}
	if cerr != nil {
		return 0, os.NewSyscallError("getsockopt", cerr)
	}
	return cred.Uid, nil
}

// socketType is the SO_TYPE of a listener's socket.
func socketType(l *net.UnixListener) (int, error) {
	rc, err := l.SyscallConn()
	if err != nil {
		return 0, err
	}
	var typ int
	var terr error
	if err := rc.Control(func(fd uintptr) {
		typ, terr = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_TYPE)
	}); err != nil {
		return 0, err
	}
	return typ, os.NewSyscallError("getsockopt", terr)
}

func dialNamespace(ctx context.Context, path string) (*Namespace, error) {
	what := "network namespace served at " + path
	if ctx == nil {
		return nil, fmt.Errorf("vsockns: %s: nil context", what)
	}
	var d net.Dialer
	c, err := d.DialContext(ctx, "unixpacket", path)
	if err != nil {
		return nil, fmt.Errorf("vsockns: %s: %w", what, err)
	}
	// The server must be of this user too (it serves no other): a socket
	// another user put at path would hand over a namespace of theirs, in
	// which this process's sockets would then be made.
	if uid, err := peerUID(c.(*net.UnixConn)); err != nil || int(uid) != os.Geteuid() {
		c.Close()
		if err == nil {
			err = &explained{unix.EACCES, fmt.Sprintf("the server runs as uid %d, not as this process's uid %d", uid, os.Geteuid()), nil}
		}
		return nil, fmt.Errorf("vsockns: %s: %w", what, err)
	}
	r, nsfd, err := newRemote(ctx, c.(*net.UnixConn))
	if err != nil {
		return nil, fmt.Errorf("vsockns: %s: %w", what, err)
	}
	n, err := adoptNamespace(nsfd, what)
	if err != nil {
		r.close()
		return nil, err
	}
	n.remote, n.stopRemote = r, func() {}
	n.kind = " (served at " + path + ")"
	return n, nil
}
