//go:build linux

package vsockns_test

import (
	"flag"
	"fmt"
	"os"
	"runtime"
	"testing"

	"github.com/vsockns/vsockns"
	"github.com/vsockns/vsockns/internal/testenv"
)

// TestMain keeps the main goroutine on the main thread, so that no test can
// strand the main thread in another namespace (the runtime cannot discard
// it as it does other stranded threads).
//
// The runnable examples need root, vsock_loopback and vsock namespaces.
// Where those are missing they are left out, saying why; in the VM on a
// >= 7.0 kernel they always run.
func TestMain(m *testing.M) {
	runtime.LockOSThread()
	flag.Parse()
	if why := examplesCannotRun(); why != "" {
		fmt.Fprintf(os.Stderr, "vsockns: runnable examples not run: %s\n", why)
		testenv.SkipExamples()
	}
	os.Exit(m.Run())
}

func examplesCannotRun() string {
	switch {
	case os.Geteuid() != 0:
		return "they need root; " + runInVM
	case !fileExists("/sys/module/vsock_loopback"):
		return "they need vsock_loopback; " + runInVM
	case vsockns.Supported() != nil:
		return fmt.Sprintf("this kernel has no vsock namespaces (%v)", vsockns.Supported())
	}
	return ""
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}
