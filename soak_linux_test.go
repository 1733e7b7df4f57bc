//go:build linux

package vsockns_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/mdlayher/vsock"
	"github.com/stretchr/testify/require"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/vsockns/vsockns"
	"github.com/vsockns/vsockns/internal/testenv"
	"github.com/vsockns/vsockns/vsocktest"
)

// The soak: workers dialing, listening, reading, writing, closing and
// cancelling over a pool of namespaces (global, local, named, of user
// namespaces, and fake guests at CID 3 in local namespaces of their own)
// that is created and deleted while in use, with faults injected phase by
// phase. Every server greets with a token naming its target; a client
// that reads another's token is a misroute. After each phase the pool is
// torn down and descriptors, goroutines and helper processes must be back
// to the baseline, no thread may be in a foreign namespace, the OS
// threads within a bound (the first phase's count and 8: Go's thread count
// moves by a few either way, a leak grows with the operations), and the
// kernel may have no vsock socket left in a namespace of the pool nor any
// but the start's in the process's own. One summary line at the end.
//
// VSOCKNS_SOAK=DURATION sets the length (default 15s, what every run of
// the suite does in the VM; `make soak` runs minutes); VSOCKNS_SOAK_SEED
// replays a run's random choices (the summary prints the seed).

const (
	soakEnv      = "VSOCKNS_SOAK"
	soakSeedEnv  = "VSOCKNS_SOAK_SEED"
	soakChildEnv = "VSOCKNS_SOAK_CHILD"
	soakDefault  = 15 * time.Second
)

// TestSoak runs the soak in a process of its own (so that its baselines
// are its own) and fails unless its summary says 0 misroutes and 0 leaks.
func TestSoak(t *testing.T) {
	if os.Getenv(soakChildEnv) == "1" {
		runSoak(t)
		return
	}
	namespacesExpected(t) // skips outside the VM
	d := soakDefault
	if v := os.Getenv(soakEnv); v != "" {
		var err error
		d, err = time.ParseDuration(v)
		require.NoError(t, err, "%s", soakEnv)
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestSoak$", "-test.v", fmt.Sprintf("-test.timeout=%s", d+5*time.Minute))
	cmd.Env = append(os.Environ(), soakChildEnv+"=1", soakEnv+"="+d.String())
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	var summary string
	for line := range strings.Lines(out.String()) {
		if s, ok := strings.CutPrefix(strings.TrimSpace(line), "SOAK-SUMMARY "); ok {
			summary = s
		}
	}
	t.Log(out.String())
	if summary != "" {
		t.Log("summary: " + summary) // before the exit status: make soak writes it to soak.txt, a failed run's too
	}
	require.NoError(t, err, "the soak process")
	require.NotEmpty(t, summary, "the soak printed no summary")
	if testenv.InVM() {
		require.Regexp(t, `\bkernel-sockets=checked\b`, summary, "the test bed loads vsock_diag: the kernel's sockets must be counted")
	}
	require.Regexp(t, `\bmisroutes=0\b`, summary)
	require.Regexp(t, `\bleaks=0\b`, summary)
}

// A soakTarget is a namespace (or guest) of the pool with its servers.
type soakTarget struct {
	name      string // the token its servers greet with
	kind      string
	ns        *vsockns.Namespace // nil: the process's own namespace
	dialer    vsockns.Dialer
	cid, port uint32 // what a client dials (stream); port+1: SOCK_SEQPACKET if seqpacket
	seqpacket bool
	helper    int // the user-namespace helper's pid, or 0
	guest     *vsocktest.Guest
	closers   []func() // the servers and the namespace, in order
	servers   sync.WaitGroup
	closeOnce sync.Once
}

func (tg *soakTarget) close() {
	tg.closeOnce.Do(func() {
		for _, c := range tg.closers {
			c()
		}
		tg.servers.Wait()
	})
}

// serve greets every connection l accepts with the target's token and
// echoes what it reads until the client closes (or 10 s pass).
func (tg *soakTarget) serve(l net.Listener) {
	tg.closers = append(tg.closers, func() { l.Close() })
	var conns sync.WaitGroup
	tg.servers.Go(func() {
		defer conns.Wait()
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			conns.Go(func() {
				defer c.Close()
				c.SetDeadline(time.Now().Add(10 * time.Second))
				if _, err := c.Write([]byte(tg.name + "\n")); err != nil {
					return
				}
				buf := make([]byte, 8192)
				for {
					n, err := c.Read(buf)
					if err != nil {
						return
					}
					if _, err := c.Write(buf[:n]); err != nil {
						return
					}
				}
			})
		}
	})
}

