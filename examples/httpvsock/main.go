// Command httpvsock serves HTTP over vsock inside a local-mode namespace
// and calls it with a standard http.Client whose transport dials through
// vsockns.Dialer: from inside the namespace it works, from outside the
// namespace's isolation stops it.
//
// Run it as root on Linux >= 7.0 with vsock_loopback loaded (or `make demo`).
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"time"

	"github.com/vishvananda/netns"

	"github.com/vsockns/vsockns"
	"github.com/vsockns/vsockns/examples/internal/demo"
)

func main() {
	demo.Title("HTTP over vsock in a local namespace")
	ns, err := vsockns.NewNamespace(vsockns.ModeLocal)
	if err != nil {
		demo.Fatal(err)
	}
	defer ns.Close()

	lc := vsockns.ListenConfig{Namespace: ns}
	l, err := lc.Listen(context.Background(), "vsock", ":8080")
	if err != nil {
		demo.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		json.NewEncoder(w).Encode(map[string]string{"status": "ok", "peer": r.RemoteAddr})
	})}
	go srv.Serve(l)
	defer srv.Close()
	demo.Step("HTTP server on vsock %s inside a local namespace", l.Addr())

	get := func(from netns.NsHandle) (string, error) {
		d := &vsockns.Dialer{Namespace: from, Timeout: 5 * time.Second}
		client := &http.Client{Transport: &http.Transport{
			DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
				return d.DialContext(ctx, "vsock", "local:8080")
			},
		}}
		resp, err := client.Get("http://agent/healthz")
		if err != nil {
			return "", err
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		return fmt.Sprintf("%s %s", resp.Status, bytes.TrimSpace(b)), err
	}

	body, err := get(ns)
	observed := demo.Outcome(err)
	if err == nil {
		observed = body
	}
	demo.Check("GET from inside the namespace", "200 OK", observed, err == nil)

	_, err = get(netns.None())
	demo.Check("GET from the init namespace", "connection reset by peer", demo.Outcome(err), err != nil)
	demo.Exit()
}
