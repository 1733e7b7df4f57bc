// Package proto is the small contract between the host harness (package vm)
// and the guest's /init: the manifest the host packs into the initramfs and
// the line protocol the guest writes on its report port.
//
// Every control line starts with the byte 0x16 (^V), the same framing marker
// `go test -test.v=test2json` puts before its own framing lines, followed by
// "VSOCKNS " and a keyword. Everything else on the port is a test binary's
// output.
package proto

import (
	"fmt"
	"io"
	"strings"
)

// ManifestPath is where the manifest sits inside the initramfs.
const ManifestPath = "/vsockns/manifest.json"

// Manifest tells the guest what to load and run.
type Manifest struct {
	// Modules are paths inside the initramfs, loaded in this order.
	Modules []string `json:"modules"`
	// Env is added to every run's environment.
	Env []string `json:"env"`
	// Runs are executed one after the other.
	Runs []Run `json:"runs"`
	// Autoload maps the names the kernel asks modprobe for (module names
	// and aliases such as "net-pf-40") to module paths inside the
	// initramfs that are not loaded at boot: /init, as /sbin/modprobe,
	// loads them on the kernel's request.
	Autoload map[string]string `json:"autoload,omitempty"`
}

// ModprobePath is where the guest's /init is installed a second time, as
// the kernel's module loader (/proc/sys/kernel/modprobe's default).
const ModprobePath = "/sbin/modprobe"

// Run is one binary to execute in the guest.
type Run struct {
	Name string   `json:"name"` // the package import path, for the report
	Path string   `json:"path"` // inside the initramfs
	Args []string `json:"args"`
}

// Keywords of the control lines.
const (
	Uname       = "uname"        // the guest kernel's release
	ModuleError = "module-error" // "<module>: <error>"
	Modules     = "modules"      // all modules loaded: "<count>"
	Begin       = "begin"        // "<run name>": output of that run follows
	End         = "end"          // "<exit code> <duration> [error]"
	Fatal       = "fatal"        // /init could not go on: "<error>"
	Done        = "done"         // /init finished and powers off
)

const prefix = "\x16VSOCKNS "

// Emit writes one control line.
func Emit(w io.Writer, keyword, arg string) {
	fmt.Fprintf(w, "\n%s%s %s\n", prefix, keyword, strings.ReplaceAll(arg, "\n", " "))
}

// Parse reports whether line is a control line, and its keyword and argument.
func Parse(line string) (keyword, arg string, ok bool) {
	rest, ok := strings.CutPrefix(line, prefix)
	if !ok {
		return "", "", false
	}
	keyword, arg, _ = strings.Cut(rest, " ")
	return keyword, arg, true
}