// soak is one run's state.
type soak struct {
	t          testing.TB
	namespaces bool
	rng        *rand.Rand
	rngMu      sync.Mutex
	dir        string        // named namespaces' mount points
	settleWait time.Duration // how long settle waits for the counts to come back

	// The kernel's count of vsock sockets: the process's own namespace
	// (self) against the sockets it had at the start, and every namespace
	// a target had, held until a settle has seen it empty. diagErr is why
	// the kernel cannot list them (vsock_diag not loaded): nil where it
	// can.
	self     *vsockns.Namespace
	selfBase []vsockns.Socket
	diagErr  error

	mu      sync.Mutex
	targets map[string]*soakTarget
	held    []heldNS
	next    int
	port    uint32 // the next unique port (global targets share one space)

	ops, misroutes, corrupt atomic.Int64
	errMu                   sync.Mutex
	errs                    map[string]int
	samples                 map[string]string // an error of each kind
	leaks                   []string
	stopUntil               atomic.Int64 // unix nanos: deadlines of 0 and 1 µs until then
}

func (s *soak) intn(n int) int {
	s.rngMu.Lock()
	defer s.rngMu.Unlock()
	return s.rng.IntN(n)
}

// soakKinds are the kinds of target the pool holds.
func (s *soak) kinds() []string {
	if !s.namespaces {
		return []string{"init"} // Linux 6.1: one vsock space
	}
	return []string{"init", "global", "local", "named", "userns", "guest"}
}

// add creates a target of kind and starts its servers.
func (s *soak) add(kind string) error {
	s.mu.Lock()
	s.next++
	id := s.next
	s.port += 2
	port := s.port
	s.mu.Unlock()
	tg := &soakTarget{name: fmt.Sprintf("%s-%d", kind, id), kind: kind, cid: vsock.Local, port: port}
	ctx := context.Background()
	var err error
	switch kind {
	case "init":
		tg.dialer, tg.seqpacket = vsockns.Dialer{}, true
	case "global":
		tg.ns, err = vsockns.CreateNamespace(vsockns.ModeGlobal)
		tg.seqpacket = true
	case "local":
		tg.ns, err = vsockns.CreateNamespace(vsockns.ModeLocal)
		tg.port = 7000 // the same port in every local namespace
	case "named":
		tg.ns, err = s.namedNamespace(tg)
		tg.port = 7000
	case "userns":
		tg.ns, err = vsockns.CreateUserNamespace(ctx, vsockns.ModeLocal)
		tg.port = 7000
		if err == nil {
			tg.helper = helperPID(tg.ns)
		}
	case "guest":
		tg.ns, err = vsockns.CreateNamespace(vsockns.ModeLocal)
		tg.cid, tg.port, tg.seqpacket = 3, 7000, true // CID 3 in every guest's namespace
	}
	if err != nil {
		return err
	}
	if tg.ns != nil {
		tg.dialer = *tg.ns.Dialer()
	}
	lc := vsockns.ListenConfig{NetNS: tg.ns}
	fail := func(err error) error {
		tg.close()
		if tg.ns != nil {
			tg.ns.Close()
		}
		return err
	}
	if tg.ns != nil {
		if err := s.hold(tg); err != nil {
			return fail(err)
		}
	}
	if kind == "guest" {
		g, err := vsocktest.NewGuest(vsocktest.Config{NetNS: tg.ns, CID: 3, Seqpacket: true})
		if err != nil {
			return fail(err)
		}
		tg.guest = g
		tg.closers = append(tg.closers, func() { g.Close() })
		l, err := g.Listen(tg.port)
		if err != nil {
			return fail(err)
		}
		tg.serve(l)
		lq, err := g.ListenSeqpacket(tg.port + 1)
		if err != nil {
			return fail(err)
		}
		tg.serve(lq)
	} else {
		l, err := lc.ListenVsock(ctx, vsock.Local, tg.port)
		if err != nil {
			return fail(err)
		}
		tg.serve(l)
		if tg.seqpacket {
			lq, err := lc.ListenSeqpacket(ctx, vsock.Local, tg.port+1)
			if err != nil {
				return fail(err)
			}
			tg.serve(lq)
		}
	}
	if tg.ns != nil {
		ns := tg.ns
		tg.closers = append(tg.closers, func() { ns.Close() })
	}
	s.mu.Lock()
	s.targets[tg.name] = tg
	s.mu.Unlock()
	return nil
}

