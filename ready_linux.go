package vsockns

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// Sockets made ahead (Namespace.Prepare): a socket's namespace is fixed at
// socket(2), so an unconnected socket made earlier in the namespace is as
// good as one made now. A dial takes one with a mutex pop, without the
// hand-off to a switching goroutine; a refiller goroutine of the store
// makes the next batch, all in one switch into the namespace.

// readyIdle is how long (in nanoseconds) a store keeps its sockets after
// the last dial took one; then it closes them and its refiller ends (the
// next dial starts it again). 30 s; tests shorten it.
var readyIdle atomic.Int64

func init() { readyIdle.Store(int64(30 * time.Second)) }

func idleFor() time.Duration { return time.Duration(readyIdle.Load()) }

// readyHeld counts the descriptors all stores hold or are making; a store
// reserves room in it before a batch, never past readyLimit.
var readyHeld atomic.Int64

// readyLimit is the most descriptors all stores together may hold: a
// quarter of RLIMIT_NOFILE's soft limit, read at each refill (lowering the
// limit shrinks it).
func readyLimit() int64 {
	var rl unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &rl); err != nil {
		return 0
	}
	return int64(rl.Cur / 4)
}

// readyStore holds up to want unconnected sockets of one type, made in its
// namespace.
type readyStore struct {
	n    *Namespace
	typ  sockType
	wake chan struct{} // a dial took a socket; capacity 1
	// ctx ends with the store: a request to a namespace's server (a
	// stopped helper answers none) must not hold up Close.
	ctx    context.Context
	cancel context.CancelFunc

	mu       sync.Mutex
	fds      []int
	want     int
	closed   bool
	running  bool // the refiller goroutine is alive
	lastTake time.Time
	made     int // sockets made ahead so far, for tests
	batches  int // switches into the namespace the refiller made, for tests
}

// Prepare keeps sockets made ahead in n for its dials: up to streams
// unconnected stream sockets and up to seqpackets SOCK_SEQPACKET ones.
// A dial through n (n.Dialer, or a Dialer with NetNS n) then takes a ready
// socket and skips the hand-off to the goroutine that switches a thread
// into the namespace (see docs/how-it-works.md); without one it dials as
// before. Sockets are made in batches, one switch for all that are
// missing, off the dialer's path, once a dial has taken half of the store.
//
// Nothing is made before n's first dial of that type, a store that no dial
// has taken from for 30 s closes its sockets (the next dial starts it
// again), and all stores of the process together hold at most a quarter of
// RLIMIT_NOFILE's soft limit; a store that cannot get descriptors (EMFILE)
// stays short, and dials go the usual way. Everything a Dialer sets (a
// buffer size, Control, LocalAddr, ToHost, deadlines) applies to a ready
// socket as to a new one: it is set at the dial. Sockets made ahead are
// close-on-exec, are handed to one dial each, and never return to the
// store (a dial that fails closes its socket).
//
// Prepare(0, 0) closes every socket held; Close does too. Counts must not
// be negative. For a namespace served by another process
// (CreateUserNamespace, DialNamespace) a batch is one request to its
// server, whose reply carries up to 64 descriptors.
func (n *Namespace) Prepare(streams, seqpackets int) error {
	if streams < 0 || seqpackets < 0 {
		return fmt.Errorf("vsockns: Prepare(%d, %d): counts must not be negative", streams, seqpackets)
	}
	n.mu.RLock()
	defer n.mu.RUnlock()
	if !n.open {
		return ErrNamespaceClosed
	}
	n.readyMu.Lock()
	defer n.readyMu.Unlock()
	for i, want := range [...]int{typeStream: streams, typeSeqpacket: seqpackets} {
		s := n.ready[i]
		if s == nil {
			if want == 0 {
				continue
			}
			ctx, cancel := context.WithCancel(context.Background())
			s = &readyStore{n: n, typ: sockType(i), wake: make(chan struct{}, 1), ctx: ctx, cancel: cancel}
			n.ready[i] = s
		}
		s.setWant(want)
	}
	return nil
}

// takeReady returns a socket made ahead in n for type t, or -1.
func (n *Namespace) takeReady(t sockType) int {
	if n == nil || int(t) >= len(n.ready) {
		return -1
	}
	n.readyMu.Lock()
	s := n.ready[t]
	n.readyMu.Unlock()
	if s == nil {
		return -1
	}
	return s.take()
}

// closeReady closes every store of n. Close calls it before it waits for
// the operations inside n, which a store's refill may be one of.
func (n *Namespace) closeReady() {
	n.readyMu.Lock()
	defer n.readyMu.Unlock()
	for _, s := range n.ready {
		if s != nil {
			s.close()
		}
	}
}

