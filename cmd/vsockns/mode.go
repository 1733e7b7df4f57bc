package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/vishvananda/netns"
	"github.com/vsockns/vsockns"
)

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

func (m handleModes) Mode() (vsockns.Mode, error) { return vsockns.NamespaceMode(m.h) }

func (m handleModes) ChildMode() (vsockns.Mode, error) { return vsockns.ChildMode(m.h) }

func (m handleModes) G2HFallback() (bool, error) { return vsockns.G2HFallback(m.h) }

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
