//go:build linux

package vsockns_test

import (
	"github.com/vsockns/vsockns/internal/testenv"
)

// The shared test helpers, under the short names these tests use.
var (
	needVsock             = testenv.NeedVsock
	namespacesExpected    = testenv.NamespacesExpected
	newNS                 = testenv.NewNS
	nsOfMode              = testenv.NSOfMode
	plainNS               = testenv.PlainNS
	newPlainNS            = testenv.NewPlainNS
	requireAllThreadsHome = testenv.RequireAllThreadsHome
	echoServer            = testenv.EchoServer
	roundTrip             = testenv.RoundTrip
)

const (
	runInVM      = testenv.RunInVM
	closedHandle = testenv.ClosedHandle
)
