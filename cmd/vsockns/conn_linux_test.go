//go:build linux

package main

import (
	"fmt"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/mdlayher/vsock"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/vishvananda/netns"
	"github.com/vsockns/vsockns"
	"github.com/vsockns/vsockns/internal/testenv"
)

func TestCLIDialListen(t *testing.T) {
	cliPath(t)
	withNS := namespacesExpected(t)
	var ns []string
	if withNS {
		addNS(t, "svc", "local")
		addNS(t, "other", "local")
		ns = []string{"--netns", "svc"}
	}
	listener, out := startListener(t, "hello from the listener\n", append(ns, "7100")...)
	// The dialer's stdin ends only once the listener's message is in: the
	// end of what either side sends ends the other side's command.
	dialer := exec.Command(cliPath(t), append(append([]string{"dial"}, ns...), "1", "7100")...)
	stdin, err := dialer.StdinPipe()
	require.NoError(t, err)
	dout := &lockedBuffer{wake: make(chan struct{}, 1)}
	dialer.Stdout = dout
	require.NoError(t, dialer.Start())
	_, err = stdin.Write([]byte("hello from the dialer\n"))
	require.NoError(t, err)
	dout.waitFor(t, "hello from the listener\n")
	require.NoError(t, stdin.Close())
	require.NoError(t, dialer.Wait())
	assert.Equal(t, "hello from the listener\n", dout.String())
	require.NoError(t, listener.Wait())
	assert.Equal(t, "hello from the dialer\n", out.String())

	if !withNS {
		return
	}
	startListener(t, "", "--netns", "svc", "7101")
	r := runCLI(t, "", "dial", "--netns", "other", "1", "7101")
	assert.Equal(t, 1, r.code)
	assert.Contains(t, r.stderr, "connection reset: namespace 'other' is local-mode; it reaches only listeners inside itself")
	r = runCLI(t, "", "dial", "1", "7101")
	assert.Equal(t, 1, r.code)
	assert.Contains(t, r.stderr, "connection reset: nothing listening on local(1):7101 that the current namespace can reach")
	r = runCLI(t, "", "dial", "4242", "1")
	assert.Equal(t, 1, r.code)
	assert.Contains(t, r.stderr, "no vsock transport reaches vm(4242):1")
}

func TestCLIKeepOpenAndPID(t *testing.T) {
	testenv.HoldIfAsked()
	cliPath(t)
	pid := fmt.Sprint(testenv.StartHolder(t, "TestCLIKeepOpenAndPID"))

	_, out := startListener(t, "", "--pid", pid, "--keep-open", "7200")
	for i := range 3 {
		r := runCLI(t, fmt.Sprintf("message %d\n", i), "dial", "--pid", pid, "1", "7200")
		require.Equal(t, 0, r.code, "%+v", r)
	}
	// A dial returns once both directions are done, which for the
	// listener means it has written the dialer's data to its stdout and
	// closed the connection; from the pipe, os/exec's goroutine copies it
	// into out a moment later (asserting at once failed so under -race).
	out.waitFor(t, "message 2\n")
	assert.Equal(t, "message 0\nmessage 1\nmessage 2\n", out.String())
}

// The dialer ends when its peer closes the connection, although its own
// stdin stays open (a terminal), as nc does.
func TestCLIDialEndsWhenPeerCloses(t *testing.T) {
	cliPath(t)
	l, err := vsockns.Listen(netns.None(), 0)
	require.NoError(t, err)
	defer l.Close()
	go func() {
		c, err := l.Accept()
		if err == nil {
			_, _ = c.Write([]byte("bye\n"))
			c.Close()
		}
	}()
	dialer, out := dialWithOpenStdin(t, "1", fmt.Sprint(l.Addr().(*vsock.Addr).Port))
	out.waitFor(t, "bye\n")
	assert.Equal(t, 0, waitExit(t, dialer), "the dialer ends with the peer")
}

