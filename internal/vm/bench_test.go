package vm

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"testing"
	"text/tabwriter"
)

// TestBench is `make bench`: it runs the root package's benchmarks in the
// VM on the newest kernel (one boot, so every variant is measured on the
// same machine state) and prints them side by side, as ratios to the
// floor (plain mdlayher/vsock in the current namespace). The raw
// `go test -bench` output is kept in .cache/vm/bench.txt for benchstat.
//
//	VSOCKNS_BENCH_COUNT (default 5) passes of -test.benchtime
//	VSOCKNS_BENCH_TIME (default 1s); VSOCKNS_BENCH_RUN selects benchmarks
//	(-test.bench) and VSOCKNS_BENCH_ARGS adds arguments (e.g. -test.cpu=1).
func TestBench(t *testing.T) {
	if os.Getenv("VSOCKNS_BENCH") != "1" {
		t.Skip("benchmarks run with `make bench` (VSOCKNS_BENCH=1)")
	}
	kernels, root := requireVM(t)
	k := kernels[0]
	work := filepath.Join(root, ".cache", "vm")
	if err := os.MkdirAll(work, 0o755); err != nil {
		t.Fatal(err)
	}
	count := envOr("VSOCKNS_BENCH_COUNT", "5")
	benchtime := envOr("VSOCKNS_BENCH_TIME", "1s")
	bins, err := BuildTests(root, work, []string{"github.com/vsockns/vsockns"},
		append([]string{"-test.run=^$", "-test.bench=" + envOr("VSOCKNS_BENCH_RUN", "."), "-test.benchmem", "-test.benchtime=" + benchtime, "-test.timeout=60m"},
			strings.Fields(os.Getenv("VSOCKNS_BENCH_ARGS"))...))
	if err != nil {
		t.Fatal(err)
	}
	// The binary runs count times in the same boot rather than with
	// -test.count: each pass measures every variant once, so a drift of
	// the (emulated) machine over time spreads over all of them alike.
	n, err := strconv.Atoi(count)
	if err != nil || n < 1 {
		t.Fatalf("VSOCKNS_BENCH_COUNT=%q", count)
	}
	var passes []Binary
	for range n {
		passes = append(passes, bins[0])
	}
	res := boot(t, Config{Kernel: k, Init: mustInit(t, root, work), Binaries: passes, WorkDir: work, ParallelTCG: true,
		Env: []string{"VSOCKNS_IN_VM=1", "VSOCKNS_EXPECT_NAMESPACES=" + strconv.FormatBool(k.HasVsockNamespaces())}, Timeout: 60 * 60e9})
	var raw string
	for _, r := range res.Runs {
		if !r.Ended || r.ExitCode != 0 {
			t.Fatalf("benchmarks did not complete; see %s", filepath.Join(work, k.Release+".log"))
		}
		raw += strings.ReplaceAll(string(r.Output), "\x16", "")
	}
	if len(res.Runs) != n {
		t.Fatalf("%d of %d benchmark passes ran; see %s", len(res.Runs), n, filepath.Join(work, k.Release+".log"))
	}
	if err := os.WriteFile(filepath.Join(work, "bench.txt"), []byte(raw), 0o644); err != nil {
		t.Fatal(err)
	}
	results := parseBench(raw)
	if len(results) == 0 {
		t.Fatal("no benchmark results in the output")
	}
	fmt.Printf("Benchmarks on Linux %s under QEMU (%s), GOMAXPROCS=2, medians of %s interleaved passes of %s each; ratios are to the floor in the same boot.\n\n",
		k.Release, benchAccel(t), count, benchtime)
	printBench(os.Stdout, results)
}

func envOr(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}

// benchAccel describes the accelerator the benchmark VM ran with.
func benchAccel(t *testing.T) string {
	q, err := QEMU()
	if err != nil {
		t.Fatal(err)
	}
	if a := accelArgs(q)[1]; a != tcgSingle {
		return a
	}
	return "TCG, multi-threaded"
}

// benchResult is the medians of one benchmark's runs, by unit.
type benchResult struct {
	family, variant string
	metrics         map[string]float64
}

var benchLine = regexp.MustCompile(`^(Benchmark[^\s/]+?)(?:/(\S+?))?(?:-\d+)?\s+\d+\s+(.*)$`)

