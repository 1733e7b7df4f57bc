package vm

import (
	"bufio"
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"
)

// QEMU returns the path of qemu-system-x86_64 (VSOCKNS_QEMU if set, else the
// one on the PATH), or an error saying how to get it.
func QEMU() (string, error) {
	if p := os.Getenv("VSOCKNS_QEMU"); p != "" {
		if _, err := exec.LookPath(p); err != nil {
			return "", fmt.Errorf("VSOCKNS_QEMU=%s: %w", p, err)
		}
		return p, nil
	}
	p, err := exec.LookPath("qemu-system-x86_64")
	if err != nil {
		return "", errors.New("qemu-system-x86_64 not found: install it (Debian: apt-get install qemu-system-x86), or run `make test` as root, which does")
	}
	return p, nil
}

// Boot builds the initramfs for cfg, boots it and collects the result. The
// returned error is for failures on the host (no QEMU, unreadable files, a
// QEMU that exits before the guest says anything); what went wrong in the
// guest is in the Result.
//
// No boot waits in silence: a guest that QEMU pauses (KVM's internal
// errors do that), that says nothing within cfg.FirstOutput or falls
// silent for cfg.Silence is ended at once, with the reason in
// Result.Stopped. A boot under KVM that KVM fails is run once more under
// TCG, and later boots of the process use TCG.
func Boot(ctx context.Context, cfg Config) (*Result, error) {
	qemu := cfg.QEMU
	if qemu == "" {
		var err error
		if qemu, err = QEMU(); err != nil {
			return nil, err
		}
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = 10 * time.Minute
	}
	if cfg.CPUs == 0 {
		cfg.CPUs = 2
	}
	if cfg.MemoryMB == 0 {
		// 1 GiB once ran out (ENOMEM from VHOST_SET_OWNER late in the
		// suite, after hundreds of namespaces and vhost devices).
		cfg.MemoryMB = 2048
	}
	if cfg.Console == nil {
		cfg.Console = io.Discard
	}
	cfg.FirstOutput = cmp.Or(cfg.FirstOutput, DefaultFirstOutput)
	cfg.Silence = cmp.Or(cfg.Silence, DefaultSilence)
	kvmDevice := cmp.Or(cfg.kvmDevice, "/dev/kvm")
	work := cfg.WorkDir
	if work == "" {
		var err error
		if work, err = os.MkdirTemp("", "vsockns-vm-"); err != nil {
			return nil, err
		}
		defer os.RemoveAll(work)
	}
	initrd := filepath.Join(work, "initramfs-"+cfg.Kernel.Release+".cpio")
	if err := buildInitramfs(initrd, cfg); err != nil {
		return nil, err
	}

	accel := chooseAccel(qemu, kvmDevice, cfg.Kernel.Image, cmp.Or(cfg.probeTimeout, probeTimeout))
	res, err := bootOnce(ctx, cfg, qemu, initrd, accel)
	if !accel.KVM || ctx.Err() != nil {
		return res, err
	}
	var why string
	switch {
	case err != nil:
		why = err.Error()
	case res.AccelFailed:
		why = res.Stopped
	default:
		return res, nil
	}
	kvmFailed(qemu, kvmDevice, why)
	fmt.Fprintf(cfg.Console, "[%s] KVM failed this boot (%s); booting again under TCG\n", cfg.Kernel.Release, why)
	res, err = bootOnce(ctx, cfg, qemu, initrd, tcgAccel("KVM failed this boot: "+why))
	if res != nil {
		res.Retried = why
	}
	return res, err
}

// stopError is why the harness ended a boot.
type stopError struct {
	why   string
	accel bool // KVM failed to run the guest
}

func (e *stopError) Error() string { return e.why }

