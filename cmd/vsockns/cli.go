package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"

	"github.com/mdlayher/vsock"
	"github.com/vishvananda/netns"

	"github.com/vsockns/vsockns"
)

const usage = `usage: vsockns <command> [flags] [args]

commands:
  mode                       show a namespace's ns_mode, child_ns_mode and g2h_fallback
  child-mode set MODE        write a namespace's child_ns_mode (once per namespace!)
  add NAME --mode MODE       create a named namespace (ip netns compatible) of that mode
  del NAME                   delete a named namespace
  ls                         list named namespaces (--all: every process's) with modes
  dial CID PORT              connect from a namespace; pipe stdin/stdout
  listen PORT                listen in a namespace; pipe the connection to stdin/stdout
  vm [--cid C] [--serve PATH] -- COMMAND [ARGS]
                             run a VMM with /dev/vhost-vsock opened in a new local namespace
                             of your own (no privileges needed) and a guest CID claimed there:
                             the device is descriptor 3, {vhostfd} and {cid} in ARGS are
                             replaced (qemu: -device vhost-vsock-pci,vhostfd={vhostfd},guest-cid={cid});
                             --serve PATH lets dial/listen/mode --socket PATH act in it meanwhile

namespace flags (every command that acts in one):
  --netns NAME|PATH          a named namespace (/run/netns/NAME) or a namespace file
  --pid PID                  the network namespace of process PID
  --socket PATH              (dial, listen, mode) the namespace a vsockns vm --serve PATH serves
`

// interrupted means the command was ended by SIGINT or SIGTERM.
type interrupted struct{ sig syscall.Signal }

func (e *interrupted) Error() string { return "interrupted by " + e.sig.String() }

// exit codes
const (
	exitOK    = 0
	exitFail  = 1
	exitUsage = 2
)

type cli struct {
	stdin          io.Reader
	stdout, stderr io.Writer
}

// usageError is a mistake in the command line.
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

func usagef(format string, a ...any) error { return &usageError{fmt.Sprintf(format, a...)} }

func run(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	c := &cli{stdin: stdin, stdout: stdout, stderr: stderr}
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return exitUsage
	}
	if args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		fmt.Fprint(stdout, usage)
		return exitOK
	}
	cmds := map[string]func([]string) error{
		"mode":       c.mode,
		"child-mode": c.childMode,
		"add":        c.add,
		"del":        c.del,
		"ls":         c.ls,
		"dial":       c.dial,
		"listen":     c.listen,
		"vm":         c.vm,
	}
	fn, ok := cmds[args[0]]
	if !ok {
		fmt.Fprintf(stderr, "vsockns: unknown command %q\n\n%s", args[0], usage)
		return exitUsage
	}
	err := fn(args[1:])
	var (
		ue     *usageError
		sig    *interrupted
		status *exitStatus
	)
	switch {
	case err == nil:
		return exitOK
	case errors.As(err, &status):
		return status.code
	case errors.Is(err, flag.ErrHelp):
		return exitOK
	case errors.As(err, &sig):
		// As shells report a command ended by a signal: 128 + its number.
		return 128 + int(sig.sig)
	case errors.As(err, &ue):
		fmt.Fprintf(stderr, "vsockns %s: %v\n", args[0], err)
		return exitUsage
	default:
		// The library's messages start with its name; say it once.
		fmt.Fprintf(stderr, "vsockns %s: %s\n", args[0], strings.TrimPrefix(err.Error(), "vsockns: "))
		return exitFail
	}
}

// flagSet makes a FlagSet for a subcommand, with the namespace flags when
// nsFlags is set.
func (c *cli) flagSet(name string, target *nsTarget) *flag.FlagSet {
	fs := flag.NewFlagSet("vsockns "+name, flag.ContinueOnError)
	fs.SetOutput(c.stderr)
	if target != nil {
		fs.StringVar(&target.netns, "netns", "", "named namespace (/run/netns/NAME) or namespace file `NAME|PATH`")
		fs.IntVar(&target.pid, "pid", 0, "use the network namespace of process `PID`")
		if name == "dial" || name == "listen" || name == "mode" {
			fs.StringVar(&target.socket, "socket", "", "the namespace served at unix socket `PATH` (vsockns vm --serve)")
		}
	}
	return fs
}