// namedNamespace makes a local namespace, bind-mounts it at a path (as
// `ip netns add` does) and opens it by that path.
func (s *soak) namedNamespace(tg *soakTarget) (*vsockns.Namespace, error) {
	h, err := vsockns.NewNamespace(vsockns.ModeLocal)
	if err != nil {
		return nil, err
	}
	defer h.Close()
	path := filepath.Join(s.dir, tg.name)
	if err := os.WriteFile(path, nil, 0o600); err != nil {
		return nil, err
	}
	if err := unix.Mount(fmt.Sprintf("/proc/self/fd/%d", int(h)), path, "", unix.MS_BIND, ""); err != nil {
		os.Remove(path)
		return nil, os.NewSyscallError("mount", err)
	}
	tg.closers = append(tg.closers, func() {
		unix.Unmount(path, unix.MNT_DETACH)
		os.Remove(path)
	})
	return vsockns.OpenNamespacePath(path)
}

var helperPIDPattern = regexp.MustCompile(`helper pid (\d+)`)

// helperPID is the pid of ns's helper, which its String names.
func helperPID(ns *vsockns.Namespace) int {
	m := helperPIDPattern.FindStringSubmatch(ns.String())
	if m == nil {
		return 0
	}
	pid, _ := strconv.Atoi(m[1])
	return pid
}

// remove takes a target out of the pool and closes it: its namespace is
// deleted under its listeners (they close after it) and under any client
// still using it.
func (s *soak) remove(name string) {
	s.mu.Lock()
	tg := s.targets[name]
	delete(s.targets, name)
	s.mu.Unlock()
	if tg == nil {
		return
	}
	if tg.ns != nil {
		tg.ns.Close() // first: the namespace goes while its listeners are open
	}
	tg.close()
}

// pick returns a random target of the pool (nil if it is empty), or one
// of kind.
func (s *soak) pick(kind string) *soakTarget {
	s.mu.Lock()
	defer s.mu.Unlock()
	var names []string
	for n, tg := range s.targets {
		if kind == "" || tg.kind == kind {
			names = append(names, n)
		}
	}
	if len(names) == 0 {
		return nil
	}
	slices.Sort(names)
	return s.targets[names[s.intn(len(names))]]
}

// errorKind names err for the summary: the sentinel or errno it wraps.
func errorKind(err error) string {
	for _, k := range []struct {
		name string
		err  error
	}{
		{"canceled", context.Canceled}, {"deadline", context.DeadlineExceeded}, {"ns-closed", vsockns.ErrNamespaceClosed},
		{"closed", net.ErrClosed}, {"eof", io.EOF}, {"unexpected-eof", io.ErrUnexpectedEOF}, {"timeout", os.ErrDeadlineExceeded},
	} {
		if errors.Is(err, k.err) {
			return k.name
		}
	}
	var errno syscall.Errno
	if errors.As(err, &errno) {
		return unix.ErrnoName(errno)
	}
	return fmt.Sprintf("untyped %T", err)
}

func (s *soak) fail(err error) {
	k := errorKind(err)
	s.errMu.Lock()
	s.errs[k]++
	if _, ok := s.samples[k]; !ok {
		s.samples[k] = err.Error()
	}
	s.errMu.Unlock()
}

// op is one client operation on a random target: dial (stream or
// SOCK_SEQPACKET; with a deadline of 0 or 1 µs, a context cancelled at a
// random moment, or a plain timeout), read the greeting and check it,
// write and read back, close (sometimes before reading anything); or a
// listen on a fresh port in the target's namespace, closed at once.
func (s *soak) op() {
	tg := s.pick("")
	if tg == nil {
		return
	}
	s.ops.Add(1)
	if s.intn(10) == 0 && tg.guest == nil {
		lc := vsockns.ListenConfig{NetNS: tg.ns}
		l, err := lc.ListenVsock(context.Background(), vsock.Local, 0)
		if err != nil {
			s.fail(err)
			return
		}
		l.Close()
		return
	}
	d := tg.dialer
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	tiny := time.Now().UnixNano() < s.stopUntil.Load()
	switch r := s.intn(10); {
	case tiny && r < 5:
		d.Timeout = time.Microsecond
	case tiny:
		var c context.CancelFunc
		ctx, c = context.WithDeadline(ctx, time.Now()) // a deadline of 0: already passed
		defer c()
	case r == 0:
		time.AfterFunc(time.Duration(s.intn(2000))*time.Microsecond, cancel) // cancelled at a random point
	}
	seq := tg.seqpacket && s.intn(3) == 0
	var c *vsockns.Conn
	var err error
	if seq {
		c, err = d.DialSeqpacket(ctx, tg.cid, tg.port+1)
	} else {
		c, err = d.DialVsock(ctx, tg.cid, tg.port)
	}
	if err != nil {
		s.fail(err)
		return
	}
	defer c.Close()
	if s.intn(20) == 0 {
		return // closed before anything is read
	}
	c.SetDeadline(time.Now().Add(5 * time.Second))
	greeting, err := readLine(c)
	if err != nil {
		s.fail(err)
		return
	}
	if greeting != tg.name {
		s.misroutes.Add(1)
		s.t.Logf("MISROUTE: dialed %s (CID %d port %d, seqpacket %t), greeted by %q", tg.name, tg.cid, tg.port, seq, greeting)
		return
	}
	msg := make([]byte, 1+s.intn(2048))
	for i := range msg {
		msg[i] = byte(s.intn(256))
	}
	if _, err := c.Write(msg); err != nil {
		s.fail(err)
		return
	}
	back := make([]byte, len(msg))
	if seq {
		n, err := c.Read(back)
		if err != nil {
			s.fail(err)
			return
		}
		back = back[:n]
	} else if _, err := io.ReadFull(c, back); err != nil {
		s.fail(err)
		return
	}
	if !bytes.Equal(back, msg) {
		s.corrupt.Add(1)
		s.t.Logf("CORRUPT: %s echoed %d bytes of %d, not the same", tg.name, len(back), len(msg))
	}
}

