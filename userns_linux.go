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

// The helper's descriptors: its end of the socket pair, and while it
// waits for its uid and gid maps the pipe on which the parent says they
// are written (its first and second extra files).
const (
	helperFD   = 3
	helperGoFD = 4
)

// The helper's stages, one process image each (the helper executes itself
// again between them; the value of HelperEnv names the stage):
//
//   - stageMap: started by startHelper with CLONE_NEWUSER|CLONE_NEWNET and
//     no maps; it waits until the parent has written them. (Not
//     SysProcAttr's UidMappings: Go's fork leaves the pipe it makes for
//     them open when clone fails, as it does with EMFILE.) Capabilities
//     are computed at exec, when the helper was nobody in its namespace;
//     mapped, it is root there once it executes itself again.
//   - stageMake: root of its user namespace, in the first network
//     namespace made with it. When that has the mode asked for, the helper
//     serves it. Else (local) it writes that namespace's child_ns_mode,
//     makes a child namespace on one thread and executes itself from that
//     thread: the process that results has all its threads in the child.
//   - stageServe: the process lives in the namespace it serves.
//
// Serving, every thread of the helper is in the namespace: no request
// switches a thread.
type helperStage string

const (
	stageMap   helperStage = "map"
	stageMake  helperStage = "make"
	stageServe helperStage = "serve"
)

// helperMain is the helper process: it makes the namespace the parent
// asked for and serves it until the parent closes its end (or dies).
func helperMain(spec string) int {
	os.Unsetenv(HelperEnv)
	m, stage, err := parseHelperSpec(spec)
	if err != nil {
		fmt.Fprintf(os.Stderr, "vsockns helper: %s=%q: %v\n", HelperEnv, spec, err)
		return 2
	}
	keep := helperFD
	if stage == stageMap {
		keep = helperGoFD
	}
	if err := closeInherited(keep); err != nil {
		fmt.Fprintf(os.Stderr, "vsockns helper: %v\n", err)
		return 2
	}
	if stage == stageMap {
		if err := awaitMaps(); err != nil {
			fmt.Fprintf(os.Stderr, "vsockns helper: %v\n", err)
			return 2
		}
	}
	if err := ownUserNamespace(); err != nil {
		fmt.Fprintf(os.Stderr, "vsockns helper: %v\n", err)
		return 2
	}
	if stage != stageMap {
		// A change of credentials at exec (the capabilities gained after
		// the maps) and an exec from another thread than the one the
		// parent-death signal was set on both clear it.
		if err := armParentDeath(); err != nil {
			fmt.Fprintf(os.Stderr, "vsockns helper: %v\n", err)
			return 2
		}
	}
	switch stage {
	case stageMap:
		return refuse(fmt.Errorf("executing the helper again: %w", execHelper(m, stageMake)))
	case stageMake:
		own, err := readSysctl("ns_mode")
		switch {
		case err != nil:
			return refuse(err)
		case own == m.String():
		case m == ModeLocal:
			return refuse(execInChild(m))
		default:
			return refuse(fmt.Errorf("%w: the calling process's namespace gives its children %s mode (%w)", ErrModeNotPermitted, own, unix.EPERM))
		}
	case stageServe:
		if own, err := readSysctl("ns_mode"); err != nil {
			return refuse(err)
		} else if own != m.String() {
			return refuse(fmt.Errorf("the kernel made a %s namespace after child_ns_mode %s was written", own, m))
		}
	}
	conn, err := helperConn()
	if err != nil {
		fmt.Fprintf(os.Stderr, "vsockns helper: %v\n", err)
		return 2
	}
	defer conn.Close()
	nsfd, err := nsthread.Current()
	if err != nil {
		sendMsg(conn, reply{Version: protocolVersion, Err: encodeError(err)})
		return 1
	}
	// Every thread of the process is in the namespace: calls run where
	// they are.
	b := inside{func(_ context.Context, fn func() error) error { return fn() }, "the helper's network namespace"}
	if err := serve(conn, b, nsfd); err != nil {
		fmt.Fprintf(os.Stderr, "vsockns helper: %v\n", err)
		return 1
	}
	return 0
}

// helperConn is the helper's end of the socket pair.
func helperConn() (*net.UnixConn, error) {
	f := os.NewFile(helperFD, "vsockns-helper")
	c, err := net.FileConn(f)
	f.Close()
	if err != nil {
		return nil, fmt.Errorf("descriptor %d: %w", helperFD, err)
	}
	conn, ok := c.(*net.UnixConn)
	if !ok {
		c.Close()
		return nil, fmt.Errorf("descriptor %d is not a unix socket", helperFD)
	}
	return conn, nil
}

// refuse sends err as the hello's refusal, for CreateUserNamespace to
// return, and is the helper's exit status.
func refuse(err error) int {
	conn, cerr := helperConn()
	if cerr != nil {
		fmt.Fprintf(os.Stderr, "vsockns helper: %v (%v)\n", err, cerr)
		return 2
	}
	defer conn.Close()
	sendMsg(conn, reply{Version: protocolVersion, Err: encodeError(err)})
	return 1
}

// awaitMaps waits until the parent says the helper's uid and gid maps are
// written: one byte on helperGoFD. The end of the pipe without it means
// the parent gave up (or died).
func awaitMaps() error {
	defer unix.Close(helperGoFD)
	var b [1]byte
	for {
		n, err := unix.Read(helperGoFD, b[:])
		switch {
		case err == unix.EINTR:
			continue
		case err != nil:
			return fmt.Errorf("waiting for the uid and gid maps: %w", os.NewSyscallError("read", err))
		case n == 0:
			return errors.New("waiting for the uid and gid maps: the parent closed the pipe without writing them")
		}
		return nil
	}
}

