//go:build linux

package nsthread

import (
	"os"
	"runtime"
	"testing"
)

// TestMain keeps the main goroutine on the main thread for the whole run.
// TestRunDiscardsUnrestorableThread strands a thread on purpose; the
// runtime can end any stranded thread except the main one, and the main
// thread's namespace is what /proc/self/ns/net reports, the tests'
// reference for "home".
func TestMain(m *testing.M) {
	runtime.LockOSThread()
	os.Exit(m.Run())
}
