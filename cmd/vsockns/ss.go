package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"

	"github.com/mdlayher/vsock"
	"github.com/vishvananda/netns"

	"github.com/vsockns/vsockns"
)

// ssRow is one socket as `vsockns ss` prints it.
type ssRow struct {
	Netid string `json:"netid"`
	vsockns.Socket
	Namespace   string            `json:"namespace"`
	NamespaceID string            `json:"namespace_id"`
	Mode        *vsockns.Mode     `json:"mode,omitempty"`
	Owners      []vsockns.Process `json:"owners,omitempty"`
}

// ssReport is `vsockns ss --json`'s output: the rows, and what could not
// be listed (the status is then 1).
type ssReport struct {
	Sockets  []ssRow `json:"sockets"`
	Complete bool    `json:"complete"`
	Error    string  `json:"error,omitempty"`
}

// ssFilter selects rows: listening only, a CID or a port at either end.
type ssFilter struct {
	listening bool
	cid, port uint32
	anyCID    bool // no --cid
	anyPort   bool // no --port
	processes bool
}

func (f ssFilter) match(s vsockns.Socket) bool {
	if f.listening && s.State != vsockns.StateListening {
		return false
	}
	if !f.anyCID && s.Local.ContextID != f.cid && s.Remote.ContextID != f.cid {
		return false
	}
	if !f.anyPort && s.Local.Port != f.port && s.Remote.Port != f.port {
		return false
	}
	return true
}

// uint32Flag parses a CID or port: a number, or -1 for VMADDR_CID_ANY /
// VMADDR_PORT_ANY.
func uint32Flag(name, s string) (uint32, error) {
	if s == "-1" {
		return ^uint32(0), nil
	}
	v, err := strconv.ParseUint(s, 10, 32)
	if err != nil {
		return 0, usagef("--%s %q: want a number from 0 to 4294967295, or -1", name, s)
	}
	return uint32(v), nil
}

func (c *cli) ss(args []string) error {
	var t nsTarget
	fs := c.flagSet("ss", &t)
	all := fs.Bool("all", false, "list every namespace of the node (named, every process's, held by a descriptor, bind-mounted)")
	listening := fs.Bool("listening", false, "only listening sockets")
	fs.BoolVar(listening, "l", false, "short for --listening")
	cid := fs.String("cid", "", "only sockets with `CID` at either end")
	port := fs.String("port", "", "only sockets with `PORT` at either end")
	procs := fs.Bool("p", false, "show the processes holding each socket")
	asJSON := fs.Bool("json", false, "print JSON")
	if _, err := parse(fs, args, 0, "no arguments"); err != nil {
		return err
	}
	f := ssFilter{listening: *listening, anyCID: *cid == "", anyPort: *port == "", processes: *procs}
	var err error
	if *cid != "" {
		if f.cid, err = uint32Flag("cid", *cid); err != nil {
			return err
		}
	}
	if *port != "" {
		if f.port, err = uint32Flag("port", *port); err != nil {
			return err
		}
	}
	if *all && (t.netns != "" || t.pid != 0 || t.socket != "") {
		return usagef("--all excludes --netns, --pid and --socket")
	}
	ctx := context.Background()
	var rows []ssRow
	var listErr error
	if *all {
		rows, listErr = nodeRows(ctx, f)
	} else {
		rows, listErr = namespaceRows(ctx, &t, f)
	}
	if rows == nil && listErr != nil {
		return listErr
	}
	if *asJSON {
		r := ssReport{Sockets: rows, Complete: listErr == nil}
		if r.Sockets == nil {
			r.Sockets = []ssRow{}
		}
		if listErr != nil {
			r.Error = listErr.Error()
		}
		if err := json.NewEncoder(c.stdout).Encode(r); err != nil {
			return err
		}
	} else {
		printSS(c.stdout, rows, f)
	}
	// A listing with a part missing is printed, and fails: never taken
	// for the whole.
	return listErr
}

