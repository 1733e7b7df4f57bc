//go:build linux

package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/mdlayher/vsock"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/vishvananda/netns"

	"github.com/vsockns/vsockns"
	"github.com/vsockns/vsockns/internal/testenv"
)

// These tests run the real binary: the VM harness builds it into the
// guest's /bin and names it in VSOCKNS_CLI.

func cliPath(t *testing.T) string {
	t.Helper()
	p := os.Getenv("VSOCKNS_CLI")
	if os.Getenv("VSOCKNS_IN_VM") == "1" {
		require.NotEmpty(t, p, "the VM harness must provide VSOCKNS_CLI")
		return p
	}
	t.Skip("runs the built CLI as root against vsock_loopback; run `make test` (it runs this in a VM on Linux >= 7.0 and 6.1)")
	return ""
}

func namespacesExpected(t *testing.T) bool {
	t.Helper()
	want, err := strconv.ParseBool(os.Getenv("VSOCKNS_EXPECT_NAMESPACES"))
	require.NoError(t, err)
	return want
}

type result struct {
	code           int
	stdout, stderr string
}

func runCLI(t *testing.T, stdin string, args ...string) result {
	t.Helper()
	cmd := exec.Command(cliPath(t), args...)
	cmd.Stdin = strings.NewReader(stdin)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else {
		require.NoError(t, err)
	}
	return result{code, out.String(), errb.String()}
}

// addNS creates a named namespace with the CLI and deletes it at cleanup.
func addNS(t *testing.T, name, mode string) {
	t.Helper()
	r := runCLI(t, "", "add", name, "--mode", mode)
	require.Equal(t, 0, r.code, "%+v", r)
	assert.Equal(t, name+" ("+mode+")\n", r.stdout)
	t.Cleanup(func() { runCLI(t, "", "del", name) })
}

func TestCLIUsage(t *testing.T) {
	cliPath(t)
	r := runCLI(t, "")
	assert.Equal(t, 2, r.code)
	assert.Contains(t, r.stderr, "usage: vsockns", "a usage error goes to stderr")
	assert.Empty(t, r.stdout)
	r = runCLI(t, "", "--help")
	assert.Equal(t, 0, r.code)
	assert.Contains(t, r.stdout, "usage: vsockns", "asked-for help goes to stdout")
	r = runCLI(t, "", "frobnicate")
	assert.Equal(t, 2, r.code)
	assert.Contains(t, r.stderr, `unknown command "frobnicate"`)
	r = runCLI(t, "", "dial", "3")
	assert.Equal(t, 2, r.code)
	assert.Contains(t, r.stderr, "want CID PORT")
	r = runCLI(t, "", "dial", "x", "1")
	assert.Equal(t, 2, r.code)
	r = runCLI(t, "", "add", "n", "--mode", "isolated")
	assert.Equal(t, 2, r.code)
	assert.Contains(t, r.stderr, "invalid vsock mode")
	r = runCLI(t, "", "mode", "--netns", "a", "--pid", "1")
	assert.Equal(t, 2, r.code)
}

