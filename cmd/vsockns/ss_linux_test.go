//go:build linux

package main

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/vishvananda/netns"

	"github.com/vsockns/vsockns"
	"github.com/vsockns/vsockns/internal/testenv"
)

// ssJSON is what the tests read of `vsockns ss --json`.
type ssJSON struct {
	Sockets []struct {
		Netid string `json:"netid"`
		State string `json:"state"`
		Local struct {
			ContextID, Port uint32
		} `json:"local"`
		Namespace   string `json:"namespace"`
		NamespaceID string `json:"namespace_id"`
		Mode        string `json:"mode"`
		Owners      []struct {
			PID     int    `json:"pid"`
			Command string `json:"command"`
		} `json:"owners"`
	} `json:"sockets"`
	Complete bool   `json:"complete"`
	Error    string `json:"error"`
}

func parseSS(t *testing.T, r result) ssJSON {
	t.Helper()
	var out ssJSON
	require.NoError(t, json.Unmarshal([]byte(r.stdout), &out), "%+v", r)
	return out
}

// ssLine matches a row of `vsockns ss -p`: the columns, by spaces.
func ssLine(fields ...string) *regexp.Regexp {
	for i, f := range fields {
		fields[i] = regexp.QuoteMeta(f)
	}
	return regexp.MustCompile(`(?m)^` + strings.Join(fields, `\s+`) + `\s*$`)
}

// ssPrefix matches the first columns of a row.
func ssPrefix(fields ...string) *regexp.Regexp {
	for i, f := range fields {
		fields[i] = regexp.QuoteMeta(f)
	}
	return regexp.MustCompile(`(?m)^` + strings.Join(fields, `\s+`) + `\s`)
}

// A listener (a `vsockns listen` process) shows in its namespace's listing
// once, with its namespace, mode and process, and in no other namespace's;
// --all finds it once among every namespace's sockets.
func TestCLISS(t *testing.T) {
	cliPath(t)
	withNS := namespacesExpected(t)
	where, name, mode := []string{}, "", "-"
	if withNS {
		addNS(t, "ss-a", "local")
		addNS(t, "ss-b", "local")
		where, name, mode = []string{"--netns", "ss-a"}, "ss-a", "local"
	}
	listener, _ := startListener(t, "", append(where, "7300")...)
	pid := listener.Process.Pid

	r := runCLI(t, "", append([]string{"ss", "-p"}, where...)...)
	require.Equal(t, 0, r.code, "%+v", r)
	assert.Regexp(t, ssLine("Netid", "State", "Local Address:Port", "Peer Address:Port", "Namespace", "Mode", "Process"), r.stdout)
	if name == "" {
		ns, err := vsockns.OpenNamespace(netns.None())
		require.NoError(t, err)
		name = ns.ID().String()
		ns.Close()
	}
	assert.Regexp(t, ssLine("v_str", "LISTEN", "*:7300", "*:*", name, mode, fmt.Sprintf(`users:(("vsockns",pid=%d))`, pid)), r.stdout)

	if withNS {
		r = runCLI(t, "", "ss", "--netns", "ss-b")
		require.Equal(t, 0, r.code, "%+v", r)
		assert.NotContains(t, r.stdout, ":7300", "ss-b lists ss-a's listener")
	}

	r = runCLI(t, "", "ss", "--all", "-p", "--json")
	require.Equal(t, 0, r.code, "%+v", r)
	all := parseSS(t, r)
	assert.True(t, all.Complete)
	found := 0
	for _, s := range all.Sockets {
		if s.Local.Port == 7300 && s.State == "LISTEN" {
			found++
			assert.Equal(t, name, s.Namespace)
			if withNS {
				assert.Equal(t, "local", s.Mode)
			}
			require.Len(t, s.Owners, 1)
			assert.Equal(t, pid, s.Owners[0].PID)
			assert.Equal(t, "vsockns", s.Owners[0].Command)
		}
	}
	assert.Equal(t, 1, found, "--all lists the listener once")

	r = runCLI(t, "", "ss", "--all", "-l", "--port", "7300")
	require.Equal(t, 0, r.code, "%+v", r)
	assert.Len(t, strings.Split(strings.TrimSpace(r.stdout), "\n"), 2, "the header and the listener: %s", r.stdout)
	r = runCLI(t, "", "ss", "--all", "--cid", "4242")
	require.Equal(t, 0, r.code, "%+v", r)
	assert.NotContains(t, r.stdout, ":7300")

	for _, bad := range [][]string{{"--cid", "x"}, {"--port", "-2"}, {"--all", "--netns", "ss-a"}, {"extra"}} {
		r = runCLI(t, "", append([]string{"ss"}, bad...)...)
		assert.Equal(t, 2, r.code, "ss %v: %+v", bad, r)
	}
}

