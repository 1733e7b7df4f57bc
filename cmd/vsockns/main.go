// Command vsockns inspects and uses AF_VSOCK in Linux network namespaces:
// read and set vsock namespace modes, create and delete named namespaces of
// a given mode, list namespaces with their modes, and dial or listen from
// inside a namespace, piping stdin and stdout like `nc --vsock`.
//
//	vsockns mode [--netns NAME|PATH | --pid PID] [--json]
//	vsockns child-mode set local|global [--netns ... | --pid ...] [--init]
//	vsockns add NAME --mode local|global
//	vsockns del NAME
//	vsockns ls [--all] [--json]
//	vsockns dial [--netns ... | --pid ...] [--timeout D] CID PORT
//	vsockns listen [--netns ... | --pid ...] [--keep-open] PORT
//
// Exit status: 0 success, 1 failure, 2 bad usage.
package main

import (
	"os"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}
