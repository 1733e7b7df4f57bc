package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
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
  ss [--all] [-l] [--cid N] [--port N] [-p] [--json]
                             list a namespace's vsock sockets (--all: every namespace's) as ss(8)
                             does, with the namespace, its mode and (-p) the processes holding them;
                             needs the vsock_diag module
  vm [--cid C] [--serve PATH] -- COMMAND [ARGS]
                             run a VMM with /dev/vhost-vsock opened in a new local namespace
                             of your own (no privileges needed) and a guest CID claimed there:
                             the device is descriptor 3, {vhostfd} and {cid} in ARGS are
                             replaced (qemu: -device vhost-vsock-pci,vhostfd={vhostfd},guest-cid={cid});
                             --serve PATH lets dial/listen/mode --socket PATH act in it meanwhile

namespace flags (every command that acts in one):
  --netns NAME|PATH          a named namespace (/run/netns/NAME) or a namespace file
  --pid PID                  the network namespace of process PID
  --socket PATH              (dial, listen, mode, ss) the namespace a vsockns vm --serve PATH serves
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
		"ss":         c.ss,
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
