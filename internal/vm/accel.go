package vm

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"sync"
	"time"
)

// Accel is the accelerator a boot runs under.
type Accel struct {
	KVM  bool
	Args []string // QEMU's -accel and -cpu arguments
	// Why says how it was chosen: the probe's outcome, the knob, or the
	// failure that made a boot fall back to TCG.
	Why string
}

// Name is "KVM" or "TCG".
func (a Accel) Name() string {
	if a.KVM {
		return "KVM"
	}
	return "TCG"
}

func kvmAccel(why string) Accel {
	return Accel{KVM: true, Args: []string{"-accel", "kvm", "-cpu", "host"}, Why: why}
}

// TCG runs single-threaded (both vCPUs on one host thread): multi-threaded
// TCG sometimes crashed the 7.2 guest during early boot (an int3 Oops in the
// kernel's cross-CPU code patching), and one thread per VM lets two VMs run
// side by side on a 2-core machine. Config.ParallelTCG asks for the other.
func tcgAccel(why string) Accel {
	return Accel{Args: []string{"-accel", tcgSingle, "-cpu", "max"}, Why: why}
}

const tcgSingle = "tcg,thread=single"

// probeTimeout bounds the KVM probe's boot. A kernel under working KVM
// reaches its "no root file system" panic in about a second.
const probeTimeout = 20 * time.Second

// accelerators caches, per QEMU binary and KVM device, the accelerator the
// probe chose; a boot that finds KVM failing moves its entry to TCG.
var accelerators = struct {
	sync.Mutex
	m map[string]*accelEntry
}{m: map[string]*accelEntry{}}

type accelEntry struct {
	once  sync.Once
	mu    sync.Mutex
	accel Accel
}

// chooseAccel returns the accelerator for boots with qemu: VSOCKNS_ACCEL
// (tcg or kvm) if set, else KVM if a probe guest booted under it, else TCG.
// The choice is made once per process (per qemu and KVM device) and is
// said in one line on stderr.
func chooseAccel(qemu, kvmDevice, image string, probeBound time.Duration) Accel {
	key := qemu + "\x00" + kvmDevice
	accelerators.Lock()
	e, ok := accelerators.m[key]
	if !ok {
		e = &accelEntry{}
		accelerators.m[key] = e
	}
	accelerators.Unlock()
	e.once.Do(func() {
		switch os.Getenv("VSOCKNS_ACCEL") {
		case "tcg":
			e.accel = tcgAccel("VSOCKNS_ACCEL=tcg")
		case "kvm":
			e.accel = kvmAccel("VSOCKNS_ACCEL=kvm")
		default:
			e.accel = probeAccel(qemu, kvmDevice, image, probeBound)
		}
		if strings.HasPrefix(e.accel.Why, "KVM present") {
			fmt.Fprintf(os.Stderr, "vm: %s; using TCG\n", e.accel.Why)
		} else {
			fmt.Fprintf(os.Stderr, "vm: accelerator %s (%s)\n", e.accel.Name(), e.accel.Why)
		}
	})
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.accel
}