// readLine reads up to a newline (a stream's greeting may come in parts;
// a SOCK_SEQPACKET greeting is one message).
func readLine(c net.Conn) (string, error) {
	var line []byte
	buf := make([]byte, 128)
	for len(line) < 128 {
		n, err := c.Read(buf)
		line = append(line, buf[:n]...)
		if i := bytes.IndexByte(line, '\n'); i >= 0 {
			return string(line[:i]), nil
		}
		if err != nil {
			return "", err
		}
	}
	return "", fmt.Errorf("a greeting of %d bytes without a newline: %w", len(line), syscall.EPROTO)
}

// A soakPhase is a length of the run with one fault injected on a
// schedule.
type soakPhase struct {
	name  string
	fault func(s *soak, stop <-chan struct{})
}

// every calls f at random intervals of up to max until stop.
func every(s *soak, stop <-chan struct{}, max time.Duration, f func()) {
	for {
		t := time.NewTimer(time.Duration(1 + s.intn(int(max))))
		select {
		case <-stop:
			t.Stop()
			return
		case <-t.C:
			f()
		}
	}
}

var soakPhases = []soakPhase{
	{"mix", nil},
	{"helpers-stopped", func(s *soak, stop <-chan struct{}) {
		every(s, stop, 500*time.Millisecond, func() {
			if tg := s.pick("userns"); tg != nil && tg.helper > 0 {
				syscall.Kill(tg.helper, syscall.SIGSTOP)
				t := time.NewTimer(time.Duration(s.intn(int(300 * time.Millisecond))))
				select {
				case <-stop:
				case <-t.C:
				}
				syscall.Kill(tg.helper, syscall.SIGCONT)
			}
		})
	}},
	{"helpers-killed", func(s *soak, stop <-chan struct{}) {
		every(s, stop, 500*time.Millisecond, func() {
			if tg := s.pick("userns"); tg != nil && tg.helper > 0 {
				syscall.Kill(tg.helper, syscall.SIGKILL)
			}
		})
	}},
	{"nofile", func(s *soak, stop <-chan struct{}) {
		var old unix.Rlimit
		if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &old); err != nil {
			s.t.Errorf("getrlimit: %v", err)
			return
		}
		every(s, stop, 400*time.Millisecond, func() {
			low := old
			low.Cur = uint64(openFDCount() + s.intn(16))
			unix.Setrlimit(unix.RLIMIT_NOFILE, &low)
			t := time.NewTimer(time.Duration(s.intn(int(200 * time.Millisecond))))
			select {
			case <-stop:
			case <-t.C:
			}
			unix.Setrlimit(unix.RLIMIT_NOFILE, &old)
		})
		unix.Setrlimit(unix.RLIMIT_NOFILE, &old)
	}},
	{"deleted-under-use", func(s *soak, stop <-chan struct{}) {
		every(s, stop, 50*time.Millisecond, func() {
			if tg := s.pick(""); tg != nil {
				s.remove(tg.name)
			}
		})
	}},
	{"guests-stopped", func(s *soak, stop <-chan struct{}) {
		every(s, stop, 300*time.Millisecond, func() {
			if tg := s.pick("guest"); tg != nil {
				if s.intn(2) == 0 {
					tg.guest.SetUnresponsive(true)
				} else {
					tg.guest.Close()
				}
			}
		})
	}},
	{"tiny-deadlines", func(s *soak, stop <-chan struct{}) {
		s.stopUntil.Store(time.Now().Add(time.Hour).UnixNano())
		<-stop
		s.stopUntil.Store(0)
	}},
}

