// Command nodesockets is the operator's view of the other scenarios: it
// makes what Example 1 and the VM host make (a listener in a global and in
// a local namespace, each with a connection, and a host agent listening in
// a VM's local namespace) and keeps them open while `vsockns ss --all -p`
// lists every vsock socket of the node, each in its namespace with its
// mode and owner. It then checks that each socket it made is listed once,
// in its own namespace.
//
// Run it as root on Linux >= 7.0 with vsock_loopback and vsock_diag loaded,
// with VSOCKNS_CLI naming the vsockns command (or `make demo`).
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"

	"github.com/mdlayher/vsock"

	"github.com/vsockns/vsockns"
	"github.com/vsockns/vsockns/examples/internal/demo"
)

// made is a socket this program made, to be found in the listing.
type made struct {
	what string
	ns   *vsockns.Namespace
	port uint32
	dial bool // the dialing end of a connection (its peer port is port)
}

func main() {
	demo.Title("Every vsock socket of the node: vsockns ss --all")
	ctx := context.Background()
	var want []made
	for _, sc := range []struct {
		name string
		mode vsockns.Mode
		port uint32
	}{{"Example 1's global namespace", vsockns.ModeGlobal, 1234}, {"Example 1's local namespace", vsockns.ModeLocal, 1234},
		{"a VM's namespace (host agent)", vsockns.ModeLocal, 1024}} {
		ns, err := vsockns.CreateNamespace(sc.mode)
		if err != nil {
			demo.Fatal(err)
		}
		defer ns.Close()
		l, err := ns.ListenConfig().ListenVsock(ctx, ^uint32(0), sc.port)
		if err != nil {
			demo.Fatal(err)
		}
		defer l.Close()
		want = append(want, made{sc.name + " listener", ns, sc.port, false})
		if sc.port == 1024 {
			demo.Step("listening on port %d in %s (%s)", sc.port, sc.name, sc.mode)
			continue
		}
		c, err := ns.Dialer().DialVsock(ctx, vsock.Local, sc.port)
		if err != nil {
			demo.Fatal(err)
		}
		defer c.Close()
		a, err := l.AcceptContext(ctx)
		if err != nil {
			demo.Fatal(err)
		}
		defer a.Close()
		want = append(want, made{sc.name + " dialer", ns, sc.port, true}, made{sc.name + " accepted", ns, sc.port, false})
		demo.Step("listening on port %d in %s (%s), connected from inside it", sc.port, sc.name, sc.mode)
	}

	cli := os.Getenv("VSOCKNS_CLI")
	if cli == "" {
		cli = "vsockns"
	}
	demo.Step("vsockns ss --all -p")
	out, err := exec.Command(cli, "ss", "--all", "-p").CombinedOutput()
	fmt.Print(string(out))
	if err != nil {
		demo.Fatal(fmt.Errorf("vsockns ss --all -p: %w", err))
	}
	j, err := exec.Command(cli, "ss", "--all", "-p", "--json").Output()
	if err != nil {
		demo.Fatal(fmt.Errorf("vsockns ss --all --json: %w", err))
	}
	var listing struct {
		Sockets []struct {
			State         string
			Local, Remote vsock.Addr
			NamespaceID   string `json:"namespace_id"`
			Mode          string
			Owners        []vsockns.Process
		}
	}
	if err := json.Unmarshal(j, &listing); err != nil {
		demo.Fatal(err)
	}
	for _, w := range want {
		where, count := "", 0
		for _, s := range listing.Sockets {
			port := s.Local.Port
			if w.dial {
				port = s.Remote.Port
			}
			if port != w.port || (w.dial && s.Remote.ContextID != vsock.Local) || (!w.dial && s.Remote.ContextID == vsock.Local) {
				continue
			}
			if s.NamespaceID == w.ns.ID().String() && len(s.Owners) == 1 && s.Owners[0].PID == os.Getpid() {
				count++
				where = s.Mode + " " + s.NamespaceID
			}
		}
		mode, _ := w.ns.Mode()
		demo.Check("ss --all: "+w.what, fmt.Sprintf("once, in %s %s", mode, w.ns.ID()), fmt.Sprintf("%d times, in %s", count, where), count == 1)
	}
	demo.Exit()
}
