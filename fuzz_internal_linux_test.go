//go:build linux

package vsockns

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/vsockns/vsockns/internal/nsthread"
)

// The fuzz targets of the remote protocol's decoding: one message
// (recvMsg), the client reading a server's replies (remote), the server
// reading a client's requests (serve), a Namespace.Serve that one client
// sends garbage, and the helper's command line. Each input is a script of
// messages: see fuzzScript.

// markerName names the memfds the fuzz targets attach to messages: a
// descriptor of that name still open once a script has been played is a
// leak, whichever number it has (other tests' descriptors do not count).
const markerName = "vsockns-fuzz-marker"

// newMarker returns a fresh marker descriptor.
func newMarker(t testing.TB) int {
	t.Helper()
	fd, err := unix.MemfdCreate(markerName, unix.MFD_CLOEXEC)
	if err != nil {
		t.Fatalf("memfd_create: %v", err)
	}
	return fd
}

// openMarkers lists the marker descriptors open in the process.
func openMarkers(t testing.TB) []string {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatalf("read /proc/self/fd: %v", err)
	}
	var open []string
	for _, e := range ents {
		target, err := os.Readlink(filepath.Join("/proc/self/fd", e.Name()))
		if err == nil && strings.Contains(target, markerName) {
			open = append(open, e.Name()+" -> "+target)
		}
	}
	return open
}

// noMarkers fails t if any marker descriptor is still open.
func noMarkers(t testing.TB) {
	t.Helper()
	if open := openMarkers(t); len(open) > 0 {
		t.Fatalf("descriptors leaked: %v", open)
	}
}

// A fuzzMsg is one message of a script: its bytes and how many marker
// descriptors ride with it.
type fuzzMsg struct {
	data []byte
	fds  int
}

// maxScript bounds a script's messages, and a message's bytes a little
// above maxMessage (an oversized message must be refused, not read).
const (
	maxScript    = 8
	maxScriptMsg = maxMessage + 64
	maxScriptFDs = maxBatch + 3
)

// fuzzScript splits an input into messages at each "\n\x00" pair; the
// first byte of each message says how many descriptors it carries (its
// value modulo maxScriptFDs+1: none, one, a batch's, or more than a
// message may carry), the rest is the message. At most maxScript
// messages.
func fuzzScript(in []byte) []fuzzMsg {
	var msgs []fuzzMsg
	for _, part := range bytes.Split(in, []byte("\n\x00")) {
		if len(msgs) == maxScript {
			break
		}
		m := fuzzMsg{}
		if len(part) > 0 {
			m.fds, m.data = int(part[0])%(maxScriptFDs+1), part[1:]
		}
		if len(m.data) > maxScriptMsg {
			m.data = m.data[:maxScriptMsg]
		}
		msgs = append(msgs, m)
	}
	return msgs
}

// script builds a fuzz input from messages given as (descriptors, text).
func script(parts ...any) []byte {
	var b []byte
	for i := 0; i < len(parts); i += 2 {
		if i > 0 {
			b = append(b, "\n\x00"...)
		}
		b = append(b, byte(parts[i].(int)))
		switch p := parts[i+1].(type) {
		case string:
			b = append(b, p...)
		case []byte:
			b = append(b, p...)
		}
	}
	return b
}

// sendScripted sends m on c with m.fds fresh markers attached (closed
// here once sent). It reports whether the kernel took the message.
func sendScripted(t testing.TB, c *net.UnixConn, m fuzzMsg) bool {
	t.Helper()
	var fds []int
	for range m.fds {
		fds = append(fds, newMarker(t))
	}
	defer func() {
		for _, fd := range fds {
			unix.Close(fd)
		}
	}()
	var oob []byte
	if len(fds) > 0 {
		oob = unix.UnixRights(fds...)
	}
	_, _, err := c.WriteMsgUnix(m.data, oob, nil)
	return err == nil
}

// checkRecvError fails t unless err is one a reader of the protocol may
// return: the end of the connection, or a protocol error.
func checkRecvError(t testing.TB, err error) {
	t.Helper()
	if !errors.Is(err, io.EOF) && !errors.Is(err, net.ErrClosed) && !errors.Is(err, errProtocol) {
		t.Fatalf("recvMsg: an error that is neither the end nor a protocol error: %v", err)
	}
}

