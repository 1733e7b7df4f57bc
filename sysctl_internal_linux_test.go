//go:build linux

package vsockns

import (
	"errors"
	"os"
	"strconv"
	"strings"
	"testing"
)

// A sysctl that the kernel lacks is named in the error. A kernel can have
// vsock namespaces (ns_mode) but not a later sysctl (g2h_fallback came
// after): that must not be blamed on Linux < 7.0. No such kernel is in the
// matrix, so the check reads a vsock sysctl no kernel has.
func TestMissingSysctlIsNamed(t *testing.T) {
	if os.Getenv("VSOCKNS_IN_VM") != "1" {
		t.Skip("reads the kernel's vsock sysctls as root; run `make test` (it runs this in a VM on Linux >= 7.0 and 6.1)")
	}
	withNS, err := strconv.ParseBool(os.Getenv("VSOCKNS_EXPECT_NAMESPACES"))
	if err != nil {
		t.Fatal(err)
	}
	const name = "vsockns_no_such_sysctl"
	_, err = readSysctl(name)
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
