package vm

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// ModuleRoot returns the directory of the main module's go.mod.
func ModuleRoot() (string, error) {
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w", err)
	}
	mod := strings.TrimSpace(string(out))
	if mod == "" || mod == os.DevNull {
		return "", fmt.Errorf("not inside a Go module")
	}
	return filepath.Dir(mod), nil
}

// GuestPackages lists the module's packages that have tests, except the
// harness itself (it runs on the host).
func GuestPackages(root string) ([]string, error) {
	cmd := exec.Command("go", "list", "-f", "{{if or .TestGoFiles .XTestGoFiles}}{{.ImportPath}}{{end}}", "./...")
	cmd.Dir = root
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("go list: %w%s", err, stderrOf(err))
	}
	var pkgs []string
	for _, p := range strings.Fields(string(out)) {
		if strings.Contains(p, "/internal/vm") {
			continue
		}
		pkgs = append(pkgs, p)
	}
	return pkgs, nil
}

// BuildInit builds the guest's /init statically into dir.
func BuildInit(root, dir string) (string, error) {
	out := filepath.Join(dir, "init")
	return out, goBuild(root, "build", "-o", out, "./internal/vm/guestinit")
}

// BuildTests compiles each package's test binary statically into dir. args
// are the arguments each binary gets in the guest.
func BuildTests(root, dir string, pkgs []string, args []string) ([]Binary, error) {
	var bins []Binary
	for _, p := range pkgs {
		out := filepath.Join(dir, strings.ReplaceAll(strings.TrimPrefix(p, "github.com/"), "/", "_")+".test")
		if err := goBuild(root, "test", "-c", "-o", out, p); err != nil {
			return nil, err
		}
		bins = append(bins, Binary{Name: p, Path: out, Args: args})
	}
	return bins, nil
}

// BuildRaceTests compiles each package's test binary with the race
// detector into dir. Those binaries need cgo, so they are dynamically
// linked: RaceLibraries lists what the guest must have for them.
func BuildRaceTests(root, dir string, pkgs []string, args []string) ([]Binary, error) {
	var bins []Binary
	for _, p := range pkgs {
		out := filepath.Join(dir, strings.ReplaceAll(strings.TrimPrefix(p, "github.com/"), "/", "_")+".race.test")
		if err := goBuildEnv(root, []string{"CGO_ENABLED=1"}, "test", "-race", "-c", "-o", out, p); err != nil {
			return nil, err
		}
		bins = append(bins, Binary{Name: p + "/race", Path: out, Args: args})
	}
	return bins, nil
}

// RaceLibraries returns the shared libraries (and the dynamic loader) that
// the binary at path loads, by the paths it loads them from, as ldd(1)
// reports them.
func RaceLibraries(path string) ([]string, error) {
	out, err := exec.Command("ldd", path).Output()
	if err != nil {
		return nil, fmt.Errorf("ldd %s: %w%s", path, err, stderrOf(err))
	}
	var libs []string
	for _, line := range strings.Split(string(out), "\n") {
		f := strings.Fields(line)
		switch {
		case len(f) >= 3 && f[1] == "=>" && strings.HasPrefix(f[2], "/"):
			libs = append(libs, f[2]) // libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)
		case len(f) >= 1 && strings.HasPrefix(f[0], "/"):
			libs = append(libs, f[0]) // /lib64/ld-linux-x86-64.so.2 (0x...)
		}
	}
	if len(libs) == 0 {
		return nil, fmt.Errorf("ldd %s: no libraries listed (a static binary?)", path)
	}
	return libs, nil
}

// BuildCommand builds a main package statically into dir.
func BuildCommand(root, dir, pkg string) (string, error) {
	out := filepath.Join(dir, filepath.Base(pkg))
	return out, goBuild(root, "build", "-o", out, pkg)
}

func goBuild(root string, args ...string) error {
	return goBuildEnv(root, []string{"CGO_ENABLED=0"}, args...)
}

func goBuildEnv(root string, env []string, args ...string) error {
	cmd := exec.Command("go", args...)
	cmd.Dir = root
	cmd.Env = append(append(os.Environ(), "GOOS=linux", "GOARCH=amd64"), env...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("go %s: %w\n%s", strings.Join(args, " "), err, stderr.String())
	}
	return nil
}

func stderrOf(err error) string {
	if ee, ok := err.(*exec.ExitError); ok && len(ee.Stderr) > 0 {
		return "\n" + string(ee.Stderr)
	}
	return ""
}
