package vm

import (
	"cmp"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
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
//	VSOCKNS_BENCH_RAW=file prints the table of a saved raw output instead
//	(e.g. .cache/vm/bench.txt; relative to the module root).
func TestBench(t *testing.T) {
	if os.Getenv("VSOCKNS_BENCH") != "1" {
		t.Skip("benchmarks run with `make bench` (VSOCKNS_BENCH=1)")
	}
	if raw := os.Getenv("VSOCKNS_BENCH_RAW"); raw != "" {
		// Print the table of an earlier run's raw output again. A
		// relative path is taken from the module root, where make runs.
		if !filepath.IsAbs(raw) {
			root, err := ModuleRoot()
			if err != nil {
				t.Fatal(err)
			}
			raw = filepath.Join(root, raw)
		}
		b, err := os.ReadFile(raw)
		if err != nil {
			t.Fatal(err)
		}
		fmt.Printf("Benchmarks from %s, GOMAXPROCS=%s; ratios are to the floor in the same pass.\n\n", raw, benchProcs(string(b)))
		printBench(os.Stdout, expandInterleaved(parseBench(string(b))))
		return
	}
	kernels, root := requireVM(t)
	k := kernels[0]
	work := filepath.Join(root, ".cache", "vm")
	if err := os.MkdirAll(work, 0o755); err != nil {
		t.Fatal(err)
	}
	count := envOr("VSOCKNS_BENCH_COUNT", "5")
	benchtime := envOr("VSOCKNS_BENCH_TIME", "1s")
	args := []string{"-test.run=^$", "-test.bench=" + envOr("VSOCKNS_BENCH_RUN", "."), "-test.benchmem", "-test.benchtime=" + benchtime, "-test.timeout=60m"}
	if os.Getenv("VSOCKNS_BENCH_RUN") == "" {
		// The scale matrix is `make bench-scale`, a run of its own.
		args = append(args, "-test.skip=^BenchmarkScale$")
	}
	bins, err := BuildTests(root, work, []string{"github.com/vsockns/vsockns"},
		append(args, strings.Fields(os.Getenv("VSOCKNS_BENCH_ARGS"))...))
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
	fmt.Printf("Benchmarks on Linux %s under QEMU (%s), GOMAXPROCS=%s, medians of %s interleaved passes of %s each; ratios are to the floor in the same pass.\n\n",
		k.Release, benchAccel(res), benchProcs(raw), count, benchtime)
	printBench(os.Stdout, expandInterleaved(results))
}

// TestBenchScale is `make bench-scale`: the root package's BenchmarkScale
// (the node-scale matrix, each case in a process of its own) in the VM on
// the newest kernel, its table printed as the guest wrote it.
func TestBenchScale(t *testing.T) {
	if os.Getenv("VSOCKNS_BENCH_SCALE") != "1" {
		t.Skip("the scale benchmark runs with `make bench-scale` (VSOCKNS_BENCH_SCALE=1)")
	}
	kernels, root := requireVM(t)
	k := kernels[0]
	work := filepath.Join(root, ".cache", "vm")
	if err := os.MkdirAll(work, 0o755); err != nil {
		t.Fatal(err)
	}
	bins, err := BuildTests(root, work, []string{"github.com/vsockns/vsockns"},
		[]string{"-test.run=^$", "-test.bench=^BenchmarkScale$", "-test.benchtime=1x", "-test.timeout=90m"})
	if err != nil {
		t.Fatal(err)
	}
	env := []string{"VSOCKNS_IN_VM=1", "VSOCKNS_EXPECT_NAMESPACES=" + strconv.FormatBool(k.HasVsockNamespaces())}
	for _, k := range []string{"VSOCKNS_SCALE_PASSES", "VSOCKNS_SCALE_RUN"} {
		if v := os.Getenv(k); v != "" {
			env = append(env, k+"="+v)
		}
	}
	res := boot(t, Config{Kernel: k, Init: mustInit(t, root, work), Binaries: bins, WorkDir: work, ParallelTCG: true,
		Env: env, Timeout: 90 * 60e9, MemoryMB: 8192})
	if len(res.Runs) != 1 || !res.Runs[0].Ended || res.Runs[0].ExitCode != 0 {
		t.Fatalf("the scale benchmark did not complete; see %s", filepath.Join(work, k.Release+".log"))
	}
	out := strings.ReplaceAll(string(res.Runs[0].Output), "\x16", "")
	if err := os.WriteFile(filepath.Join(work, "bench-scale.txt"), []byte(out), 0o644); err != nil {
		t.Fatal(err)
	}
	fmt.Printf("Scale benchmark on Linux %s under QEMU (%s)\n%s", k.Release, benchAccel(res), out)
}

func envOr(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}

// benchAccel describes the accelerator the benchmark VM ran with.
func benchAccel(res *Result) string {
	if res.Accel.KVM {
		return "KVM"
	}
	return "TCG, multi-threaded"
}

// benchProcs reads GOMAXPROCS off the benchmark names (`go test` appends
// -N unless it is 1; -test.cpu may have asked for several).
func benchProcs(out string) string {
	var procs []string
	for _, line := range strings.Split(out, "\n") {
		m := benchLine.FindStringSubmatch(strings.TrimSpace(line))
		if m == nil || !strings.Contains(m[4], "ns/op") {
			continue
		}
		p := cmp.Or(m[3], "1")
		if !slices.Contains(procs, p) {
			procs = append(procs, p)
		}
	}
	return strings.Join(procs, ",")
}

// benchResult is the medians of one benchmark's runs, by unit, and the
// runs themselves in pass order.
type benchResult struct {
	family, variant string
	metrics         map[string]float64
	runs            map[string][]float64
}

// benchLine is one result line: name, variant, GOMAXPROCS suffix (absent
// for 1), then the iterations and the metrics.
var benchLine = regexp.MustCompile(`^(Benchmark[^\s/]+?)(?:/(\S+?))?(?:-(\d+))?\s+\d+\s+(.*)$`)

// parseBench reads `go test -bench` output. Runs at different GOMAXPROCS
// (-test.cpu=1,2) are different results: their families are then named
// "Dial (GOMAXPROCS=2)".
func parseBench(out string) []benchResult {
	several := strings.Contains(benchProcs(out), ",")
	samples := map[[2]string]map[string][]float64{}
	var order [][2]string
	for _, line := range strings.Split(out, "\n") {
		m := benchLine.FindStringSubmatch(strings.TrimSpace(line))
		if m == nil || !strings.Contains(m[4], "ns/op") {
			continue
		}
		family := strings.TrimPrefix(m[1], "Benchmark")
		if several {
			family += " (GOMAXPROCS=" + cmp.Or(m[3], "1") + ")"
		}
		key := [2]string{family, m[2]}
		if samples[key] == nil {
			samples[key] = map[string][]float64{}
			order = append(order, key)
		}
		f := strings.Fields(m[4])
		for i := 0; i+1 < len(f); i += 2 {
			if v, err := strconv.ParseFloat(f[i], 64); err == nil {
				samples[key][f[i+1]] = append(samples[key][f[i+1]], v)
			}
		}
	}
	var rs []benchResult
	for _, key := range order {
		r := benchResult{family: key[0], variant: key[1], metrics: map[string]float64{}, runs: samples[key]}
		for unit, runs := range samples[key] {
			vs := append([]float64(nil), runs...)
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

// interleavedUnits are the per-variant metrics of the interleaved
// benchmarks ("floor-ns/dial"), and the unit each becomes in the table.
var interleavedUnits = []struct{ suffix, unit string }{
	{"-ns/dial", "ns/op"},
	{"-ns/create", "ns/op"},
	{"-dials/s", "dials/s"},
	{"-machine-cpu-us/dial", "machine-cpu-us/dial"},
	{"-cpu-us/dial", "cpu-us/dial"},
}

// variantRank orders the rows of an interleaved benchmark like those of
// the others: the floor, this package, then the reference patterns.
func variantRank(name string) int {
	for i, p := range []string{"floor", "vsockns-current", "handoff-only", "vsockns-", "ref-", "prepared-", "locked-caller-", "kubevirt-", "socket-netns-"} {
		if name == p || strings.HasPrefix(name, p) && strings.HasSuffix(p, "-") {
			return i
		}
	}
	return 100
}

// expandInterleaved turns each interleaved benchmark's result into one
// result per variant, so they print like any other family.
func expandInterleaved(rs []benchResult) []benchResult {
	var out []benchResult
	for _, r := range rs {
		// One row per variant, with each of its metrics.
		var rows []benchResult
		row := map[string]int{}
		for metric, runs := range r.runs {
			for _, iu := range interleavedUnits {
				name, ok := strings.CutSuffix(metric, iu.suffix)
				if !ok {
					continue
				}
				i, seen := row[name]
				if !seen {
					i = len(rows)
					row[name] = i
					rows = append(rows, benchResult{family: r.family, variant: name,
						metrics: map[string]float64{}, runs: map[string][]float64{}})
				}
				rows[i].metrics[iu.unit] = r.metrics[metric]
				rows[i].runs[iu.unit] = runs
				break // the first suffix that fits: the units are listed longest first where one ends another
			}
		}
		if len(rows) == 0 {
			out = append(out, r)
			continue
		}
		sort.Slice(rows, func(i, j int) bool {
			ri, rj := variantRank(rows[i].variant), variantRank(rows[j].variant)
			if ri != rj {
				return ri < rj
			}
			return rows[i].variant < rows[j].variant
		})
		out = append(out, rows...)
	}
	return out
}

// pairedRatio compares a variant with the floor pass by pass: the i-th
// run of each was measured in the same pass, close in time, so a drift of
// the emulated machine cancels out. It returns the median ratio and the
// smallest and largest.
func pairedRatio(v, floor []float64) (median, lo, hi float64, ok bool) {
	n := min(len(v), len(floor))
	var rs []float64
	for i := range n {
		if v[i] > 0 && floor[i] > 0 {
			rs = append(rs, v[i]/floor[i])
		}
	}
	if len(rs) == 0 {
		return 0, 0, 0, false
	}
	sort.Float64s(rs)
	return rs[len(rs)/2], rs[0], rs[len(rs)-1], true
}

// metric formats a metric, or "-" where the benchmark has none.
func metric(r benchResult, unit string) string {
	v, ok := r.metrics[unit]
	if !ok {
		return "-"
	}
	return fmt.Sprintf("%.0f", v)
}

// printBench prints one table per family. The headline metric is a rate
// where the benchmark reports one (dials/s, MB/s, accepts/s: higher is
// better), else ns/op (lower is better). The ratio to the floor is the
// median of per-pass ratios, with their range, so the noise shows.
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
		var floor []float64
		for _, r := range by[fam] {
			if r.variant == "floor" || r.variant == "" {
				floor = r.runs[unit]
			}
		}
		kind := "rate"
		if unit == "ns/op" {
			kind = "time"
		}
		tw := tabwriter.NewWriter(w, 2, 4, 2, ' ', tabwriter.AlignRight)
		fmt.Fprintf(w, "%s\n", fam)
		fmt.Fprintf(tw, "variant\t%s\tvs floor (%s)\tpass range\tns/op\tallocs/op\tthreads (new)\tCPU µs/dial\tmachine µs/dial\t\n", unit, kind)
		for _, r := range by[fam] {
			ratio, spread := "-", "-"
			if m, lo, hi, ok := pairedRatio(r.runs[unit], floor); ok {
				ratio = fmt.Sprintf("%.2fx", m)
				spread = fmt.Sprintf("%.2f-%.2f", lo, hi)
			}
			threads := "-"
			if v, ok := r.metrics["threads"]; ok {
				threads = fmt.Sprintf("%.0f (+%.0f)", v, r.metrics["new-threads"])
			}
			name := r.variant
			if name == "" {
				name = fam
			}
			fmt.Fprintf(tw, "%s\t%.4g\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t\n", name, r.metrics[unit], ratio, spread, metric(r, "ns/op"), metric(r, "allocs/op"), threads, metric(r, "cpu-us/dial"), metric(r, "machine-cpu-us/dial"))
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
	// Pass by pass: 3000/2000, then 3300 against 4000 (one run only).
	if m, lo, hi, ok := pairedRatio(rs[1].runs["ns/op"], rs[0].runs["ns/op"]); !ok || m != 1.65 || lo != 1.65 || hi != 1.65 {
		t.Errorf("paired ratio: %v %v %v %v", m, lo, hi, ok)
	}
	if m, lo, hi, _ := pairedRatio(rs[0].runs["ns/op"], []float64{1000, 4000, 1500}); m != 2 || lo != 1 || hi != 2 {
		t.Errorf("paired ratio over three passes: %v %v %v", m, lo, hi)
	}
	if _, _, _, ok := pairedRatio(nil, rs[0].runs["ns/op"]); ok {
		t.Error("paired ratio without runs")
	}
	il := "BenchmarkDialInterleaved-2 \t 50\t 9000 ns/op\t 1000 floor-ns/dial\t 1300 kubevirt-global-ns/dial\t 1100 vsockns-global-ns/dial\n" +
		"BenchmarkDialInterleaved-2 \t 50\t 9000 ns/op\t 2000 floor-ns/dial\t 2400 kubevirt-global-ns/dial\t 2400 vsockns-global-ns/dial\n"
	ex := expandInterleaved(parseBench(il))
	var names []string
	for _, r := range ex {
		names = append(names, r.variant)
	}
	if fmt.Sprint(names) != "[floor vsockns-global kubevirt-global]" {
		t.Fatalf("interleaved rows: %v", names)
	}
	if m, lo, hi, _ := pairedRatio(ex[1].runs["ns/op"], ex[0].runs["ns/op"]); m != 1.2 || lo != 1.1 || hi != 1.2 {
		t.Errorf("interleaved paired ratio: %v %v %v", m, lo, hi)
	}
	// A storm's three metrics per variant make one row each, the machine's
	// CPU not taken for a variant named "floor-machine".
	storm := "BenchmarkDialPreparedStorm-2 \t 5\t 9000 ns/op\t 400 floor-dials/s\t 700 floor-cpu-us/dial\t 900 floor-machine-cpu-us/dial\t 380 prepared-local-dials/s\t 750 prepared-local-cpu-us/dial\t 990 prepared-local-machine-cpu-us/dial\n"
	var rows []string
	for _, r := range expandInterleaved(parseBench(storm)) {
		rows = append(rows, fmt.Sprintf("%s:%g/%g/%g", r.variant, r.metrics["dials/s"], r.metrics["cpu-us/dial"], r.metrics["machine-cpu-us/dial"]))
	}
	if fmt.Sprint(rows) != "[floor:400/700/900 prepared-local:380/750/990]" {
		t.Errorf("storm rows: %v", rows)
	}
	if p := benchProcs(out); p != "2" {
		t.Errorf("GOMAXPROCS from -2 names: %q", p)
	}
	one := "BenchmarkDial/floor-inside-local \t 100\t 2000 ns/op\n" + "BenchmarkNamespaceMode \t 10\t 500 ns/op\n"
	if p := benchProcs(one); p != "1" {
		t.Errorf("GOMAXPROCS from names without a suffix: %q", p)
	}
	if p := benchProcs(one + out); p != "1,2" {
		t.Errorf("GOMAXPROCS from -test.cpu=1,2: %q", p)
	}
	// -test.cpu=1,2: the two are separate results, not one median.
	mixed := "BenchmarkDial/floor \t 100\t 1000 ns/op\n" + "BenchmarkDial/floor-2 \t 100\t 5000 ns/op\n" +
		"BenchmarkDial/floor \t 100\t 1200 ns/op\n" + "BenchmarkDial/floor-2 \t 100\t 5200 ns/op\n"
	var got []string
	for _, r := range parseBench(mixed) {
		got = append(got, fmt.Sprintf("%s/%s=%g", r.family, r.variant, r.metrics["ns/op"]))
	}
	if want := "[Dial (GOMAXPROCS=1)/floor=1200 Dial (GOMAXPROCS=2)/floor=5200]"; fmt.Sprint(got) != want {
		t.Errorf("-test.cpu=1,2 results: %v, want %v", got, want)
	}
}