func TestCLIMode(t *testing.T) {
	cliPath(t)
	if !namespacesExpected(t) {
		r := runCLI(t, "", "mode")
		assert.Equal(t, 1, r.code)
		assert.Contains(t, r.stderr, "Linux >= 7.0 is needed")
		r = runCLI(t, "", "add", "legacy", "--mode", "local")
		assert.Equal(t, 1, r.code)
		assert.Contains(t, r.stderr, "not supported")
		return
	}
	r := runCLI(t, "", "mode")
	require.Equal(t, 0, r.code, "%+v", r)
	assert.Equal(t, "ns_mode:        global\nchild_ns_mode:  global\ng2h_fallback:   true\n", r.stdout)

	addNS(t, "blue", "local")
	r = runCLI(t, "", "mode", "--netns", "blue", "--json")
	require.Equal(t, 0, r.code, "%+v", r)
	var rep struct {
		Namespace string       `json:"namespace"`
		Mode      vsockns.Mode `json:"ns_mode"`
		Child     vsockns.Mode `json:"child_ns_mode"`
		G2H       bool         `json:"g2h_fallback"`
	}
	require.NoError(t, json.Unmarshal([]byte(r.stdout), &rep))
	assert.Equal(t, vsockns.ModeLocal, rep.Mode)
	assert.Equal(t, vsockns.ModeLocal, rep.Child)
	assert.Equal(t, "namespace 'blue'", rep.Namespace)

	r = runCLI(t, "", "mode", "--netns", "/run/netns/blue")
	require.Equal(t, 0, r.code, "%+v", r)
	assert.Contains(t, r.stdout, "ns_mode:        local")

	r = runCLI(t, "", "mode", "--netns", "nosuch")
	assert.Equal(t, 1, r.code)
	assert.Contains(t, r.stderr, `namespace "nosuch"`)
}

// mode --json reports an error in the JSON and in its exit status (before
// the fix it printed the error and exited 0).
func TestCLIModeJSONError(t *testing.T) {
	cliPath(t)
	var rep struct {
		Error string `json:"error"`
	}
	// Not a namespace: every kernel fails to read its mode.
	r := runCLI(t, "", "mode", "--json", "--netns", "/dev/null")
	assert.Equal(t, 1, r.code, "%+v", r)
	require.NoError(t, json.Unmarshal([]byte(r.stdout), &rep), "%+v", r)
	assert.Contains(t, rep.Error, "not a network namespace")
	if !namespacesExpected(t) {
		r := runCLI(t, "", "mode", "--json")
		assert.Equal(t, 1, r.code, "%+v", r)
		require.NoError(t, json.Unmarshal([]byte(r.stdout), &rep))
		assert.Contains(t, rep.Error, "Linux >= 7.0 is needed")
	}
}

func TestCLIAddListDelete(t *testing.T) {
	cliPath(t)
	if !namespacesExpected(t) {
		r := runCLI(t, "", "ls", "--json")
		require.Equal(t, 0, r.code, "%+v", r)
		assert.JSONEq(t, "[]", r.stdout)
		return
	}
	addNS(t, "red", "local")
	addNS(t, "green", "global")
	r := runCLI(t, "", "add", "red", "--mode", "global")
	assert.Equal(t, 1, r.code, "the name is taken")
	assert.Contains(t, r.stderr, "exists")

	r = runCLI(t, "", "ls", "--json")
	require.Equal(t, 0, r.code, "%+v", r)
	var rows []struct {
		Namespace string       `json:"namespace"`
		Mode      vsockns.Mode `json:"ns_mode"`
	}
	require.NoError(t, json.Unmarshal([]byte(r.stdout), &rows))
	modes := map[string]vsockns.Mode{}
	for _, row := range rows {
		modes[row.Namespace] = row.Mode
	}
	assert.Equal(t, map[string]vsockns.Mode{"green": vsockns.ModeGlobal, "red": vsockns.ModeLocal}, modes)

	r = runCLI(t, "", "ls")
	require.Equal(t, 0, r.code)
	assert.Regexp(t, `(?m)^green\s+global\s+global`, r.stdout)
	assert.Regexp(t, `(?m)^red\s+local\s+local`, r.stdout)

	r = runCLI(t, "", "ls", "--all", "--json")
	require.Equal(t, 0, r.code, "%+v", r)
	var all []struct {
		Mode vsockns.Mode `json:"ns_mode"`
		PIDs []int        `json:"pids"`
	}
	require.NoError(t, json.Unmarshal([]byte(r.stdout), &all))
	foundInit := false
	for _, row := range all {
		for _, pid := range row.PIDs {
			if pid == 1 {
				foundInit = true
				assert.Equal(t, vsockns.ModeGlobal, row.Mode)
			}
		}
	}
	assert.True(t, foundInit, "--all lists the namespace of pid 1")

	r = runCLI(t, "", "del", "red")
	require.Equal(t, 0, r.code, "%+v", r)
	r = runCLI(t, "", "del", "red")
	assert.Equal(t, 1, r.code)
}

