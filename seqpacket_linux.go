//go:build linux

package vsockns

import (
	"context"
	"errors"
	"os"
	"runtime"
	"time"

	"github.com/mdlayher/socket"
	"golang.org/x/sys/unix"
)

// SOCK_SEQPACKET connections read through the network poller but write
// with one blocking sendmsg(2) per message.
//
// The reason is the kernel's: a vsock SOCK_SEQPACKET sendmsg that finds
// room in the peer's buffer for part of its message sends that part, and
// if it then cannot wait (a non-blocking socket) or is interrupted, fails
// without taking it back. Tried again, as a poller-driven write is once the
// socket is writable, the whole message follows the part already sent,
// and the peer reads the two as one message (measured on 6.1, 7.2 and 7.3:
// a 100 KiB message after two others in a 256 KiB buffer arrived as
// 159744 bytes; TestSeqpacketMessagesLargerThanFreeSpace). A blocking
// sendmsg waits for room until the whole message is out.
//
// So a SOCK_SEQPACKET Conn's file description is blocking; reads pass
// MSG_DONTWAIT and wait in the poller as ever. A write runs on a locked
// thread with signals blocked (an interrupted write would be restarted
// from the start of its message, or fail after part of it), bounded by
// SO_SNDTIMEO from the write deadline. Close shuts the socket down first,
// which ends a write still waiting. What cannot be blocked, SIGSTOP and
// SIGKILL, can still cut a message: the write reports it (ErrMessageCut).

// seqpacketBlocking makes c's file description blocking (see above).
func seqpacketBlocking(c *socket.Conn) error {
	return control(c, "fcntl", func(fd int) error { return unix.SetNonblock(fd, false) })
}

// recvmsg reads one message without blocking in the kernel.
func (c *Conn) recvmsg(b []byte) (n, flags int, err error) {
	if len(b) == 0 {
		return 0, 0, nil // as package net: an empty read reads nothing
	}
	n, _, flags, _, err = c.c.Recvmsg(context.Background(), b, nil, unix.MSG_DONTWAIT)
	if err != nil {
		// The system call's -1 comes through on error: a Read returns
		// 0 <= n <= len(b), whatever happened.
		return 0, 0, err
	}
	return n, flags, nil
}

// noTimeout is the send timeout of a write without a deadline: finite, so
// that an interrupted wait in the kernel fails with EINTR instead of being
// restarted from the start of the message.
const noTimeout = 365 * 24 * time.Hour

// sendmsg sends b as one message (see above).
func (c *Conn) sendmsg(b []byte, flags int) (int, error) {
	if cut := c.cut.Load(); cut != nil {
		return 0, *cut
	}
	rc, err := c.c.SyscallConn()
	if err != nil {
		return 0, err
	}
	var (
		n    int
		serr error
	)
	// rc.Write holds the descriptor's write lock: writes are serialised,
	// and each sets the socket's send timeout for itself.
	err = rc.Write(func(fd uintptr) bool {
		timeout := noTimeout
		if d := c.writeDeadline.Load(); d != 0 {
			timeout = time.Until(time.Unix(0, d))
			if timeout <= 0 {
				serr = os.ErrDeadlineExceeded
				return true
			}
		}
		// Without a deadline the timeout is the same every time: set it
		// once, not before each message.
		if timeout != noTimeout || !c.sndTimeoutSet.Load() {
			tv := unix.NsecToTimeval(timeout.Nanoseconds())
			if err := unix.SetsockoptTimeval(int(fd), unix.SOL_SOCKET, unix.SO_SNDTIMEO, &tv); err != nil {
				serr = os.NewSyscallError("setsockopt", err)
				return true
			}
			c.sndTimeoutSet.Store(timeout == noTimeout)
		}
		n, serr = sendBlocking(int(fd), b, flags)
		return true
	})
	if err != nil {
		return 0, err
	}
	switch {
	case serr == nil:
		return n, nil
	case errors.Is(serr, unix.EAGAIN):
		// SO_SNDTIMEO passed: the deadline.
		err = &messageCut{os.ErrDeadlineExceeded}
	case errors.Is(serr, unix.EINTR):
		err = &messageCut{os.NewSyscallError("sendmsg", serr)}
	case errors.Is(serr, unix.ENOMEM):
		// Linux 6.1 reports every refusal of the transport so, a message
		// larger than the peer's buffer included (7.x: EMSGSIZE).
		return 0, &explained{os.NewSyscallError("sendmsg", serr), "the transport refused the message (Linux 6.1's error, too, for a message larger than either end's receive buffer)", nil}
	default:
		return 0, os.NewSyscallError("sendmsg", serr)
	}
	later := error(&explained{unix.EPIPE, ErrMessageCut.Error(), ErrMessageCut})
	c.cut.CompareAndSwap(nil, &later)
	return 0, err
}

// messageCut is a write's error when its message may have been cut: a
// timeout (net.Error) if the deadline ended it.
type messageCut struct{ err error }

func (e *messageCut) Error() string   { return e.err.Error() + ": " + ErrMessageCut.Error() }
func (e *messageCut) Unwrap() []error { return []error{e.err, ErrMessageCut} }
func (e *messageCut) Timeout() bool   { return errors.Is(e.err, os.ErrDeadlineExceeded) }

// sendBlocking is one blocking sendmsg(2) on a locked thread with every
// signal that can be blocked blocked.
func sendBlocking(fd int, b []byte, flags int) (int, error) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	var old unix.Sigset_t
	if err := unix.PthreadSigmask(unix.SIG_SETMASK, &allSignals, &old); err != nil {
		return 0, os.NewSyscallError("rt_sigprocmask", err)
	}
	defer unix.PthreadSigmask(unix.SIG_SETMASK, &old, nil)
	return unix.SendmsgN(fd, b, nil, nil, flags)
}

// allSignals is the set of every signal (the kernel leaves SIGKILL and
// SIGSTOP out of a mask).
var allSignals = func() (s unix.Sigset_t) {
	for i := range s.Val {
		s.Val[i] = ^s.Val[i] // the element's width differs by architecture
	}
	return s
}()

// unixNano is a deadline as stored (0: none).
func unixNano(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixNano()
}