// openFDCount is fdCount for a goroutine that may not fail the test (the
// read itself may meet the lowered limit: then the limit is not lowered).
func openFDCount() int {
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return 1 << 20
	}
	return len(ents)
}

// fdTargets lists the process's descriptors and what they are.
func fdTargets() []string {
	ents, _ := os.ReadDir("/proc/self/fd")
	var out []string
	for _, e := range ents {
		target, _ := os.Readlink(filepath.Join("/proc/self/fd", e.Name()))
		out = append(out, e.Name()+"->"+target)
	}
	return out
}

// soakCounts are what must come back after each phase.
type soakCounts struct{ fds, goroutines, threads, helpers int }

// counts are the process's counts now; the descriptors leave out the
// soak's own handles of the pool's namespaces (s.held).
func (s *soak) counts() soakCounts {
	s.mu.Lock()
	held := len(s.held)
	s.mu.Unlock()
	return soakCounts{fdCount(s.t) - held, runtime.NumGoroutine(), threadCount(s.t), len(helperPIDs(s.t))}
}

// A heldNS is a handle (a descriptor of its own) of a namespace a target
// had. A namespace nothing refers to any more cannot be listed, so the
// soak keeps one until a settle has seen the namespace without vsock
// sockets (the kernel's sockets keep their namespace alive, but a
// namespace whose last socket is gone is gone with it, and so would be
// the evidence). User-namespace targets too: the soak runs as root, which
// may enter them once their helper is gone.
type heldNS struct {
	target string
	id     vsockns.NamespaceID
	h      netns.NsHandle
}

// hold keeps a handle of tg's namespace until the next settle, where the
// kernel lists sockets.
func (s *soak) hold(tg *soakTarget) error {
	if s.diagErr != nil {
		return nil
	}
	h, err := tg.ns.Handle()
	if err != nil {
		return err
	}
	s.mu.Lock()
	s.held = append(s.held, heldNS{tg.name, tg.ns.ID(), h})
	s.mu.Unlock()
	return nil
}

// releaseHeld closes every handle still held.
func (s *soak) releaseHeld() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, hn := range s.held {
		hn.h.Close()
	}
	s.held = nil
}

// vsockLeft lists the vsock sockets the kernel still has where the soak
// made them, a line per namespace that has some (or could not be listed):
// every held namespace (one that lists none is closed and forgotten: with
// the pool torn down nothing can make a socket there again) and the
// process's own, where only the sockets it had at the start may be. Nothing where the kernel
// cannot list sockets (s.diagErr).
func (s *soak) vsockLeft() []string {
	if s.diagErr != nil {
		return nil
	}
	// Each listing bounded on its own: a long phase leaves a thousand
	// namespaces or more to list (a few ms each under TCG).
	list := func(f func(context.Context) ([]vsockns.Socket, error)) ([]vsockns.Socket, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		return f(ctx)
	}
	var left []string
	// The process's namespace: by inode, not only by count, so that a
	// socket left is not hidden by one of the start's (another test's,
	// in the suite's process) that has closed meanwhile.
	now, err := list(s.self.Sockets)
	before := map[uint64]bool{}
	for _, sk := range s.selfBase {
		before[sk.Inode] = true
	}
	var extra []vsockns.Socket
	for _, sk := range now {
		if !before[sk.Inode] {
			extra = append(extra, sk)
		}
	}
	switch {
	case err != nil:
		left = append(left, fmt.Sprintf("the process's namespace %s: not listed: %v", s.self.ID(), err))
	case len(extra) > 0:
		left = append(left, fmt.Sprintf("the process's namespace %s: %d sockets (%d at the start), new: %s",
			s.self.ID(), len(now), len(s.selfBase), describeSockets(extra)))
	}
	s.mu.Lock()
	held := s.held
	s.mu.Unlock()
	var keep []heldNS
	for _, hn := range held {
		socks, err := list(func(ctx context.Context) ([]vsockns.Socket, error) { return vsockns.Sockets(ctx, hn.h) })
		switch {
		case err != nil:
			left = append(left, fmt.Sprintf("%s's namespace %s: not listed: %v", hn.target, hn.id, err))
		case len(socks) > 0:
			left = append(left, fmt.Sprintf("%s's namespace %s: %d sockets: %s", hn.target, hn.id, len(socks), describeSockets(socks)))
		default:
			hn.h.Close()
			continue
		}
		keep = append(keep, hn)
	}
	s.mu.Lock()
	s.held = keep
	s.mu.Unlock()
	return left
}