// parse parses flags and positional arguments in any order and checks the
// number of positional arguments.
func parse(fs *flag.FlagSet, args []string, want int, names string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return nil, err
			}
			return nil, usagef("%v", err)
		}
		args = fs.Args()
		if len(args) == 0 {
			break
		}
		pos = append(pos, args[0])
		args = args[1:]
	}
	if len(pos) != want {
		return nil, usagef("want %s, got %d argument(s)", names, len(pos))
	}
	return pos, nil
}

// nsTarget is the namespace a command acts in.
type nsTarget struct {
	netns  string
	pid    int
	socket string
}

// served connects to the namespace --socket names; nil without --socket.
func (t *nsTarget) served(ctx context.Context) (*vsockns.Namespace, error) {
	if t.socket == "" {
		return nil, nil
	}
	if t.netns != "" || t.pid != 0 {
		return nil, usagef("--socket excludes --netns and --pid")
	}
	return vsockns.DialNamespace(ctx, t.socket)
}

// open returns a handle (netns.None() for the current namespace), a name
// for messages, and a function to release the handle.
func (t *nsTarget) open() (netns.NsHandle, string, func(), error) {
	none := func() {}
	switch {
	case t.netns != "" && t.pid != 0:
		return netns.None(), "", none, usagef("--netns and --pid exclude each other")
	case t.netns != "":
		var ns netns.NsHandle
		var err error
		if strings.Contains(t.netns, "/") {
			ns, err = netns.GetFromPath(t.netns)
		} else {
			ns, err = netns.GetFromName(t.netns)
		}
		if err != nil {
			return netns.None(), "", none, fmt.Errorf("namespace %q: %w", t.netns, err)
		}
		return ns, fmt.Sprintf("namespace '%s'", t.netns), func() { ns.Close() }, nil
	case t.pid != 0:
		ns, err := vsockns.NamespaceFromPID(t.pid)
		if err != nil {
			return netns.None(), "", none, err
		}
		return ns, fmt.Sprintf("the namespace of pid %d", t.pid), func() { ns.Close() }, nil
	}
	return netns.None(), "the current namespace", none, nil
}

type modeReport struct {
	Namespace   string        `json:"namespace"`
	Mode        *vsockns.Mode `json:"ns_mode,omitempty"`
	ChildMode   *vsockns.Mode `json:"child_ns_mode,omitempty"`
	G2HFallback *bool         `json:"g2h_fallback,omitempty"`
	Error       string        `json:"error,omitempty"`
	PIDs        []int         `json:"pids,omitempty"`
}

// modeSource is a namespace whose modes can be read: a *vsockns.Namespace,
// or a handle (handleModes).
type modeSource interface {
	Mode() (vsockns.Mode, error)
	ChildMode() (vsockns.Mode, error)
	G2HFallback() (bool, error)
}

type handleModes struct{ h netns.NsHandle }

func (m handleModes) Mode() (vsockns.Mode, error)      { return vsockns.NamespaceMode(m.h) }
func (m handleModes) ChildMode() (vsockns.Mode, error) { return vsockns.ChildMode(m.h) }
func (m handleModes) G2HFallback() (bool, error)       { return vsockns.G2HFallback(m.h) }

func report(src modeSource, name string) modeReport {
	r := modeReport{Namespace: name}
	m, err := src.Mode()
	if err != nil {
		r.Error = err.Error()
		return r
	}
	r.Mode = &m
	if cm, err := src.ChildMode(); err == nil {
		r.ChildMode = &cm
	}
	if on, err := src.G2HFallback(); err == nil {
		r.G2HFallback = &on
	}
	return r
}

