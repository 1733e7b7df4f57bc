//go:build !linux

// Command vmm needs Linux (see main.go).
package main

import (
	"fmt"
	"os"
)

func main() {
	fmt.Fprintln(os.Stderr, "vmm: vsock namespaces exist only on Linux")
	os.Exit(1)
}