// describeSockets names sockets by type, state and addresses (CID:port,
// * for VMADDR_CID_ANY or VMADDR_PORT_ANY), the first eight.
func describeSockets(socks []vsockns.Socket) string {
	addr := func(a *vsock.Addr) string {
		part := func(v uint32) string {
			if v == ^uint32(0) {
				return "*"
			}
			return strconv.FormatUint(uint64(v), 10)
		}
		return part(a.ContextID) + ":" + part(a.Port)
	}
	var out []string
	for i, sk := range socks {
		if i == 8 {
			out = append(out, fmt.Sprintf("and %d more", len(socks)-i))
			break
		}
		out = append(out, fmt.Sprintf("%s %s %s->%s", sk.Type, sk.State, addr(sk.Local), addr(sk.Remote)))
	}
	return strings.Join(out, ", ")
}

// phase runs one phase for d: the pool filled, workers and the churn
// running, the fault injected; then everything closed.
func (s *soak) phase(p soakPhase, d time.Duration) {
	const workers = 16
	poolSize := 24
	if d < 10*time.Second {
		poolSize = 12 // the suite's short run: the pool's setup is most of a phase under TCG
	}
	for range poolSize {
		kinds := s.kinds()
		if err := s.add(kinds[s.intn(len(kinds))]); err != nil {
			s.fail(err)
		}
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				s.op()
			}
		})
	}
	// The churn: a target replaced every so often.
	wg.Go(func() {
		every(s, stop, 100*time.Millisecond, func() {
			if tg := s.pick(""); tg != nil && s.intn(2) == 0 {
				s.remove(tg.name)
			}
			s.mu.Lock()
			n := len(s.targets)
			s.mu.Unlock()
			if n < poolSize {
				kinds := s.kinds()
				if err := s.add(kinds[s.intn(len(kinds))]); err != nil {
					s.fail(err)
				}
			}
		})
	})
	if p.fault != nil {
		wg.Go(func() { p.fault(s, stop) })
	}
	time.AfterFunc(d, func() { close(stop) })
	wg.Wait()
	s.mu.Lock()
	names := slices.Collect(maps.Keys(s.targets))
	s.mu.Unlock()
	for _, n := range names {
		s.remove(n)
	}
}

// settle waits (bounded) for the counts to come back to base, and records
// a leak for each that does not; the kernel's vsock sockets (vsockLeft)
// too, a leak for each namespace with some left.
func (s *soak) settle(phase string, base soakCounts, maxThreads int) soakCounts {
	deadline := time.Now().Add(s.settleWait)
	s.mu.Lock()
	listed := len(s.held)
	s.mu.Unlock()
	var c soakCounts
	var foreign, socks []string
	start, firstLeft := time.Now(), -1
	for {
		// The sockets first: the handles of namespaces found empty are
		// closed before the descriptors are counted.
		socks = s.vsockLeft()
		if firstLeft < 0 {
			firstLeft = len(socks)
			for i, l := range socks {
				if i == 4 {
					s.t.Logf("%s: and %d more", phase, len(socks)-i)
					break
				}
				s.t.Logf("%s: at the first listing: %s", phase, l)
			}
		}
		c, foreign = s.counts(), testenv.ThreadsOutsideNamespace(s.t)
		if (c.fds <= base.fds && c.goroutines <= base.goroutines && c.helpers == 0 && len(foreign) == 0 && c.threads <= maxThreads && len(socks) == 0) || time.Now().After(deadline) {
			break
		}
		// Polling asynchronous teardown (helpers reaped, threads exiting,
		// the kernel's sockets closing: a cancelled connect's for up to
		// 2 s, a stream's until its peer answers the shutdown), bounded.
		time.Sleep(50 * time.Millisecond)
	}
	for _, l := range socks {
		s.leaks = append(s.leaks, fmt.Sprintf("%s: vsock sockets left in %s", phase, l))
	}
	s.releaseHeld()
	if s.diagErr == nil {
		s.t.Logf("%s: the kernel's vsock sockets: the process's namespace and %d of the pool's listed; %d had sockets at the first listing, %d after %s",
			phase, listed, firstLeft, len(socks), time.Since(start).Round(10*time.Millisecond))
	}
	check := func(what string, got, want int) {
		if got > want {
			s.leaks = append(s.leaks, fmt.Sprintf("%s: %s %d (baseline %d)", phase, what, got, want))
		}
	}
	check("descriptors", c.fds, base.fds)
	if c.fds > base.fds {
		s.leaks = append(s.leaks, fmt.Sprintf("%s: descriptors open now: %v", phase, fdTargets()))
	}
	check("goroutines", c.goroutines, base.goroutines)
	check("helper processes", c.helpers, 0)
	check("OS threads", c.threads, maxThreads)
	if len(foreign) > 0 {
		s.leaks = append(s.leaks, fmt.Sprintf("%s: threads in a foreign namespace: %v", phase, foreign))
	}
	return c
}

