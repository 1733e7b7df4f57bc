package vm

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// These tests put a fake qemu-system-x86_64 (Config.QEMU) in front of the
// harness, one for each way a host's QEMU has been seen to fail, and a
// regular file in place of /dev/kvm (one that opens, as a broken KVM
// device does). Each boot must end within seconds with the cause named;
// where KVM is at fault the boot must fall back to TCG.

// fakeArgs is the start of every fake: what kind of run QEMU was asked for.
const fakeArgs = `#!/bin/sh
kvm=0 paused=0 initrd=0
for a; do
	case $a in
	kvm) kvm=1 ;;
	-S) paused=1 ;;
	-initrd) initrd=1 ;;
	esac
done
`

// kvmInternalError is what QEMU prints when KVM cannot run a guest, before
// it pauses the VM (seen with -cpu host, max and qemu64 on one host).
const kvmInternalError = `	echo "KVM internal error. Suberror: 1" >&2
	echo "extra data[0]: 0x0000000000000000" >&2
	echo "emulation failure" >&2
	echo "RAX=0000000000000000 RBX=0000000000000000 RCX=0000000000000000" >&2
	exec sleep 100000
`

// asTCG runs the real QEMU with KVM's arguments replaced by TCG's.
const asTCG = `for a; do
	shift
	case $a in
	kvm) a=tcg ;;
	host) a=max ;;
	esac
	set -- "$@" "$a"
done
exec "$REAL_QEMU" "$@"
`

func writeFake(t *testing.T, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "qemu-system-x86_64")
	require.NoError(t, os.WriteFile(p, []byte(fakeArgs+body), 0o755))
	return p
}

// fakeKVM is a file that opens read-write, standing in for /dev/kvm.
func fakeKVM(t *testing.T) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "kvm")
	require.NoError(t, os.WriteFile(p, nil, 0o600))
	return p
}

// noProbeKnob makes the accelerator probe run (VSOCKNS_ACCEL bypasses it).
func noProbeKnob(t *testing.T) {
	t.Setenv("VSOCKNS_ACCEL", "")
}

// oldProbePasses runs the accelerator probe this harness used before: a
// paused QEMU under KVM that starts and quits. The fake host passes it.
func oldProbePasses(t *testing.T, qemu string) {
	t.Helper()
	probe := exec.Command(qemu, "-nodefaults", "-no-user-config", "-display", "none",
		"-machine", "q35", "-accel", "kvm", "-cpu", "host", "-S", "-monitor", "stdio")
	probe.Stdin = strings.NewReader("quit\n")
	require.NoError(t, probe.Run(), "the fake passes the old probe, as the host in issue 19 did")
}

// fixtureWithQEMU is a fixture VM whose boots run qemu, with a fake KVM
// device that opens.
func fixtureWithQEMU(t *testing.T, qemu string) (*fixtureVM, Config) {
	t.Helper()
	f := newFixtureVM(t)
	real, err := QEMU()
	require.NoError(t, err)
	t.Setenv("REAL_QEMU", real)
	noProbeKnob(t)
	return f, Config{QEMU: qemu, kvmDevice: fakeKVM(t), Binaries: []Binary{f.run("TestFixturePass")}}
}

func TestFakeQEMUKVMInternalErrorFallsBackToTCG(t *testing.T) {
	// The host of issue 19: the old probe passes, every guest under KVM
	// stops with an internal error and QEMU pauses it.
	qemu := writeFake(t, `if [ $paused = 1 ]; then read cmd; exit 0; fi
if [ $kvm = 1 ]; then
`+kvmInternalError+`fi
exec "$REAL_QEMU" "$@"
`)
	f, cfg := fixtureWithQEMU(t, qemu)
	oldProbePasses(t, qemu)
	res := f.boot(t, cfg)
	require.NoError(t, res.Err())
	assert.False(t, res.Accel.KVM, "the probe guest stopped: TCG")
	assert.Equal(t, "KVM present but a guest stopped with: KVM internal error. Suberror: 1", res.Accel.Why)
	assert.Empty(t, res.Retried, "the probe decided; the boot itself ran once")
	require.Len(t, res.Runs, 1)
	assert.Equal(t, 0, res.Runs[0].ExitCode)
}

func TestFakeQEMUKVMFailsTheBootRetriesUnderTCG(t *testing.T) {
	// KVM runs the probe's kernel but stops the real boot: that boot runs
	// again under TCG, and so do the process's later boots.
	qemu := writeFake(t, `if [ $kvm = 1 ] && [ $initrd = 1 ]; then
`+kvmInternalError+`fi
`+asTCG)
	f, cfg := fixtureWithQEMU(t, qemu)
	res := f.boot(t, cfg)
	require.NoError(t, res.Err())
	assert.Contains(t, res.Retried, "KVM internal error. Suberror: 1")
	assert.False(t, res.Accel.KVM)
	require.Len(t, res.Runs, 1)

	again := f.boot(t, cfg)
	require.NoError(t, again.Err())
	assert.Empty(t, again.Retried, "the next boot goes to TCG at once")
	assert.False(t, again.Accel.KVM)
	assert.Contains(t, again.Accel.Why, "KVM failed a boot")
}