func (c *cli) mode(args []string) error {
	var t nsTarget
	fs := c.flagSet("mode", &t)
	asJSON := fs.Bool("json", false, "print JSON")
	if _, err := parse(fs, args, 0, "no arguments"); err != nil {
		return err
	}
	var r modeReport
	if served, err := t.served(context.Background()); err != nil {
		return err
	} else if served != nil {
		defer served.Close()
		r = report(served, served.String())
	} else {
		ns, name, done, err := t.open()
		if err != nil {
			return err
		}
		defer done()
		r = report(handleModes{ns}, name)
	}
	if *asJSON {
		if err := json.NewEncoder(c.stdout).Encode(r); err != nil {
			return err
		}
	}
	if r.Error != "" {
		// With --json the error is in the JSON too; the status says it.
		return errors.New(r.Error)
	}
	if *asJSON {
		return nil
	}
	fmt.Fprintf(c.stdout, "ns_mode:        %s\n", r.Mode)
	if r.ChildMode != nil {
		fmt.Fprintf(c.stdout, "child_ns_mode:  %s\n", r.ChildMode)
	}
	if r.G2HFallback != nil {
		fmt.Fprintf(c.stdout, "g2h_fallback:   %t\n", *r.G2HFallback)
	}
	return nil
}

func (c *cli) childMode(args []string) error {
	var t nsTarget
	fs := c.flagSet("child-mode set", &t)
	initOK := fs.Bool("init", false, "confirm writing the init namespace's child_ns_mode, which changes every namespace created on this host until reboot")
	if len(args) == 0 || args[0] != "set" {
		return usagef("want `child-mode set local|global`")
	}
	pos, err := parse(fs, args[1:], 1, "MODE (local or global)")
	if err != nil {
		return err
	}
	m, err := vsockns.ParseMode(pos[0])
	if err != nil {
		return usagef("%v", err)
	}
	ns, name, done, err := t.open()
	if err != nil {
		return err
	}
	defer done()
	if isInit(ns) && !*initOK {
		return usagef("%s is the init namespace: child_ns_mode can be written once, and every namespace created on this host until reboot takes it. Add --init if that is what you want, or use `vsockns add NAME --mode %s` for one namespace", name, m)
	}
	if err := vsockns.SetChildMode(ns, m); err != nil {
		if errors.Is(err, vsockns.ErrChildModeLocked) {
			cur, _ := vsockns.ChildMode(ns)
			return fmt.Errorf("%s: child_ns_mode is already %s and can be written only once: %w", name, cur, err)
		}
		return err
	}
	fmt.Fprintf(c.stderr, "vsockns: namespaces created from %s are now %s (this cannot be changed again)\n", name, m)
	return nil
}

func (c *cli) add(args []string) error {
	fs := c.flagSet("add", nil)
	var m vsockns.Mode
	fs.TextVar(&m, "mode", vsockns.ModeLocal, "vsock mode of the new namespace: `local|global`")
	pos, err := parse(fs, args, 1, "NAME")
	if err != nil {
		return err
	}
	ns, err := vsockns.NewNamedNamespace(pos[0], m)
	if err != nil {
		return err
	}
	ns.Close()
	fmt.Fprintf(c.stdout, "%s (%s)\n", pos[0], m)
	return nil
}

func (c *cli) del(args []string) error {
	fs := c.flagSet("del", nil)
	pos, err := parse(fs, args, 1, "NAME")
	if err != nil {
		return err
	}
	return vsockns.DeleteNamedNamespace(pos[0])
}

