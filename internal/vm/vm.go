// Package vm boots a Linux kernel under QEMU with a small Go /init, runs test
// binaries inside it as root and reports their results back to the host.
//
// The project's kernel-dependent tests (vsock namespaces need Linux >= 7.0,
// and vsock_loopback / vhost_vsock are modules most hosts do not load) run
// there; see TestVM in this package for how the results become host tests.
package vm

import (
	"bufio"
	"bytes"
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

	"github.com/vsockns/vsockns/internal/vm/proto"
)

// A Binary is a static executable to run in the guest.
type Binary struct {
	Name string   // reported name, usually the package import path
	Path string   // on the host
	Args []string // command-line arguments in the guest
}

// Config describes one boot.
type Config struct {
	Kernel   Kernel
	Init     string   // the static guestinit binary
	Binaries []Binary // run in order
	// Commands are static executables copied to /bin/<base name> in the
	// guest (and not run by /init), for tests that run real binaries.
	Commands []string
	// Files are host files copied into the guest at the same paths (the
	// shared libraries of dynamically linked binaries).
	Files []string
	// Modules to load, in order; nil means RequiredModules.
	Modules []string
	// Autoload are modules packed but not loaded: the kernel loads them
	// on demand through /init acting as /sbin/modprobe. Keys are what the
	// kernel asks for (a module name or an alias like "net-pf-40"), values
	// module names.
	Autoload map[string]string
	// Env is added to every binary's environment in the guest.
	Env []string
	// Timeout bounds the whole boot; zero means 10 minutes.
	Timeout time.Duration
	// Console receives the guest's serial console (kernel messages and
	// /init's own lines) and its report port, as they arrive. May be nil.
	Console io.Writer
	// WorkDir holds the initramfs; empty means a temporary directory.
	WorkDir string
	// CPUs and MemoryMB size the guest; zero means 2 and 2048.
	CPUs, MemoryMB int
	// ParallelTCG runs the vCPUs on host threads of their own under TCG
	// (see accelArgs for why that is not the default); for benchmarks,
	// whose concurrent variants need both vCPUs to run at once.
	ParallelTCG bool
}

// RunResult is what one binary did in the guest.
type RunResult struct {
	Name     string
	Output   []byte // everything the binary wrote (its -test.v=test2json stream)
	Ended    bool   // the guest reported the binary's end
	ExitCode int
	Duration time.Duration
	Err      string // the guest could not start it
}

// Result is what one boot produced.
type Result struct {
	Kernel      Kernel
	Uname       string // release the guest reported
	ModulesOK   bool
	ModuleError string
	Fatal       string // /init's own failure
	Done        bool   // /init finished and powered off cleanly
	TimedOut    bool
	Runs        []*RunResult
	Console     []byte // the serial console (ttyS0)
	Elapsed     time.Duration
}

// Err explains why the boot as a whole failed, or returns nil. It does not
// judge the binaries' exit codes; see RunResult.
func (r *Result) Err() error {
	switch {
	case r.ModuleError != "":
		return fmt.Errorf("guest %s: loading module failed: %s", r.Kernel.Release, r.ModuleError)
	case r.Fatal != "":
		return fmt.Errorf("guest %s: /init failed: %s", r.Kernel.Release, r.Fatal)
	case r.TimedOut:
		return fmt.Errorf("guest %s: timed out after %s%s", r.Kernel.Release, r.Elapsed.Round(time.Second), r.lastRunning())
	case !r.Done:
		if line := r.panicLine(); line != "" {
			return fmt.Errorf("guest %s: kernel panic: %s%s", r.Kernel.Release, line, r.lastRunning())
		}
		return fmt.Errorf("guest %s: stopped before /init finished%s", r.Kernel.Release, r.lastRunning())
	}
	return nil
}

func (r *Result) lastRunning() string {
	if n := len(r.Runs); n > 0 && !r.Runs[n-1].Ended {
		return " (while running " + r.Runs[n-1].Name + ")"
	}
	return ""
}

func (r *Result) panicLine() string {
	for _, line := range strings.Split(string(r.Console), "\n") {
		if i := strings.Index(line, "Kernel panic"); i >= 0 {
			return strings.TrimSpace(line[i:])
		}
	}
	return ""
}

// QEMU returns the path of qemu-system-x86_64, or an error saying how to get it.
func QEMU() (string, error) {
	p, err := exec.LookPath("qemu-system-x86_64")
	if err != nil {
		return "", errors.New("qemu-system-x86_64 not found: install it (Debian: apt-get install qemu-system-x86), or run `make test` as root, which does")
	}
	return p, nil
}