func TestFakeQEMUPausedGuestSeenOverQMP(t *testing.T) {
	// A QEMU that says nothing on stderr but whose guest is no longer
	// running: its QMP run state says so at once.
	qemu := writeFake(t, `if [ $kvm = 1 ] && [ $initrd = 1 ]; then
	echo '{"QMP": {"version": {}, "capabilities": ["oob"]}}'
	read cmd; echo '{"return": {}}'
	read cmd; echo '{"return": {"status": "running", "singlestep": false, "running": true}}'
	echo '{"timestamp": {"seconds": 1, "microseconds": 2}, "event": "STOP"}'
	read cmd; echo '{"return": {"status": "internal-error", "singlestep": false, "running": false}}'
	exec sleep 100000
fi
`+asTCG)
	f, cfg := fixtureWithQEMU(t, qemu)
	res := f.boot(t, cfg)
	require.NoError(t, res.Err())
	assert.Contains(t, res.Retried, `run state "internal-error"`)
	require.Len(t, res.Runs, 1)
}

// hostOnlyConfig is a boot that needs no kernel: the fake QEMU never
// reads the image.
func hostOnlyConfig(t *testing.T, qemu string) (Config, *bytes.Buffer) {
	t.Helper()
	dir := t.TempDir()
	for _, n := range []string{"vmlinuz", "init"} {
		require.NoError(t, os.WriteFile(filepath.Join(dir, n), []byte("not run"), 0o755))
	}
	noProbeKnob(t)
	var console bytes.Buffer
	return Config{
		QEMU: qemu, kvmDevice: fakeKVM(t), probeTimeout: 3 * time.Second,
		Kernel:  Kernel{Release: "fake", Image: filepath.Join(dir, "vmlinuz"), Modules: dir},
		Init:    filepath.Join(dir, "init"),
		Modules: []string{}, WorkDir: dir, Console: &console,
		FirstOutput: 3 * time.Second, Silence: 3 * time.Second,
	}, &console
}

func TestFakeQEMUSilentForEver(t *testing.T) {
	qemu := writeFake(t, "exec sleep 100000\n")
	cfg, _ := hostOnlyConfig(t, qemu)
	res, err := Boot(context.Background(), cfg)
	require.NoError(t, err)
	assert.Contains(t, res.Accel.Why, "no kernel panic line within 3s", "the probe gave up on KVM")
	err = res.Err()
	require.Error(t, err)
	assert.Contains(t, err.Error(), "no output from the guest within 3s")
	assert.False(t, res.TimedOut, "ended by the silence bound, not the boot's timeout")
}

func TestFakeQEMUFallsSilent(t *testing.T) {
	// The guest prints a line, then nothing: the heartbeat's absence ends it.
	qemu := writeFake(t, `if [ $initrd = 0 ]; then exit 1; fi
printf 'Linux version fake\n' >&3
exec sleep 100000
`)
	cfg, console := hostOnlyConfig(t, qemu)
	res, err := Boot(context.Background(), cfg)
	require.NoError(t, err)
	err = res.Err()
	require.Error(t, err)
	assert.Contains(t, err.Error(), "the guest fell silent: nothing on its serial ports for 3s")
	assert.Contains(t, console.String(), "Linux version fake")
	assert.Greater(t, res.FirstOutput, time.Duration(0))
}

func TestFakeQEMUExitsAtOnce(t *testing.T) {
	qemu := writeFake(t, `if [ $kvm = 1 ]; then
	echo "qemu-system-x86_64: -accel kvm: failed to initialize kvm: Permission denied" >&2
	exit 1
fi
echo "qemu-system-x86_64: could not load kernel '/nowhere': No such file or directory" >&2
exit 1
`)
	cfg, _ := hostOnlyConfig(t, qemu)
	start := time.Now()
	_, err := Boot(context.Background(), cfg)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "could not load kernel")
	assert.Contains(t, err.Error(), "TCG", "the probe's KVM failure chose TCG")
	assert.Less(t, time.Since(start), cfg.FirstOutput, "no bound was waited for")
}

func TestWatchQMPIgnoresShutdown(t *testing.T) {
	// QEMU's own answers (7.2): a guest that powers off is "shutdown" and
	// QEMU exits by itself; only a state QEMU stays in is reported.
	in := strings.Join([]string{
		`{"QMP": {"version": {"qemu": {"micro": 22, "minor": 2, "major": 7}}, "capabilities": ["oob"]}}`,
		`{"return": {}}`,
		`{"return": {"status": "running", "singlestep": false, "running": true}}`,
		`{"timestamp": {"seconds": 1, "microseconds": 2}, "event": "STOP"}`,
		`{"return": {"status": "shutdown", "singlestep": false, "running": false}}`,
		`{"timestamp": {"seconds": 1, "microseconds": 3}, "event": "STOP"}`,
		`{"return": {"status": "paused", "singlestep": false, "running": false}}`,
	}, "\n")
	var sent bytes.Buffer
	var got []string
	watchQMP(strings.NewReader(in), nopCloser{&sent}, func(s string) { got = append(got, s) })
	assert.Equal(t, []string{"paused"}, got)
	assert.Equal(t, `{"execute":"qmp_capabilities"}`+"\n"+strings.Repeat(`{"execute":"query-status"}`+"\n", 3), sent.String())
}

type nopCloser struct{ *bytes.Buffer }

func (nopCloser) Close() error { return nil }