// bootOnce runs QEMU once under accel.
func bootOnce(ctx context.Context, cfg Config, qemu, initrd string, accel Accel) (*Result, error) {
	ctx, cancel := context.WithTimeout(ctx, cfg.Timeout)
	defer cancel()
	ctx, stop := context.WithCancelCause(ctx)
	defer stop(nil)

	// The guest's serial ports: ttyS0 the console, ttyS1 the report port,
	// ttyS2 /init's heartbeat.
	var reads, writes []*os.File
	closeAll := func(fs []*os.File) {
		for _, f := range fs {
			f.Close()
		}
	}
	for range 4 { // three serial ports and QEMU's stderr
		r, w, err := os.Pipe()
		if err != nil {
			closeAll(reads)
			closeAll(writes)
			return nil, err
		}
		reads, writes = append(reads, r), append(writes, w)
	}
	conR, repR, beatR, errR := reads[0], reads[1], reads[2], reads[3]
	defer closeAll(reads)

	accelArgs := accel.Args
	if cfg.ParallelTCG && !accel.KVM {
		accelArgs = append([]string{"-accel", "tcg,thread=multi"}, accelArgs[2:]...)
	}
	args := []string{
		"-nodefaults", "-no-user-config", "-display", "none", "-no-reboot",
		"-machine", "q35",
		"-smp", strconv.Itoa(cfg.CPUs), "-m", strconv.Itoa(cfg.MemoryMB),
		"-kernel", cfg.Kernel.Image, "-initrd", initrd,
		"-append", "console=ttyS0 panic=-1 loglevel=4 rdinit=/init",
		"-serial", "file:/dev/fd/3", "-serial", "file:/dev/fd/4", "-serial", "file:/dev/fd/5",
		// QMP on stdin/stdout: the harness hears at once when QEMU stops
		// the guest (a KVM internal error pauses it instead of exiting).
		"-qmp", "stdio",
	}
	args = append(args, accelArgs...)
	cmd := exec.CommandContext(ctx, qemu, args...)
	cmd.ExtraFiles = writes[:3]
	cmd.Stderr = writes[3]
	qmpIn, err := cmd.StdinPipe()
	if err != nil {
		closeAll(writes)
		return nil, err
	}
	qmpR, qmpW, err := os.Pipe()
	if err != nil {
		closeAll(writes)
		return nil, err
	}
	defer qmpR.Close()
	cmd.Stdout = qmpW
	cmd.WaitDelay = 5 * time.Second
	start := time.Now()
	err = cmd.Start()
	closeAll(writes)
	qmpW.Close()
	if err != nil {
		return nil, fmt.Errorf("start qemu: %w", err)
	}

	res := &Result{Kernel: cfg.Kernel, Accel: accel}
	life := &lifeSigns{start: start}
	var (
		wg      sync.WaitGroup
		mu      sync.Mutex // serialises writes to cfg.Console
		con     bytes.Buffer
		qemuOut bytes.Buffer
	)
	echo := func(format string, a ...any) {
		mu.Lock()
		fmt.Fprintf(cfg.Console, format, a...)
		mu.Unlock()
	}
	wg.Add(5)
	go func() {
		defer wg.Done()
		sc := bufio.NewScanner(&touchReader{conR, life})
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			line := strings.TrimRight(sc.Text(), "\r")
			con.WriteString(line + "\n")
			echo("[%s console] %s\n", cfg.Kernel.Release, line)
		}
	}()
	go func() {
		defer wg.Done()
		readReport(&touchReader{repR, life}, res, func(line string) {
			echo("[%s] %s\n", cfg.Kernel.Release, line)
		})
	}()
	go func() {
		defer wg.Done()
		_, _ = io.Copy(io.Discard, &touchReader{beatR, life})
	}()
	go func() {
		defer wg.Done()
		watchStderr(errR, func(line string) {
			qemuOut.WriteString(line + "\n")
			echo("[%s qemu] %s\n", cfg.Kernel.Release, line)
		}, func(why string) {
			stop(&stopError{why: why, accel: accel.KVM})
		})
	}()
	go func() {
		defer wg.Done()
		watchQMP(qmpR, qmpIn, func(status string) {
			stop(&stopError{
				why:   fmt.Sprintf("QEMU stopped the guest (run state %q)", status),
				accel: accel.KVM && status == "internal-error",
			})
		})
	}()
	exited := make(chan struct{})
	go life.watch(exited, cfg.FirstOutput, cfg.Silence, func(why string) { stop(&stopError{why: why}) })

	waitErr := cmd.Wait()
	close(exited)
	drain(&wg, 5*time.Second, conR, repR, beatR, errR, qmpR)
	res.Elapsed = time.Since(start)
	res.Console = con.Bytes()
	res.QEMUOutput = qemuOut.Bytes()
	first, maxGap := life.summary()
	res.FirstOutput, res.MaxSilence = first, maxGap
	var se *stopError
	switch {
	case errors.As(context.Cause(ctx), &se):
		res.Stopped, res.AccelFailed = se.why, se.accel
	case ctx.Err() != nil && !res.Done:
		res.TimedOut = true
	case waitErr != nil && !res.Done && first == 0:
		return res, fmt.Errorf("qemu (%s) exited before the guest said anything: %v: %s",
			accel.Name(), waitErr, firstLines(qemuOut.String(), 5))
	}
	return res, nil
}