// newSoak makes a run's state, and takes the kernel's count of vsock
// sockets in the process's namespace at the start (or says why the kernel
// cannot list them: then that check is skipped, said at the start and in
// the summary).
func newSoak(t testing.TB, seed uint64) *soak {
	t.Helper()
	s := &soak{t: t, namespaces: namespacesExpected(t), rng: rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15)),
		dir: t.TempDir(), settleWait: 15 * time.Second, targets: map[string]*soakTarget{}, port: 20000,
		errs: map[string]int{}, samples: map[string]string{}}
	self, err := vsockns.OpenNamespace(netns.None())
	require.NoError(t, err, "the process's own namespace")
	t.Cleanup(func() { self.Close() })
	s.self = self
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s.selfBase, err = self.Sockets(ctx)
	if errors.Is(err, vsockns.ErrDiagUnavailable) {
		s.diagErr = err
		t.Logf("the kernel's vsock sockets: NOT CHECKED: %v", err)
	} else {
		require.NoError(t, err, "the vsock sockets of the process's namespace")
		// Each namespace of the pool is held by a descriptor until its
		// phase's settle: a phase making more than the limit allows would
		// meet EMFILE.
		var rl unix.Rlimit
		require.NoError(t, unix.Getrlimit(unix.RLIMIT_NOFILE, &rl))
		t.Logf("the kernel's vsock sockets: checked; %d in the process's namespace %s at the start (RLIMIT_NOFILE %d, each namespace of a phase held until its settle)",
			len(s.selfBase), self.ID(), rl.Cur)
	}
	return s
}

// runSoak is the soak process.
func runSoak(t *testing.T) {
	d, err := time.ParseDuration(os.Getenv(soakEnv))
	require.NoError(t, err)
	seed := uint64(time.Now().UnixNano())
	if v := os.Getenv(soakSeedEnv); v != "" {
		seed, err = strconv.ParseUint(v, 10, 64)
		require.NoError(t, err)
	}
	s := newSoak(t, seed)
	// Warm-up: the runtime's own descriptors and threads (the poller,
	// the first namespace switches) are not the soak's.
	for _, k := range s.kinds() { // every kind once: what the package keeps for good (a private parent namespace) is in the baseline
		if err := s.add(k); err != nil {
			s.fail(err)
		}
	}
	s.phase(soakPhases[0], time.Second)
	base := s.settle("warm-up", soakCounts{fds: 1 << 30, goroutines: 1 << 30}, 1<<30)
	maxThreads := 0
	phases := soakPhases
	if only := os.Getenv("VSOCKNS_SOAK_PHASES"); only != "" { // a comma-separated subset, after the first
		phases = phases[:1]
		for _, p := range soakPhases[1:] {
			if slices.Contains(strings.Split(only, ","), p.name) {
				phases = append(phases, p)
			}
		}
	}
	t.Logf("baseline descriptors: %v", fdTargets())
	per := d / time.Duration(len(phases))
	start := time.Now()
	for i, p := range phases {
		s.phase(p, per)
		limit := maxThreads
		if i == 0 {
			limit = 1 << 30 // the first phase sets the threads' bound
		}
		c := s.settle(p.name, base, limit)
		if i == 0 {
			// Go keeps idle threads and starts more while others block
			// in system calls, and nsthread ends the ones it discards:
			// the count moves by a few either way. A leak grows with the
			// operations; the bound is the first phase's count and 8.
			maxThreads = c.threads + 8
		}
		t.Logf("phase %s: %d ops so far; descriptors %d (baseline %d), goroutines %d (%d), threads %d (bound %d), helpers %d",
			p.name, s.ops.Load(), c.fds, base.fds, c.goroutines, base.goroutines, c.threads, maxThreads, c.helpers)
	}
	s.errMu.Lock()
	kinds := slices.Sorted(maps.Keys(s.errs))
	var errs []string
	for _, k := range kinds {
		errs = append(errs, fmt.Sprintf("%s:%d", k, s.errs[k]))
		t.Logf("error %s, e.g.: %s", k, s.samples[k])
	}
	s.errMu.Unlock()
	for _, l := range s.leaks {
		t.Logf("LEAK: %s", l)
	}
	sockets := "checked"
	if s.diagErr != nil {
		sockets = "unchecked(no-vsock_diag)"
	}
	fmt.Printf("SOAK-SUMMARY duration=%s kernel=%s namespaces=%t seed=%d ops=%d errors={%s} kernel-sockets=%s misroutes=%d corrupt=%d leaks=%d\n",
		time.Since(start).Round(time.Second), os.Getenv("VSOCKNS_KERNEL_RELEASE"), s.namespaces, seed, s.ops.Load(), strings.Join(errs, " "), sockets, s.misroutes.Load(), s.corrupt.Load(), len(s.leaks))
	require.Zero(t, s.misroutes.Load(), "misroutes")
	require.Zero(t, s.corrupt.Load(), "corrupted echoes")
	require.Empty(t, s.leaks, "leaks")
}