// Boot builds the initramfs for cfg, boots it and collects the result. The
// returned error is for failures on the host (no QEMU, unreadable files);
// what went wrong in the guest is in the Result.
func Boot(ctx context.Context, cfg Config) (*Result, error) {
	qemu, err := QEMU()
	if err != nil {
		return nil, err
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
	work := cfg.WorkDir
	if work == "" {
		if work, err = os.MkdirTemp("", "vsockns-vm-"); err != nil {
			return nil, err
		}
		defer os.RemoveAll(work)
	}
	initrd := filepath.Join(work, "initramfs-"+cfg.Kernel.Release+".cpio")
	if err := buildInitramfs(initrd, cfg); err != nil {
		return nil, err
	}

	ctx, cancel := context.WithTimeout(ctx, cfg.Timeout)
	defer cancel()

	conR, conW, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	repR, repW, err := os.Pipe()
	if err != nil {
		conR.Close()
		conW.Close()
		return nil, err
	}
	args := []string{
		"-nodefaults", "-no-user-config", "-display", "none", "-no-reboot",
		"-machine", "q35",
		"-smp", strconv.Itoa(cfg.CPUs), "-m", strconv.Itoa(cfg.MemoryMB),
		"-kernel", cfg.Kernel.Image, "-initrd", initrd,
		"-append", "console=ttyS0 panic=-1 loglevel=4 rdinit=/init",
		// ttyS0: console; ttyS1: the report port (fds 3 and 4 below).
		"-serial", "file:/dev/fd/3", "-serial", "file:/dev/fd/4",
	}
	accel := accelArgs(qemu)
	if cfg.ParallelTCG && accel[1] == tcgSingle {
		accel = append([]string{"-accel", "tcg,thread=multi"}, accel[2:]...)
	}
	args = append(args, accel...)
	cmd := exec.CommandContext(ctx, qemu, args...)
	cmd.ExtraFiles = []*os.File{conW, repW}
	var qemuErr bytes.Buffer
	cmd.Stdout = &qemuErr
	cmd.Stderr = &qemuErr
	cmd.WaitDelay = 5 * time.Second
	start := time.Now()
	if err := cmd.Start(); err != nil {
		conR.Close()
		conW.Close()
		repR.Close()
		repW.Close()
		return nil, fmt.Errorf("start qemu: %w", err)
	}
	conW.Close()
	repW.Close()

	res := &Result{Kernel: cfg.Kernel}
	var (
		wg  sync.WaitGroup
		mu  sync.Mutex // serialises writes to cfg.Console
		con bytes.Buffer
	)
	wg.Add(2)
	go func() {
		defer wg.Done()
		sc := bufio.NewScanner(conR)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			line := strings.TrimRight(sc.Text(), "\r")
			con.WriteString(line + "\n")
			mu.Lock()
			fmt.Fprintf(cfg.Console, "[%s console] %s\n", cfg.Kernel.Release, line)
			mu.Unlock()
		}
	}()
	go func() {
		defer wg.Done()
		readReport(repR, res, func(line string) {
			mu.Lock()
			fmt.Fprintf(cfg.Console, "[%s] %s\n", cfg.Kernel.Release, line)
			mu.Unlock()
		})
	}()
	waitErr := cmd.Wait()
	wg.Wait()
	conR.Close()
	repR.Close()
	res.Elapsed = time.Since(start)
	res.Console = con.Bytes()
	if ctx.Err() != nil && !res.Done {
		res.TimedOut = true
	}
	if waitErr != nil && !res.TimedOut && !res.Done && len(res.Console) == 0 {
		return res, fmt.Errorf("qemu: %v: %s", waitErr, strings.TrimSpace(qemuErr.String()))
	}
	return res, nil
}

// readReport parses the report port until EOF.
func readReport(r io.Reader, res *Result, echo func(string)) {
	var cur *RunResult
	br := bufio.NewReaderSize(r, 64<<10)
	for {
		line, err := br.ReadString('\n')
		if line != "" {
			trimmed := strings.TrimRight(line, "\r\n")
			if kw, arg, ok := proto.Parse(trimmed); ok {
				echo(kw + " " + arg)
				switch kw {
				case proto.Uname:
					res.Uname = arg
				case proto.ModuleError:
					res.ModuleError = arg
				case proto.Modules:
					res.ModulesOK = true
				case proto.Fatal:
					res.Fatal = arg
				case proto.Done:
					res.Done = true
				case proto.Begin:
					cur = &RunResult{Name: arg}
					res.Runs = append(res.Runs, cur)
				case proto.End:
					if cur != nil {
						cur.Ended = true
						f := strings.SplitN(arg, " ", 3)
						cur.ExitCode, _ = strconv.Atoi(f[0])
						if len(f) > 1 {
							cur.Duration, _ = time.ParseDuration(f[1])
						}
						if len(f) > 2 {
							cur.Err = f[2]
						}
						cur = nil
					}
				}
			} else if cur != nil {
				cur.Output = append(cur.Output, line...)
				if strings.TrimSpace(trimmed) != "" {
					echo(strings.ReplaceAll(trimmed, "\x16", ""))
				}
			}
		}
		if err != nil {
			return
		}
	}
}

