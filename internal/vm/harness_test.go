package vm

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// These tests boot the newest kernel with a fixture package whose tests
// fail, panic, skip, crash the kernel or hang on purpose, and check that the
// harness reports each as a failure with a clear message.

type fixtureVM struct {
	kernel Kernel
	work   string
	init   string
	bin    string
}

func newFixtureVM(t *testing.T) *fixtureVM {
	t.Helper()
	kernels, root := requireVM(t)
	work := t.TempDir()
	init, err := BuildInit(root, work)
	require.NoError(t, err)
	bins, err := BuildTests(root, work, []string{"./internal/vm/testdata/fixture"}, nil)
	require.NoError(t, err)
	return &fixtureVM{kernel: kernels[0], work: work, init: init, bin: bins[0].Path}
}

func (f *fixtureVM) run(name string) Binary {
	return Binary{Name: name, Path: f.bin, Args: []string{"-test.v=test2json", "-test.run=^" + name + "$"}}
}

func (f *fixtureVM) boot(t *testing.T, cfg Config) *Result {
	t.Helper()
	cfg.Kernel, cfg.Init, cfg.WorkDir = f.kernel, f.init, f.work
	cfg.Env = append(cfg.Env, "VSOCKNS_IN_VM=1", "VSOCKNS_FIXTURE=1")
	var console bytes.Buffer
	cfg.Console = &console
	res, err := Boot(context.Background(), cfg)
	require.NoError(t, err)
	t.Logf("%s under %s (%s); first output after %s, longest silence %s", res.Elapsed.Round(100*time.Millisecond),
		res.Accel.Name(), res.Accel.Why, res.FirstOutput.Round(10*time.Millisecond), res.MaxSilence.Round(10*time.Millisecond))
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("guest log:\n%s", tail(console.Bytes(), 40))
		}
	})
	return res
}

func TestHarnessReportsGuestTestOutcomes(t *testing.T) {
	f := newFixtureVM(t)
	res := f.boot(t, Config{Binaries: []Binary{
		f.run("TestFixturePass"), f.run("TestFixtureFail"), f.run("TestFixturePanic"), f.run("TestFixtureSkip"),
	}})
	require.NoError(t, res.Err(), "the boot itself went fine")
	require.Len(t, res.Runs, 4)
	assert.True(t, res.ModulesOK)
	assert.Equal(t, f.kernel.Release, res.Uname)

	reports := map[string]*PackageReport{}
	for _, r := range res.Runs {
		rep, err := ParseRun(r)
		require.NoError(t, err)
		reports[r.Name] = rep
	}

	pass := reports["TestFixturePass"]
	assert.Empty(t, pass.Problem())
	require.Len(t, pass.Tests, 1)
	assert.Empty(t, pass.Tests[0].Problem())
	require.Len(t, pass.Tests[0].Children, 1)
	assert.Equal(t, "sub", pass.Tests[0].Children[0].Short())

	fail := reports["TestFixtureFail"]
	assert.Equal(t, "exited with status 1", fail.Problem())
	require.Len(t, fail.Tests, 1)
	assert.Equal(t, "failed in the guest", fail.Tests[0].Children[0].Problem())
	assert.Contains(t, strings.Join(fail.Tests[0].Children[0].Output, ""), "deliberate failure")

	panicked := reports["TestFixturePanic"]
	assert.Equal(t, "exited with status 2", panicked.Problem())
	require.Len(t, panicked.Tests, 1)
	assert.NotEmpty(t, panicked.Tests[0].Problem())
	assert.Contains(t, strings.Join(panicked.Tests[0].Output, ""), "deliberate panic")

	skipped := reports["TestFixtureSkip"]
	assert.Empty(t, skipped.Problem(), "the binary itself passes")
	require.Len(t, skipped.Tests, 1)
	assert.Contains(t, skipped.Tests[0].Problem(), "must not skip")
}

