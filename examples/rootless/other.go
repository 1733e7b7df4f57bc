//go:build !linux

// Command rootless needs Linux (see main.go).
package main

import (
	"fmt"
	"os"
)

func main() {
	fmt.Fprintln(os.Stderr, "rootless: vsock namespaces exist only on Linux")
	os.Exit(1)
}
