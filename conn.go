package vsockns

import (
	"net"
	"syscall"
)

// sockType is a vsock socket type: a byte stream (SOCK_STREAM, network
// "vsock") or a connection that keeps message boundaries (SOCK_SEQPACKET,
// network "vsockpacket").
type sockType int

const (
	typeStream sockType = iota
	typeSeqpacket
)

// network is the type's network name.
func (t sockType) network() string {
	if t == typeSeqpacket {
		return NetworkSeqpacket
	}
	return Network
}

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
