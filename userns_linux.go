//go:build linux

package vsockns

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/vsockns/vsockns/internal/nsthread"
)

// HelperEnv is the environment variable that makes a program built with
// this package serve as the helper of [CreateUserNamespace]: the package's
// initialisation (before main, and before the init functions of the
// packages that import it) sees it, serves on the descriptor it was given
// and exits. A program never sets it itself.
const HelperEnv = "VSOCKNS_USERNS_HELPER"

func init() {
	if spec, ok := os.LookupEnv(HelperEnv); ok {
		os.Exit(helperMain(spec))
	}
}

// helperFD is the descriptor the helper's end of the socket pair has in
// the helper (its first extra file).
const helperFD = 3

// helperMain is the helper process: it makes the namespace the parent
// asked for and serves it until the parent closes its end (or dies).
func helperMain(spec string) int {
	os.Unsetenv(HelperEnv)
	if err := closeInherited(); err != nil {
		fmt.Fprintf(os.Stderr, "vsockns helper: %v\n", err)
		return 2
	}
	if err := ownUserNamespace(); err != nil {
		fmt.Fprintf(os.Stderr, "vsockns helper: %v\n", err)
		return 2
	}
	f := os.NewFile(helperFD, "vsockns-helper")
	c, err := net.FileConn(f)
	f.Close()
	if err != nil {
		fmt.Fprintf(os.Stderr, "vsockns helper: descriptor %d: %v\n", helperFD, err)
		return 2
	}
	conn, ok := c.(*net.UnixConn)
	if !ok {
		fmt.Fprintf(os.Stderr, "vsockns helper: descriptor %d is not a unix socket\n", helperFD)
		return 2
	}
	defer conn.Close()
	m, err := parseHelperSpec(spec)
	if err != nil {
		fmt.Fprintf(os.Stderr, "vsockns helper: %s=%q: %v\n", HelperEnv, spec, err)
		return 2
	}
	nsfd, err := helperNamespace(m)
	if err != nil {
		sendMsg(conn, reply{Version: protocolVersion, Err: encodeError(err)})
		return 1
	}
	target := nsthread.FD(nsfd)
	b := inside{func(ctx context.Context, fn func() error) error {
		return nsthread.Run(ctx, nsthread.Short, target, fn)
	}, "the helper's network namespace"}
	if err := serve(conn, b, nsfd); err != nil {
		fmt.Fprintf(os.Stderr, "vsockns helper: %v\n", err)
		return 1
	}
	return 0
}

// closeInherited closes the descriptors the helper inherited without
// being given them: past helperFD, a descriptor open across exec had no
// close-on-exec flag (one of the parent's that lacked it, which exec
// passes on), while the runtime's own, opened since, all have it.
func closeInherited() error {
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return err
	}
	for _, e := range ents {
		fd, err := strconv.Atoi(e.Name())
		if err != nil || fd <= helperFD {
			continue
		}
		if flags, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0); err == nil && flags&unix.FD_CLOEXEC == 0 {
			unix.Close(fd)
		}
	}
	return nil
}

// ownUserNamespace checks that the helper runs as startHelper starts it:
// in a user namespace of its own, where it is root and nobody else is
// mapped. Started any other way (the variable set in some process's
// environment, a socket at descriptor 3), it would act in the namespaces
// of whoever ran it: write child_ns_mode of their namespace and serve it.
func ownUserNamespace() error {
	b, err := os.ReadFile("/proc/self/uid_map")
	if err != nil {
		return err
	}
	if f := strings.Fields(string(b)); len(f) != 3 || f[0] != "0" || f[2] != "1" {
		return fmt.Errorf("%w: not in a user namespace of its own (uid_map %q): only CreateUserNamespace starts the helper", unix.EPERM, strings.TrimSpace(string(b)))
	}
	return nil
}

// helperSpec is the value of HelperEnv that asks for a namespace of mode m.
func helperSpec(m Mode) string { return fmt.Sprintf("%d %s", protocolVersion, m) }

// parseHelperSpec reads a value of HelperEnv: exactly what helperSpec
// writes, for a valid mode.
func parseHelperSpec(spec string) (Mode, error) {
	version, mode, _ := strings.Cut(spec, " ")
	if version != strconv.Itoa(protocolVersion) {
		return 0, fmt.Errorf("not a request of protocol version %d", protocolVersion)
	}
	m, err := ParseMode(mode)
	if err != nil {
		return 0, err
	}
	return m, nil
}

