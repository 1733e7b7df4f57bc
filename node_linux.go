//go:build linux

package vsockns

import (
	"bufio"
	"cmp"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"

	"golang.org/x/sys/unix"

	"github.com/vsockns/vsockns/internal/nsthread"
)

const procDir = "/proc"

// nodeNamespace is a namespace found on the node, with a descriptor of it.
type nodeNamespace struct {
	info *NamespaceInfo
	fd   int
}

// nodeScan is what a walk of /proc and the mount table found.
type nodeScan struct {
	byIno  map[uint64]*nodeNamespace // nsfs has one device: its inode names a namespace
	owners map[uint64][]int          // socket inode -> PIDs holding it
	unread []int                     // processes whose descriptors could not be read
	// unopened are the processes whose namespace could not be opened.
	unopened []int
}

func (s *nodeScan) close() {
	for _, ns := range s.byIno {
		unix.Close(ns.fd)
	}
}

// add records the namespace fd refers to (taking fd over) and returns it.
func (s *nodeScan) add(fd int) (*nodeNamespace, error) {
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		unix.Close(fd)
		return nil, os.NewSyscallError("fstat", err)
	}
	if ns, ok := s.byIno[st.Ino]; ok {
		unix.Close(fd)
		return ns, nil
	}
	if t, err := unix.IoctlRetInt(fd, unix.NS_GET_NSTYPE); err != nil || t != unix.CLONE_NEWNET {
		unix.Close(fd)
		return nil, nil // another kind of namespace
	}
	ns := &nodeNamespace{info: &NamespaceInfo{ID: NamespaceID{Dev: st.Dev, Ino: st.Ino}}, fd: fd}
	s.byIno[st.Ino] = ns
	return ns, nil
}

// openNS opens a namespace file (a /proc link or a bind mount).
func openNS(path string) (int, error) {
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, &os.PathError{Op: "open", Path: path, Err: err}
	}
	return fd, nil
}

// scanNode finds the node's network namespaces and who holds which socket:
// every process's namespace and descriptors, then the nsfs mounts.
func scanNode() (*nodeScan, error) {
	s := &nodeScan{byIno: map[uint64]*nodeNamespace{}, owners: map[uint64][]int{}}
	d, err := os.ReadDir(procDir)
	if err != nil {
		return nil, err
	}
	for _, e := range d {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid <= 0 {
			continue
		}
		s.scanProcess(pid)
	}
	if err := s.scanMounts(); err != nil {
		s.close()
		return nil, err
	}
	return s, nil
}

// gone reports an error that means the process exited meanwhile.
func gone(err error) bool { return errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ESRCH) }

func (s *nodeScan) scanProcess(pid int) {
	dir := fmt.Sprintf("%s/%d", procDir, pid)
	fd, err := openNS(dir + "/ns/net")
	switch {
	case gone(err):
		return
	case err != nil:
		s.unopened = append(s.unopened, pid)
	default:
		if ns, err := s.add(fd); err == nil && ns != nil {
			ns.info.PIDs = append(ns.info.PIDs, pid)
		}
	}
	s.scanFDs(pid, true)
}

// scanFDs records the sockets pid holds and, with namespaces, the network
// namespaces it holds descriptors of.
func (s *nodeScan) scanFDs(pid int, namespaces bool) {
	path := fmt.Sprintf("%s/%d/fd", procDir, pid)
	dfd, err := unix.Open(path, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		if !gone(err) {
			s.unread = append(s.unread, pid)
		}
		return
	}
	dir := os.NewFile(uintptr(dfd), path)
	defer dir.Close()
	names, err := dir.Readdirnames(-1)
	if err != nil {
		if !gone(err) {
			s.unread = append(s.unread, pid)
		}
		return
	}
	// Each link read relative to the directory: no walk of the path
	// for each of what may be thousands of descriptors.
	buf := make([]byte, 64)
	for _, name := range names {
		n, err := unix.Readlinkat(dfd, name, buf)
		if err != nil {
			continue // closed meanwhile
		}
		link := buf[:n]
		if ino, ok := linkInode(link, "socket:["); ok {
			if o := s.owners[ino]; len(o) == 0 || o[len(o)-1] != pid {
				s.owners[ino] = append(o, pid)
			}
		} else if ino, ok := linkInode(link, "net:["); ok && namespaces {
			ns := s.byIno[ino]
			if ns == nil {
				fd, err := unix.Openat(dfd, name, unix.O_RDONLY|unix.O_CLOEXEC, 0)
				if err != nil {
					continue
				}
				if ns, _ = s.add(fd); ns == nil {
					continue
				}
			}
			ns.info.Held = true
		}
	}
}