var seedRequests = [][]byte{
	script(0, `{"id":1,"op":"socket","type":1}`),
	script(0, `{"id":2,"op":"read","name":"ns_mode"}`),
	script(0, `{"id":3,"op":"write","name":"child_ns_mode","value":"local"}`),
	script(0, `{"id":4,"op":"vhost"}`, 0, `{"id":4,"op":"cancel"}`),
	script(1, `{"id":5,"op":"socket","type":5}`),
	script(2, `{"id":6,"op":"read","name":"../../kernel/hostname"}`),
	script(0, `{"id":7,"op":"socket","type":`),
	script(0, `[1,2,3]`, 0, `{"id":8,"op":"read","name":"ns_mode"}`),
	script(1, ``),
	script(0, bytes.Repeat([]byte{' '}, maxMessage+1)),
	script(0, `{"id":9,"op":"nonsense"}`, 0, `{"id":9,"op":"cancel"}`, 0, `{"id":9,"op":"cancel"}`),
	script(0, `{"id":18446744073709551615,"op":"read","name":"ns_mode"}`),
	script(0, `null`),
	script(0, "\xff\xfe"),
	script(0, `{"id":10,"op":"sockets","type":1,"count":3}`),
	script(0, `{"id":11,"op":"sockets","type":5,"count":64}`, 0, `{"id":12,"op":"sockets","type":1,"count":65}`),
	script(0, `{"id":13,"op":"sockets","type":1,"count":0}`, 0, `{"id":14,"op":"sockets","type":1,"count":-1}`),
	script(0, `{"id":15,"op":"sockets","type":7,"count":2}`),
	script(3, `{"id":16,"op":"sockets","type":1,"count":1}`),
}

var seedReplies = [][]byte{
	script(1, `{"id":0,"version":2}`, 1, `{"id":1}`, 0, `{"id":2,"value":"local"}`),
	script(0, `{"id":0,"version":2}`),
	script(1, `{"id":0,"version":1}`),
	script(1, `{"id":0,"version":3}`),
	script(2, `{"id":0,"version":2}`),
	script(0, `{"id":0,"version":2,"err":{"text":"no","errno":13,"is":["userns-disabled"]}}`),
	script(1, `{"id":0,"version":2}`, 2, `{"id":1}`, 1, `{"id":2}`),
	script(1, `{"id":0,"version":2}`, 1, `{"id":2,"err":{"text":"x","errno":1,"syscall":"socket"}}`, 1, `{"id":1,"err":{"text":"y","path_op":"open","path":"/p","errno":2}}`),
	script(1, `{"id":0,"version":2}`, 1, `{"id":7}`, 1, `{"id":1}`, 1, `{"id":1}`),
	script(1, `{"id":0,"version":2}`, 0, `{"id":1,`),
	script(1, `{"id":0,"version":2}`, 1, bytes.Repeat([]byte{' '}, maxMessage+1)),
	script(1, `{"id":0,"version":2}`, 0, ``),
	script(1, `{"id":0,"version":2}`, 0, `{"id":1,"err":{"is":["bogus","canceled"]}}`, 0, `{"id":2,"err":null}`),
	script(1, `{"id":0,"version":2,"err":{"text":"refused with a descriptor"}}`),
	script(1, `{"id":0,"version":2}`, 3, `{"id":3}`, 1, `{"id":1}`, 0, `{"id":2,"value":"global"}`),
	script(1, `{"id":0,"version":2}`, 2, `{"id":1}`, 5, `{"id":3}`, 0, `{"id":3}`),
	script(1, `{"id":0,"version":2}`, 0, `{"id":3}`, 64, `{"id":1}`),
	script(1, `{"id":0,"version":2}`, 67, `{"id":3}`, 65, `{"id":2}`),
	script(3, `{"id":0,"version":2}`),
}

