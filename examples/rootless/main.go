//go:build linux

// Command rootless is the unprivileged story: two ordinary users (uid 1000
// and 1001) each run a VM whose vsock lives in a local namespace of their
// own, made without privileges by vsockns.CreateUserNamespace. Both VMs
// get CID 3; each owner's agent reaches its own guest through its
// namespace, neither reaches the other's, and the host's namespace reaches
// neither. The VMs are vsocktest guests (the guest side of vhost-vsock,
// played in the VMM process), so every row is a real connection.
//
// Run it as root on Linux >= 7.0 with vhost_vsock loaded (or `make demo`):
// it makes /dev/vhost-vsock usable by everyone, as systemd's udev rules do,
// and runs each user's VMM and agent as that user.
package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/vishvananda/netns"

	"github.com/vsockns/vsockns"
	"github.com/vsockns/vsockns/examples/internal/demo"
	"github.com/vsockns/vsockns/vsocktest"
)

const (
	guestCID  = 3
	guestPort = 1024
)

var users = []struct {
	name string
	uid  int
}{{"alice", 1000}, {"bob", 1001}}

func main() {
	if len(os.Args) > 1 {
		switch os.Args[1] {
		case "vmm":
			vmm(os.Args[2], os.Args[3])
			return
		case "agent":
			agent(os.Args[2], os.Args[3])
			return
		}
	}
	demo.Title("Rootless: two users' VMs at CID 3, each reachable by its owner only")
	if err := os.Chmod(vsockns.VhostDevice, 0o666); err != nil {
		demo.Fatal(err)
	}
	demo.Step("%s made mode 0666, as systemd's udev rules make it", vsockns.VhostDevice)
	dir, err := os.MkdirTemp("", "rootless-")
	if err != nil {
		demo.Fatal(err)
	}
	defer os.RemoveAll(dir)
	if err := os.Chmod(dir, 0o777); err != nil {
		demo.Fatal(err)
	}
	var vmms []*exec.Cmd
	for _, u := range users {
		sock := filepath.Join(dir, u.name+".sock")
		cmd := asUser(u.uid, "vmm", u.name, sock)
		out, err := cmd.StdoutPipe()
		if err != nil {
			demo.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			demo.Fatal(err)
		}
		vmms = append(vmms, cmd)
		line, err := bufio.NewReader(out).ReadString('\n')
		if err != nil {
			demo.Fatal(fmt.Errorf("%s's VMM: %w", u.name, err))
		}
		demo.Step("%s (uid %d): %s", u.name, u.uid, strings.TrimSpace(line))
		go io.Copy(os.Stdout, out)
	}
	for _, u := range users {
		for _, other := range users {
			agentRun(u.uid, u.name, filepath.Join(dir, other.name+".sock"))
		}
		agentRun(u.uid, u.name, "") // from the host's own namespace
	}
	for _, cmd := range vmms {
		cmd.Process.Signal(syscall.SIGTERM)
		cmd.Wait()
	}
	demo.Exit()
}

// asUser runs this program again as uid (group uid), with no capabilities.
func asUser(uid int, args ...string) *exec.Cmd {
	cmd := exec.Command("/proc/self/exe", args...)
	cmd.Stderr = os.Stderr
	cmd.Dir = "/"
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(uid), Gid: uint32(uid), Groups: []uint32{}}}
	return cmd
}

func agentRun(uid int, name, sock string) {
	cmd := asUser(uid, "agent", name, sock)
	cmd.Stdout = os.Stdout
	if err := cmd.Run(); err != nil {
		demo.Fatal(fmt.Errorf("%s's agent: %w", name, err))
	}
}

// vmm is one user's VMM: a local namespace of the user's own, a guest at
// CID 3 in it that greets with its owner's name, the namespace served at
// sock for the user's other processes.
func vmm(name, sock string) {
	ctx := context.Background()
	ns, err := vsockns.CreateUserNamespace(ctx, vsockns.ModeLocal)
	if err != nil {
		demo.Fatal(err)
	}
	defer ns.Close()
	g, err := vsocktest.NewGuest(vsocktest.Config{NetNS: ns, CID: guestCID})
	if err != nil {
		demo.Fatal(err)
	}
	defer g.Close()
	l, err := g.Listen(guestPort)
	if err != nil {
		demo.Fatal(err)
	}
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			fmt.Fprintf(c, "%s's VM", name)
			c.Close()
		}
	}()
	ul, err := netListenUnixpacket(sock)
	if err != nil {
		demo.Fatal(err)
	}
	os.Chmod(sock, 0o666) // anyone may connect; the server admits its own user only
	fmt.Printf("VM at CID %d in %s, served at %s\n", g.CID(), ns, sock)
	sctx, stop := context.WithCancel(ctx)
	go ns.Serve(sctx, ul)
	waitForSignal()
	stop()
}

// agent dials CID 3 as user name: in the namespace served at sock, or in
// its own (the host's) namespace when sock is empty.
func agent(name, sock string) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	owner := strings.TrimSuffix(filepath.Base(sock), ".sock")
	var (
		greeting string
		err      error
	)
	if sock == "" {
		owner = ""
		greeting, err = greet(ctx, &vsockns.Dialer{Namespace: netns.None()})
	} else {
		var ns *vsockns.Namespace
		if ns, err = vsockns.DialNamespace(ctx, sock); err == nil {
			greeting, err = greet(ctx, ns.Dialer())
			ns.Close()
		}
	}
	switch {
	case owner == name:
		demo.Check(fmt.Sprintf("%s dials CID %d in %s's own namespace", name, guestCID, name), fmt.Sprintf("%q", name+"'s VM"), demo.Result(err, fmt.Sprintf("%q", greeting)), err == nil && greeting == name+"'s VM")
	case owner != "":
		demo.Check(fmt.Sprintf("%s opens %s's namespace", name, owner), "permission denied", demo.Outcome(err), errors.Is(err, syscall.EACCES))
	default:
		demo.Check(fmt.Sprintf("%s dials CID %d from the host's namespace", name, guestCID), "no VM reached", demo.Result(err, fmt.Sprintf("%q", greeting)), err != nil)
	}
}

func greet(ctx context.Context, d *vsockns.Dialer) (string, error) {
	c, err := d.DialVsock(ctx, guestCID, guestPort)
	if err != nil {
		return "", err
	}
	defer c.Close()
	b, err := io.ReadAll(c)
	return string(b), err
}

func netListenUnixpacket(path string) (*net.UnixListener, error) {
	return net.ListenUnix("unixpacket", &net.UnixAddr{Name: path, Net: "unixpacket"})
}

func waitForSignal() {
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM, os.Interrupt)
	<-sigs
}
