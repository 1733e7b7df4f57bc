package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"

	"github.com/vishvananda/netns"
	"github.com/vsockns/vsockns"
)

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