// linkInode parses a /proc/PID/fd link such as "socket:[123]".
func linkInode(link []byte, prefix string) (uint64, bool) {
	if len(link) <= len(prefix)+1 || string(link[:len(prefix)]) != prefix || link[len(link)-1] != ']' {
		return 0, false
	}
	var ino uint64
	for _, c := range link[len(prefix) : len(link)-1] {
		if c < '0' || c > '9' {
			return 0, false
		}
		ino = ino*10 + uint64(c-'0')
	}
	return ino, true
}

// netnsDirs are where ip-netns(8) keeps named namespaces.
var netnsDirs = []string{"/run/netns", "/var/run/netns"}

// scanMounts adds the network namespaces bind-mounted in this mount
// namespace: the nsfs entries of /proc/self/mountinfo.
func (s *nodeScan) scanMounts() error {
	f, err := os.Open(procDir + "/self/mountinfo")
	if err != nil {
		return err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		path, ok := nsfsMount(sc.Text())
		if !ok {
			continue
		}
		fd, err := openNS(path)
		if err != nil {
			continue // unmounted meanwhile, or not ours to open
		}
		ns, err := s.add(fd)
		if err != nil || ns == nil {
			continue
		}
		if dir := filepath.Dir(path); slices.Contains(netnsDirs, dir) {
			if name := filepath.Base(path); !slices.Contains(ns.info.Names, name) {
				ns.info.Names = append(ns.info.Names, name)
			}
		} else if !slices.Contains(ns.info.Paths, path) {
			ns.info.Paths = append(ns.info.Paths, path)
		}
	}
	return sc.Err()
}

// nsfsMount returns the mount point of a mountinfo line (proc(5)) whose
// file system is nsfs.
func nsfsMount(line string) (string, bool) {
	f := strings.Fields(line)
	sep := slices.Index(f, "-")
	if sep < 5 || sep+1 >= len(f) || f[sep+1] != "nsfs" {
		return "", false
	}
	return unescapeMount(f[4]), true
}

