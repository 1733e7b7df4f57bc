//go:build !linux

package nsthread

import "errors"

// ErrRestore is never returned outside Linux.
var ErrRestore = errors.New("could not restore the thread's network namespace; the thread was discarded")

// Run is not supported outside Linux: there are no network namespaces.
func Run(target int, fn func() error) error {
	return errors.ErrUnsupported
}