// drain waits for the readers to reach the end of their pipes; past limit
// (a child of QEMU's holding a pipe open) it closes them.
func drain(wg *sync.WaitGroup, limit time.Duration, pipes ...*os.File) {
	done := make(chan struct{})
	go func() {
		wg.Wait()
		close(done)
	}()
	select {
	case <-done:
		return
	case <-time.After(limit):
	}
	for _, p := range pipes {
		p.Close()
	}
	<-done
}

// lifeSigns records when the guest wrote anything on its serial ports.
type lifeSigns struct {
	mu           sync.Mutex
	start        time.Time
	first, last  time.Time
	longestSince time.Duration
}

func (l *lifeSigns) touch() {
	now := time.Now()
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.first.IsZero() {
		l.first = now
	} else if gap := now.Sub(l.last); gap > l.longestSince {
		l.longestSince = gap
	}
	l.last = now
}

// summary is the time to the first sign of life (0 if none came) and the
// longest gap after it.
func (l *lifeSigns) summary() (first, maxGap time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.first.IsZero() {
		return 0, 0
	}
	return l.first.Sub(l.start), l.longestSince
}

// watch calls stop when the guest says nothing within first, or nothing for
// silence after that, until exited is closed.
func (l *lifeSigns) watch(exited <-chan struct{}, first, silence time.Duration, stop func(string)) {
	t := time.NewTicker(min(first, silence) / 20)
	defer t.Stop()
	for {
		select {
		case <-exited:
			return
		case now := <-t.C:
			l.mu.Lock()
			f, last := l.first, l.last
			l.mu.Unlock()
			switch {
			case f.IsZero() && now.Sub(l.start) > first:
				stop(fmt.Sprintf("no output from the guest within %s of starting QEMU (the kernel never ran, or QEMU stopped it)", first))
				return
			case !f.IsZero() && now.Sub(last) > silence:
				stop(fmt.Sprintf("the guest fell silent: nothing on its serial ports for %s (its /init beats every second)", silence))
				return
			}
		}
	}
}

// touchReader records a sign of life for every read that returns bytes.
type touchReader struct {
	r    io.Reader
	life *lifeSigns
}

func (t *touchReader) Read(p []byte) (int, error) {
	n, err := t.r.Read(p)
	if n > 0 {
		t.life.touch()
	}
	return n, err
}

// watchQMP speaks QMP with QEMU: it leaves capability negotiation, asks
// for the run state at once and after every STOP event, and calls stopped
// with any state in which the guest no longer runs and QEMU will not exit
// by itself. It returns when QEMU closes its end.
func watchQMP(r io.Reader, w io.WriteCloser, stopped func(status string)) {
	defer w.Close()
	dec := json.NewDecoder(r)
	send := func(cmd string) { _, _ = fmt.Fprintf(w, "{\"execute\":%q}\n", cmd) }
	for {
		var msg struct {
			QMP    json.RawMessage `json:"QMP"`
			Event  string          `json:"event"`
			Return json.RawMessage `json:"return"`
		}
		if err := dec.Decode(&msg); err != nil {
			return
		}
		switch {
		case msg.QMP != nil:
			send("qmp_capabilities")
			send("query-status")
		case msg.Event == "STOP":
			send("query-status")
		case msg.Return != nil:
			var st struct {
				Status  string `json:"status"`
				Running bool   `json:"running"`
			}
			if json.Unmarshal(msg.Return, &st) != nil || st.Status == "" || st.Running {
				continue
			}
			switch st.Status {
			case "shutdown", "prelaunch":
				// QEMU is exiting (-no-reboot, -no-shutdown not given), or
				// has not started the guest yet.
			default:
				stopped(st.Status)
				return
			}
		}
	}
}
