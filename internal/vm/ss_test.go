package vm

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// TestBenchSS is `make bench-ss`: the vsockns command's TestCLISSScale
// (`vsockns ss --all` over 1000 namespaces of 10 listeners each) in the VM
// on the newest kernel, with this machine's ss(8) (iproute2) packed into
// the guest with its libraries, so that the listing is timed beside
// `ss --vsock -a -N NAME` run once per named namespace.
func TestBenchSS(t *testing.T) {
	if os.Getenv("VSOCKNS_BENCH_SS") != "1" {
		t.Skip("the listing benchmark runs with `make bench-ss` (VSOCKNS_BENCH_SS=1)")
	}
	ss, err := exec.LookPath("ss")
	if err != nil {
		t.Fatalf("ss(8) is needed on this machine (Debian's iproute2): %v", err)
	}
	libs, err := RaceLibraries(ss)
	if err != nil {
		t.Fatal(err)
	}
	kernels, root := requireVM(t)
	k := kernels[0]
	work := filepath.Join(root, ".cache", "vm")
	if err := os.MkdirAll(work, 0o755); err != nil {
		t.Fatal(err)
	}
	bins, err := BuildTests(root, work, []string{modulePath + "/cmd/vsockns"},
		[]string{"-test.run=^TestCLISSScale$", "-test.v", "-test.timeout=30m"})
	if err != nil {
		t.Fatal(err)
	}
	cli, err := BuildCommand(root, work, "./cmd/vsockns")
	if err != nil {
		t.Fatal(err)
	}
	res := boot(t, Config{Kernel: k, Init: mustInit(t, root, work), Binaries: bins, WorkDir: work,
		Commands: []string{cli, ss}, Files: libs, Timeout: 30 * 60e9,
		Env: []string{"VSOCKNS_IN_VM=1", "VSOCKNS_CLI=/bin/vsockns", "VSOCKNS_SS=/bin/ss",
			"VSOCKNS_EXPECT_NAMESPACES=" + strconv.FormatBool(k.HasVsockNamespaces())}})
	if len(res.Runs) != 1 || !res.Runs[0].Ended || res.Runs[0].ExitCode != 0 {
		t.Fatalf("the listing benchmark did not pass; see %s", filepath.Join(work, k.Release+".log"))
	}
	fmt.Printf("Listing benchmark on Linux %s under QEMU (%s)\n", k.Release, res.Accel.Name())
	for _, line := range strings.Split(string(res.Runs[0].Output), "\n") {
		if rest, ok := strings.CutPrefix(line, "vsockns ss scale: "); ok {
			fmt.Println(rest)
		}
	}
}
