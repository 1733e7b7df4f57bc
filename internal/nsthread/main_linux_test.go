//go:build linux

package nsthread

import (
	"context"
	"fmt"
	"os"
	"runtime"
	"testing"

	"golang.org/x/sys/unix"
)

// mainThreadEnv makes the test binary run mainThreadScenario instead of
// the tests (TestRunGoexitOnMainThread sets it).
const mainThreadEnv = "NSTHREAD_MAIN_THREAD_SCENARIO"

// init keeps the main goroutine on the main thread for the whole run
// (locking in init is what guarantees the main thread; in TestMain the
// goroutine may already have moved). TestRunDiscardsUnrestorableThread
// strands a thread on purpose; the runtime can end any stranded thread
// except the main one, and the main thread's namespace is what
// /proc/self/ns/net reports, the tests' reference for "home".
func init() {
	if os.Getenv(mainThreadEnv) == "" {
		runtime.LockOSThread()
	}
}

func TestMain(m *testing.M) {
	if os.Getenv(mainThreadEnv) != "" {
		os.Exit(mainThreadScenario())
	}
	os.Exit(m.Run())
}

// mainThreadScenario has Run's fn call runtime.Goexit on the main thread,
// which the runtime does not end but parks for good, and reports (exit
// status 0, or 1 with the reason) whether the parked main thread was left
// in the target namespace. The main goroutine is not locked here, so Run's
// goroutine, started and yielded to from it, usually runs on the main
// thread; tries continue until it has.
func mainThreadScenario() int {
	var target int
	if err := Run(context.Background(), nil, Caller(), func() error {
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			return err
		}
		var err error
		target, err = Current()
		return err
	}); err != nil {
		fmt.Println("creating the target namespace:", err)
		return 1
	}
	pid := unix.Getpid()
	onMain := false
	tries := 0
	for ; tries < 1000 && !onMain; tries++ {
		err := Run(context.Background(), nil, FD(target), func() error {
			onMain = unix.Gettid() == pid
			runtime.Goexit()
			return nil
		})
		if err != ErrGoexit {
			fmt.Println("Run:", err)
			return 1
		}
	}
	if !onMain {
		fmt.Printf("fn never ran on the main thread in %d tries\n", tries)
		return 1
	}
	var st, stTarget unix.Stat_t
	if err := unix.Stat(fmt.Sprintf("/proc/self/task/%d/ns/net", pid), &st); err != nil {
		fmt.Println(err)
		return 1
	}
	if err := unix.Fstat(target, &stTarget); err != nil {
		fmt.Println(err)
		return 1
	}
	fmt.Printf("fn ran on the main thread at try %d\n", tries)
	if st.Ino == stTarget.Ino {
		fmt.Println("the parked main thread is still in the target namespace")
		return 1
	}
	return 0
}
