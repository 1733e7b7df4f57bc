package vm

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
)

// RequiredModules are the modules every guest loads, in dependency order.
var RequiredModules = []string{
	"vsock",
	"vmw_vsock_virtio_transport_common",
	"vsock_loopback",
	"vhost_iotlb",
	"vhost",
	"vhost_vsock",
	// The sock_diag handler for AF_VSOCK (sock_diag itself is built into
	// Debian's kernels): what lists a namespace's vsock sockets.
	"vsock_diag",
}

// A Kernel is a bootable kernel image and the directory its modules are in.
type Kernel struct {
	Release string // e.g. "7.2.13+deb14-cloud-amd64", read from the image
	Image   string // path of the bzImage
	Modules string // directory searched (recursively) for the modules
}

// Major and Minor are the first two numbers of the release.
func (k Kernel) Version() (major, minor int) {
	m := regexp.MustCompile(`^(\d+)\.(\d+)`).FindStringSubmatch(k.Release)
	if m == nil {
		return 0, 0
	}
	major, _ = strconv.Atoi(m[1])
	minor, _ = strconv.Atoi(m[2])
	return major, minor
}

// HasVsockNamespaces reports whether the kernel is new enough (>= 7.0) to
// have per-namespace vsock modes.
func (k Kernel) HasVsockNamespaces() bool {
	major, _ := k.Version()
	return major >= 7
}

// ModulePath finds the file of module name (.ko, .ko.xz, .ko.zst or .ko.gz).
func (k Kernel) ModulePath(name string) (string, error) {
	var found string
	err := filepath.WalkDir(k.Modules, func(p string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() || found != "" {
			return err
		}
		for _, ext := range []string{".ko", ".ko.xz", ".ko.zst", ".ko.gz"} {
			if d.Name() == name+ext {
				found = p
				return filepath.SkipAll
			}
		}
		return nil
	})
	if err != nil {
		return "", err
	}
	if found == "" {
		return "", fmt.Errorf("module %s not found under %s", name, k.Modules)
	}
	return found, nil
}

// ImageRelease reads the release string out of a bzImage's setup header
// (the kernel_version field, boot protocol >= 2.00).
func ImageRelease(image string) (string, error) {
	f, err := os.Open(image)
	if err != nil {
		return "", err
	}
	defer f.Close()
	hdr := make([]byte, 0x210)
	if _, err := f.ReadAt(hdr, 0); err != nil {
		return "", fmt.Errorf("%s: read setup header: %w", image, err)
	}
	if string(hdr[0x202:0x206]) != "HdrS" {
		return "", fmt.Errorf("%s: not a bzImage (no HdrS magic)", image)
	}
	off := int64(binary.LittleEndian.Uint16(hdr[0x20e:])) + 0x200
	buf := make([]byte, 256)
	n, err := f.ReadAt(buf, off)
	if n == 0 {
		return "", fmt.Errorf("%s: read kernel_version: %w", image, err)
	}
	buf = buf[:n]
	if i := bytes.IndexAny(buf, " \x00"); i > 0 {
		buf = buf[:i]
	}
	return string(buf), nil
}

// ErrNoKernel means no kernel was configured or fetched.
var ErrNoKernel = errors.New("no test kernel: run `make kernel` (or set VSOCKNS_KERNEL=bzImage and VSOCKNS_MODULES=dir)")

// FindKernels returns the kernels to boot: the one VSOCKNS_KERNEL and
// VSOCKNS_MODULES name if set, otherwise the kernels the last `make kernel`
// selected (cacheDir/kernels/selected; every kernel there if that list is
// missing), newest first.
func FindKernels(cacheDir string) ([]Kernel, error) {
	if img := os.Getenv("VSOCKNS_KERNEL"); img != "" {
		mods := os.Getenv("VSOCKNS_MODULES")
		if mods == "" {
			return nil, errors.New("VSOCKNS_KERNEL is set but VSOCKNS_MODULES (the directory with the vsock and vhost modules) is not")
		}
		rel, err := ImageRelease(img)
		if err != nil {
			return nil, err
		}
		return []Kernel{{Release: rel, Image: img, Modules: mods}}, nil
	}
	images, _ := filepath.Glob(filepath.Join(cacheDir, "kernels", "*", "vmlinuz"))
	selected := map[string]bool{}
	if b, err := os.ReadFile(filepath.Join(cacheDir, "kernels", "selected")); err == nil {
		for _, rel := range strings.Fields(string(b)) {
			selected[rel] = true
		}
	}
	var ks []Kernel
	for _, img := range images {
		dir := filepath.Dir(img)
		if len(selected) > 0 && !selected[filepath.Base(dir)] {
			continue // left from an earlier `make kernel`
		}
		if _, err := os.Stat(filepath.Join(dir, ".complete")); err != nil {
			continue
		}
		rel, err := ImageRelease(img)
		if err != nil {
			return nil, err
		}
		ks = append(ks, Kernel{Release: rel, Image: img, Modules: filepath.Join(dir, "modules")})
	}
	if len(ks) == 0 {
		return nil, ErrNoKernel
	}
	sort.Slice(ks, func(i, j int) bool {
		ai, bi := ks[i].Version()
		aj, bj := ks[j].Version()
		if ai != aj {
			return ai > aj
		}
		return bi > bj
	})
	return ks, nil
}
