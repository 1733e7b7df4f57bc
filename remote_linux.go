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

	"golang.org/x/sys/unix"
)

// The remote protocol: how a process reaches a namespace it cannot enter.
// A server in (or able to enter) the namespace performs the calls that must
// happen inside it, and hands the results back as descriptors. It is what
// the user-namespace helper serves to the process that started it, and what
// [Namespace.Serve] offers other processes on a unix socket.
//
// One SOCK_SEQPACKET message per request and per reply, each a JSON
// object; a reply's descriptor, if any, rides in the same message
// (SCM_RIGHTS). The server speaks first: a hello (id 0) carrying the
// namespace's own descriptor, or the error that kept it from serving.
// Requests are served concurrently; a cancel request ends the wait of the
// one it names. Servers and clients are one program's binary, or two of
// this package's builds speaking the same protocolVersion.

const protocolVersion = 1

// errProtocol is what every error of a malformed message wraps.
var errProtocol = errors.New("vsockns: protocol")

// maxMessage bounds one message: requests and replies are a few hundred
// bytes.
const maxMessage = 16 << 10

type request struct {
	ID    uint64 `json:"id"`
	Op    string `json:"op"` // opSocket, opVhost, opRead, opWrite, opDiag, opCancel
	Type  int    `json:"type,omitempty"`
	Name  string `json:"name,omitempty"`
	Value string `json:"value,omitempty"`
}

const (
	opSocket = "socket"
	opVhost  = "vhost"
	opRead   = "read"
	opWrite  = "write"
	opDiag   = "diag" // a NETLINK_SOCK_DIAG socket
	opCancel = "cancel"
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

// sendMsg sends v as one message, with fd attached when fd >= 0.
func sendMsg(c *net.UnixConn, v any, fd int) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	var oob []byte
	if fd >= 0 {
		oob = unix.UnixRights(fd)
	}
	_, _, err = c.WriteMsgUnix(b, oob, nil)
	return err
}

// recvMsg reads one message into v and returns the descriptor it carried
// (-1 for none). A message that is too long, carries more than one
// descriptor or is not JSON is a protocol error: the descriptors are
// closed and the connection is not to be used again.
func recvMsg(c *net.UnixConn, v any) (int, error) {
	buf := make([]byte, maxMessage)
	oob := make([]byte, unix.CmsgSpace(4*4))
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
		return -1, err
	}
	var fds []int
	if oobn > 0 {
		msgs, perr := unix.ParseSocketControlMessage(oob[:oobn])
		if perr != nil {
			return -1, fmt.Errorf("%w: control message: %w", errProtocol, perr)
		}
		for _, m := range msgs {
			if r, perr := unix.ParseUnixRights(&m); perr == nil {
				fds = append(fds, r...)
			}
		}
	}
	closeAll := func() {
		for _, fd := range fds {
			unix.Close(fd)
		}
	}
	switch {
	case n == 0 && oobn == 0:
		return -1, io.EOF // the peer closed its end
	case flags&(unix.MSG_TRUNC|unix.MSG_CTRUNC) != 0:
		closeAll()
		return -1, fmt.Errorf("%w: message truncated", errProtocol)
	case len(fds) > 1:
		closeAll()
		return -1, fmt.Errorf("%w: %d descriptors in one message", errProtocol, len(fds))
	}
	if err := json.Unmarshal(buf[:n], v); err != nil {
		closeAll()
		return -1, fmt.Errorf("%w: %w", errProtocol, err)
	}
	if len(fds) == 1 {
		return fds[0], nil
	}
	return -1, nil
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
}

type result struct {
	r  reply
	fd int
}

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
		if res.r.Err != nil {
			if res.fd >= 0 {
				unix.Close(res.fd) // a refusal carries nothing to keep
			}
			r.close()
			return nil, -1, res.r.Err.decode()
		}
		if res.r.Version != protocolVersion || res.fd < 0 {
			if res.fd >= 0 {
				unix.Close(res.fd)
			}
			r.close()
			return nil, -1, fmt.Errorf("%w: hello of version %d (want %d) with descriptor %t", errProtocol, res.r.Version, protocolVersion, res.fd >= 0)
		}
		return r, res.fd, nil
	case <-r.done:
		r.conn.Close()
		select {
		case res := <-hello: // a refusal sent just before the server closed
			if res.fd >= 0 {
				unix.Close(res.fd)
			}
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
			if res.fd >= 0 {
				unix.Close(res.fd)
			}
		default:
		}
		return nil, -1, ctx.Err()
	}
}

// testHookBeforeWait, if set, runs before a caller waits for its reply (a
// test holds it there until the connection has ended).
var testHookBeforeWait func(*remote)