// FuzzRecvMsg: one message, of any bytes and with 0 to 2 descriptors,
// decoded as a request and as a reply: recvMsg returns it whole with its
// one descriptor, or an error naming the protocol (or the end), and leaks
// no descriptor either way.
func FuzzRecvMsg(f *testing.F) {
	for _, s := range append(append([][]byte{}, seedRequests...), seedReplies...) {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		m := fuzzScript(in)[0]
		for _, asRequest := range []bool{true, false} {
			client, server := packetPair(t)
			sent := sendScripted(t, client, m)
			// The client's end follows its message: an empty message
			// reads as an end (zero bytes), and recvMsg then reads on to
			// tell it from the real one.
			client.Close()
			if !sent {
				server.Close()
				continue
			}
			var v any = &reply{}
			max := maxBatch
			if asRequest {
				v, max = &request{}, 1
			}
			fds, lost, err := recvMsg(server, v, max)
			switch {
			case err != nil:
				checkRecvError(t, err)
				if fds != nil {
					t.Fatalf("recvMsg: descriptors %v with error %v", fds, err)
				}
				if len(m.data) > 0 && m.fds <= max && len(m.data) <= maxMessage && json.Valid(m.data) && !errors.Is(err, io.EOF) {
					// Valid JSON of the wrong shape is an error too, but
					// then it must be the decoder's, not a lost message.
					var syn *json.UnmarshalTypeError
					if !errors.As(err, &syn) {
						t.Fatalf("recvMsg refused valid JSON %q with %d descriptors (max %d): %v", m.data, m.fds, max, err)
					}
				}
			case m.fds > max:
				t.Fatalf("recvMsg accepted %d descriptors in one message (max %d)", m.fds, max)
			case len(m.data) > maxMessage:
				t.Fatalf("recvMsg accepted a message of %d bytes (max %d)", len(m.data), maxMessage)
			case lost:
				t.Fatalf("recvMsg: descriptors lost with descriptors to spare")
			case len(fds) != m.fds:
				t.Fatalf("recvMsg: %d descriptors for a message with %d", len(fds), m.fds)
			}
			closeFds(fds)
			server.Close()
			noMarkers(t)
		}
	})
}

// FuzzRemoteClient: a server that sends anything (a bad hello, replies
// out of order, for calls nobody made, twice, with descriptors where none
// belong or none where one must be) makes the client's calls fail or
// succeed, never hang once it is gone, and leaks nothing: every
// descriptor the client was sent is closed or handed to its caller.
func FuzzRemoteClient(f *testing.F) {
	for _, s := range seedReplies {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		msgs := fuzzScript(in)
		client, server := packetPair(t)
		defer noMarkers(t)
		defer server.Close()
		// A first message newRemote takes for the hello (well-formed, of
		// ID 0) ends its wait; after anything else it waits on, so the
		// whole script goes at once, and the end of it.
		var first reply
		hello := msgs[0].fds <= maxBatch && len(msgs[0].data) <= maxMessage && json.Unmarshal(msgs[0].data, &first) == nil && first.ID == 0
		if !hello {
			for _, m := range msgs {
				sendScripted(t, server, m)
			}
			msgs = msgs[:1]
		} else {
			sendScripted(t, server, msgs[0])
		}
		if len(msgs) == 1 {
			server.Close() // the server says no more
		}
		r, nsfd, err := newRemote(context.Background(), client)
		if err != nil {
			if nsfd != -1 {
				t.Fatalf("newRemote: descriptor %d with error %v", nsfd, err)
			}
			return
		}
		if nsfd < 0 {
			t.Fatalf("newRemote succeeded without a namespace descriptor")
		}
		unix.Close(nsfd)
		defer r.close()
		// Three calls, pending before the rest of the script is sent: the
		// server reads the three requests first.
		var wg sync.WaitGroup
		var sockFD int
		var batch []int
		var sockErr, readErr, batchErr error
		wg.Go(func() { sockFD, sockErr = r.socket(context.Background(), unix.SOCK_STREAM) })
		wg.Go(func() { _, readErr = r.readSysctl(context.Background(), "ns_mode") })
		wg.Go(func() { batch, batchErr = r.sockets(context.Background(), unix.SOCK_STREAM, 3) })
		if len(msgs) > 1 {
			for range 3 {
				var req request
				fds, _, err := recvMsg(server, &req, 1)
				if err != nil || len(fds) != 0 {
					t.Fatalf("the client's request: descriptors %v, %v", fds, err)
				}
			}
			for _, m := range msgs[1:] {
				sendScripted(t, server, m)
			}
			server.Close()
		}
		wg.Wait()
		switch {
		case sockErr == nil && sockFD < 0:
			t.Fatalf("socket call: no error and no descriptor")
		case sockErr != nil && sockFD != -1:
			t.Fatalf("socket call: descriptor %d with error %v", sockFD, sockErr)
		case len(batch) > 3:
			t.Fatalf("a batch of 3: %d descriptors", len(batch))
		case batchErr == nil && len(batch) == 0:
			t.Fatalf("a batch of 3: no error and no descriptor")
		case batchErr != nil && len(batch) != 0:
			t.Fatalf("a batch of 3 (one request): descriptors %v with error %v", batch, batchErr)
		}
		if sockFD >= 0 {
			unix.Close(sockFD)
		}
		closeFds(batch)
		_ = readErr // any answer will do; what it holds is checked by noMarkers
	})
}