// The soak's check of the kernel's vsock sockets fails when a socket is
// left, even one the process no longer holds (so that its descriptors
// are back to the baseline): listeners made in targets' namespaces (a
// local one, and a user namespace's whose helper is gone by the check)
// and in the process's own (on 6.1 only that one) are handed to another
// process and closed here. Each is a leak naming its namespace, type, state and
// addresses, and no other check sees them. Before that, a round of the
// soak's own operations over every kind of target leaves none; after the
// other process is gone, the process's namespace is back to its count.
func TestSoakKernelSocketsLeft(t *testing.T) {
	testenv.HoldIfAsked()
	needDiag(t)
	s := newSoak(t, 1)
	socketLeaks := func() []string {
		var out []string
		for _, l := range s.leaks {
			if strings.Contains(l, ": vsock sockets left in ") {
				out = append(out, l)
			}
		}
		return out
	}
	removeAll := func() {
		s.mu.Lock()
		names := slices.Collect(maps.Keys(s.targets))
		s.mu.Unlock()
		for _, n := range names {
			s.remove(n)
		}
	}

	// A warm-up as the soak's: what the package keeps for good (a private
	// parent namespace) is in the baseline.
	for _, k := range s.kinds() {
		require.NoError(t, s.add(k), k)
	}
	removeAll()
	base := s.settle("warm-up", soakCounts{fds: 1 << 30, goroutines: 1 << 30}, 1<<30)

	// Round 1: operations over a target of each kind, all closed.
	for _, k := range s.kinds() {
		require.NoError(t, s.add(k), k)
	}
	for range 60 {
		s.op()
	}
	require.Zero(t, s.misroutes.Load())
	require.Zero(t, s.corrupt.Load())
	removeAll()
	s.settle("round-1", base, 1<<30)
	t.Logf("round 1's leaks (of any check): %q", s.leaks)
	require.Empty(t, socketLeaks(), "all closed: nothing may be left")
	s.mu.Lock()
	held := len(s.held)
	s.mu.Unlock()
	require.Zero(t, held, "the handles are closed after the check")

	// Round 2: listeners left in another process.
	ctx := context.Background()
	kinds := []string{"init"}
	if s.namespaces {
		kinds = append(kinds, "local", "userns")
	}
	var files []*os.File
	want := map[string]string{} // a leak's namespace -> the socket it names
	for i, k := range kinds {
		require.NoError(t, s.add(k), k)
		tg := s.pick(k)
		require.NotNil(t, tg)
		port := uint32(7990 + i)
		l, err := (&vsockns.ListenConfig{NetNS: tg.ns}).ListenVsock(ctx, vsock.Local, port)
		require.NoError(t, err, k)
		f, err := l.File()
		require.NoError(t, err)
		files = append(files, f)
		require.NoError(t, l.Close())
		what := fmt.Sprintf("%s's namespace ", tg.name)
		if tg.ns == nil {
			what = "the process's namespace "
		}
		want[what] = fmt.Sprintf("stream LISTEN 1:%d->*:*", port)
	}
	holder := testenv.StartFileHolder(t, t.Name(), files...)
	for _, f := range files {
		require.NoError(t, f.Close())
	}
	base = s.counts() // with the holder's pipe open
	removeAll()
	s.settleWait = 3 * time.Second // it waits all of it: the sockets stay
	s.leaks = nil
	s.settle("round-2", base, 1<<30)
	got := socketLeaks()
	t.Logf("round 2's leaks: %q", got)
	require.Len(t, got, len(kinds), "one leak per namespace with a listener left: %v", got)
	for what, sock := range want {
		found := false
		for _, l := range got {
			if strings.Contains(l, what) {
				found = true
				require.Contains(t, l, sock, what)
			}
		}
		require.True(t, found, "no leak for %s in %v", what, got)
	}
	for _, l := range s.leaks {
		require.NotContains(t, l, "descriptors", "the process's descriptors are back: only the kernel's count sees the sockets")
	}

	// Round 3: the other process gone, its sockets with it.
	testenv.StopHolder(t, holder)
	s.leaks = nil
	s.settleWait = 15 * time.Second
	s.settle("round-3", base, 1<<30)
	require.Empty(t, socketLeaks())
}
