//go:build linux

// Command guestinit is the /init of the test VM's initramfs. It mounts the
// pseudo file systems, loads the vsock and vhost modules, runs each test
// binary named in the manifest and reports everything on a second serial port
// (/dev/ttyS1) in a line protocol the host side (package vm) reads back.
// Then it powers the VM off. It is built by the host harness; it is not meant
// to run anywhere else.
package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/vsockns/vsockns/internal/vm/proto"
)

func main() {
	if filepath.Base(os.Args[0]) == "modprobe" {
		os.Exit(modprobe(os.Args[1:]))
	}
	console := openConsole()
	report, err := openReport()
	if err != nil {
		// Without its report port the host cannot see anything; say so on
		// the console and stop (the host reports "stopped before /init
		// finished" together with the console).
		fmt.Fprintf(console, "guestinit: %v\n", err)
		_ = unix.Reboot(unix.LINUX_REBOOT_CMD_POWER_OFF)
		return
	}
	go heartbeat()
	if err := run(console, report); err != nil {
		proto.Emit(report, proto.Fatal, err.Error())
		fmt.Fprintf(console, "guestinit: %v\n", err)
	}
	proto.Emit(report, proto.Done, "")
	unix.Sync()
	// Power off; if that fails, returning from PID 1 panics the kernel, which
	// the host reports as a failed run as well.
	_ = unix.Reboot(unix.LINUX_REBOOT_CMD_POWER_OFF)
	select {}
}

func openConsole() io.Writer {
	_ = os.MkdirAll("/dev", 0o755)
	_ = unix.Mount("devtmpfs", "/dev", "devtmpfs", 0, "")
	if f, err := os.OpenFile("/dev/console", os.O_WRONLY, 0); err == nil {
		return f
	}
	return io.Discard
}

// openReport opens the second serial port in raw mode, so that the bytes the
// test binaries write reach the host unchanged.
func openReport() (*os.File, error) {
	f, err := os.OpenFile("/dev/ttyS1", os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		return nil, fmt.Errorf("open report port: %w", err)
	}
	t, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	if err != nil {
		return nil, fmt.Errorf("report port termios: %w", err)
	}
	t.Iflag &^= unix.IGNBRK | unix.BRKINT | unix.PARMRK | unix.ISTRIP | unix.INLCR | unix.IGNCR | unix.ICRNL | unix.IXON
	t.Oflag &^= unix.OPOST
	t.Lflag &^= unix.ECHO | unix.ECHONL | unix.ICANON | unix.ISIG | unix.IEXTEN
	t.Cflag &^= unix.CSIZE | unix.PARENB
	t.Cflag |= unix.CS8
	if err := unix.IoctlSetTermios(int(f.Fd()), unix.TCSETS, t); err != nil {
		return nil, fmt.Errorf("report port raw mode: %w", err)
	}
	return f, nil
}

// heartbeat writes a byte on the third serial port (/dev/ttyS2) every
// second for as long as the guest runs: the host ends a boot whose guest
// falls silent (a paused VM, a hung kernel) instead of waiting for its
// timeout. Without that port it does nothing.
func heartbeat() {
	f, err := os.OpenFile("/dev/ttyS2", os.O_WRONLY|unix.O_NOCTTY, 0)
	if err != nil {
		return
	}
	t := time.NewTicker(time.Second)
	for {
		if _, err := f.Write([]byte{'.'}); err != nil {
			return
		}
		<-t.C
	}
}

func run(console io.Writer, report *os.File) error {
	for _, m := range []struct{ src, dst, typ string }{
		{"proc", "/proc", "proc"},
		{"sysfs", "/sys", "sysfs"},
		{"tmpfs", "/tmp", "tmpfs"},
		{"tmpfs", "/run", "tmpfs"},
	} {
		if err := os.MkdirAll(m.dst, 0o755); err != nil {
			return err
		}
		if err := unix.Mount(m.src, m.dst, m.typ, 0, ""); err != nil {
			return fmt.Errorf("mount %s: %w", m.dst, err)
		}
	}
	var uts unix.Utsname
	if err := unix.Uname(&uts); err != nil {
		return fmt.Errorf("uname: %w", err)
	}
	proto.Emit(report, proto.Uname, unix.ByteSliceToString(uts.Release[:]))

	raw, err := os.ReadFile(proto.ManifestPath)
	if err != nil {
		return fmt.Errorf("read manifest: %w", err)
	}
	var man proto.Manifest
	if err := json.Unmarshal(raw, &man); err != nil {
		return fmt.Errorf("parse manifest: %w", err)
	}

	for _, mod := range man.Modules {
		if err := loadModule(mod); err != nil {
			proto.Emit(report, proto.ModuleError, fmt.Sprintf("%s: %v", filepath.Base(mod), err))
			return fmt.Errorf("load module %s: %w", filepath.Base(mod), err)
		}
		fmt.Fprintf(console, "guestinit: loaded %s\n", filepath.Base(mod))
	}
	proto.Emit(report, proto.Modules, fmt.Sprint(len(man.Modules)))

	for _, r := range man.Runs {
		proto.Emit(report, proto.Begin, r.Name)
		start := time.Now()
		code, err := runBinary(r, man.Env, report)
		msg := fmt.Sprintf("%d %s", code, time.Since(start).Round(time.Millisecond))
		if err != nil {
			msg += " " + err.Error()
		}
		proto.Emit(report, proto.End, msg)
	}
	return nil
}

// modprobe is /init run by the kernel as its module loader
// ("modprobe -q -- net-pf-40"): it loads the module the manifest's Autoload
// maps the last argument to, and fails for anything else.
func modprobe(args []string) int {
	if len(args) == 0 {
		return 1
	}
	raw, err := os.ReadFile(proto.ManifestPath)
	if err != nil {
		return 1
	}
	var man proto.Manifest
	if err := json.Unmarshal(raw, &man); err != nil {
		return 1
	}
	path, ok := man.Autoload[args[len(args)-1]]
	if !ok {
		return 1
	}
	if err := loadModule(path); err != nil {
		return 1
	}
	return 0
}

func loadModule(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	flags := 0
	if strings.HasSuffix(path, ".xz") || strings.HasSuffix(path, ".zst") || strings.HasSuffix(path, ".gz") {
		// The kernel decompresses the module itself (CONFIG_MODULE_DECOMPRESS).
		flags = unix.MODULE_INIT_COMPRESSED_FILE
	}
	err = unix.FinitModule(int(f.Fd()), "", flags)
	if errors.Is(err, unix.EEXIST) {
		return nil // built in or already loaded
	}
	return err
}

func runBinary(r proto.Run, env []string, out *os.File) (int, error) {
	dir := filepath.Join("/tmp/run", filepath.Base(r.Path))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return -1, err
	}
	cmd := exec.Command(r.Path, r.Args...)
	cmd.Dir = dir
	cmd.Env = append([]string{"PATH=/bin", "HOME=/tmp", "TMPDIR=/tmp"}, env...)
	cmd.Stdout = out
	cmd.Stderr = out
	err := cmd.Run()
	if cmd.ProcessState != nil {
		return cmd.ProcessState.ExitCode(), nil
	}
	return -1, err
}