// armParentDeath has the helper killed when its parent dies, and ends it
// at once if the parent has already died: the parent is the process that
// made the socket pair (SO_PEERCRED of helperFD).
func armParentDeath() error {
	if err := unix.Prctl(unix.PR_SET_PDEATHSIG, uintptr(unix.SIGKILL), 0, 0, 0); err != nil {
		return os.NewSyscallError("prctl", err)
	}
	cred, err := unix.GetsockoptUcred(helperFD, unix.SOL_SOCKET, unix.SO_PEERCRED)
	if err != nil {
		return fmt.Errorf("descriptor %d: %w", helperFD, os.NewSyscallError("getsockopt", err))
	}
	if ppid := os.Getppid(); ppid != int(cred.Pid) {
		return fmt.Errorf("the parent (pid %d) has exited", cred.Pid)
	}
	return nil
}

// execHelper executes the helper's binary again, for stage; it returns
// only on error. helperFD is passed on (it has no close-on-exec flag).
func execHelper(m Mode, stage helperStage) error {
	return syscall.Exec("/proc/self/exe", []string{"vsockns-helper"}, []string{HelperEnv + "=" + helperSpec(m, stage)})
}

// execInChild writes the helper's first namespace's child_ns_mode (its
// own, never written), makes a child namespace of mode m on a thread and
// executes the helper's next stage from that thread. It returns only on
// error.
func execInChild(m Mode) error {
	return nsthread.Run(context.Background(), nsthread.Long, nsthread.Caller(), func() error {
		if err := writeSysctl("child_ns_mode", m.String()); err != nil {
			return fmt.Errorf("write %schild_ns_mode: %w", sysctlDir, err)
		}
		if err := unshareNet(); err != nil {
			return err
		}
		return fmt.Errorf("executing the helper in its namespace: %w", execHelper(m, stageServe))
	})
}

// closeInherited closes the descriptors the helper inherited without
// being given them: past keep, a descriptor open across exec had no
// close-on-exec flag (one of the parent's that lacked it, which exec
// passes on), while the runtime's own, opened since, all have it.
func closeInherited(keep int) error {
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return err
	}
	for _, e := range ents {
		fd, err := strconv.Atoi(e.Name())
		if err != nil || fd <= keep {
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

// helperSpec is the value of HelperEnv that asks for a namespace of mode m
// at stage.
func helperSpec(m Mode, stage helperStage) string {
	return fmt.Sprintf("%d %s %s", protocolVersion, m, stage)
}

// parseHelperSpec reads a value of HelperEnv: exactly what helperSpec
// writes, for a valid mode and stage.
func parseHelperSpec(spec string) (Mode, helperStage, error) {
	version, rest, _ := strings.Cut(spec, " ")
	if version != strconv.Itoa(protocolVersion) {
		return 0, "", fmt.Errorf("not a request of protocol version %d", protocolVersion)
	}
	mode, stage, _ := strings.Cut(rest, " ")
	m, err := ParseMode(mode)
	if err != nil {
		return 0, "", err
	}
	switch st := helperStage(stage); st {
	case stageMap, stageMake, stageServe:
		return m, st, nil
	}
	return 0, "", fmt.Errorf("no helper stage %q", stage)
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
	mapped, goAhead, err := os.Pipe()
	if err != nil {
		conn.Close()
		return nil, nil, err
	}
	defer mapped.Close()
	defer goAhead.Close()
	cmd := &exec.Cmd{
		// The running binary itself, whatever its name: the link keeps
		// working if the file was replaced or removed since.
		Path:       "/proc/self/exe",
		Args:       []string{"vsockns-helper"},
		Env:        []string{HelperEnv + "=" + helperSpec(m, stageMap)},
		ExtraFiles: []*os.File{theirs, mapped},
		Stderr:     os.Stderr,
		SysProcAttr: &syscall.SysProcAttr{
			// The maps are written below, not by SysProcAttr (see
			// stageMap).
			Cloneflags: unix.CLONE_NEWUSER | unix.CLONE_NEWNET,
			Pdeathsig:  syscall.SIGKILL,
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
	if err := writeMaps(cmd.Process.Pid, os.Geteuid(), os.Getegid()); err != nil {
		conn.Close()
		h.stop()
		return nil, nil, usernsError(err)
	}
	if _, err := goAhead.Write([]byte{1}); err != nil {
		conn.Close()
		h.stop()
		return nil, nil, err
	}
	return conn, h, nil
}

// writeMaps makes the caller's user and group root of the helper's user
// namespace, and maps nobody else; setgroups is denied first, as an
// unprivileged mapping of a group requires.
func writeMaps(pid, uid, gid int) error {
	dir := "/proc/" + strconv.Itoa(pid) + "/"
	for _, w := range []struct{ file, text string }{
		{"uid_map", fmt.Sprintf("0 %d 1\n", uid)},
		{"setgroups", "deny"},
		{"gid_map", fmt.Sprintf("0 %d 1\n", gid)},
	} {
		if err := os.WriteFile(dir+w.file, []byte(w.text), 0); err != nil {
			return err
		}
	}
	return nil
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
