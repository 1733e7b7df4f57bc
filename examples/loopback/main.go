// Command loopback is the seed article's Example 1 without nc: a listener
// in a new network namespace, dialed over vsock loopback (CID 1) from the
// init namespace. In a global namespace that works; in a local one the
// connect is reset, and only a dialer inside the namespace gets through.
//
// Run it as root on Linux >= 7.0 with vsock_loopback loaded (or `make demo`).
package main

import (
	"io"

	"github.com/mdlayher/vsock"
	"github.com/vishvananda/netns"

	"github.com/vsockns/vsockns"
	"github.com/vsockns/vsockns/examples/internal/demo"
)

const port = 1234

func main() {
	demo.Title("Example 1: vsock loopback across network namespaces")
	for _, m := range []vsockns.Mode{vsockns.ModeGlobal, vsockns.ModeLocal} {
		ns, err := vsockns.NewNamespace(m)
		if err != nil {
			demo.Fatal(err)
		}
		l, err := vsockns.Listen(ns, port)
		if err != nil {
			demo.Fatal(err)
		}
		go serve(l)
		demo.Step("listening on port %d in a new %s namespace (nc --vsock -l %d)", port, m, port)

		c, err := vsockns.Dial(netns.None(), vsock.Local, port)
		expectOK := m == vsockns.ModeGlobal
		observed := demo.Outcome(err)
		if err == nil {
			observed += ", read " + quote(read(c))
		}
		expected := "connected"
		if !expectOK {
			expected = "connection reset by peer"
		}
		demo.Check(m.String()+": init -> new namespace", expected, observed, (err == nil) == expectOK)

		if !expectOK {
			c, err := vsockns.Dial(ns, vsock.Local, port)
			observed := demo.Outcome(err)
			if err == nil {
				observed += ", read " + quote(read(c))
			}
			demo.Check("local: inside -> same namespace", "connected", observed, err == nil)
		}
		l.Close()
		ns.Close()
	}
	demo.Exit()
}

func serve(l *vsockns.Listener) {
	for {
		c, err := l.Accept()
		if err != nil {
			return
		}
		io.WriteString(c, "hello")
		c.Close()
	}
}

func read(c *vsockns.Conn) string {
	defer c.Close()
	b, _ := io.ReadAll(c)
	return string(b)
}

func quote(s string) string { return `"` + s + `"` }
