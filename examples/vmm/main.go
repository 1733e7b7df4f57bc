//go:build linux

// Command vmm is the start of a VMM written in Go: it creates a local-mode
// network namespace for a VM, opens /dev/vhost-vsock inside it, claims
// guest CID 3 in that namespace's own CID pool, and runs the guest side of
// the device (a vsocktest guest, where QEMU would pass the descriptor to a
// real guest: the command line is printed). The host's agent then dials
// the guest from the VM's namespace and gets its answer. A second VM in a
// second local namespace gets CID 3 too, and answers its own agent.
//
// Run it as root on Linux >= 7.0 with vhost_vsock loaded (or `make demo`).
package main

import (
	"context"
	"fmt"
	"io"
	"time"

	"github.com/vsockns/vsockns"
	"github.com/vsockns/vsockns/examples/internal/demo"
	"github.com/vsockns/vsockns/vsocktest"
)

func main() {
	demo.Title("A Go VMM giving every VM guest CID 3")
	for i := 1; i <= 2; i++ {
		// The VM's namespace, kept for as long as the VM runs: in a local
		// namespace only sockets created there reach the guest, so the
		// host side (an agent dialing the guest) needs this reference.
		ns, err := vsockns.CreateNamespace(vsockns.ModeLocal)
		if err != nil {
			demo.Fatal(err)
		}
		defer ns.Close()
		// The device belongs to the namespace it is opened in.
		dev, cid, err := ns.AllocateGuestCID(3, 1000)
		if err != nil {
			demo.Fatal(err)
		}
		// The guest below owns the device and closes it.
		demo.Step("VM %d: /dev/vhost-vsock opened in its own local namespace, guest CID %d", i, cid)
		demo.Step("  qemu-system-x86_64 ... -device vhost-vsock-pci,vhostfd=3,guest-cid=%d   (ExtraFiles: [%s])", cid, dev.File().Name())
		demo.Check(fmt.Sprintf("VM %d guest CID", i), "3", fmt.Sprint(cid), cid == 3)

		// The guest: here the device's other side is played in this
		// process; its agent answers on port 1024.
		g, err := vsocktest.NewGuest(vsocktest.Config{Device: dev, CID: cid})
		if err != nil {
			demo.Fatal(err)
		}
		defer g.Close()
		l, err := g.Listen(1024)
		if err != nil {
			demo.Fatal(err)
		}
		go func() {
			for {
				c, err := l.Accept()
				if err != nil {
					return
				}
				fmt.Fprintf(c, "guest agent of VM %d", i)
				c.Close()
			}
		}()
		// The host reaches the guest with ns.Dialer(): only sockets of
		// the VM's namespace see its CID 3.
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		want := fmt.Sprintf("guest agent of VM %d", i)
		got, err := ask(ctx, ns.Dialer(), cid)
		demo.Check(fmt.Sprintf("host agent dials VM %d at CID %d", i, cid), fmt.Sprintf("%q", want), demo.Result(err, fmt.Sprintf("%q", got)), err == nil && got == want)
	}
	demo.Exit()
}

// ask dials the guest's agent and reads its answer.
func ask(ctx context.Context, d *vsockns.Dialer, cid uint32) (string, error) {
	c, err := d.DialVsock(ctx, cid, 1024)
	if err != nil {
		return "", err
	}
	defer c.Close()
	b, err := io.ReadAll(c)
	return string(b), err
}
