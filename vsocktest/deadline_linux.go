package vsocktest

import (
	"sync"
	"time"
)

// deadline is one read or write deadline of a Conn: a channel that is
// closed once the deadline has passed, replaced whenever it is moved.
type deadline struct {
	mu    sync.Mutex
	timer *time.Timer
	ch    chan struct{}
}

func newDeadline() *deadline { return &deadline{ch: make(chan struct{})} }

// set moves the deadline; the zero time means none.
func (d *deadline) set(t time.Time) {
	d.mu.Lock()
	defer d.mu.Unlock()
	// A timer that cannot be stopped may be about to close the current
	// channel; so may a channel that is already closed. Either way the
	// new deadline gets a fresh channel.
	if d.timer != nil && !d.timer.Stop() || isClosed(d.ch) {
		d.ch = make(chan struct{})
	}
	d.timer = nil
	if t.IsZero() {
		return
	}
	ch := d.ch
	if wait := time.Until(t); wait > 0 {
		d.timer = time.AfterFunc(wait, func() { close(ch) })
		return
	}
	close(ch)
}

// done returns a channel closed when the deadline passes.
func (d *deadline) done() <-chan struct{} {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.ch
}

// expired reports whether the deadline has passed.
func (d *deadline) expired() bool { return isClosed(d.done()) }

func isClosed(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}