// runCLIAs runs the command as the unprivileged test user.
func runCLIAs(t *testing.T, args ...string) result {
	t.Helper()
	cmd := exec.Command(cliPath(t), args...)
	cmd.Dir = "/"
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{
		Uid: testenv.UnprivilegedID, Gid: testenv.UnprivilegedID, Groups: []uint32{}}}
	return runCmd(t, cmd)
}

// An ordinary user lists its own namespace in full; --all, and -p (the
// owners are other users' processes), print what it sees and fail saying
// what is missing.
func TestCLISSUnprivileged(t *testing.T) {
	cliPath(t)
	startListener(t, "", "7310")
	r := runCLIAs(t, "ss")
	require.Equal(t, 0, r.code, "%+v", r)
	assert.Regexp(t, ssPrefix("v_str", "LISTEN", "*:7310", "*:*"), r.stdout)
	for _, args := range [][]string{{"ss", "--all"}, {"ss", "-p"}} {
		r = runCLIAs(t, args...)
		assert.Equal(t, 1, r.code, "%v: %+v", args, r)
		assert.Contains(t, r.stdout, ":7310", "%v prints what it sees", args)
		assert.Contains(t, r.stderr, "listing is incomplete", "%v", args)
	}
	r = runCLIAs(t, "ss", "--all", "--json")
	assert.Equal(t, 1, r.code, "%+v", r)
	j := parseSS(t, r)
	assert.False(t, j.Complete)
	assert.Contains(t, j.Error, "could not be opened")
}

// vmaddrAny is VMADDR_CID_ANY.
const vmaddrAny = ^uint32(0)