func (c *cli) ls(args []string) error {
	fs := c.flagSet("ls", nil)
	all := fs.Bool("all", false, "also list the namespaces of all processes")
	asJSON := fs.Bool("json", false, "print JSON")
	if _, err := parse(fs, args, 0, "no arguments"); err != nil {
		return err
	}
	var rows []modeReport
	names, _ := filepath.Glob("/run/netns/*")
	sort.Strings(names)
	for _, p := range names {
		ns, err := netns.GetFromPath(p)
		if err != nil {
			rows = append(rows, modeReport{Namespace: filepath.Base(p), Error: err.Error()})
			continue
		}
		rows = append(rows, report(handleModes{ns}, filepath.Base(p)))
		ns.Close()
	}
	if *all {
		rows = append(rows, processNamespaces()...)
	}
	if *asJSON {
		if rows == nil {
			rows = []modeReport{}
		}
		return json.NewEncoder(c.stdout).Encode(rows)
	}
	fmt.Fprintf(c.stdout, "%-24s %-8s %-8s %s\n", "NAMESPACE", "MODE", "CHILD", "PIDS")
	for _, r := range rows {
		mode, child := "-", "-"
		if r.Mode != nil {
			mode = r.Mode.String()
		}
		if r.ChildMode != nil {
			child = r.ChildMode.String()
		}
		pids := ""
		if len(r.PIDs) > 0 {
			pids = strings.Trim(fmt.Sprint(r.PIDs), "[]")
		}
		if r.Error != "" {
			pids = r.Error
		}
		fmt.Fprintf(c.stdout, "%-24s %-8s %-8s %s\n", r.Namespace, mode, child, pids)
	}
	return nil
}

// processNamespaces groups all processes by network namespace.
func processNamespaces() []modeReport {
	procs, _ := filepath.Glob("/proc/[0-9]*/ns/net")
	byID := map[string][]int{}
	var order []string
	for _, p := range procs {
		id, err := os.Readlink(p)
		if err != nil {
			continue
		}
		pid, _ := strconv.Atoi(strings.Split(p, "/")[2])
		if _, ok := byID[id]; !ok {
			order = append(order, id)
		}
		byID[id] = append(byID[id], pid)
	}
	var rows []modeReport
	for _, id := range order {
		pids := byID[id]
		sort.Ints(pids)
		ns, err := vsockns.NamespaceFromPID(pids[0])
		var r modeReport
		if err != nil {
			r = modeReport{Namespace: id, Error: err.Error()}
		} else {
			r = report(handleModes{ns}, id)
			ns.Close()
		}
		r.PIDs = pids
		rows = append(rows, r)
	}
	return rows
}

// dialAddr is dial's CID and PORT arguments as an address.
func dialAddr(cid, port string) (*vsock.Addr, error) {
	addr, err := vsockns.ParseAddr(cid + ":" + port)
	if err != nil {
		return nil, usagef("%v", err)
	}
	return addr, nil
}

// listenPort is listen's PORT argument.
func listenPort(s string) (uint32, error) {
	port, err := strconv.ParseUint(s, 10, 32)
	if err != nil {
		return 0, usagef("PORT must be a number from 0 to 4294967295")
	}
	return uint32(port), nil
}

func (c *cli) dial(args []string) error {
	var t nsTarget
	fs := c.flagSet("dial", &t)
	timeout := fs.Duration("timeout", 0, "give up connecting after `D` (default: the kernel's connect timeout, 2s)")
	var sf socketFlags
	sf.add(fs)
	pos, err := parse(fs, args, 2, "CID PORT")
	if err != nil {
		return err
	}
	addr, err := dialAddr(pos[0], pos[1])
	if err != nil {
		return err
	}
	ctx, stop := interruptContext()
	defer stop()
	d := vsockns.Dialer{Timeout: *timeout, BufferSize: uint64(sf.bufferSize)}
	var (
		src  modeSource
		name string
	)
	if served, err := t.served(ctx); err != nil {
		return err
	} else if served != nil {
		defer served.Close()
		d.NetNS, src, name = served, served, served.String()
	} else {
		ns, n, done, err := t.open()
		if err != nil {
			return err
		}
		defer done()
		d.Namespace, src, name = ns, handleModes{ns}, n
	}
	dial := d.DialVsock
	if sf.seqpacket {
		dial = d.DialSeqpacket
	}
	conn, err := dial(ctx, addr.ContextID, addr.Port)
	if err != nil {
		if ierr := interruption(ctx); ierr != nil {
			return ierr
		}
		return explainDial(err, src, name, addr)
	}
	defer conn.Close()
	return pipe(ctx, conn, c.stdin, c.stdout, sf)
}

