//go:build linux

package main

import (
	"bufio"
	"bytes"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
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
	return runCmd(t, cmd)
}

// runCmd runs cmd and returns its status and output.
func runCmd(t *testing.T, cmd *exec.Cmd) result {
	t.Helper()
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
