package vm

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"text/tabwriter"
	"time"
)

// demoExamples are the programs `make demo` runs, in order.
var demoExamples = []string{"loopback", "cidreuse", "containerdial", "httpvsock", "vmm", "rootless", "nodesockets"}

// TestDemo is `make demo`: it runs the examples/ programs (the seed
// article's scenarios and the library's main uses) on a kernel with vsock
// namespaces, prints what they say, and ends with a table of scenario,
// expected and observed result. It runs them natively where this machine's
// own kernel has vsock namespaces, vsock_loopback and vhost_vsock and the
// test runs as root; otherwise in the VM on the newest fetched kernel.
func TestDemo(t *testing.T) {
	root, err := ModuleRoot()
	if err != nil {
		t.Fatal(err)
	}
	work := filepath.Join(root, ".cache", "vm")
	if err := os.MkdirAll(work, 0o755); err != nil {
		t.Fatal(err)
	}
	var bins []Binary
	for _, ex := range demoExamples {
		p, err := BuildCommand(root, work, "./examples/"+ex)
		if err != nil {
			t.Fatal(err)
		}
		bins = append(bins, Binary{Name: ex, Path: p})
	}
	// nodesockets runs `vsockns ss --all`.
	cli, err := BuildCommand(root, work, "./cmd/vsockns")
	if err != nil {
		t.Fatal(err)
	}

	var runs []*RunResult
	var where string
	if why := nativeUnsupported(); why == "" {
		where = "natively on this machine's kernel"
		runs = runNative(t, bins, []string{"VSOCKNS_CLI=" + cli})
	} else {
		kernels, _ := requireVM(t)
		k := kernels[0]
		if !k.HasVsockNamespaces() {
			t.Fatalf("the newest kernel found, %s, has no vsock namespaces; run `make kernel`", k.Release)
		}
		where = fmt.Sprintf("in a QEMU VM running Linux %s (%s)", k.Release, why)
		res := boot(t, Config{Kernel: k, Init: mustInit(t, root, work), Binaries: bins, WorkDir: work,
			Commands: []string{cli}, Env: []string{"VSOCKNS_CLI=/bin/" + filepath.Base(cli)}})
		runs = res.Runs
	}

	fmt.Printf("vsockns demo, %s\n", where)
	tw := tabwriter.NewWriter(os.Stdout, 2, 4, 2, ' ', 0)
	var table []string
	for _, r := range runs {
		for _, line := range strings.Split(string(r.Output), "\n") {
			if rest, ok := strings.CutPrefix(line, "CHECK\t"); ok {
				table = append(table, rest)
			} else if strings.TrimSpace(line) != "" {
				fmt.Println(line)
			}
		}
		if !r.Ended || r.ExitCode != 0 {
			t.Errorf("example %s: exit status %d (ended: %t) %s", r.Name, r.ExitCode, r.Ended, r.Err)
		}
	}
	fmt.Println()
	fmt.Fprintln(tw, "SCENARIO\tEXPECTED\tOBSERVED\t")
	for _, row := range table {
		f := strings.Split(row, "\t")
		if len(f) != 4 {
			t.Errorf("malformed check line %q", row)
			continue
		}
		if f[3] != "ok" {
			t.Errorf("scenario %q: expected %s, observed %s", f[0], f[1], f[2])
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", f[0], f[1], f[2], map[bool]string{true: "", false: "<- UNEXPECTED"}[f[3] == "ok"])
	}
	tw.Flush()
	if len(table) == 0 {
		t.Error("the examples reported no checks")
	}
}

func mustInit(t *testing.T, root, work string) string {
	t.Helper()
	p, err := BuildInit(root, work)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// nativeUnsupported says why the examples cannot run directly on this
// machine ("" if they can).
func nativeUnsupported() string {
	switch {
	case os.Getenv("VSOCKNS_NATIVE") == "0":
		return "VSOCKNS_NATIVE=0"
	case os.Geteuid() != 0:
		return "not root"
	}
	for _, p := range []string{"/proc/sys/net/vsock/ns_mode", "/sys/module/vsock_loopback", "/dev/vhost-vsock"} {
		if _, err := os.Stat(p); err != nil {
			return "this machine's kernel lacks " + p
		}
	}
	return ""
}

// runNative runs the binaries directly, as the guest's /init would, with
// env added to the environment.
func runNative(t *testing.T, bins []Binary, env []string) []*RunResult {
	t.Helper()
	var runs []*RunResult
	for _, b := range bins {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
		cmd := exec.CommandContext(ctx, b.Path, b.Args...)
		cmd.Env = append(os.Environ(), env...)
		cmd.Dir = os.TempDir()
		out, err := cmd.CombinedOutput()
		cancel()
		r := &RunResult{Name: b.Name, Output: out, Ended: true}
		if cmd.ProcessState != nil {
			r.ExitCode = cmd.ProcessState.ExitCode()
		} else if err != nil {
			r.ExitCode, r.Err = -1, err.Error()
		}
		runs = append(runs, r)
	}
	return runs
}
