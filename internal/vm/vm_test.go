package vm

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestVM builds every package's tests statically, boots each test kernel
// (`make kernel` fetches Debian's newest >= 7.0 kernel and Debian 12's 6.1)
// and turns each guest test into a host subtest:
//
//	TestVM/<kernel release>/<package>/<GuestTest>[/<subtest>...]
//
// so `go test -v` and `go test -json` show every guest test by name and
// kernel, and a guest failure, skip, panic or timeout fails the host run.
//
// Environment:
//
//	VSOCKNS_REQUIRE_VM=1   fail instead of skipping when QEMU or a kernel is missing (make test sets it)
//	VSOCKNS_KERNEL, VSOCKNS_MODULES   boot this bzImage with modules from this directory instead
//	VSOCKNS_VM_RUN=regexp  only guest tests matching (passed as -test.run)
//	VSOCKNS_VM_ARGS="..."  extra arguments for every guest test binary
//	VSOCKNS_VM_VERBOSE=1   stream the guest's console and report port
//	VSOCKNS_ACCEL=tcg|kvm  override the accelerator probe
func TestVM(t *testing.T) {
	kernels, root := requireVM(t)
	work := filepath.Join(root, ".cache", "vm")
	if err := os.MkdirAll(work, 0o755); err != nil {
		t.Fatal(err)
	}
	pkgs, err := GuestPackages(root)
	if err != nil {
		t.Fatal(err)
	}
	if len(pkgs) == 0 {
		t.Fatal("no packages with tests to run in the guest")
	}
	init, err := BuildInit(root, work)
	if err != nil {
		t.Fatal(err)
	}
	// lastTest writes the init namespace's child_ns_mode: it is kept out of
	// the main run and runs alone at the end of each boot.
	const lastTest = "TestInitNamespaceChildModeUnwritten"
	// autoloadTest needs a boot of its own, where vsock is not loaded.
	const autoloadTest = "TestSupportedAutoloadsVsock"
	args := []string{"-test.v=test2json", "-test.count=1", "-test.timeout=5m", "-test.skip=^(" + lastTest + "|" + autoloadTest + ")$"}
	if r := os.Getenv("VSOCKNS_VM_RUN"); r != "" {
		args = append(args, "-test.run="+r)
	}
	args = append(args, strings.Fields(os.Getenv("VSOCKNS_VM_ARGS"))...)
	bins, err := BuildTests(root, work, pkgs, args)
	if err != nil {
		t.Fatal(err)
	}
	var rootBin Binary
	for _, b := range bins {
		if b.Name == modulePath {
			rootBin = b
			// Tests that must pass on their own, not only after others
			// (which may have opened long-lived descriptors first).
			bins = append(bins, Binary{Name: b.Name + "/alone", Path: b.Path,
				Args: []string{"-test.v=test2json", "-test.count=1", "-test.run=^(" + strings.Join(aloneTests, "|") + ")$"}})
			bins = append(bins, Binary{Name: b.Name + "/init-namespace-last", Path: b.Path,
				Args: []string{"-test.v=test2json", "-test.run=^" + lastTest + "$", "-vsockns.init-ns"}})
		}
	}
	// The race detector: the guest tests once more, built with -race, on
	// the newest kernel (its boot gets the C library those binaries load).
	// TestBulkDataIntegrity (tens of MiB through the fake guest) takes
	// minutes under the detector and adds no concurrency the others lack.
	// The root package's tests took 304 s in all under the detector with
	// the host's two cores busy with other work (the binary's 5-minute
	// bound ended them), hence 10.
	raceArgs := []string{"-test.v=test2json", "-test.count=1", "-test.timeout=10m",
		"-test.skip=^(" + lastTest + "|" + autoloadTest + "|TestBulkDataIntegrity)$"}
	if r := os.Getenv("VSOCKNS_VM_RUN"); r != "" {
		raceArgs = append(raceArgs, "-test.run="+r)
	}
	raceBins, err := BuildRaceTests(root, work, pkgs, raceArgs)
	if err != nil {
		t.Fatal(err)
	}
	raceLibs, err := RaceLibraries(raceBins[0].Path)
	if err != nil {
		t.Fatal(err)
	}
	// Commands the guest tests run as real binaries, at /bin/<name>.
	var cmds []string
	for _, c := range guestCommands {
		if _, err := os.Stat(filepath.Join(root, c)); err != nil {
			continue
		}
		p, err := BuildCommand(root, work, c)
		if err != nil {
			t.Fatal(err)
		}
		cmds = append(cmds, p)
	}

	// The kernels boot side by side (each VM is one host thread under
	// TCG); the summary is logged once all are done.
	var (
		summaryMu sync.Mutex
		summary   []string
	)
	t.Cleanup(func() {
		for _, s := range summary {
			t.Log("summary: " + s)
		}
	})
	record := func(t *testing.T, name, uname string, runs []*RunResult, elapsed time.Duration) {
		passed, failed := reportRuns(t, runs)
		line := fmt.Sprintf("%s (uname %s): %d guest tests passed, %d failed, in %s",
			name, uname, passed, failed, elapsed.Round(100*time.Millisecond))
		summaryMu.Lock()
		summary = append(summary, line)
		summaryMu.Unlock()
		t.Log(line)
	}
	for i, k := range kernels {
		t.Run(k.Release, func(t *testing.T) {
			t.Parallel()
			env := []string{"VSOCKNS_CLI=/bin/vsockns", "VSOCKNS_IN_VM=1", "VSOCKNS_KERNEL_RELEASE=" + k.Release,
				fmt.Sprintf("VSOCKNS_EXPECT_NAMESPACES=%t", k.HasVsockNamespaces())}
			// The newest kernel's boot runs everything twice (the second
			// time under the race detector): 10 minutes was not enough on
			// a loaded 2-core host. A stuck guest still ends within a
			// minute (Config.Silence), a hung test at its -test.timeout.
			cfg := Config{Kernel: k, Init: init, Binaries: bins, Commands: cmds, Env: env, WorkDir: work, Timeout: 25 * time.Minute}
			if i == 0 {
				// Before the last run, which writes the init namespace's
				// child_ns_mode.
				last := len(bins) - 1
				cfg.Binaries = append(append(append([]Binary{}, bins[:last]...), raceBins...), bins[last])
				cfg.Files = raceLibs
			}
			res := boot(t, cfg)
			// A second, short boot: vsock not loaded, but loadable on
			// demand (the kernel's modprobe request for net-pf-40).
			auto := boot(t, Config{Kernel: k, Init: init, Env: env, WorkDir: work, Modules: []string{},
				Autoload: map[string]string{"net-pf-40": "vsock"},
				Binaries: []Binary{{Name: modulePath + "/autoload", Path: rootBin.Path,
					Args: []string{"-test.v=test2json", "-test.run=^" + autoloadTest + "$", "-vsockns.autoload"}}}})
			res.Runs = append(res.Runs, auto.Runs...)
			res.Elapsed += auto.Elapsed
			record(t, k.Release, res.Uname, res.Runs, res.Elapsed)
		})
	}
	// Where this machine's own kernel has what the suite needs, it runs
	// here too, as root, with the same strictness as in a VM.
	if why := nativeUnsupported(); why != "" {
		t.Logf("not run natively: %s", why)
		return
	}
	osrelease, err := os.ReadFile("/proc/sys/kernel/osrelease")
	if err != nil {
		t.Fatal(err)
	}
	release := strings.TrimSpace(string(osrelease))
	t.Run("native-"+release, func(t *testing.T) {
		env := []string{"VSOCKNS_IN_VM=1", "VSOCKNS_KERNEL_RELEASE=" + release, "VSOCKNS_EXPECT_NAMESPACES=true"}
		if len(cmds) > 0 {
			env = append(env, "VSOCKNS_CLI="+cmds[0])
		}
		start := time.Now()
		record(t, "native "+release, release, runNative(t, bins, env), time.Since(start))
	})
}