// read delivers replies to their callers until the connection ends.
func (r *remote) read() {
	var err error
	for {
		var rep reply
		fd, rerr := recvMsg(r.conn, &rep)
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
			ch <- result{rep, fd}
		}
		r.mu.Unlock()
		if !ok && fd >= 0 {
			unix.Close(fd) // a reply nobody waits for any more (its caller gave up)
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

// call sends req and waits for its reply, or for ctx.
func (r *remote) call(ctx context.Context, req request) (reply, int, error) {
	if err := ctx.Err(); err != nil {
		return reply{}, -1, err
	}
	ch := make(chan result, 1)
	r.mu.Lock()
	if r.pending == nil {
		r.mu.Unlock()
		return reply{}, -1, r.err
	}
	r.nextID++
	req.ID = r.nextID
	r.pending[req.ID] = ch
	r.mu.Unlock()
	if err := sendMsg(r.conn, req, -1); err != nil {
		// The connection is broken (the server has gone, typically before
		// read has seen it): end it, and report it ended.
		r.forget(req.ID)
		r.conn.Close()
		<-r.done
		return reply{}, -1, r.err
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
		return reply{}, -1, r.err
	case <-ctx.Done():
		if r.forget(req.ID) {
			sendMsg(r.conn, request{ID: req.ID, Op: opCancel}, -1) // best effort: the server stops waiting too
		}
		// A reply delivered meanwhile: release what it carries.
		select {
		case res := <-ch:
			if res.fd >= 0 {
				unix.Close(res.fd)
			}
		default:
		}
		return reply{}, -1, ctx.Err()
	}
}

// result is a call's return for its reply.
func (res result) result() (reply, int, error) {
	if res.r.Err != nil {
		if res.fd >= 0 {
			unix.Close(res.fd)
		}
		return reply{}, -1, res.r.Err.decode()
	}
	return res.r, res.fd, nil
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

func (r *remote) socket(ctx context.Context, typ int) (int, error) {
	_, fd, err := r.call(ctx, request{Op: opSocket, Type: typ})
	if err == nil && fd < 0 {
		err = fmt.Errorf("%w: a socket reply without a descriptor", errProtocol)
	}
	return fd, err
}

func (r *remote) openVhost(ctx context.Context) (int, error) {
	_, fd, err := r.call(ctx, request{Op: opVhost})
	if err == nil && fd < 0 {
		err = fmt.Errorf("%w: a vhost reply without a descriptor", errProtocol)
	}
	return fd, err
}

func (r *remote) diagSocket(ctx context.Context) (int, error) {
	_, fd, err := r.call(ctx, request{Op: opDiag})
	if err == nil && fd < 0 {
		err = errors.New("vsockns: protocol: a diag reply without a descriptor")
	}
	return fd, err
}

func (r *remote) readSysctl(ctx context.Context, name string) (string, error) {
	rep, fd, err := r.call(ctx, request{Op: opRead, Name: name})
	if fd >= 0 {
		unix.Close(fd)
	}
	return rep.Value, err
}

func (r *remote) writeSysctl(ctx context.Context, name, value string) error {
	_, fd, err := r.call(ctx, request{Op: opWrite, Name: name, Value: value})
	if fd >= 0 {
		unix.Close(fd)
	}
	return err
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
		fd, err := recvMsg(conn, &req)
		if fd >= 0 {
			unix.Close(fd) // requests carry none
		}
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
			sendMsg(conn, reply{ID: req.ID, Err: encodeError(fmt.Errorf("request %d: %w: a request of that id is in progress", req.ID, unix.EINVAL))}, -1)
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			rep, fd := perform(ctx, b, req)
			mu.Lock()
			delete(cancels, req.ID)
			mu.Unlock()
			cancel()
			sendMsg(conn, rep, fd) // a client that is gone is seen by the next read
			if fd >= 0 {
				unix.Close(fd)
			}
		}()
	}
}

// perform runs one request with b. Only the operations and names the
// package itself asks for are served: sockets of the vsock types, the
// vhost device, a sock_diag netlink socket (which lists the namespace's
// sockets) and sysctls under /proc/sys/net/vsock.
func perform(ctx context.Context, b backend, req request) (reply, int) {
	rep := reply{ID: req.ID}
	fd := -1
	var err error
	switch req.Op {
	case opSocket:
		switch req.Type {
		case unix.SOCK_STREAM, unix.SOCK_SEQPACKET, unix.SOCK_DGRAM:
			fd, err = b.socket(ctx, req.Type)
		default:
			err = fmt.Errorf("socket type %d: %w", req.Type, unix.EINVAL)
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
	if err != nil {
		if fd >= 0 {
			unix.Close(fd)
		}
		return reply{ID: req.ID, Err: encodeError(err)}, -1
	}
	return rep, fd
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
				sendMsg(c, reply{Version: protocolVersion, Err: encodeError(err)}, -1)
				return
			}
			h, err := n.Handle()
			if err != nil {
				sendMsg(c, reply{Version: protocolVersion, Err: encodeError(err)}, -1)
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