// accelArgs picks the accelerator: KVM where it actually works (a paused
// QEMU with -accel kvm -cpu host starts and quits cleanly; nested set-ups
// often expose /dev/kvm yet fail at CPU reset), TCG otherwise.
// VSOCKNS_ACCEL=tcg or =kvm overrides the probe.
//
// TCG runs single-threaded (both vCPUs on one host thread): multi-threaded
// TCG sometimes crashed the 7.2 guest during early boot (an int3 Oops in
// the kernel's cross-CPU code patching), and one thread per VM lets two
// VMs run side by side on a 2-core machine.
func accelArgs(qemu string) []string {
	accelOnce.Do(func() {
		accel = []string{"-accel", tcgSingle, "-cpu", "max"}
		switch os.Getenv("VSOCKNS_ACCEL") {
		case "tcg":
			return
		case "kvm":
			accel = []string{"-accel", "kvm", "-cpu", "host"}
			return
		}
		if f, err := os.OpenFile("/dev/kvm", os.O_RDWR, 0); err != nil {
			return
		} else {
			f.Close()
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		probe := exec.CommandContext(ctx, qemu, "-nodefaults", "-no-user-config", "-display", "none",
			"-machine", "q35", "-accel", "kvm", "-cpu", "host", "-S", "-monitor", "stdio")
		probe.Stdin = strings.NewReader("quit\n")
		if probe.Run() == nil {
			accel = []string{"-accel", "kvm", "-cpu", "host"}
		}
	})
	return accel
}

var (
	accelOnce sync.Once
	accel     []string
)

const tcgSingle = "tcg,thread=single"

func buildInitramfs(path string, cfg Config) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	w := bufio.NewWriterSize(f, 1<<20)
	c := newCPIOWriter(w)
	add := func(dst, src string) error {
		data, err := os.ReadFile(src)
		if err != nil {
			return err
		}
		c.File(dst, 0o755, data)
		return nil
	}
	if err := add("init", cfg.Init); err != nil {
		f.Close()
		return fmt.Errorf("initramfs: %w", err)
	}
	var man proto.Manifest
	man.Env = cfg.Env
	mods := cfg.Modules
	if mods == nil {
		mods = RequiredModules
	}
	for _, m := range mods {
		src, err := cfg.Kernel.ModulePath(m)
		if err != nil {
			// Still boot: the guest reports the missing module, so that a
			// broken kernel directory fails the run the same way a module
			// the kernel rejects does.
			man.Modules = append(man.Modules, "/lib/vsockns/"+m+".ko")
			continue
		}
		dst := "/lib/vsockns/" + filepath.Base(src)
		if err := add(dst, src); err != nil {
			f.Close()
			return fmt.Errorf("initramfs: %w", err)
		}
		man.Modules = append(man.Modules, dst)
	}
	if len(cfg.Autoload) > 0 {
		if err := add(strings.TrimPrefix(proto.ModprobePath, "/"), cfg.Init); err != nil {
			f.Close()
			return fmt.Errorf("initramfs: %w", err)
		}
		man.Autoload = map[string]string{}
		for alias, m := range cfg.Autoload {
			src, err := cfg.Kernel.ModulePath(m)
			if err != nil {
				f.Close()
				return fmt.Errorf("initramfs: autoload %s: %w", m, err)
			}
			dst := "/lib/vsockns/autoload/" + filepath.Base(src)
			if err := add(dst, src); err != nil {
				f.Close()
				return fmt.Errorf("initramfs: %w", err)
			}
			man.Autoload[alias] = dst
		}
	}
	for i, b := range cfg.Binaries {
		dst := fmt.Sprintf("/bin/%02d-%s", i, filepath.Base(b.Path))
		if err := add(dst, b.Path); err != nil {
			f.Close()
			return fmt.Errorf("initramfs: %w", err)
		}
		man.Runs = append(man.Runs, proto.Run{Name: b.Name, Path: dst, Args: b.Args})
	}
	for _, p := range cfg.Commands {
		if err := add("/bin/"+filepath.Base(p), p); err != nil {
			f.Close()
			return fmt.Errorf("initramfs: %w", err)
		}
	}
	for _, p := range cfg.Files {
		if err := add(strings.TrimPrefix(p, "/"), p); err != nil {
			f.Close()
			return fmt.Errorf("initramfs: %w", err)
		}
	}
	mj, err := json.Marshal(man)
	if err != nil {
		f.Close()
		return err
	}
	c.File(proto.ManifestPath, 0o644, mj)
	c.Mkdir("dev")
	c.Mkdir("tmp")
	if err := c.Close(); err != nil {
		f.Close()
		return err
	}
	if err := w.Flush(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
