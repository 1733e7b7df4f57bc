package vsockns

import (
	"net"
	"syscall"
)

// Compile-time checks: the concrete types implement the interfaces package
// net and its users expect.
var (
	_ net.Conn     = (*Conn)(nil)
	_ syscall.Conn = (*Conn)(nil)
	_ net.Listener = (*Listener)(nil)
	_ syscall.Conn = (*Listener)(nil)
	_ interface {
		CloseRead() error
		CloseWrite() error
	} = (*Conn)(nil)
)
