// Command vmm is the start of a VMM written in Go: it creates a local-mode
// network namespace for a VM, opens /dev/vhost-vsock inside it, claims
// guest CID 3 in that namespace's own CID pool, and prints the QEMU
// command line that would run the guest with that device (the descriptor is
// passed as fd 3 through exec.Cmd.ExtraFiles). A second VM in a second
// local namespace gets CID 3 too.
//
// Run it as root on Linux >= 7.0 with vhost_vsock loaded (or `make demo`).
package main

import (
	"fmt"

	"github.com/vsockns/vsockns"
	"github.com/vsockns/vsockns/examples/internal/demo"
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
		defer dev.Close()
		demo.Step("VM %d: /dev/vhost-vsock opened in its own local namespace, guest CID %d", i, cid)
		demo.Step("  qemu-system-x86_64 ... -device vhost-vsock-pci,vhostfd=3,guest-cid=%d   (ExtraFiles: [%s])", cid, dev.File().Name())
		demo.Step("  the host reaches the guest with ns.Dialer() (namespace %s)", ns.ID())
		demo.Check(fmt.Sprintf("VM %d guest CID", i), "3", fmt.Sprint(cid), cid == 3)
	}
	demo.Exit()
}