// unescapeMount undoes mountinfo's octal escapes (\040 for a space).
func unescapeMount(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+4 <= len(s) {
			if v, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(v))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// threadNamespaceIno is the inode of the calling (locked) thread's
// namespace.
func threadNamespaceIno() (uint64, error) {
	var st unix.Stat_t
	if err := unix.Stat("/proc/thread-self/ns/net", &st); err != nil {
		return 0, os.NewSyscallError("stat", err)
	}
	return st.Ino, nil
}

// inNamespace runs fn in ns: on the calling thread when that is already in
// ns (entering one's own namespace would still need CAP_SYS_ADMIN), else
// through nsthread.
func inNamespace(ctx context.Context, ns *nodeNamespace, fn func() error) error {
	runtime.LockOSThread()
	ino, err := threadNamespaceIno()
	if err == nil && ino == ns.info.ID.Ino {
		defer runtime.UnlockOSThread()
		return fn()
	}
	runtime.UnlockOSThread()
	return nsthread.Run(ctx, nsthread.Short, nsthread.FD(ns.fd), fn)
}

// listNamespace reads ns's mode and lists its sockets: the netlink socket
// and the sysctl in the namespace, the dump here.
func listNamespace(ctx context.Context, ns *nodeNamespace) ([]Socket, error) {
	fd := -1
	var mode string
	var modeErr error
	// Without vsock namespaces there is no mode to read (and the failed
	// open's explanation costs a probe socket each time).
	modes := supported() == nil
	err := inNamespace(ctx, ns, func() (err error) {
		if fd, err = diagSocket(); err != nil {
			return err
		}
		if modes {
			mode, modeErr = readSysctl("ns_mode")
		}
		return nil
	})
	if err != nil {
		if fd >= 0 {
			unix.Close(fd)
		}
		return nil, diagError(err)
	}
	switch m, err := ParseMode(mode); {
	case !modes, errors.Is(modeErr, ErrNotSupported):
		// A kernel without vsock namespaces: no mode to report.
	case modeErr != nil:
		unix.Close(fd)
		return nil, fmt.Errorf("read ns_mode: %w", modeErr)
	case err != nil:
		unix.Close(fd)
		return nil, fmt.Errorf("read ns_mode: %w", err)
	default:
		ns.info.Mode = m
	}
	return dumpSockets(ctx, fd)
}

// listWorkers bounds the namespaces listed at once: each holds a thread
// only for its socket(2), and a dump is a few system calls.
var listWorkers = max(4, 2*runtime.GOMAXPROCS(0))

func nodeSockets(ctx context.Context) (*NodeListing, error) {
	scan, err := scanNode()
	if err != nil {
		return nil, fmt.Errorf("vsockns: list the node's namespaces: %w", err)
	}
	defer scan.close()
	spaces := make([]*nodeNamespace, 0, len(scan.byIno))
	for _, ns := range scan.byIno {
		slices.Sort(ns.info.PIDs)
		slices.Sort(ns.info.Names)
		slices.Sort(ns.info.Paths)
		spaces = append(spaces, ns)
	}
	slices.SortFunc(spaces, func(a, b *nodeNamespace) int { return cmp.Compare(a.info.ID.Ino, b.info.ID.Ino) })

	socks := make([][]Socket, len(spaces))
	errs := make([]error, len(spaces))
	var wg sync.WaitGroup
	next := make(chan int)
	for range min(listWorkers, len(spaces)) {
		wg.Go(func() {
			for i := range next {
				socks[i], errs[i] = listNamespace(ctx, spaces[i])
			}
		})
	}
	for i := range spaces {
		next <- i
	}
	close(next)
	wg.Wait()
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("vsockns: list the node's sockets: %w", err)
	}

	l := &NodeListing{Namespaces: []*NamespaceInfo{}, Sockets: []NodeSocket{}}
	inc := &IncompleteError{UnreadPIDs: scan.unread, Unopened: scan.unopened}
	comms := map[int]string{}
	for i, ns := range spaces {
		if err := errs[i]; err != nil {
			if errors.Is(err, ErrDiagUnavailable) {
				return nil, fmt.Errorf("vsockns: list sockets in %s: %w", ns.info.Name(), err)
			}
			inc.Namespaces = append(inc.Namespaces, &NamespaceError{Namespace: ns.info, Err: err})
			continue
		}
		l.Namespaces = append(l.Namespaces, ns.info)
		for _, s := range socks[i] {
			ns := NodeSocket{Socket: s, Namespace: ns.info}
			ns.Owners = processes(scan.owners[s.Inode], comms)
			l.Sockets = append(l.Sockets, ns)
		}
	}
	if len(inc.Namespaces) > 0 || len(inc.UnreadPIDs) > 0 || len(inc.Unopened) > 0 {
		return l, inc
	}
	return l, nil
}

// processes describes pids (sorting them), with their commands cached in
// comms.
func processes(pids []int, comms map[int]string) []Process {
	slices.Sort(pids)
	var ps []Process
	for _, pid := range pids {
		c, ok := comms[pid]
		if !ok {
			c = command(pid)
			comms[pid] = c
		}
		ps = append(ps, Process{PID: pid, Command: c})
	}
	return ps
}

func socketOwners() (map[uint64][]Process, error) {
	s := &nodeScan{byIno: map[uint64]*nodeNamespace{}, owners: map[uint64][]int{}}
	d, err := os.ReadDir(procDir)
	if err != nil {
		return nil, fmt.Errorf("vsockns: socket owners: %w", err)
	}
	for _, e := range d {
		if pid, err := strconv.Atoi(e.Name()); err == nil && pid > 0 {
			s.scanFDs(pid, false)
		}
	}
	comms := map[int]string{}
	owners := make(map[uint64][]Process, len(s.owners))
	for ino, pids := range s.owners {
		owners[ino] = processes(pids, comms)
	}
	if len(s.unread) > 0 {
		return owners, &IncompleteError{UnreadPIDs: s.unread}
	}
	return owners, nil
}

// command is a process's /proc/PID/comm ("" if it exited).
func command(pid int) string {
	b, err := os.ReadFile(fmt.Sprintf("%s/%d/comm", procDir, pid))
	if err != nil {
		return ""
	}
	return strings.TrimSuffix(string(b), "\n")
}
