//go:build linux

package vsockns_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"strings"
	"syscall"

	"github.com/mdlayher/vsock"
	"github.com/vishvananda/netns"

	"github.com/vsockns/vsockns"
)

// Dial a listener from inside a local-mode namespace. In a local namespace
// only sockets of the same namespace can connect; vsock.Local (CID 1) is
// the loopback transport.
func ExampleDial() {
	ns, err := vsockns.NewNamespace(vsockns.ModeLocal)
	if err != nil {
		log.Fatal(err)
	}
	defer ns.Close()

	l, err := vsockns.Listen(ns, 1024)
	if err != nil {
		log.Fatal(err)
	}
	defer l.Close()
	go func() {
		c, err := l.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		fmt.Fprintln(c, "hello from inside the namespace")
	}()

	c, err := vsockns.Dial(ns, vsock.Local, 1024)
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	msg, _ := io.ReadAll(c)
	fmt.Print(string(msg))

	// From the init namespace the same address is out of reach.
	_, err = vsockns.Dial(netns.None(), vsock.Local, 1024)
	fmt.Println(err != nil)
	// Output:
	// hello from inside the namespace
	// true
}

// A Dialer plugs into http.Transport: here an HTTP client in the init
// namespace's process talks to a server listening inside a local
// namespace, by dialing from that namespace.
func ExampleDialer_httpTransport() {
	ns, err := vsockns.NewNamespace(vsockns.ModeLocal)
	if err != nil {
		log.Fatal(err)
	}
	defer ns.Close()

	lc := vsockns.ListenConfig{Namespace: ns}
	l, err := lc.Listen(context.Background(), "vsock", ":8080")
	if err != nil {
		log.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "served over vsock to %s", r.RemoteAddr[:strings.IndexByte(r.RemoteAddr, ':')])
	})}
	go srv.Serve(l)
	defer srv.Close()

	d := &vsockns.Dialer{Namespace: ns}
	client := &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return d.DialContext(ctx, "vsock", "local:8080")
		},
	}}
	resp, err := client.Get("http://guest/")
	if err != nil {
		log.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	fmt.Println(string(body))
	// Output: served over vsock to local(1)
}

// Listen in a namespace for any CID; port 0 picks a free port.
func ExampleListen() {
	ns, err := vsockns.NewNamespace(vsockns.ModeLocal)
	if err != nil {
		log.Fatal(err)
	}
	defer ns.Close()

	l, err := vsockns.Listen(ns, 0)
	if err != nil {
		log.Fatal(err)
	}
	defer l.Close()
	addr := l.Addr().(*vsock.Addr)
	fmt.Println(addr.ContextID == 0xffffffff, addr.Port != 0)
	// Output: true true
}

// Check what a namespace's vsock can reach.
func ExampleNamespaceMode() {
	m, err := vsockns.NamespaceMode(netns.None())
	if err != nil {
		log.Fatal(err) // wraps vsockns.ErrNotSupported before Linux 7.0
	}
	fmt.Println("this namespace is", m)
	// Output: this namespace is global
}

// Create a namespace whose vsock is private, without touching any
// namespace's child_ns_mode.
func ExampleNewNamespace() {
	ns, err := vsockns.NewNamespace(vsockns.ModeLocal)
	if err != nil {
		log.Fatal(err)
	}
	defer ns.Close()

	m, _ := vsockns.NamespaceMode(ns)
	child, _ := vsockns.ChildMode(ns)
	fmt.Println(m, child)
	// Output: local local
}

// A node agent keeps one owning reference per VM namespace, keyed by the
// namespace's identity. The handle it was opened from can go: the
// reference has a descriptor of its own.
func ExampleOpenNamespace() {
	h, err := vsockns.NewNamespace(vsockns.ModeLocal) // a pod's namespace, say
	if err != nil {
		log.Fatal(err)
	}
	ns, err := vsockns.OpenNamespace(h)
	h.Close()
	if err != nil {
		log.Fatal(err)
	}
	defer ns.Close()
	agents := map[vsockns.NamespaceID]*vsockns.Namespace{ns.ID(): ns}

	l, err := ns.ListenConfig().Listen(context.Background(), "vsock", ":0")
	if err != nil {
		log.Fatal(err)
	}
	defer l.Close()
	go func() {
		if c, err := l.Accept(); err == nil {
			c.Write([]byte("hello from inside"))
			c.Close()
		}
	}()
	port := l.Addr().(*vsock.Addr).Port
	c, err := agents[ns.ID()].Dialer().DialContext(context.Background(), "vsock", fmt.Sprintf("local:%d", port))
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	b, _ := io.ReadAll(c)
	m, _ := ns.Mode()
	fmt.Printf("%s (a %s namespace)\n", b, m)

	ns.Close()
	_, err = ns.Mode()
	fmt.Println(errors.Is(err, vsockns.ErrNamespaceClosed))
	// Output:
	// hello from inside (a local namespace)
	// true
}

// SOCK_SEQPACKET keeps message boundaries: two writes are two reads, and a
// reader whose buffer is too small learns it from ReadMsg's MSG_TRUNC. Over
// vsock_loopback it works between global namespaces (here the init
// namespace), not inside a local one.
func ExampleDialSeqpacket() {
	l, err := vsockns.ListenSeqpacket(netns.None(), 1025)
	if err != nil {
		log.Fatal(err)
	}
	defer l.Close()
	go func() {
		c, err := l.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		c.Write([]byte("first message"))
		c.Write([]byte("second, longer message"))
	}()

	c, err := vsockns.DialSeqpacket(netns.None(), vsock.Local, 1025)
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	buf := make([]byte, 16)
	for range 2 {
		n, flags, err := c.ReadMsg(buf)
		if err != nil {
			log.Fatal(err)
		}
		fmt.Printf("%q truncated=%t\n", buf[:n], flags&syscall.MSG_TRUNC != 0)
	}
	// Output:
	// "first message" truncated=false
	// "second, longer m" truncated=true
}

// An agent that dials one namespace often keeps sockets made ahead there:
// its dials then skip the switch into the namespace, and the store refills
// in batches, one switch each, off the dialer's path.
func ExampleNamespace_Prepare() {
	ns, err := vsockns.CreateNamespace(vsockns.ModeLocal)
	if err != nil {
		log.Fatal(err)
	}
	defer ns.Close()
	if err := ns.Prepare(16, 0); err != nil { // up to 16 stream sockets, no SOCK_SEQPACKET ones
		log.Fatal(err)
	}

	l, err := ns.ListenConfig().Listen(context.Background(), "vsock", ":0")
	if err != nil {
		log.Fatal(err)
	}
	defer l.Close()
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			c.Write([]byte("ok"))
			c.Close()
		}
	}()
	d := ns.Dialer()
	addr := fmt.Sprintf("local:%d", l.Addr().(*vsock.Addr).Port)
	for range 3 {
		c, err := d.DialContext(context.Background(), "vsock", addr)
		if err != nil {
			log.Fatal(err)
		}
		b, _ := io.ReadAll(c)
		c.Close()
		fmt.Println(string(b))
	}
	// Output:
	// ok
	// ok
	// ok
}