// fakeBackend serves the protocol without a namespace: sockets and vhost
// devices are marker descriptors; openVhost waits for its context (which
// a cancel request or the end of the connection ends).
type fakeBackend struct{}

func (fakeBackend) socket(context.Context, int) (int, error) {
	fd, err := unix.MemfdCreate(markerName, unix.MFD_CLOEXEC)
	if err != nil {
		return -1, os.NewSyscallError("memfd_create", err)
	}
	return fd, nil
}
func (b fakeBackend) sockets(ctx context.Context, typ, k int) ([]int, error) {
	var fds []int
	for range k {
		fd, err := b.socket(ctx, typ)
		if err != nil {
			return fds, err
		}
		fds = append(fds, fd)
	}
	return fds, nil
}
func (fakeBackend) openVhost(ctx context.Context) (int, error) {
	<-ctx.Done()
	return -1, ctx.Err()
}

// diagSocket, like socket, hands out a marker descriptor.
func (b fakeBackend) diagSocket(ctx context.Context) (int, error)             { return b.socket(ctx, 0) }
func (fakeBackend) readSysctl(_ context.Context, name string) (string, error) { return name, nil }
func (fakeBackend) writeSysctl(context.Context, string, string) error         { return nil }
func (fakeBackend) String() string                                            { return "the fuzz backend" }

// FuzzServeRequests: a client that sends anything makes serve answer each
// well-formed request it read before anything malformed with a reply of
// its ID, and end (with an error, or nil at the client's end) without
// leaking a descriptor, whether the client attached any or not.
func FuzzServeRequests(f *testing.F) {
	for _, s := range seedRequests {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		msgs := fuzzScript(in)
		client, server := packetPair(t)
		defer noMarkers(t)
		served := make(chan error, 1)
		go func() {
			nsfd, _ := fakeBackend{}.socket(context.Background(), 0)
			served <- serve(server, fakeBackend{}, nsfd)
			if nsfd >= 0 {
				unix.Close(nsfd)
			}
			server.Close()
		}()
		var hello reply
		fds, _, err := recvMsg(client, &hello, 1)
		if err != nil || len(fds) != 1 || hello.Version != protocolVersion {
			t.Fatalf("hello: %+v, descriptors %v, %v", hello, fds, err)
		}
		closeFds(fds)
		// What the server must answer: the requests it decoded before
		// the first message it could not (after which it stops).
		want := map[uint64]int{}
		for _, m := range msgs {
			if !sendScripted(t, client, m) {
				break
			}
			if len(m.data) == 0 && m.fds == 0 {
				continue // an empty message is passed over (see recvMsg)
			}
			var req request
			if m.fds > 1 || len(m.data) > maxMessage || json.Unmarshal(m.data, &req) != nil {
				break
			}
			if req.Op != opCancel {
				want[req.ID]++
			}
		}
		// The end of the client's sending: the server ends its waiting
		// requests (openVhost), answers them and returns.
		if err := client.CloseWrite(); err != nil {
			t.Fatalf("shutdown: %v", err)
		}
		got := map[uint64]int{}
		for {
			var rep reply
			fds, _, err := recvMsg(client, &rep, maxBatch)
			if err != nil {
				break
			}
			closeFds(fds)
			got[rep.ID]++
		}
		err = <-served
		client.Close()
		if err == nil {
			for id, n := range want {
				if got[id] != n {
					t.Fatalf("request %d: %d replies, want %d (all: %v)", id, got[id], n, got)
				}
			}
		}
		for id, n := range got {
			if n > want[id] && err == nil {
				t.Fatalf("reply %d: %d replies for %d requests", id, n, want[id])
			}
		}
	})
}

