//go:build linux

package main

import (
	"context"
	"os"
	"strconv"
	"strings"

	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/vsockns/vsockns/internal/nsthread"
)

// isInit reports whether ns (netns.None(): the current namespace) is, or
// may be, the init network namespace, whose child_ns_mode must not be
// written by accident. /proc/1 alone cannot tell: in a PID namespace of its
// own, PID 1 is the container's init, in whatever namespace that is. So:
//
//   - where kthreadd (PID 2 of the init PID namespace, a kernel thread that
//     never leaves the init network namespace) is visible, compare with it;
//   - otherwise, look for a sysctl that only the init network namespace has
//     (net.core.netdev_budget), read from a thread inside ns.
//
// When neither answers, it says yes: the caller then asks for --init.
func isInit(ns netns.NsHandle) bool {
	target := ns
	if ns == netns.None() {
		cur, err := netns.Get()
		if err != nil {
			return true
		}
		defer cur.Close()
		target = cur
	}
	if isKthreadd(2) {
		init, err := netns.GetFromPath("/proc/2/ns/net")
		if err == nil {
			defer init.Close()
			return target.Equal(init)
		}
	}
	var initOnly bool
	err := nsthread.Run(context.Background(), nil, nsthread.FD(int(target)), func() error {
		_, err := os.Stat(initOnlySysctl)
		initOnly = err == nil
		return nil
	})
	return err != nil || initOnly
}

// initOnlySysctl exists in the init network namespace only (the kernel
// registers net/core's global table for init_net alone).
const initOnlySysctl = "/proc/sys/net/core/netdev_budget"

// isKthreadd reports whether pid is the kernel's kthreadd: named so, with
// no parent, and a kernel thread (no memory map of its own).
func isKthreadd(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return false
	}
	s := string(b)
	if !strings.HasPrefix(s, "Name:\tkthreadd\n") || !strings.Contains(s, "\nPPid:\t0\n") {
		return false
	}
	var st unix.Stat_t
	// A kernel thread has no executable: /proc/PID/exe does not resolve.
	return unix.Stat("/proc/"+strconv.Itoa(pid)+"/exe", &st) != nil
}
