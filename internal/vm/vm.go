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
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
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
	// (see tcgAccel for why that is not the default); for benchmarks,
	// whose concurrent variants need both vCPUs to run at once.
	ParallelTCG bool
	// QEMU is the qemu-system-x86_64 to run; empty means VSOCKNS_QEMU,
	// else the one on the PATH.
	QEMU string
	// FirstOutput bounds the wait for the guest's first sign of life (a
	// byte on any of its serial ports) and Silence the gap between two
	// (/init writes a heartbeat every second); zero means
	// DefaultFirstOutput and DefaultSilence. A boot past either ends at
	// once, with the reason.
	FirstOutput, Silence time.Duration

	// kvmDevice replaces /dev/kvm and probeTimeout the KVM probe's bound,
	// for tests.
	kvmDevice    string
	probeTimeout time.Duration
}

// The guest's sign-of-life bounds (Config.FirstOutput, Config.Silence).
// Measured under TCG on 2 host cores: the first byte came after 2.9-7.2 s
// in a whole `make test` (three guests side by side), 13.2 s with other
// suites loading the machine too; the heartbeat's longest gap was 1.6 s,
// but a guest was seen held back past 30 s on a host that ran three VM
// suites at once. See docs/testbed.md.
const (
	DefaultFirstOutput = 60 * time.Second
	DefaultSilence     = 60 * time.Second
)

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

	Accel Accel // what the boot ran under
	// Stopped says why the harness ended the boot before the guest did (a
	// paused or silent guest, KVM failing); empty if it did not.
	Stopped string
	// AccelFailed says that Stopped was KVM failing to run the guest.
	AccelFailed bool
	// Retried is the KVM failure that made Boot run this boot again under
	// TCG; empty if it ran once.
	Retried    string
	QEMUOutput []byte // what QEMU wrote on stderr
	// FirstOutput is when the guest's first byte came, and MaxSilence the
	// longest gap between two signs of life after it.
	FirstOutput, MaxSilence time.Duration
}

// Err explains why the boot as a whole failed, or returns nil. It does not
// judge the binaries' exit codes; see RunResult.
func (r *Result) Err() error {
	switch {
	case r.ModuleError != "":
		return fmt.Errorf("guest %s: loading module failed: %s", r.Kernel.Release, r.ModuleError)
	case r.Fatal != "":
		return fmt.Errorf("guest %s: /init failed: %s", r.Kernel.Release, r.Fatal)
	case r.Stopped != "":
		return fmt.Errorf("guest %s: %s%s%s", r.Kernel.Release, r.Stopped, r.lastRunning(), r.qemuSaid())
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

// qemuSaid is QEMU's last stderr lines, if any, for an error message.
func (r *Result) qemuSaid() string {
	if len(bytes.TrimSpace(r.QEMUOutput)) == 0 {
		return ""
	}
	return "\nQEMU said:\n" + tail(r.QEMUOutput, 8)
}

// tail is the last n lines of b.
func tail(b []byte, n int) string {
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

func (r *Result) panicLine() string {
	for _, line := range strings.Split(string(r.Console), "\n") {
		if i := strings.Index(line, "Kernel panic"); i >= 0 {
			return strings.TrimSpace(line[i:])
		}
	}
	return ""
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