// explainDial says in an operator's words why a dial failed.
func explainDial(err error, src modeSource, name string, addr *vsock.Addr) error {
	switch {
	case errors.Is(err, syscall.ECONNRESET):
		if m, merr := src.Mode(); merr == nil && m == vsockns.ModeLocal {
			return fmt.Errorf("connection reset: %s is local-mode; it reaches only listeners inside itself, and nothing is listening on %s there (%w)", name, addr, err)
		}
		return fmt.Errorf("connection reset: nothing listening on %s that %s can reach (listeners in local-mode namespaces are reachable only from inside them) (%w)", addr, name, err)
	case errors.Is(err, syscall.ENODEV):
		return fmt.Errorf("no vsock transport reaches %s from %s (no VM with that CID in this namespace's CID pool?) (%w)", addr, name, err)
	case errors.Is(err, syscall.ETIMEDOUT), errors.Is(err, context.DeadlineExceeded):
		return fmt.Errorf("timed out connecting to %s from %s (%w)", addr, name, err)
	}
	return err
}

func (c *cli) listen(args []string) error {
	var t nsTarget
	fs := c.flagSet("listen", &t)
	keep := fs.Bool("keep-open", false, "accept connections one after another instead of exiting after the first")
	var sf socketFlags
	sf.add(fs)
	pos, err := parse(fs, args, 1, "PORT")
	if err != nil {
		return err
	}
	port, err := listenPort(pos[0])
	if err != nil {
		return err
	}
	ctx, stop := interruptContext()
	defer stop()
	lc := vsockns.ListenConfig{BufferSize: uint64(sf.bufferSize)}
	var name string
	if served, err := t.served(ctx); err != nil {
		return err
	} else if served != nil {
		defer served.Close()
		lc.NetNS, name = served, served.String()
	} else {
		ns, n, done, err := t.open()
		if err != nil {
			return err
		}
		defer done()
		lc.Namespace, name = ns, n
	}
	listen := lc.ListenVsock
	if sf.seqpacket {
		listen = lc.ListenSeqpacket
	}
	l, err := listen(ctx, ^uint32(0), port) // VMADDR_CID_ANY
	if err != nil {
		return err
	}
	defer l.Close()
	fmt.Fprintf(c.stderr, "vsockns: listening on %s in %s\n", l.Addr(), name)
	for {
		conn, err := l.AcceptContext(ctx)
		if err != nil {
			if ierr := interruption(ctx); ierr != nil {
				return ierr
			}
			return err
		}
		fmt.Fprintf(c.stderr, "vsockns: connection from %s\n", conn.RemoteAddr())
		in := c.stdin
		if *keep {
			in = nil // several peers cannot share one stdin
		}
		err = pipe(ctx, conn, in, c.stdout, sf)
		conn.Close()
		if err != nil || !*keep {
			return err
		}
	}
}

// interruptContext is done once SIGINT or SIGTERM arrives; interruption
// then says which.
func interruptContext() (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancelCause(context.Background())
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	stopped := make(chan struct{})
	go func() {
		select {
		case s := <-sigs:
			cancel(&interrupted{s.(syscall.Signal)})
		case <-stopped:
		}
	}()
	return ctx, func() {
		signal.Stop(sigs)
		close(stopped)
		cancel(nil)
	}
}

// interruption returns the *interrupted error if ctx ended by a signal.
func interruption(ctx context.Context) error {
	var sig *interrupted
	if errors.As(context.Cause(ctx), &sig) {
		return sig
	}
	return nil
}

