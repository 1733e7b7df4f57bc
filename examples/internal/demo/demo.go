// Package demo prints the examples' narration and their checks in one
// format, which `make demo` collects into its summary table.
package demo

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"syscall"
)

// Prefix starts every check line; `make demo` looks for it.
const Prefix = "CHECK\t"

var failed bool

// Title prints the scenario's heading.
func Title(s string) {
	fmt.Printf("\n== %s\n", s)
}

// Step prints one line of narration.
func Step(format string, a ...any) {
	fmt.Printf("   %s\n", fmt.Sprintf(format, a...))
}

// Check records whether what was observed is what the scenario expects:
// a readable line, and a tab-separated one for the summary table.
func Check(scenario, expected, observed string, ok bool) {
	mark := "ok"
	if !ok {
		mark = "UNEXPECTED"
		failed = true
	}
	fmt.Printf("   -> %s: expected %s, observed %s [%s]\n", scenario, expected, observed, mark)
	fmt.Printf("%s%s\t%s\t%s\t%s\n", Prefix, scenario, expected, clean(observed), mark)
}

// Outcome describes a dial's result in a few words: "connected", or the
// errno's own text (what nc would print), or the whole error.
func Outcome(err error) string { return Result(err, "connected") }

// Result is okWord if err is nil, else the errno's text or the error.
func Result(err error, okWord string) string {
	if err == nil {
		return okWord
	}
	var errno syscall.Errno
	if errors.As(err, &errno) {
		return errno.Error()
	}
	return err.Error()
}

func clean(s string) string { return strings.NewReplacer("\t", " ", "\n", " ").Replace(s) }

// Fatal reports an error that stops the example.
func Fatal(err error) {
	fmt.Fprintln(os.Stderr, "error:", err)
	os.Exit(1)
}

// Exit ends the example: status 1 if any check was unexpected.
func Exit() {
	if failed {
		os.Exit(1)
	}
	os.Exit(0)
}
