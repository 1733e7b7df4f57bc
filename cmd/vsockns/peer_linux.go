//go:build linux

package main

import (
	"golang.org/x/sys/unix"

	"github.com/vsockns/vsockns"
)

// peerReceives reports whether the peer of conn still takes data: a
// zero-length send fails with EPIPE once the peer has shut its receiving
// side (it closed the connection), and succeeds after a mere half-close.
func peerReceives(conn *vsockns.Conn) bool {
	rc, err := conn.SyscallConn()
	if err != nil {
		return false
	}
	ok := false
	if err := rc.Control(func(fd uintptr) {
		ok = unix.Sendto(int(fd), nil, unix.MSG_NOSIGNAL|unix.MSG_DONTWAIT, nil) == nil
	}); err != nil {
		return false
	}
	return ok
}

// truncated reports whether ReadMsg's flags say the message was cut.
func truncated(flags int) bool { return flags&unix.MSG_TRUNC != 0 }