// kvmFailed records that a boot under KVM failed because of KVM: later
// boots with this qemu and device use TCG. Says so once, on stderr.
func kvmFailed(qemu, kvmDevice, why string) {
	accelerators.Lock()
	e := accelerators.m[qemu+"\x00"+kvmDevice]
	accelerators.Unlock()
	if e == nil {
		return
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.accel.KVM {
		e.accel = tcgAccel("KVM failed a boot: " + why)
		fmt.Fprintf(os.Stderr, "vm: KVM present but a guest stopped with: %s; using TCG\n", why)
	}
}

// probeAccel decides KVM by booting a guest under it: the kernel image
// alone, which runs its whole start-up and panics for want of a root file
// system (panic=-1 and -no-reboot make QEMU exit then). KVM is used only
// if that panic line arrives and QEMU exits cleanly within bound. A /dev/kvm
// that opens proves nothing: on some hosts every guest stops at once with
// "KVM internal error" and QEMU pauses it instead of exiting.
func probeAccel(qemu, kvmDevice, image string, bound time.Duration) Accel {
	f, err := os.OpenFile(kvmDevice, os.O_RDWR, 0)
	if err != nil {
		return tcgAccel(fmt.Sprintf("no usable KVM: %v", err))
	}
	f.Close()
	start := time.Now()
	if why := probeBoot(qemu, image, bound); why != "" {
		return tcgAccel("KVM present but a guest stopped with: " + why)
	}
	return kvmAccel(fmt.Sprintf("a probe guest booted under KVM in %s", time.Since(start).Round(10*time.Millisecond)))
}

// probeBoot boots image under KVM and returns "" if it ran to its panic,
// or why not.
func probeBoot(qemu, image string, bound time.Duration) string {
	ctx, cancel := context.WithTimeoutCause(context.Background(), bound, errProbeSilent)
	defer cancel()
	ctx, abort := context.WithCancelCause(ctx)
	defer abort(nil)
	cmd := exec.CommandContext(ctx, qemu, "-nodefaults", "-no-user-config", "-display", "none", "-no-reboot",
		"-machine", "q35", "-accel", "kvm", "-cpu", "host", "-m", "256",
		"-kernel", image, "-append", "console=ttyS0 panic=-1",
		"-serial", "file:/dev/fd/3", "-qmp", "stdio")
	qmpIn, err := cmd.StdinPipe()
	if err != nil {
		return err.Error()
	}
	qmpOut, err := cmd.StdoutPipe()
	if err != nil {
		return err.Error()
	}
	conR, conW, err := os.Pipe()
	if err != nil {
		return err.Error()
	}
	defer conR.Close()
	cmd.ExtraFiles = []*os.File{conW}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		conW.Close()
		return err.Error()
	}
	cmd.WaitDelay = time.Second
	if err := cmd.Start(); err != nil {
		conW.Close()
		return err.Error()
	}
	conW.Close()
	var wg sync.WaitGroup
	var qemuOut bytes.Buffer
	var panicked bool
	wg.Add(3)
	go func() {
		defer wg.Done()
		watchQMP(qmpOut, qmpIn, func(status string) {
			abort(&stopError{why: fmt.Sprintf("QEMU stopped the guest (run state %q)", status), accel: true})
		})
	}()
	go func() {
		defer wg.Done()
		watchStderr(stderr, func(line string) {
			qemuOut.WriteString(line + "\n")
		}, func(why string) { abort(&stopError{why: why, accel: true}) })
	}()
	go func() {
		defer wg.Done()
		sc := bufio.NewScanner(conR)
		for sc.Scan() {
			if strings.Contains(sc.Text(), "Kernel panic") {
				panicked = true
			}
		}
	}()
	// The readers end when QEMU does (the context kills it): only then
	// may Wait close the pipes.
	wg.Wait()
	waitErr := cmd.Wait()
	var stop *stopError
	switch cause := context.Cause(ctx); {
	case errors.As(cause, &stop):
		return stop.why
	case cause == errProbeSilent:
		return fmt.Sprintf("no kernel panic line within %s (the guest ran no further, or QEMU paused it)", bound)
	case waitErr != nil:
		return fmt.Sprintf("qemu: %v: %s", waitErr, firstLines(qemuOut.String(), 3))
	case !panicked:
		return "QEMU exited before the kernel ran to its end: " + firstLines(qemuOut.String(), 3)
	}
	return ""
}

var errProbeSilent = fmt.Errorf("probe silent")

// accelFailure is the start of each line QEMU prints on stderr when KVM
// cannot run the guest (accel/kvm in QEMU's sources): QEMU then pauses the
// VM instead of exiting, or exits.
var accelFailure = []string{
	"KVM internal error",
	"error: kvm run failed",
	"KVM: entry failed",
	"kvm: failed to initialize",
	"failed to initialize kvm",
	"Could not access KVM kernel module",
}

// watchStderr passes each of QEMU's stderr lines to line, and calls failed
// with the first one that reports KVM unable to run the guest.
func watchStderr(r io.Reader, line func(string), failed func(why string)) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 4096), 1<<20)
	reported := false
	for sc.Scan() {
		l := strings.TrimRight(sc.Text(), "\r")
		line(l)
		if reported {
			continue
		}
		for _, p := range accelFailure {
			if strings.Contains(l, p) {
				reported = true
				failed(strings.TrimSpace(l))
				break
			}
		}
	}
}

// firstLines is s's first n lines on one line, for a message.
func firstLines(s string, n int) string {
	if strings.TrimSpace(s) == "" {
		return "(nothing on stderr)"
	}
	lines := strings.Split(strings.TrimSpace(s), "\n")
	if len(lines) > n {
		lines = lines[:n]
	}
	return strings.Join(lines, " | ")
}
