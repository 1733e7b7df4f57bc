//go:build linux

package vsocktest_test

import (
	"fmt"
	"io"
	"log"

	"github.com/vishvananda/netns"

	"github.com/vsockns/vsockns"
	"github.com/vsockns/vsockns/vsocktest"
)

// guestStatus is the host agent code under test: it asks the agent inside
// the VM with CID cid, reached from namespace ns, for its status.
func guestStatus(ns netns.NsHandle, cid uint32) (string, error) {
	c, err := vsockns.Dial(ns, cid, 9000)
	if err != nil {
		return "", err
	}
	defer c.Close()
	b, err := io.ReadAll(c)
	return string(b), err
}

// Test a host agent against a fake guest: the guest's CID lives in the
// namespace the Guest was created in, exactly as a VM's would.
func Example() {
	g, err := vsocktest.NewGuest(vsocktest.Config{Namespace: netns.None(), CID: 42})
	if err != nil {
		log.Fatal(err)
	}
	defer g.Close()

	l, err := g.Listen(9000) // the guest agent's port
	if err != nil {
		log.Fatal(err)
	}
	go func() {
		c, err := l.Accept()
		if err != nil {
			return
		}
		fmt.Fprint(c, "guest agent ready")
		c.Close()
	}()

	status, err := guestStatus(netns.None(), 42)
	fmt.Println(status, err)
	// Output: guest agent ready <nil>
}