// pipe copies in to conn and conn to out, like nc: the end of in
// half-closes the connection (the peer reads EOF). Once the peer has sent
// everything, pipe goes on sending in only while the peer still receives
// (it half-closed); once the peer has closed, pipe ends, even while in (a
// terminal, say) stays open. in may be nil (nothing to send). ctx ending
// (an interrupt) ends pipe at once. With --seqpacket, each line of in is
// one message and each message received is written as a line.
func pipe(ctx context.Context, conn *vsockns.Conn, in io.Reader, out io.Writer, sf socketFlags) error {
	sent := make(chan error, 1)
	go func() {
		var err error
		if in != nil {
			err = sf.send(conn, in)
		}
		if cerr := conn.CloseWrite(); err == nil {
			err = cerr
		}
		sent <- err
	}()
	received := make(chan error, 1)
	go func() { received <- sf.receive(out, conn) }()
	interrupted := func() error {
		conn.Close() // unblocks both copies
		return interruption(ctx)
	}
	var err error
	select {
	case err = <-received:
	case <-ctx.Done():
		return interrupted()
	}
	if !peerReceives(conn) {
		// Nothing more can be sent; report stdin's copy only if it is done.
		select {
		case serr := <-sent:
			if err == nil && !errors.Is(serr, net.ErrClosed) {
				err = serr
			}
		default:
		}
		return err
	}
	select {
	case serr := <-sent:
		if err == nil {
			err = serr
		}
	case <-ctx.Done():
		return interrupted()
	}
	return err
}

// socketFlags are dial's and listen's socket flags.
type socketFlags struct {
	seqpacket  bool
	bufferSize byteSize
}

func (sf *socketFlags) add(fs *flag.FlagSet) {
	fs.BoolVar(&sf.seqpacket, "seqpacket", false, "a SOCK_SEQPACKET connection: each line of stdin is one message, each message received one line")
	fs.Var(&sf.bufferSize, "buffer-size", "the socket's receive buffer, `SIZE` in bytes or with K, M or G (default: the kernel's 256K)")
}

// maxLine bounds a --seqpacket line (a message).
const maxLine = 64 << 20

// send copies in to conn: as a byte stream, or a message per line.
func (sf socketFlags) send(conn *vsockns.Conn, in io.Reader) error {
	if !sf.seqpacket {
		_, err := io.Copy(conn, in)
		return err
	}
	sc := bufio.NewScanner(in)
	sc.Buffer(make([]byte, 64<<10), maxLine)
	for sc.Scan() {
		if _, err := conn.Write(sc.Bytes()); err != nil {
			return err
		}
	}
	return sc.Err()
}

// receive copies conn to out: as a byte stream, or a line per message. A
// message longer than the connection's receive buffer (which no message
// can be) would be marked as cut.
func (sf socketFlags) receive(out io.Writer, conn *vsockns.Conn) error {
	if !sf.seqpacket {
		_, err := io.Copy(out, conn)
		return err
	}
	size, _, _, err := conn.BufferSize()
	if err != nil {
		return err
	}
	buf := make([]byte, size)
	for {
		n, flags, err := conn.ReadMsg(buf)
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
		line := append(buf[:n:n], '\n')
		if truncated(flags) {
			line = append(buf[:n:n], " [message cut]\n"...)
		}
		if _, err := out.Write(line); err != nil {
			return err
		}
	}
}

// byteSize is a flag of a size in bytes: a number, or one with K, M or G
// (KiB, MiB, GiB).
type byteSize uint64

func (b *byteSize) String() string { return strconv.FormatUint(uint64(*b), 10) }

func (b *byteSize) Set(s string) error {
	mult := uint64(1)
	for _, u := range []struct {
		suffix string
		mult   uint64
	}{{"K", 1 << 10}, {"M", 1 << 20}, {"G", 1 << 30}} {
		if t, ok := strings.CutSuffix(s, u.suffix); ok {
			s, mult = t, u.mult
			break
		}
	}
	v, err := strconv.ParseUint(s, 10, 64)
	if err != nil || v == 0 || v > ^uint64(0)/mult {
		return errors.New("want a size in bytes above 0, such as 1048576 or 1M")
	}
	*b = byteSize(v * mult)
	return nil
}
