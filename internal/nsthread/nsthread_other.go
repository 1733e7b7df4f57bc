//go:build !linux

package nsthread

import (
	"context"
	"errors"
)

// ErrRestore is never returned outside Linux.
var ErrRestore = errors.New("could not restore the thread's network namespace; the thread was discarded")

// ErrGoexit is never returned outside Linux.
var ErrGoexit = errors.New("the function run in the namespace called runtime.Goexit; its thread was discarded")

// A Target is a network namespace; outside Linux there are none.
type Target struct{}

// Caller is the calling thread's network namespace.
func Caller() Target { return Target{} }

// FD is the network namespace fd refers to.
func FD(int) Target { return Target{} }

// A Pool bounds concurrent Runs.
type Pool struct{}

// Short and Long are the pools of Linux; unused elsewhere.
var Short, Long = &Pool{}, &Pool{}

// Run is not supported outside Linux: there are no network namespaces.
func Run(context.Context, *Pool, Target, func() error) error {
	return errors.ErrUnsupported
}
