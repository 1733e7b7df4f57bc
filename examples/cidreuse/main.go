// Command cidreuse is the seed article's Example 4 without QEMU: two VMMs
// in two local namespaces both give their guest CID 42; in two global
// namespaces the second claim fails, as all CIDs did before Linux 7.0.
// The claim is VHOST_VSOCK_SET_GUEST_CID on /dev/vhost-vsock opened inside
// each namespace, exactly what QEMU's guest-cid=42 does.
//
// Run it as root on Linux >= 7.0 with vhost_vsock loaded (or `make demo`).
package main

import (
	"errors"
	"fmt"

	"github.com/vsockns/vsockns"
	"github.com/vsockns/vsockns/examples/internal/demo"
)

const cid = 42

func main() {
	demo.Title("Example 4: the same guest CID in two namespaces")
	for _, m := range []vsockns.Mode{vsockns.ModeLocal, vsockns.ModeGlobal} {
		var devices []*vsockns.Vhost
		var second error
		for i := range 2 {
			ns, err := vsockns.NewNamespace(m)
			if err != nil {
				demo.Fatal(err)
			}
			v, err := vsockns.OpenVhost(ns)
			ns.Close() // the device keeps its namespace
			if err != nil {
				demo.Fatal(err)
			}
			devices = append(devices, v)
			err = v.SetGuestCID(cid)
			demo.Step("VM %d in %s namespace %d: guest-cid=%d -> %s", i+1, m, i+1, cid, demo.Result(err, "claimed"))
			if i == 1 {
				second = err
			}
		}
		expected := "both claim it"
		ok := second == nil
		observed := "both claimed it"
		if m == vsockns.ModeGlobal {
			expected = "second fails: address already in use"
			ok = errors.Is(second, vsockns.ErrCIDInUse)
		}
		if second != nil {
			observed = fmt.Sprintf("second fails: %s", demo.Outcome(second))
		}
		demo.Check(fmt.Sprintf("%s: two VMs with CID %d", m, cid), expected, observed, ok)
		for _, v := range devices {
			v.Close()
		}
	}
	demo.Exit()
}
