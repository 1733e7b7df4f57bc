package vm

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestSoakVM is `make soak`: the root package's TestSoak (see
// soak_linux_test.go) for VSOCKNS_SOAK (a duration) in the VM on the
// newest kernel, built with the race detector when VSOCKNS_SOAK_RACE=1.
// Its summary line is printed and written to .cache/vm/soak.txt. The
// suite's own run of TestSoak (every `make test`, on every kernel) is the
// short default.
func TestSoakVM(t *testing.T) {
	v := os.Getenv("VSOCKNS_SOAK")
	if v == "" {
		t.Skip("the long soak runs with `make soak` (VSOCKNS_SOAK=DURATION)")
	}
	d, err := time.ParseDuration(v)
	if err != nil {
		t.Fatalf("VSOCKNS_SOAK=%q: %v", v, err)
	}
	kernels, root := requireVM(t)
	k := kernels[0]
	work := filepath.Join(root, ".cache", "vm")
	if err := os.MkdirAll(work, 0o755); err != nil {
		t.Fatal(err)
	}
	race := os.Getenv("VSOCKNS_SOAK_RACE") == "1"
	build := BuildTests
	if race {
		build = BuildRaceTests
	}
	bins, err := build(root, work, []string{modulePath},
		[]string{"-test.run=^TestSoak$", "-test.v", fmt.Sprintf("-test.timeout=%s", d+10*time.Minute)})
	if err != nil {
		t.Fatal(err)
	}
	var files []string
	if race {
		if files, err = RaceLibraries(bins[0].Path); err != nil {
			t.Fatal(err)
		}
	}
	env := []string{"VSOCKNS_IN_VM=1", "VSOCKNS_KERNEL_RELEASE=" + k.Release,
		"VSOCKNS_EXPECT_NAMESPACES=" + strconv.FormatBool(k.HasVsockNamespaces()), "VSOCKNS_SOAK=" + d.String()}
	for _, k := range []string{"VSOCKNS_SOAK_SEED", "VSOCKNS_SOAK_PHASES"} {
		if s := os.Getenv(k); s != "" {
			env = append(env, k+"="+s)
		}
	}
	res := boot(t, Config{Kernel: k, Init: mustInit(t, root, work), Binaries: bins, Files: files, WorkDir: work,
		Env: env, Timeout: d + 15*time.Minute, MemoryMB: 4096,
		// A soak runs for long on a shared machine: a loaded host may hold
		// the guest back for longer than the suite allows.
		FirstOutput: 3 * time.Minute, Silence: 3 * time.Minute})
	if len(res.Runs) != 1 {
		t.Fatalf("the soak did not run; see %s", filepath.Join(work, k.Release+".log"))
	}
	out := strings.ReplaceAll(string(res.Runs[0].Output), "\x16", "")
	var summary string
	for _, line := range strings.Split(out, "\n") {
		if i := strings.Index(line, "summary: "); i >= 0 && strings.Contains(line, "misroutes=") {
			summary = strings.TrimSpace(line[i+len("summary: "):])
		}
	}
	accel := "TCG"
	if res.Accel.KVM {
		accel = "KVM"
	}
	what := "Linux " + k.Release + " under QEMU (" + accel + ")"
	if race {
		what += ", -race"
	}
	if err := os.WriteFile(filepath.Join(work, "soak.txt"), []byte(what+"\n"+summary+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	fmt.Printf("Soak on %s\n%s\n", what, summary)
	if !res.Runs[0].Ended || res.Runs[0].ExitCode != 0 || summary == "" {
		t.Fatalf("the soak failed or printed no summary; see %s and %s", filepath.Join(work, k.Release+".log"), filepath.Join(work, "soak.txt"))
	}
}