// helperNamespace makes the helper's namespace of mode: its own first
// namespace (made with it, in its user namespace) when that has the mode,
// else a child of it. It returns a descriptor of the namespace.
func helperNamespace(m Mode) (int, error) {
	fd := -1
	err := nsthread.Run(context.Background(), nsthread.Long, nsthread.Caller(), func() error {
		own, err := readSysctl("ns_mode")
		if err != nil {
			return err
		}
		switch {
		case own == m.String():
		case m == ModeLocal:
			// The helper's first namespace is its own and was never
			// written: its children may be made local.
			if err := writeSysctl("child_ns_mode", m.String()); err != nil {
				return fmt.Errorf("write %schild_ns_mode: %w", sysctlDir, err)
			}
			if err := unshareNet(); err != nil {
				return err
			}
			if got, err := readSysctl("ns_mode"); err != nil {
				return err
			} else if got != m.String() {
				return fmt.Errorf("the kernel made a %s namespace after child_ns_mode %s was written", got, m)
			}
		default:
			return fmt.Errorf("%w: the calling process's namespace gives its children %s mode (%w)", ErrModeNotPermitted, own, unix.EPERM)
		}
		fd, err = nsthread.Current()
		return err
	})
	if err != nil && fd >= 0 {
		unix.Close(fd)
		fd = -1
	}
	return fd, err
}

// helper is the parent's handle on a running helper process.
type helper struct {
	cmd     *exec.Cmd
	exited  chan struct{} // closed once the helper has been waited for
	waitErr error
}

// startHelper starts the helper for a namespace of mode m and returns the
// parent's end of its socket pair.
func startHelper(m Mode) (*net.UnixConn, *helper, error) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, nil, os.NewSyscallError("socketpair", err)
	}
	mine := os.NewFile(uintptr(fds[0]), "vsockns-helper-client")
	theirs := os.NewFile(uintptr(fds[1]), "vsockns-helper")
	defer theirs.Close()
	c, err := net.FileConn(mine)
	mine.Close()
	if err != nil {
		return nil, nil, err
	}
	conn := c.(*net.UnixConn)
	uid, gid := os.Geteuid(), os.Getegid()
	cmd := &exec.Cmd{
		// The running binary itself, whatever its name: the link keeps
		// working if the file was replaced or removed since.
		Path:       "/proc/self/exe",
		Args:       []string{"vsockns-helper"},
		Env:        []string{HelperEnv + "=" + helperSpec(m)},
		ExtraFiles: []*os.File{theirs},
		Stderr:     os.Stderr,
		SysProcAttr: &syscall.SysProcAttr{
			Cloneflags: unix.CLONE_NEWUSER | unix.CLONE_NEWNET,
			// Root of the new user namespace is the caller's own user
			// and group, and nobody else is mapped; setgroups is denied,
			// as an unprivileged mapping of a group requires.
			UidMappings:                []syscall.SysProcIDMap{{ContainerID: 0, HostID: uid, Size: 1}},
			GidMappings:                []syscall.SysProcIDMap{{ContainerID: 0, HostID: gid, Size: 1}},
			GidMappingsEnableSetgroups: false,
			Pdeathsig:                  syscall.SIGKILL,
		},
	}
	h := &helper{cmd: cmd, exited: make(chan struct{})}
	started := make(chan error, 1)
	go func() {
		// The parent-death signal follows the thread that started the
		// child, not the process: this goroutine keeps its thread for the
		// helper's whole life (and the thread ends with it).
		runtime.LockOSThread()
		if err := cmd.Start(); err != nil {
			started <- err
			return
		}
		started <- nil
		h.waitErr = cmd.Wait()
		close(h.exited)
	}()
	if err := <-started; err != nil {
		conn.Close()
		return nil, nil, usernsError(err)
	}
	return conn, h, nil
}

// stop kills the helper, if it has not ended yet, and waits for it.
func (h *helper) stop() {
	select {
	case <-h.exited:
		return
	default:
	}
	h.cmd.Process.Kill()
	<-h.exited
}

func createUserNamespace(ctx context.Context, m Mode) (*Namespace, error) {
	what := fmt.Sprintf("new %s namespace in a user namespace", m)
	if ctx == nil {
		return nil, fmt.Errorf("vsockns: %s: nil context", what)
	}
	if err := supported(); err != nil {
		return nil, fmt.Errorf("vsockns: %s: %w", what, err)
	}
	conn, h, err := startHelper(m)
	if err != nil {
		return nil, fmt.Errorf("vsockns: %s: %w", what, err)
	}
	r, nsfd, err := newRemote(ctx, conn)
	if err != nil {
		h.stop()
		return nil, fmt.Errorf("vsockns: %s: helper: %w", what, usernsError(err))
	}
	n, err := adoptNamespace(nsfd, what)
	if err != nil {
		r.close()
		h.stop()
		return nil, err
	}
	n.remote, n.stopRemote, n.helperPid = r, h.stop, h.cmd.Process.Pid
	n.kind = fmt.Sprintf(" (of a user namespace; helper pid %d)", h.cmd.Process.Pid)
	return n, nil
}