// namespaceRows lists one namespace: --netns, --pid, --socket or the
// current one.
func namespaceRows(ctx context.Context, t *nsTarget, f ssFilter) ([]ssRow, error) {
	var ns *vsockns.Namespace
	var name string
	if served, err := t.served(ctx); err != nil {
		return nil, err
	} else if served != nil {
		ns, name = served, t.socket
	} else {
		h, _, done, err := t.open()
		if err != nil {
			return nil, err
		}
		ns, err = vsockns.OpenNamespace(h)
		done()
		if err != nil {
			return nil, err
		}
		switch {
		case t.netns != "":
			name = t.netns
		case t.pid != 0:
			name = "pid " + strconv.Itoa(t.pid)
		default:
			name = ns.ID().String()
		}
	}
	defer ns.Close()
	var socks []vsockns.Socket
	var err error
	var m vsockns.Mode
	var modeErr error
	if t.netns == "" && t.pid == 0 && t.socket == "" {
		// The current namespace: no switch (entering even one's own
		// namespace takes CAP_SYS_ADMIN, which an ordinary user lacks).
		socks, err = vsockns.Sockets(ctx, netns.None())
		m, modeErr = vsockns.NamespaceMode(netns.None())
	} else {
		socks, err = ns.Sockets(ctx)
		m, modeErr = ns.Mode()
	}
	if err != nil {
		return nil, err
	}
	var mode *vsockns.Mode
	if modeErr == nil {
		mode = &m
	} else if !errors.Is(modeErr, vsockns.ErrNotSupported) {
		return nil, modeErr
	}
	var owners map[uint64][]vsockns.Process
	var ownErr error
	if f.processes {
		owners, ownErr = vsockns.SocketOwners()
	}
	rows := []ssRow{}
	for _, s := range socks {
		if !f.match(s) {
			continue
		}
		rows = append(rows, ssRow{Netid: s.Type.NetID(), Socket: s, Namespace: name, NamespaceID: ns.ID().String(),
			Mode: mode, Owners: owners[s.Inode]})
	}
	return rows, ownErr
}

// nodeRows lists every namespace of the node.
func nodeRows(ctx context.Context, f ssFilter) ([]ssRow, error) {
	l, err := vsockns.NodeSockets(ctx)
	if l == nil {
		return nil, err
	}
	rows := []ssRow{}
	for _, s := range l.Sockets {
		if !f.match(s.Socket) {
			continue
		}
		r := ssRow{Netid: s.Type.NetID(), Socket: s.Socket, Namespace: s.Namespace.Name(),
			NamespaceID: s.Namespace.ID.String(), Owners: s.Owners}
		if m := s.Namespace.Mode; m.Valid() {
			r.Mode = &m
		}
		rows = append(rows, r)
	}
	return rows, err
}

// ssAddr formats a vsock address as ss(8) does: "*" for VMADDR_CID_ANY
// and VMADDR_PORT_ANY.
func ssAddr(a *vsock.Addr) string {
	cid, port := "*", "*"
	if a.ContextID != ^uint32(0) {
		cid = strconv.FormatUint(uint64(a.ContextID), 10)
	}
	if a.Port != ^uint32(0) {
		port = strconv.FormatUint(uint64(a.Port), 10)
	}
	return cid + ":" + port
}

// ssUsers formats owners as ss -p does: users:(("cmd",pid=N),...).
func ssUsers(ps []vsockns.Process) string {
	if len(ps) == 0 {
		return ""
	}
	var b strings.Builder
	b.WriteString("users:(")
	for i, p := range ps {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, "(%q,pid=%d)", p.Command, p.PID)
	}
	b.WriteString(")")
	return b.String()
}

// printSS prints rows in ss(8)'s columns (without Recv-Q and Send-Q, which
// vsock_diag does not report), then the namespace and its mode.
func printSS(w io.Writer, rows []ssRow, f ssFilter) {
	tw := tabwriter.NewWriter(w, 0, 8, 2, ' ', 0)
	head := "Netid\tState\tLocal Address:Port\tPeer Address:Port\tNamespace\tMode"
	if f.processes {
		head += "\tProcess"
	}
	fmt.Fprintln(tw, head)
	for _, r := range rows {
		mode := "-"
		if r.Mode != nil {
			mode = r.Mode.String()
		}
		line := fmt.Sprintf("%s\t%s\t%s\t%s\t%s\t%s", r.Netid, r.State, ssAddr(r.Local), ssAddr(r.Remote), r.Namespace, mode)
		if f.processes {
			line += "\t" + ssUsers(r.Owners)
		}
		fmt.Fprintln(tw, line)
	}
	tw.Flush()
}
