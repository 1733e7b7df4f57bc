// Command containerdial plays both sides of a host agent reaching a
// workload that lives in a container's network namespace (as KubeVirt's
// virt-handler reaches a VM's guest agent in the virt-launcher pod):
//
//   - the "container": this program re-executed with --container, whose
//     process runs inside a named local-mode namespace and serves vsock
//     port 9999 there, standing in for the VM's guest agent;
//   - the "agent": finds the container's namespace from its PID (through a
//     pidfd, so a reused PID cannot mislead it), reads its mode and dials
//     into it. Dialing from the agent's own namespace fails: the namespace
//     is local.
//
// Run it as root on Linux >= 7.0 with vsock_loopback loaded (or `make demo`).
package main

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"os/exec"
	"runtime"

	"github.com/mdlayher/vsock"
	"github.com/vishvananda/netns"

	"github.com/vsockns/vsockns"
	"github.com/vsockns/vsockns/examples/internal/demo"
)

const (
	nsName = "demo-pod"
	port   = 9999
)

func main() {
	if len(os.Args) > 1 && os.Args[1] == "--container" {
		container()
		return
	}
	demo.Title("A host agent dialing into a container's namespace found by PID")
	ns, err := vsockns.NewNamedNamespace(nsName, vsockns.ModeLocal)
	if err != nil {
		demo.Fatal(err)
	}
	ns.Close()
	defer vsockns.DeleteNamedNamespace(nsName)

	cmd := exec.Command("/proc/self/exe", "--container")
	cmd.Stderr = os.Stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		demo.Fatal(err)
	}
	stdin, err := cmd.StdinPipe()
	if err != nil {
		demo.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		demo.Fatal(err)
	}
	defer func() { stdin.Close(); cmd.Wait() }()
	ready, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil {
		demo.Fatal(fmt.Errorf("container did not start: %w", err))
	}
	demo.Step("container pid %d: %s", cmd.Process.Pid, ready[:len(ready)-1])

	target, err := vsockns.NamespaceFromPID(cmd.Process.Pid)
	if err != nil {
		demo.Fatal(err)
	}
	defer target.Close()
	mode, err := vsockns.NamespaceMode(target)
	if err != nil {
		demo.Fatal(err)
	}
	demo.Check("mode of the container's namespace", "local", mode.String(), mode == vsockns.ModeLocal)

	c, err := vsockns.Dial(target, vsock.Local, port)
	observed := demo.Outcome(err)
	if err == nil {
		b, _ := io.ReadAll(c)
		c.Close()
		observed = fmt.Sprintf("connected, read %q", b)
	}
	demo.Check("agent dials from the container's namespace", "connected", observed, err == nil)

	_, err = vsockns.Dial(netns.None(), vsock.Local, port)
	demo.Check("agent dials from its own namespace", "connection reset by peer", demo.Outcome(err), err != nil)
	demo.Exit()
}

// container moves its main thread into the named namespace before anything
// else, as a container runtime would have started it there, and serves.
func container() {
	runtime.LockOSThread()
	ns, err := netns.GetFromName(nsName)
	if err != nil {
		demo.Fatal(err)
	}
	if err := netns.Set(ns); err != nil {
		demo.Fatal(err)
	}
	ns.Close()
	l, err := vsockns.Listen(netns.None(), port)
	if err != nil {
		demo.Fatal(err)
	}
	fmt.Printf("guest agent listening on vsock port %d inside %s\n", port, nsName)
	go func() {
		io.Copy(io.Discard, os.Stdin) // exit when the agent is done
		os.Exit(0)
	}()
	for {
		c, err := l.Accept()
		if err != nil {
			return
		}
		io.WriteString(c, "guest agent: ok")
		c.Close()
	}
}