func (s *readyStore) setWant(want int) {
	s.mu.Lock()
	s.want = want
	var extra []int
	if len(s.fds) > want {
		extra = s.fds[want:]
		s.fds = s.fds[:want:want]
	}
	s.mu.Unlock()
	releaseReady(extra)
}

// take pops a ready socket (-1 if none) and wakes the refiller once the
// store is down to half.
func (s *readyStore) take() int {
	fd := -1
	s.mu.Lock()
	if s.closed || s.want == 0 {
		s.mu.Unlock()
		return -1
	}
	if k := len(s.fds); k > 0 {
		fd = s.fds[k-1]
		s.fds = s.fds[:k-1]
		readyHeld.Add(-1)
	}
	s.lastTake = time.Now()
	low := len(s.fds) <= s.want/2
	start := low && !s.running
	if start {
		s.running = true
	}
	s.mu.Unlock()
	switch {
	case start:
		go s.refill()
	case low:
		select {
		case s.wake <- struct{}{}:
		default:
		}
	}
	return fd
}

// refill makes batches while dials take sockets, and ends once none has
// for readyIdle, closing what it holds.
func (s *readyStore) refill() {
	idle := time.NewTimer(idleFor())
	defer idle.Stop()
	for {
		if !s.fill() {
			return
		}
		select {
		case <-s.wake:
		case <-idle.C:
			s.mu.Lock()
			since := time.Since(s.lastTake)
			if limit := idleFor(); since < limit && !s.closed {
				s.mu.Unlock()
				idle.Reset(limit - since)
				continue
			}
			fds := s.fds
			s.fds = nil
			s.running = false
			s.mu.Unlock()
			releaseReady(fds)
			return
		}
	}
}

// fill makes the sockets the store lacks in one switch into its namespace;
// it reports false once the store is closed (and the refiller is to end).
func (s *readyStore) fill() bool {
	s.mu.Lock()
	if s.closed {
		s.running = false
		s.mu.Unlock()
		return false
	}
	k := reserveReady(s.want - len(s.fds))
	s.mu.Unlock()
	if k <= 0 {
		return true
	}
	fds, err := s.make(k)
	readyHeld.Add(-int64(k - len(fds))) // the part reserved but not made
	if err != nil {
		releaseReady(fds)
		s.mu.Lock()
		s.running = false
		s.mu.Unlock()
		return false
	}
	s.mu.Lock()
	if s.closed {
		s.running = false
		s.mu.Unlock()
		releaseReady(fds)
		return false
	}
	if over := len(s.fds) + len(fds) - s.want; over > 0 {
		// Prepare lowered the count meanwhile.
		releaseReady(fds[len(fds)-over:])
		fds = fds[:len(fds)-over]
	}
	s.fds = append(s.fds, fds...)
	s.made += len(fds)
	s.batches++
	s.mu.Unlock()
	return true
}

// make makes up to k sockets in the store's namespace, in one go: one
// switch into it, or for a namespace served by another process one
// request (of up to maxBatch sockets) to its server. Whatever ends the
// batch short (EMFILE, ENFILE, ENOMEM; a thread that could not be moved
// back, of which nothing is kept) is no error: the store stays short and
// dials go the usual way. The error is ErrNamespaceClosed once the
// namespace or the store is closed.
func (s *readyStore) make(k int) ([]int, error) {
	fds, err := s.n.backend().sockets(s.ctx, s.typ.unix(), k)
	if err != nil && (errors.Is(err, ErrNamespaceClosed) || s.ctx.Err() != nil) {
		return fds, ErrNamespaceClosed
	}
	return fds, nil
}

// reserveReady takes room for up to k descriptors under readyLimit and
// returns how many it took (readyHeld counts them from now on).
func reserveReady(k int) int {
	if k <= 0 {
		return 0
	}
	limit := readyLimit()
	for {
		held := readyHeld.Load()
		take := min(int64(k), limit-held)
		if take <= 0 {
			return 0
		}
		if readyHeld.CompareAndSwap(held, held+take) {
			return int(take)
		}
	}
}

// releaseReady closes descriptors that readyHeld counts.
func releaseReady(fds []int) {
	readyHeld.Add(-int64(len(fds)))
	closeFds(fds)
}

// close closes the store's sockets; the refiller ends at its next turn.
func (s *readyStore) close() {
	s.cancel()
	s.mu.Lock()
	s.closed = true
	fds := s.fds
	s.fds = nil
	s.mu.Unlock()
	releaseReady(fds)
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

func closeFds(fds []int) {
	for _, fd := range fds {
		unix.Close(fd)
	}
}

// readyStats reports a store's held, made and batch counts, for tests.
func (n *Namespace) readyStats(t sockType) (held, made, batches int) {
	n.readyMu.Lock()
	s := n.ready[t]
	n.readyMu.Unlock()
	if s == nil {
		return 0, 0, 0
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.fds), s.made, s.batches
}
