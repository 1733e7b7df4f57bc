//go:build linux

package vsockns

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/vsockns/vsockns/internal/nsthread"
)

// A sysctl that the kernel lacks is named in the error. A kernel can have
// vsock namespaces (ns_mode) but not a later sysctl (g2h_fallback came
// after): that must not be blamed on Linux < 7.0. No such kernel is in the
// matrix, so the check reads a vsock sysctl no kernel has.
func TestMissingSysctlIsNamed(t *testing.T) {
	withNS := inVMWithNamespaces(t)
	const name = "vsockns_no_such_sysctl"
	_, err := readSysctl(name)
	if !errors.Is(err, ErrNotSupported) {
		t.Fatalf("readSysctl(%q) = %v, want ErrNotSupported", name, err)
	}
	msg := err.Error()
	if withNS {
		if !strings.Contains(msg, "this kernel has vsock network namespaces but no "+sysctlDir+name+" sysctl") || strings.Contains(msg, "Linux >= 7.0") {
			t.Errorf("the error does not name the missing sysctl: %v", err)
		}
		return
	}
	if !strings.Contains(msg, "Linux >= 7.0 is needed") {
		t.Errorf("a kernel without vsock namespaces: %v", err)
	}
}

// NewNamespace creates one namespace per call: the private parents it
// creates children from are made once per mode and reused (before, every
// call made and threw away a parent: two unshare(2) per namespace).
func TestNewNamespaceUnsharesOncePerCall(t *testing.T) {
	withNS := inVMWithNamespaces(t)
	orig := unshareNet
	var calls atomic.Int32
	unshareNet = func() error { calls.Add(1); return orig() }
	t.Cleanup(func() { unshareNet = orig })
	if !withNS {
		// Legacy: refused before any namespace is made.
		_, err := newNamespace(ModeLocal)
		if !errors.Is(err, ErrNotSupported) || calls.Load() != 0 {
			t.Fatalf("legacy kernel: %v after %d unshare(2) calls", err, calls.Load())
		}
		return
	}
	// The parents may exist already (other tests): warm both up.
	for _, m := range []Mode{ModeLocal, ModeGlobal} {
		ns, err := newNamespace(m)
		if err != nil {
			t.Fatal(err)
		}
		ns.Close()
	}
	calls.Store(0)
	const n = 20
	for i := range n {
		m := ModeLocal
		if i%2 == 1 {
			m = ModeGlobal
		}
		ns, err := newNamespace(m)
		if err != nil {
			t.Fatal(err)
		}
		got, err := NamespaceMode(ns)
		ns.Close()
		if err != nil || got != m {
			t.Fatalf("asked for %s, got %s, %v", m, got, err)
		}
	}
	if c := calls.Load(); c != n {
		t.Errorf("%d namespaces took %d unshare(2) calls", n, c)
	}
}

// The reused parents keep the caller's mode rules: from inside a local
// namespace, or a global one whose child_ns_mode is local, NewNamespace
// cannot give a global namespace (EPERM, as creating it from the caller's
// own thread would), but a local one it can; the caller's child_ns_mode is
// read, never written.
func TestNewNamespaceKeepsCallersModeRules(t *testing.T) {
	if !inVMWithNamespaces(t) {
		for _, m := range []Mode{ModeLocal, ModeGlobal} {
			if _, err := newNamespace(m); !errors.Is(err, ErrNotSupported) {
				t.Errorf("legacy kernel, %s: %v", m, err)
			}
		}
		return
	}
	local, err := newNamespace(ModeLocal)
	if err != nil {
		t.Fatal(err)
	}
	defer local.Close()
	fd := -1
	if err := nsthread.Run(context.Background(), nil, nsthread.Caller(), func() error {
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			return err
		}
		if err := writeSysctl("child_ns_mode", "local"); err != nil {
			return err
		}
		var err error
		fd, err = nsthread.Current()
		return err
	}); err != nil {
		t.Fatal(err)
	}
	globalWithLocalChildren := netns.NsHandle(fd)
	defer globalWithLocalChildren.Close()

	for name, caller := range map[string]netns.NsHandle{"local": local, "global_with_local_children": globalWithLocalChildren} {
		t.Run(name, func(t *testing.T) {
			err := nsthread.Run(context.Background(), nil, nsthread.FD(int(caller)), func() error {
				if _, err := newNamespace(ModeGlobal); !errors.Is(err, ErrModeNotPermitted) || !errors.Is(err, unix.EPERM) {
					return fmt.Errorf("a global namespace from a caller with local children: %v", err)
				}
				ns, err := newNamespace(ModeLocal)
				if err != nil {
					return err
				}
				defer ns.Close()
				if m, err := readMode(nsRef{h: ns}, "ns_mode"); err != nil || m != ModeLocal {
					return fmt.Errorf("local namespace: %v, %v", m, err)
				}
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
		})
	}
}

// inVMWithNamespaces skips outside the test VM (these tests need root and
// the kernel's vsock) and reports whether the VM's kernel has vsock
// namespaces. (The shared helpers of internal/testenv import this package,
// so its own internal tests cannot use them.)
func inVMWithNamespaces(t *testing.T) bool {
	t.Helper()
	if os.Getenv("VSOCKNS_IN_VM") != "1" {
		t.Skip("needs root and the kernel's vsock; run `make test` (it runs this in a VM on Linux >= 7.0 and 6.1)")
	}
	withNS, err := strconv.ParseBool(os.Getenv("VSOCKNS_EXPECT_NAMESPACES"))
	if err != nil {
		t.Fatal(err)
	}
	return withNS
}