// FuzzHelperSpec: the helper accepts exactly the command lines the parent
// writes ("2 local map", "2 global serve", …), and nothing with more or
// less.
func FuzzHelperSpec(f *testing.F) {
	for _, s := range []string{"2 local map", "2 global make", "2 local serve", "2 local", "1 local", "1 global", "2 local map extra", "2  local map", "02 local map", "2 LOCAL map", "2 local MAP", "3 local map", "2", "", " 2 local map", "2 local map\n", "+2 global make", "2 local  serve", "2 local serve "} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, spec string) {
		m, stage, err := parseHelperSpec(spec)
		if err != nil {
			return
		}
		if want := helperSpec(m, stage); spec != want {
			t.Fatalf("parseHelperSpec(%q) accepted it as %q", spec, want)
		}
	})
}

// FuzzNamespaceServe: a client of the server's own user that sends
// anything (after reading its hello) costs the other clients nothing: one
// that connects meanwhile is served, and once the garbage's sender is gone
// and the server stopped, no descriptor it sent is left open. Serving
// enters the namespace (a fresh one): root only.
func FuzzNamespaceServe(f *testing.F) {
	for _, s := range seedRequests {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		if os.Geteuid() != 0 {
			t.Skip("Namespace.Serve enters the namespace it serves (setns): needs root")
		}
		defer noMarkers(t)
		// A namespace of its own: the scripts write sysctls (the seeds
		// write child_ns_mode), which in the test's own namespace (the
		// VM's init namespace) every later test would meet.
		nsfd := -1
		if err := nsthread.Run(context.Background(), nil, nsthread.Caller(), func() error {
			if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
				return err
			}
			var err error
			nsfd, err = nsthread.Current()
			return err
		}); err != nil {
			t.Fatal(err)
		}
		n, err := adoptNamespace(nsfd, "the fuzz target's namespace")
		if err != nil {
			t.Fatal(err)
		}
		defer n.Close()
		path := filepath.Join(t.TempDir(), "ns.sock")
		l, err := net.ListenUnix("unixpacket", &net.UnixAddr{Name: path, Net: "unixpacket"})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		served := make(chan error, 1)
		go func() { served <- n.Serve(ctx, l) }()
		defer func() {
			cancel()
			if err := <-served; !errors.Is(err, context.Canceled) {
				t.Errorf("Serve: %v, want context.Canceled", err)
			}
		}()

		bad, err := net.DialUnix("unixpacket", nil, &net.UnixAddr{Name: path, Net: "unixpacket"})
		if err != nil {
			t.Fatal(err)
		}
		defer bad.Close()
		var hello reply
		fds, _, err := recvMsg(bad, &hello, 1)
		if err != nil || len(fds) != 1 {
			t.Fatalf("hello: descriptors %v, %v", fds, err)
		}
		closeFds(fds)
		var drained sync.WaitGroup
		drained.Go(func() {
			for {
				var rep reply
				fds, _, err := recvMsg(bad, &rep, maxBatch)
				closeFds(fds)
				if errors.Is(err, io.EOF) || errors.Is(err, net.ErrClosed) {
					return
				}
			}
		})
		for _, m := range fuzzScript(in) {
			if !sendScripted(t, bad, m) {
				break
			}
		}

		// Bounded: a server that stopped serving others would keep it
		// waiting for its hello.
		dctx, dcancel := context.WithTimeout(ctx, 10*time.Second)
		defer dcancel()
		good, err := DialNamespace(dctx, path)
		if err != nil {
			t.Fatalf("a second client, while the first sends garbage: %v", err)
		}
		_, err = good.Mode()
		if errors.Is(err, net.ErrClosed) || errors.Is(err, ErrNamespaceClosed) {
			t.Fatalf("a second client's request, while the first sends garbage: %v", err)
		}
		if err := good.Close(); err != nil {
			t.Fatal(err)
		}
		bad.Close()
		drained.Wait()
	})
}
