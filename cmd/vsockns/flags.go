package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"strings"

	"github.com/vishvananda/netns"
	"github.com/vsockns/vsockns"
)

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

// flagSet makes a FlagSet for a subcommand, with the namespace flags when
// nsFlags is set.
func (c *cli) flagSet(name string, target *nsTarget) *flag.FlagSet {
	fs := flag.NewFlagSet("vsockns "+name, flag.ContinueOnError)
	fs.SetOutput(c.stderr)
	if target != nil {
		fs.StringVar(&target.netns, "netns", "", "named namespace (/run/netns/NAME) or namespace file `NAME|PATH`")
		fs.IntVar(&target.pid, "pid", 0, "use the network namespace of process `PID`")
		if name == "dial" || name == "listen" || name == "mode" || name == "ss" {
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