func parseBench(out string) []benchResult {
	samples := map[[2]string]map[string][]float64{}
	var order [][2]string
	for _, line := range strings.Split(out, "\n") {
		m := benchLine.FindStringSubmatch(strings.TrimSpace(line))
		if m == nil || !strings.Contains(m[3], "ns/op") {
			continue
		}
		key := [2]string{strings.TrimPrefix(m[1], "Benchmark"), m[2]}
		if samples[key] == nil {
			samples[key] = map[string][]float64{}
			order = append(order, key)
		}
		f := strings.Fields(m[3])
		for i := 0; i+1 < len(f); i += 2 {
			if v, err := strconv.ParseFloat(f[i], 64); err == nil {
				samples[key][f[i+1]] = append(samples[key][f[i+1]], v)
			}
		}
	}
	var rs []benchResult
	for _, key := range order {
		r := benchResult{family: key[0], variant: key[1], metrics: map[string]float64{}}
		for unit, vs := range samples[key] {
			sort.Float64s(vs)
			switch unit {
			case "threads":
				// Threads are never given back, so later passes start with
				// what earlier ones (and other variants) left: the first
				// pass, the smallest, is this variant's own need.
				r.metrics[unit] = vs[0]
			case "new-threads":
				r.metrics[unit] = vs[len(vs)-1] // the worst pass
			default:
				r.metrics[unit] = vs[len(vs)/2]
			}
		}
		rs = append(rs, r)
	}
	return rs
}

// printBench prints one table per family. The headline metric is a rate
// where the benchmark reports one (dials/s, MB/s, accepts/s: higher is
// better), else ns/op (lower is better); the ratio is always "how this
// variant compares to the floor" in the direction where > 1 is slower.
func printBench(w *os.File, rs []benchResult) {
	families := []string{}
	by := map[string][]benchResult{}
	for _, r := range rs {
		if by[r.family] == nil {
			families = append(families, r.family)
		}
		by[r.family] = append(by[r.family], r)
	}
	for _, fam := range families {
		unit := "ns/op"
		for _, u := range []string{"dials/s", "MB/s", "accepts/s"} {
			if _, ok := by[fam][0].metrics[u]; ok {
				unit = u
			}
		}
		var floor float64
		for _, r := range by[fam] {
			if r.variant == "floor" || r.variant == "" {
				floor = r.metrics[unit]
			}
		}
		tw := tabwriter.NewWriter(w, 2, 4, 2, ' ', tabwriter.AlignRight)
		fmt.Fprintf(w, "%s\n", fam)
		fmt.Fprintf(tw, "variant\t%s\tvs floor\tns/op\tallocs/op\tthreads (new)\t\n", unit)
		for _, r := range by[fam] {
			ratio := "-"
			if floor > 0 && r.metrics[unit] > 0 {
				if unit == "ns/op" {
					ratio = fmt.Sprintf("%.2fx time", r.metrics[unit]/floor)
				} else {
					ratio = fmt.Sprintf("%.2fx rate", r.metrics[unit]/floor)
				}
			}
			threads := "-"
			if v, ok := r.metrics["threads"]; ok {
				threads = fmt.Sprintf("%.0f (+%.0f)", v, r.metrics["new-threads"])
			}
			name := r.variant
			if name == "" {
				name = fam
			}
			fmt.Fprintf(tw, "%s\t%.4g\t%s\t%.0f\t%.0f\t%s\t\n", name, r.metrics[unit], ratio, r.metrics["ns/op"], r.metrics["allocs/op"], threads)
		}
		tw.Flush()
		fmt.Fprintln(w)
	}
}

func TestParseBench(t *testing.T) {
	out := "BenchmarkDial/floor-2   \t 100\t 2000 ns/op\t 64 B/op\t 10 allocs/op\n" +
		"BenchmarkDial/floor-2   \t 100\t 4000 ns/op\t 64 B/op\t 10 allocs/op\n" +
		"BenchmarkDial/floor-2   \t 100\t 3000 ns/op\t 64 B/op\t 10 allocs/op\n" +
		"BenchmarkDial/vsockns-local-2 \t 90\t 3300 ns/op\t 12 allocs/op\n" +
		"BenchmarkNamespaceMode-2 \t 10\t 500 ns/op\n" +
		"=== RUN   BenchmarkDial\nPASS\n"
	rs := parseBench(out)
	if len(rs) != 3 {
		t.Fatalf("got %d results: %+v", len(rs), rs)
	}
	if rs[0].variant != "floor" || rs[0].metrics["ns/op"] != 3000 {
		t.Errorf("floor median: %+v", rs[0])
	}
	if rs[1].variant != "vsockns-local" || rs[1].metrics["allocs/op"] != 12 {
		t.Errorf("variant: %+v", rs[1])
	}
	if rs[2].family != "NamespaceMode" || rs[2].variant != "" {
		t.Errorf("family without variants: %+v", rs[2])
	}
}
