package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"

	"github.com/vsockns/vsockns"
)

// exitStatus makes the command exit with code (the VMM's own status).
type exitStatus struct{ code int }

func (e *exitStatus) Error() string { return "exit status " + strconv.Itoa(e.code) }

// vhostFD is the descriptor the VMM gets the device as (its first extra
// file).
const vhostFD = 3

// vm runs a VMM with /dev/vhost-vsock opened in a new namespace of a user
// namespace of the caller's own (vsockns.CreateUserNamespace) and a guest
// CID claimed there, for as long as the VMM runs.
func (c *cli) vm(args []string) error {
	fs := c.flagSet("vm", nil)
	cid := fs.Uint("cid", 0, "claim guest CID `C` (default: the first free one from 3)")
	modeName := fs.String("mode", "local", "the namespace's vsock `MODE` (local or global)")
	servePath := fs.String("serve", "", "serve the namespace at unix socket `PATH` while the VMM runs (dial/listen/mode --socket PATH)")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return usagef("%v", err)
	}
	argv := fs.Args()
	if len(argv) == 0 {
		return usagef("want -- COMMAND [ARGS...] (the VMM to run)")
	}
	m, err := vsockns.ParseMode(*modeName)
	if err != nil {
		return usagef("%v", err)
	}
	if *cid > 0 && (*cid < 3 || *cid >= 1<<32-1) {
		return usagef("--cid must be from 3 to 4294967294")
	}

	ctx, stop := interruptContext()
	defer stop()
	ns, err := vsockns.CreateUserNamespace(ctx, m)
	if err != nil {
		return err
	}
	defer ns.Close()
	var v *vsockns.Vhost
	var guest uint32
	if *cid > 0 {
		guest = uint32(*cid)
		if v, err = ns.OpenVhost(); err == nil {
			if err = v.SetGuestCID(guest); err != nil {
				v.Close()
			}
		}
	} else {
		v, guest, err = ns.AllocateGuestCID(3, 1<<32-2)
	}
	if err != nil {
		return err
	}
	defer v.Close()

	if *servePath != "" {
		l, err := listenPrivate(*servePath)
		if err != nil {
			return err
		}
		defer os.Remove(*servePath)
		sctx, cancel := context.WithCancel(context.Background())
		served := make(chan struct{})
		go func() {
			defer close(served)
			ns.Serve(sctx, l)
		}()
		defer func() {
			cancel()
			<-served
		}()
	}

	repl := strings.NewReplacer("{vhostfd}", strconv.Itoa(vhostFD), "{cid}", strconv.FormatUint(uint64(guest), 10))
	for i := 1; i < len(argv); i++ {
		argv[i] = repl.Replace(argv[i])
	}
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = c.stdin, c.stdout, c.stderr
	cmd.ExtraFiles = []*os.File{v.File()}
	cmd.Env = append(os.Environ(),
		fmt.Sprintf("VSOCKNS_VHOSTFD=%d", vhostFD),
		fmt.Sprintf("VSOCKNS_CID=%d", guest))
	if *servePath != "" {
		cmd.Env = append(cmd.Env, "VSOCKNS_SOCKET="+*servePath)
	}
	fmt.Fprintf(c.stderr, "vsockns: %s, guest CID %d claimed; /dev/vhost-vsock is descriptor %d of %s\n", ns, guest, vhostFD, argv[0])
	if err := cmd.Start(); err != nil {
		return err
	}
	waited := make(chan error, 1)
	go func() { waited <- cmd.Wait() }()
	select {
	case err = <-waited:
	case <-ctx.Done():
		// SIGINT or SIGTERM: the VMM gets it too, and is waited for.
		var sig *interrupted
		if errors.As(context.Cause(ctx), &sig) {
			cmd.Process.Signal(sig.sig)
		}
		err = <-waited
	}
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		if code := ee.ExitCode(); code >= 0 {
			return &exitStatus{code}
		}
		if ierr := interruption(ctx); ierr != nil {
			return ierr
		}
		// Killed by a signal: as shells report it.
		if ws, ok := ee.Sys().(interface{ Signal() syscall.Signal }); ok {
			return &exitStatus{128 + int(ws.Signal())}
		}
		return err
	}
	return err
}