// `vsockns ss --all` over 1000 namespaces lists every listener once, in
// its namespace. In the suite each namespace has one listener; under
// `make bench-ss` (which packs ss(8) into the guest and names it in
// VSOCKNS_SS) ten, and the time the listing takes is logged beside the
// library's own listing in this process, its parts (one namespace's dump,
// the /proc walk), and `ss --vsock -a -N NAME` run once per namespace.
func TestCLISSScale(t *testing.T) {
	cliPath(t)
	bench := os.Getenv("VSOCKNS_SS") != ""
	n, per, base := 1000, 1, 20000
	if bench {
		per = 10
	}
	if raceEnabled {
		n = 50 // the detector's run checks the listing, not the scale
	}
	withNS := namespacesExpected(t)
	var lim syscall.Rlimit
	require.NoError(t, syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim))
	old := lim
	if need := uint64(n*(per+2) + 1024); lim.Max < need {
		lim.Max = need
	}
	lim.Cur = lim.Max
	require.NoError(t, syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim))
	t.Cleanup(func() { syscall.Setrlimit(syscall.RLIMIT_NOFILE, &old) })
	ss, ssErr := exec.LookPath(cmp.Or(os.Getenv("VSOCKNS_SS"), "ss")) // `make bench-ss` names the guest's
	named := withNS && ssErr == nil                                   // ss -N needs names
	ctx := context.Background()
	start := time.Now()
	ids := map[string]int{}
	var names []string
	var first *vsockns.Namespace
	const dumps = 20
	var alone time.Duration // one namespace's Sockets with (almost) no other sockets on the node
	for i := range n {
		var h netns.NsHandle
		var err error
		if named {
			name := fmt.Sprintf("ss-scale-%04d", i)
			h, err = vsockns.NewNamedNamespace(name, vsockns.ModeLocal)
			require.NoError(t, err)
			t.Cleanup(func() { vsockns.DeleteNamedNamespace(name) })
			names = append(names, name)
		} else {
			h = testenv.NSOfMode(t, vsockns.ModeLocal)
		}
		ns, err := vsockns.OpenNamespace(h)
		require.NoError(t, err)
		if named {
			h.Close()
		}
		t.Cleanup(func() { ns.Close() })
		ids[ns.ID().String()] = i
		if first == nil {
			first = ns
		}
		for j := range per {
			l, err := ns.ListenConfig().ListenVsock(ctx, vmaddrAny, uint32(base+i*per+j))
			require.NoError(t, err)
			t.Cleanup(func() { l.Close() })
		}
		if i == 0 && bench {
			t0 := time.Now()
			for range dumps {
				_, err := ns.Sockets(ctx)
				require.NoError(t, err)
			}
			alone = time.Since(t0) / dumps
		}
	}
	setup := time.Since(start)

	start = time.Now()
	r := runCLI(t, "", "ss", "--all", "--json")
	asJSON := time.Since(start)
	require.Equal(t, 0, r.code, "%s", r.stderr)
	seen := map[int]int{}
	for _, s := range parseSS(t, r).Sockets {
		i, ok := ids[s.NamespaceID]
		if !ok || s.State != "LISTEN" {
			continue
		}
		p := int(s.Local.Port) - base
		assert.Equal(t, i, p/per, "port %d listed in namespace %d", s.Local.Port, i)
		seen[p]++
	}
	assert.Len(t, seen, n*per, "every listener listed")
	for p, c := range seen {
		if c != 1 {
			t.Errorf("port %d listed %d times", base+p, c)
		}
	}
	if !bench {
		// The suite's boot has a time limit: the in-process listing and
		// the breakdown are for make bench-ss.
		t.Logf("%d namespaces (set up in %v): vsockns ss --all --json %v", n, setup, asJSON)
		return
	}
	start = time.Now()
	list, err := vsockns.NodeSockets(ctx)
	lib := time.Since(start)
	require.NoError(t, err)
	start = time.Now()
	r = runCLI(t, "", "ss", "--all")
	table := time.Since(start)
	require.Equal(t, 0, r.code, "%s", r.stderr)
	start = time.Now()
	for range dumps {
		socks, err := first.Sockets(ctx)
		require.NoError(t, err)
		require.Len(t, socks, per)
	}
	oneNS := time.Since(start) / dumps
	start = time.Now()
	_, err = vsockns.SocketOwners()
	require.NoError(t, err)
	owners := time.Since(start)

	msg := fmt.Sprintf("%d namespaces with %d listeners each (set up in %v), %d namespaces and %d sockets on the node: "+
		"vsockns ss --all %v (--json %v), the library in-process (NodeSockets) %v; "+
		"of which one namespace's Sockets %v (x%d = %v; %v while it was alone on the node), the /proc walk (SocketOwners) %v",
		n, per, setup.Round(time.Millisecond), len(list.Namespaces), len(list.Sockets),
		table.Round(time.Millisecond), asJSON.Round(time.Millisecond), lib.Round(time.Millisecond),
		oneNS.Round(time.Microsecond), n, (oneNS * time.Duration(n)).Round(time.Millisecond), alone.Round(time.Microsecond), owners.Round(time.Millisecond))
	switch {
	case named:
		start = time.Now()
		rows := 0
		for _, name := range names {
			out, err := exec.Command(ss, "--vsock", "-a", "-n", "-N", name).Output()
			require.NoError(t, err, "ss -N %s", name)
			rows += strings.Count(strings.TrimSpace(string(out)), "\n") // the lines after the header
		}
		msg += fmt.Sprintf("; ss --vsock -a -n -N NAME once per namespace %v", time.Since(start).Round(time.Millisecond))
		assert.Equal(t, n*per, rows, "ss lists every listener")
	case ssErr != nil:
		msg += "; ss(8) not measured: not in this guest (`make bench-ss` packs it)"
	default:
		msg += "; ss(8) not measured: no named namespaces on a kernel without vsock namespaces"
	}
	t.Log(msg)
	fmt.Fprintln(os.Stderr, "vsockns ss scale: "+msg)
}