func TestHarnessFailsOnMissingModule(t *testing.T) {
	f := newFixtureVM(t)
	res := f.boot(t, Config{
		Modules:  append(append([]string{}, RequiredModules...), "vsockns_no_such_module"),
		Binaries: []Binary{f.run("TestFixturePass")},
	})
	err := res.Err()
	require.Error(t, err)
	assert.Contains(t, err.Error(), "loading module failed: vsockns_no_such_module")
	assert.Empty(t, res.Runs, "nothing runs after a module failed")
}

func TestHarnessFailsOnKernelPanic(t *testing.T) {
	f := newFixtureVM(t)
	res := f.boot(t, Config{Binaries: []Binary{f.run("TestFixtureKernelPanic")}})
	err := res.Err()
	require.Error(t, err)
	assert.Contains(t, err.Error(), "kernel panic")
	assert.Contains(t, err.Error(), "while running TestFixtureKernelPanic")
}

func TestHarnessFailsOnGuestTimeout(t *testing.T) {
	f := newFixtureVM(t)
	res := f.boot(t, Config{Timeout: 12 * time.Second, Binaries: []Binary{f.run("TestFixtureHang")}})
	err := res.Err()
	require.Error(t, err)
	assert.True(t, res.TimedOut)
	assert.Contains(t, err.Error(), "timed out")
}

func TestCPIOLayout(t *testing.T) {
	var buf bytes.Buffer
	c := newCPIOWriter(&buf)
	c.File("a/b/c.txt", 0o644, []byte("hello"))
	c.File("a/d", 0o755, nil)
	require.NoError(t, c.Close())

	type entry struct {
		name string
		mode uint64
		data string
	}
	var got []entry
	b := buf.Bytes()
	for len(b) > 0 {
		require.GreaterOrEqual(t, len(b), 110)
		require.Equal(t, "070701", string(b[:6]))
		field := func(i int) uint64 {
			v, err := strconv.ParseUint(string(b[6+8*i:14+8*i]), 16, 32)
			require.NoError(t, err)
			return v
		}
		mode, size, nameSize := field(1), int(field(6)), int(field(11))
		name := string(b[110 : 110+nameSize-1])
		off := (110 + nameSize + 3) &^ 3
		data := string(b[off : off+size])
		got = append(got, entry{name, mode, data})
		b = b[(off+size+3)&^3:]
		if name == "TRAILER!!!" {
			break
		}
	}
	assert.Empty(t, b, "nothing after the trailer")
	assert.Equal(t, []entry{
		{"a", 0o40755, ""},
		{"a/b", 0o40755, ""},
		{"a/b/c.txt", 0o100644, "hello"},
		{"a/d", 0o100755, ""},
		{"TRAILER!!!", 0, ""},
	}, got)
}

func TestImageRelease(t *testing.T) {
	// A minimal fake bzImage: the HdrS magic and a kernel_version pointer.
	img := make([]byte, 0x400)
	copy(img[0x202:], "HdrS")
	img[0x20e], img[0x20f] = 0x00, 0x01 // version string at 0x100+0x200
	copy(img[0x300:], "7.2.13+deb14-cloud-amd64 (debian-kernel@lists.debian.org) #1\x00")
	p := filepath.Join(t.TempDir(), "vmlinuz")
	require.NoError(t, os.WriteFile(p, img, 0o644))
	rel, err := ImageRelease(p)
	require.NoError(t, err)
	assert.Equal(t, "7.2.13+deb14-cloud-amd64", rel)
	k := Kernel{Release: rel}
	assert.True(t, k.HasVsockNamespaces())
	assert.False(t, Kernel{Release: "6.1.0-50-cloud-amd64"}.HasVsockNamespaces())

	require.NoError(t, os.WriteFile(p, make([]byte, 0x400), 0o644))
	_, err = ImageRelease(p)
	assert.ErrorContains(t, err, "not a bzImage")
}
