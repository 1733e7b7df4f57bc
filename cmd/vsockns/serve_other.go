//go:build !linux

package main

import (
	"net"
	"os"
)

// listenPrivate listens for unixpacket connections at path, a socket file
// of mode 0600.
func listenPrivate(path string) (*net.UnixListener, error) {
	l, err := net.ListenUnix("unixpacket", &net.UnixAddr{Name: path, Net: "unixpacket"})
	if err != nil {
		return nil, err
	}
	if err := os.Chmod(path, 0o600); err != nil {
		l.Close()
		return nil, err
	}
	return l, nil
}