// reportRuns replays each run's tests as subtests of t and counts them.
func reportRuns(t *testing.T, runs []*RunResult) (passed, failed int) {
	t.Helper()
	for _, run := range runs {
		rep, err := ParseRun(run)
		if err != nil {
			t.Errorf("%s: %v", run.Name, err)
			continue
		}
		t.Run(shortPackage(run.Name), func(t *testing.T) {
			if p := rep.Problem(); p != "" {
				t.Errorf("guest binary %s %s", run.Name, p)
			}
			if len(rep.Tests) == 0 && os.Getenv("VSOCKNS_VM_RUN") == "" {
				t.Errorf("guest binary %s ran no tests", run.Name)
			}
			for _, n := range rep.Tests {
				replay(t, n)
			}
		})
		passed += rep.Count["pass"]
		failed += rep.Count["fail"] + rep.Count["skip"] + rep.Count["unfinished"]
	}
	return passed, failed
}

// boot runs one VM and fails t if the guest as a whole went wrong.
func boot(t *testing.T, cfg Config) *Result {
	t.Helper()
	name := cfg.Kernel.Release
	if len(cfg.Autoload) > 0 {
		name += "-autoload"
	}
	logPath := filepath.Join(cfg.WorkDir, name+".log")
	logf, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	cfg.Console = logf
	if os.Getenv("VSOCKNS_VM_VERBOSE") == "1" {
		cfg.Console = io.MultiWriter(logf, os.Stderr)
	}
	res, err := Boot(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%s: %s under %s (%s); first output after %s, longest silence %s",
		name, res.Elapsed.Round(100*time.Millisecond), res.Accel.Name(), res.Accel.Why,
		res.FirstOutput.Round(10*time.Millisecond), res.MaxSilence.Round(10*time.Millisecond))
	if err := res.Err(); err != nil {
		t.Errorf("%v\nlast console lines:\n%s\nfull log: %s", err, tail(res.Console, 25), logPath)
	}
	return res
}

