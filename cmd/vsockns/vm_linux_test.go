//go:build linux

package main

import (
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/vsockns/vsockns"
	"github.com/vsockns/vsockns/internal/testenv"
	"github.com/vsockns/vsockns/vsocktest"
)

const fakeVMMEnv = "VSOCKNS_TEST_FAKE_VMM"

// TestFakeVMM is the VMM TestCLIVM runs: this test binary, started by
// `vsockns vm` with the device as descriptor 3 and the arguments it
// replaced. It runs a vsocktest guest on that device, greeting every
// connection to port 5000 with its CID, until it is signalled.
func TestFakeVMM(t *testing.T) {
	if os.Getenv(fakeVMMEnv) != "1" {
		return // run only as the VMM of TestCLIVM
	}
	args := flag.Args()
	require.Equal(t, []string{"vhostfd=3", "guest-cid=" + os.Getenv("VSOCKNS_CID")}, args, "arguments with {vhostfd} and {cid} replaced")
	require.Equal(t, "3", os.Getenv("VSOCKNS_VHOSTFD"))
	cid, err := strconv.ParseUint(os.Getenv("VSOCKNS_CID"), 10, 32)
	require.NoError(t, err)
	v, err := vsockns.FileVhost(os.NewFile(3, "vhostfd"))
	require.NoError(t, err)
	g, err := vsocktest.NewGuest(vsocktest.Config{Device: v, CID: uint32(cid)})
	require.NoError(t, err)
	defer g.Close()
	l, err := g.Listen(5000)
	require.NoError(t, err)
	fmt.Println("VMM READY")
	for {
		c, err := l.Accept()
		if err != nil {
			return
		}
		fmt.Fprintf(c, "hello from CID %d\n", cid)
		c.Close()
	}
}

// TestCLIVM: an ordinary user runs a VMM with the device in a local
// namespace of their own, reaches its guest through --socket, and nothing
// else reaches it.
func TestCLIVM(t *testing.T) {
	cli := cliPath(t)
	if !testenv.AsUnprivileged(t) {
		return
	}
	vmm := []string{"--", os.Args[0], "-test.run=^TestFakeVMM$", "vhostfd={vhostfd}", "guest-cid={cid}"}
	if !namespacesExpected(t) {
		r := runCLI(t, "", append([]string{"vm"}, vmm...)...)
		assert.Equal(t, exitFail, r.code)
		assert.Contains(t, r.stderr, "not supported")
		return
	}
	r := runCLI(t, "", "vm", "--cid", "2", "--", "x")
	assert.Equal(t, exitUsage, r.code, "CID 2 is the host's")
	r = runCLI(t, "", "vm")
	assert.Equal(t, exitUsage, r.code, "no VMM")

	sock := filepath.Join(t.TempDir(), "vm.sock")
	cmd := exec.Command(cli, append([]string{"vm", "--serve", sock}, vmm...)...)
	cmd.Env = append(os.Environ(), fakeVMMEnv+"=1")
	out := &lockedBuffer{wake: make(chan struct{}, 1)}
	errb := &lockedBuffer{}
	cmd.Stdout, cmd.Stderr = out, errb
	require.NoError(t, cmd.Start())
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	out.waitFor(t, "VMM READY")
	assert.Contains(t, errb.String(), "guest CID 3 claimed")

	r = runCLI(t, "", "dial", "--socket", sock, "3", "5000")
	require.Equal(t, exitOK, r.code, "stderr: %s", r.stderr)
	assert.Equal(t, "hello from CID 3\n", r.stdout)
	r = runCLI(t, "", "mode", "--socket", sock)
	require.Equal(t, exitOK, r.code, "stderr: %s", r.stderr)
	assert.Contains(t, r.stdout, "ns_mode:        local")

	// The user's own namespace (everyone's, the init namespace) does not
	// reach the guest.
	r = runCLI(t, "", "dial", "--timeout", "1s", "3", "5000")
	assert.Equal(t, exitFail, r.code)
	assert.NotContains(t, r.stdout, "hello")

	require.NoError(t, cmd.Process.Signal(syscall.SIGTERM))
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		t.Fatal("vsockns vm did not end on SIGTERM")
	}
	assert.Equal(t, 128+int(syscall.SIGTERM), cmd.ProcessState.ExitCode(), "stderr: %s", errb.String())
	_, err := os.Stat(sock)
	assert.True(t, os.IsNotExist(err), "the socket is removed")
	assert.False(t, strings.Contains(errb.String(), "panic"))
}