func TestCLIChildMode(t *testing.T) {
	cliPath(t)
	if !namespacesExpected(t) {
		r := runCLI(t, "", "child-mode", "set", "local", "--init")
		assert.Equal(t, 1, r.code)
		assert.Contains(t, r.stderr, "not supported")
		return
	}
	r := runCLI(t, "", "child-mode", "set", "local")
	assert.Equal(t, 2, r.code, "the init namespace needs --init")
	assert.Contains(t, r.stderr, "every namespace created on this host until reboot")

	addNS(t, "parent", "global")
	r = runCLI(t, "", "child-mode", "set", "local", "--netns", "parent")
	require.Equal(t, 0, r.code, "%+v", r)
	assert.Contains(t, r.stderr, "cannot be changed again")
	r = runCLI(t, "", "child-mode", "set", "global", "--netns", "parent")
	assert.Equal(t, 1, r.code)
	assert.Contains(t, r.stderr, "already local and can be written only once")
}

// startListener runs `vsockns listen` and waits until it is listening.
func startListener(t *testing.T, stdin string, args ...string) (*exec.Cmd, *lockedBuffer) {
	t.Helper()
	cmd := exec.Command(cliPath(t), append([]string{"listen"}, args...)...)
	cmd.Stdin = strings.NewReader(stdin)
	out := &lockedBuffer{wake: make(chan struct{}, 1)}
	cmd.Stdout = out
	stderr, err := cmd.StderrPipe()
	require.NoError(t, err)
	require.NoError(t, cmd.Start())
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	line, err := bufio.NewReader(stderr).ReadString('\n')
	require.NoError(t, err, "listener said: %q", line)
	require.Contains(t, line, "listening on")
	go io.Copy(io.Discard, stderr)
	return cmd, out
}

// lockedBuffer is a bytes.Buffer that a running process may write to while
// the test reads it. With wake set, waitFor can wait for content.
type lockedBuffer struct {
	mu   sync.Mutex
	buf  bytes.Buffer
	wake chan struct{}
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.wake != nil {
		select {
		case b.wake <- struct{}{}:
		default:
		}
	}
	return b.buf.Write(p)
}

// waitFor waits (at most 20 s) until the buffer holds want.
func (b *lockedBuffer) waitFor(t *testing.T, want string) {
	t.Helper()
	timeout := time.After(20 * time.Second)
	for !strings.Contains(b.String(), want) {
		select {
		case <-b.wake:
		case <-timeout:
			t.Fatalf("waited 20 s for %q, have %q", want, b.String())
		}
	}
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

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

// dialWithOpenStdin starts `vsockns dial` whose stdin stays open (like a
// terminal) until the test ends.
func dialWithOpenStdin(t *testing.T, args ...string) (*exec.Cmd, *lockedBuffer) {
	t.Helper()
	cmd := exec.Command(cliPath(t), append([]string{"dial"}, args...)...)
	stdin, err := cmd.StdinPipe()
	require.NoError(t, err)
	out := &lockedBuffer{wake: make(chan struct{}, 1)}
	cmd.Stdout = out
	require.NoError(t, cmd.Start())
	t.Cleanup(func() { stdin.Close(); _ = cmd.Process.Kill(); _ = cmd.Wait() })
	return cmd, out
}

// waitExit waits (at most 20 s) for cmd to end and returns its exit code,
// or -1 for a signal that killed it.
func waitExit(t *testing.T, cmd *exec.Cmd) int {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case <-done:
		return cmd.ProcessState.ExitCode()
	case <-time.After(20 * time.Second):
		t.Fatalf("%v did not end within 20 s", cmd.Args)
		return 0
	}
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