// replay turns a guest test node into a host subtest with the same outcome.
func replay(t *testing.T, n *TestNode) {
	t.Run(n.Short(), func(t *testing.T) {
		if out := strings.TrimRight(strings.Join(n.Output, ""), "\n"); out != "" && n.Action != "pass" {
			t.Log("guest output:\n" + out)
		}
		for _, c := range n.Children {
			replay(t, c)
		}
		if p := n.Problem(); p != "" {
			t.Error(p)
		}
	})
}

// aloneTests run once more in a binary of their own, each the first test of
// its process.
var aloneTests = []string{"TestBadNamespaceHandles"}

// guestCommands are main packages built into every guest's /bin.
var guestCommands = []string{"./cmd/vsockns"}

// modulePath is the root package's import path.
const modulePath = "github.com/vsockns/vsockns"

func shortPackage(importPath string) string {
	rel := strings.TrimPrefix(importPath, modulePath)
	rel = strings.TrimPrefix(rel, "/")
	if rel == "" {
		return "vsockns"
	}
	return rel
}

// requireVM returns the kernels to boot and the module root, or skips (fails
// under VSOCKNS_REQUIRE_VM=1) saying what is missing and how to get it.
func requireVM(t *testing.T) ([]Kernel, string) {
	t.Helper()
	if testing.Short() {
		t.Skip("VM suite skipped in -short mode; run `make test`")
	}
	root, err := ModuleRoot()
	if err != nil {
		t.Fatal(err)
	}
	missing := func(err error) {
		if os.Getenv("VSOCKNS_REQUIRE_VM") == "1" {
			t.Fatal(err)
		}
		t.Skipf("VM suite not run: %v. `make test` (as root on Debian) installs QEMU, fetches the kernels and runs it.", err)
	}
	if _, err := QEMU(); err != nil {
		missing(err)
	}
	kernels, err := FindKernels(filepath.Join(root, ".cache"))
	if errors.Is(err, ErrNoKernel) {
		missing(err)
	} else if err != nil {
		t.Fatal(err)
	}
	return kernels, root
}
