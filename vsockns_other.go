//go:build !linux

package vsockns

import (
	"context"
	"fmt"
	"net"
	"os"
	"runtime"
	"syscall"
	"time"

	"github.com/mdlayher/vsock"
	"github.com/vishvananda/netns"
)

// errPlatform is what every operation returns outside Linux.
var errPlatform = fmt.Errorf("%w: vsock network namespaces exist only on Linux, not %s", ErrNotSupported, runtime.GOOS)

// A Conn is a vsock stream connection. Outside Linux none can be made.
type Conn struct{}

func (*Conn) Read([]byte) (int, error)              { return 0, errPlatform }
func (*Conn) Write([]byte) (int, error)             { return 0, errPlatform }
func (*Conn) Close() error                          { return errPlatform }
func (*Conn) CloseRead() error                      { return errPlatform }
func (*Conn) CloseWrite() error                     { return errPlatform }
func (*Conn) LocalAddr() net.Addr                   { return &vsock.Addr{} }
func (*Conn) RemoteAddr() net.Addr                  { return &vsock.Addr{} }
func (*Conn) SetDeadline(time.Time) error           { return errPlatform }
func (*Conn) SetReadDeadline(time.Time) error       { return errPlatform }
func (*Conn) SetWriteDeadline(time.Time) error      { return errPlatform }
func (*Conn) SyscallConn() (syscall.RawConn, error) { return nil, errPlatform }

// A Listener accepts vsock connections. Outside Linux none can be made.
type Listener struct{}

func (*Listener) Accept() (net.Conn, error)                    { return nil, errPlatform }
func (*Listener) AcceptContext(context.Context) (*Conn, error) { return nil, errPlatform }
func (*Listener) Addr() net.Addr                               { return &vsock.Addr{} }
func (*Listener) Close() error                                 { return errPlatform }
func (*Listener) SetDeadline(time.Time) error                  { return errPlatform }
func (*Listener) SyscallConn() (syscall.RawConn, error)        { return nil, errPlatform }

func dial(_ context.Context, _ netns.NsHandle, cid, port uint32) (*Conn, error) {
	return nil, dialError(cid, port, errPlatform)
}

func listen(_ context.Context, _ *ListenConfig, cid, port uint32) (*Listener, error) {
	return nil, &net.OpError{Op: "listen", Net: Network, Addr: &vsock.Addr{ContextID: cid, Port: port}, Err: errPlatform}
}

func readMode(netns.NsHandle, string) (Mode, error)          { return 0, errPlatform }
func setChildMode(netns.NsHandle, Mode) error                { return errPlatform }
func g2hFallback(netns.NsHandle) (bool, error)               { return false, errPlatform }
func setG2HFallback(netns.NsHandle, bool) error              { return errPlatform }
func supported() error                                       { return errPlatform }
func newNamespace(Mode) (netns.NsHandle, error)              { return netns.None(), errPlatform }
func newNamedNamespace(string, Mode) (netns.NsHandle, error) { return netns.None(), errPlatform }
func deleteNamedNamespace(string) error                      { return errPlatform }
func namespaceFromPID(int) (netns.NsHandle, error)           { return netns.None(), errPlatform }
func namespaceFromPidfd(int, int) (netns.NsHandle, error)    { return netns.None(), errPlatform }

// A Vhost is an open /dev/vhost-vsock. Outside Linux none can be opened.
type Vhost struct{}

func openVhost(netns.NsHandle) (*Vhost, error) { return nil, errPlatform }

func (*Vhost) File() *os.File           { return nil }
func (*Vhost) Fd() uintptr              { return ^uintptr(0) }
func (*Vhost) Close() error             { return errPlatform }
func (*Vhost) GuestCID() uint32         { return 0 }
func (*Vhost) SetOwner() error          { return errPlatform }
func (*Vhost) SetGuestCID(uint32) error { return errPlatform }
