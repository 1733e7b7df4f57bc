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
func (*Conn) SetBufferSize(uint64) error            { return errPlatform }
func (*Conn) ReadMsg([]byte) (n, flags int, err error) {
	return 0, 0, errPlatform
}
func (*Conn) WriteMsg([]byte, int) (int, error) { return 0, errPlatform }
func (*Conn) RemoteFlags() (uint8, error)       { return 0, errPlatform }
func (*Conn) BufferSize() (size, minSize, maxSize uint64, err error) {
	return 0, 0, 0, errPlatform
}

// A Listener accepts vsock connections. Outside Linux none can be made.
type Listener struct{}

func (*Listener) Accept() (net.Conn, error)                    { return nil, errPlatform }
func (*Listener) AcceptContext(context.Context) (*Conn, error) { return nil, errPlatform }
func (*Listener) Addr() net.Addr                               { return &vsock.Addr{} }
func (*Listener) Close() error                                 { return errPlatform }
func (*Listener) SetDeadline(time.Time) error                  { return errPlatform }
func (*Listener) SyscallConn() (syscall.RawConn, error)        { return nil, errPlatform }

func dial(_ context.Context, _ *Dialer, t sockType, cid, port uint32) (*Conn, error) {
	return nil, dialError(t, cid, port, errPlatform)
}

func listen(_ context.Context, _ *ListenConfig, t sockType, cid, port uint32) (*Listener, error) {
	return nil, &net.OpError{Op: "listen", Net: t.network(), Addr: &vsock.Addr{ContextID: cid, Port: port}, Err: errPlatform}
}

func readMode(nsRef, string) (Mode, error)             { return 0, errPlatform }
func setChildMode(nsRef, Mode) error                   { return errPlatform }
func g2hFallback(nsRef) (bool, error)                  { return false, errPlatform }
func setG2HFallback(nsRef, bool) error                 { return errPlatform }
func openNamespace(netns.NsHandle) (*Namespace, error) { return nil, errPlatform }
func openNamespacePath(string) (*Namespace, error)     { return nil, errPlatform }
func openNamespacePID(int) (*Namespace, error)         { return nil, errPlatform }
func createNamespace(Mode) (*Namespace, error)         { return nil, errPlatform }

func createUserNamespace(context.Context, Mode) (*Namespace, error) { return nil, errPlatform }

func (*Namespace) serve(context.Context, *net.UnixListener) error { return errPlatform }

func dialNamespace(context.Context, string) (*Namespace, error) { return nil, errPlatform }

// HelperEnv is the environment variable of CreateUserNamespace's helper;
// outside Linux there is none to run.
const HelperEnv = "VSOCKNS_USERNS_HELPER"

func supported() error                                       { return errPlatform }
func newNamespace(Mode) (netns.NsHandle, error)              { return netns.None(), errPlatform }
func newNamedNamespace(string, Mode) (netns.NsHandle, error) { return netns.None(), errPlatform }
func deleteNamedNamespace(string) error                      { return errPlatform }
func namespaceFromPID(int) (netns.NsHandle, error)           { return netns.None(), errPlatform }
func namespaceFromPidfd(int, int) (netns.NsHandle, error)    { return netns.None(), errPlatform }

// A Namespace is an owning reference to a network namespace. Outside Linux
// none can be made.
type Namespace struct {
	id   NamespaceID
	kind string
}

// A Vhost is an open /dev/vhost-vsock. Outside Linux none can be opened.
type Vhost struct{}

func openVhost(nsRef) (*Vhost, error) { return nil, errPlatform }

func fileVhost(*os.File) (*Vhost, error) { return nil, errPlatform }

func fileConn(*os.File, sockType) (*Conn, error)         { return nil, errPlatform }
func fileListener(*os.File, sockType) (*Listener, error) { return nil, errPlatform }

// File returns no file outside Linux.
func (*Conn) File() (*os.File, error) { return nil, errPlatform }

// File returns no file outside Linux.
func (*Listener) File() (*os.File, error) { return nil, errPlatform }

// Close releases nothing outside Linux; a Namespace cannot be made there.
func (*Namespace) Close() error { return errPlatform }

// Handle returns no handle outside Linux.
func (*Namespace) Handle() (netns.NsHandle, error) { return netns.None(), errPlatform }

func (*Vhost) File() *os.File           { return nil }
func (*Vhost) Fd() uintptr              { return ^uintptr(0) }
func (*Vhost) Close() error             { return errPlatform }
func (*Vhost) GuestCID() uint32         { return 0 }
func (*Vhost) SetOwner() error          { return errPlatform }
func (*Vhost) SetGuestCID(uint32) error { return errPlatform }

func (*Vhost) Features() (uint64, error)            { return 0, errPlatform }
func (*Vhost) SetFeatures(uint64) error             { return errPlatform }
func (*Vhost) SetMemTable([]MemoryRegion) error     { return errPlatform }
func (*Vhost) SetVringNum(uint32, uint32) error     { return errPlatform }
func (*Vhost) SetVringBase(uint32, uint32) error    { return errPlatform }
func (*Vhost) SetVringAddr(uint32, VringAddr) error { return errPlatform }
func (*Vhost) SetVringKick(uint32, *os.File) error  { return errPlatform }
func (*Vhost) SetVringCall(uint32, *os.File) error  { return errPlatform }
func (*Vhost) SetRunning(bool) error                { return errPlatform }

// Prepare makes no sockets outside Linux.
func (*Namespace) Prepare(int, int) error                  { return errPlatform }
func listSockets(context.Context, nsRef) ([]Socket, error) { return nil, errPlatform }
func nodeSockets(context.Context) (*NodeListing, error)    { return nil, errPlatform }
func socketOwners() (map[uint64][]Process, error)          { return nil, errPlatform }