// usernsError names what keeps user namespaces from this process, for the
// errors that making one (or using its capabilities) gives.
func usernsError(err error) error {
	var errno unix.Errno
	if !errors.As(err, &errno) {
		return err
	}
	switch errno {
	case unix.EPERM, unix.EACCES, unix.ENOSPC, unix.EUSERS:
	default:
		return err
	}
	if why := usernsKnob(errno); why != "" {
		return &explained{err, why, ErrUserNamespacesDisabled}
	}
	return err
}

// The sysctls that can keep a process from user namespaces.
var (
	unprivilegedUsernsClone = "/proc/sys/kernel/unprivileged_userns_clone"             // Debian's
	maxUserNamespaces       = "/proc/sys/user/max_user_namespaces"                     // everyone's
	maxNetNamespaces        = "/proc/sys/user/max_net_namespaces"                      // everyone's
	apparmorRestrictUserns  = "/proc/sys/kernel/apparmor_restrict_unprivileged_userns" // Ubuntu's
)

// usernsKnob says which knob, by the value it has now, explains errno.
func usernsKnob(errno unix.Errno) string {
	read := func(path string) string {
		b, err := os.ReadFile(path)
		if err != nil {
			return ""
		}
		return strings.TrimSpace(string(b))
	}
	knob := func(path string) string {
		return strings.ReplaceAll(strings.TrimPrefix(path, "/proc/sys/"), "/", ".")
	}
	if os.Geteuid() != 0 && read(unprivilegedUsernsClone) == "0" {
		return fmt.Sprintf("unprivileged user namespaces are disabled: %s=0", knob(unprivilegedUsernsClone))
	}
	for _, p := range []string{maxUserNamespaces, maxNetNamespaces} {
		if v := read(p); v == "0" {
			return fmt.Sprintf("user namespaces are disabled: %s=0", knob(p))
		} else if v != "" && errno == unix.ENOSPC {
			return fmt.Sprintf("the limit of namespaces is reached: %s=%s", knob(p), v)
		}
	}
	if os.Geteuid() != 0 && read(apparmorRestrictUserns) == "1" {
		return fmt.Sprintf("AppArmor restricts unprivileged user namespaces: %s=1 (an AppArmor profile for this program with the userns rule allows them)", knob(apparmorRestrictUserns))
	}
	return ""
}

// remoteNamespace is the backend of a Namespace served by a helper (or
// another server): each call is a request, made while the Namespace is
// held open.
type remoteNamespace struct{ n *Namespace }

func (b remoteNamespace) hold() (*remote, func(), error) {
	b.n.mu.RLock()
	if !b.n.open {
		b.n.mu.RUnlock()
		return nil, nil, ErrNamespaceClosed
	}
	return b.n.remote, b.n.mu.RUnlock, nil
}

func (b remoteNamespace) socket(ctx context.Context, typ int) (int, error) {
	r, release, err := b.hold()
	if err != nil {
		return -1, err
	}
	defer release()
	return r.socket(ctx, typ)
}

func (b remoteNamespace) sockets(ctx context.Context, typ, k int) ([]int, error) {
	r, release, err := b.hold()
	if err != nil {
		return nil, err
	}
	defer release()
	return r.sockets(ctx, typ, k)
}

func (b remoteNamespace) openVhost(ctx context.Context) (int, error) {
	r, release, err := b.hold()
	if err != nil {
		return -1, err
	}
	defer release()
	return r.openVhost(ctx)
}

func (b remoteNamespace) readSysctl(ctx context.Context, name string) (string, error) {
	r, release, err := b.hold()
	if err != nil {
		return "", err
	}
	defer release()
	return r.readSysctl(ctx, name)
}

func (b remoteNamespace) writeSysctl(ctx context.Context, name, value string) error {
	r, release, err := b.hold()
	if err != nil {
		return err
	}
	defer release()
	return r.writeSysctl(ctx, name, value)
}

func (b remoteNamespace) diagSocket(ctx context.Context) (int, error) {
	r, release, err := b.hold()
	if err != nil {
		return -1, err
	}
	defer release()
	return r.diagSocket(ctx)
}

func (b remoteNamespace) String() string { return b.n.String() }