// Ctrl-C (SIGINT) ends a listener and a dialer while a connection is piped,
// with the status a shell expects: 128 + 2. SIGTERM: 128 + 15.
func TestCLIInterruptWhilePiping(t *testing.T) {
	cliPath(t)
	for _, tc := range []struct {
		name   string
		sig    syscall.Signal
		target string // which side gets the signal
		port   string
	}{
		{"sigint_listener", syscall.SIGINT, "listen", "7400"},
		{"sigint_dialer", syscall.SIGINT, "dial", "7401"},
		{"sigterm_dialer", syscall.SIGTERM, "dial", "7402"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// The listener's stdin stays open too: nothing ends the
			// connection but the signal.
			lcmd := exec.Command(cliPath(t), "listen", tc.port)
			lin, err := lcmd.StdinPipe()
			require.NoError(t, err)
			lout := &lockedBuffer{wake: make(chan struct{}, 1)}
			lcmd.Stdout = lout
			lerr := &lockedBuffer{wake: make(chan struct{}, 1)}
			lcmd.Stderr = lerr
			require.NoError(t, lcmd.Start())
			t.Cleanup(func() { lin.Close(); _ = lcmd.Process.Kill(); _ = lcmd.Wait() })
			lerr.waitFor(t, "listening on")

			dialer, _ := dialWithOpenStdin(t, "1", tc.port)
			lerr.waitFor(t, "connection from")
			victim, other := lcmd, dialer
			if tc.target == "dial" {
				victim, other = dialer, lcmd
			}
			require.NoError(t, victim.Process.Signal(tc.sig))
			assert.Equal(t, 128+int(tc.sig), waitExit(t, victim))
			// Its peer sees the connection end and ends too.
			assert.Equal(t, 0, waitExit(t, other))
		})
	}
}

// --seqpacket: each line the dialer reads is one message, and each message
// the listener receives is a line; --buffer-size sets the receive buffer
// (a 512 KiB message fits the listener's 1M, not the default 256K).
func TestCLISeqpacket(t *testing.T) {
	cliPath(t)
	testenv.NeedVsock(t)
	l, err := vsockns.ListenSeqpacket(netns.None(), 0)
	require.NoError(t, err)
	defer l.Close()
	got := make(chan []string, 1)
	go func() {
		c, err := l.AcceptContext(t.Context())
		if err != nil {
			got <- []string{err.Error()}
			return
		}
		defer c.Close()
		var msgs []string
		b := make([]byte, 1024)
		for {
			n, _, err := c.ReadMsg(b)
			if err != nil {
				break
			}
			msgs = append(msgs, string(b[:n]))
		}
		c.Write([]byte("reply one"))
		c.Write([]byte("reply two"))
		got <- msgs
	}()
	r := runCLI(t, "one\ntwo\nthree\n", "dial", "--seqpacket", "1", strconv.FormatUint(uint64(l.Addr().(*vsock.Addr).Port), 10))
	require.Equal(t, 0, r.code, "%+v", r)
	assert.Equal(t, []string{"one", "two", "three"}, <-got, "a message per line, without the newline")
	assert.Equal(t, "reply one\nreply two\n", r.stdout, "a line per message")

	// A message is bounded by both ends' receive buffers: a 512 KiB one
	// needs the listener's --buffer-size (and the dialer's own).
	big := strings.Repeat("x", 512<<10)
	d := vsockns.Dialer{BufferSize: 1 << 20}
	startListener(t, "", "--seqpacket", "7301")
	c, err := d.DialSeqpacket(t.Context(), vsock.Local, 7301)
	require.NoError(t, err)
	_, err = c.Write([]byte(big))
	assert.Error(t, err, "the listener's default 256K buffer")
	c.Close()

	listener, out := startListener(t, "", "--seqpacket", "--buffer-size", "1M", "7300")
	c, err = d.DialSeqpacket(t.Context(), vsock.Local, 7300)
	require.NoError(t, err)
	_, err = c.Write([]byte(big))
	require.NoError(t, err, "the listener's receive buffer is 1M")
	_, err = c.Write([]byte("end"))
	require.NoError(t, err)
	require.NoError(t, c.Close())
	out.waitFor(t, "end\n")
	assert.Equal(t, big+"\nend\n", out.String())
	require.NoError(t, listener.Wait())

	r = runCLI(t, "", "dial", "--buffer-size", "lots", "1", "1")
	assert.Equal(t, 2, r.code)
	assert.Contains(t, r.stderr, "buffer-size")
}
