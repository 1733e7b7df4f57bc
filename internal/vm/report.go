package vm

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"os/exec"
	"strings"
)

// A TestNode is one guest test (or subtest) and what became of it.
type TestNode struct {
	Name     string // full name, e.g. "TestDial/global"
	Action   string // "pass", "fail", "skip", or "" if the test never finished
	Output   []string
	Children []*TestNode
}

// Short is the last element of Name.
func (n *TestNode) Short() string {
	if i := strings.LastIndexByte(n.Name, '/'); i >= 0 {
		return n.Name[i+1:]
	}
	return n.Name
}

// Problem says why the test counts as failed on the host, or "" if it passed.
// A test that skipped in the VM is a failure: inside the VM every
// kernel-dependent test must run.
func (n *TestNode) Problem() string {
	switch n.Action {
	case "pass":
		return ""
	case "fail":
		return "failed in the guest"
	case "skip":
		return "skipped in the guest (tests must not skip in the VM)"
	default:
		return "did not finish in the guest (panic, timeout or crash)"
	}
}

// PackageReport is the parsed result of one guest test binary.
type PackageReport struct {
	Run   *RunResult
	Tests []*TestNode // top-level tests, in the order they started
	Count map[string]int
}

// Problem says why the binary as a whole failed, or "".
func (p *PackageReport) Problem() string {
	switch {
	case p.Run.Err != "":
		return "could not run: " + p.Run.Err
	case !p.Run.Ended:
		return "did not finish (guest stopped or timed out)"
	case p.Run.ExitCode != 0:
		return fmt.Sprintf("exited with status %d", p.Run.ExitCode)
	}
	return ""
}

// ParseRun turns a guest binary's -test.v=test2json stream into a test tree,
// using the toolchain's own converter (`go tool test2json`).
func ParseRun(run *RunResult) (*PackageReport, error) {
	cmd := exec.Command("go", "tool", "test2json", "-p", run.Name)
	cmd.Stdin = bytes.NewReader(run.Output)
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("go tool test2json: %w", err)
	}
	rep := &PackageReport{Run: run, Count: map[string]int{}}
	nodes := map[string]*TestNode{}
	get := func(name string) *TestNode {
		if n, ok := nodes[name]; ok {
			return n
		}
		n := &TestNode{Name: name}
		nodes[name] = n
		if i := strings.LastIndexByte(name, '/'); i >= 0 {
			if parent, ok := nodes[name[:i]]; ok {
				parent.Children = append(parent.Children, n)
				return n
			}
		}
		rep.Tests = append(rep.Tests, n)
		return n
	}
	sc := bufio.NewScanner(bytes.NewReader(out))
	sc.Buffer(make([]byte, 64<<10), 4<<20)
	for sc.Scan() {
		var ev struct {
			Action string
			Test   string
			Output string
		}
		if err := json.Unmarshal(sc.Bytes(), &ev); err != nil {
			return nil, fmt.Errorf("test2json output: %w", err)
		}
		if ev.Test == "" {
			continue
		}
		n := get(ev.Test)
		switch ev.Action {
		case "output":
			n.Output = append(n.Output, ev.Output)
		case "pass", "fail", "skip":
			n.Action = ev.Action
			rep.Count[ev.Action]++
		}
	}
	for _, n := range nodes {
		if n.Action == "" && strings.HasPrefix(n.Name, "Benchmark") && run.Ended && run.ExitCode == 0 {
			// A benchmark that completes prints its result line but no
			// "--- PASS"; one that fails prints "--- FAIL" like a test.
			n.Action = "pass"
			rep.Count["pass"]++
		}
		if n.Action == "" {
			rep.Count["unfinished"]++
		}
	}
	return rep, sc.Err()
}
