//go:build linux

package vsockns

import "time"

// For the tests of sockets made ahead (Namespace.Prepare).

// ReadyStats is n's store for stream (or SOCK_SEQPACKET) sockets: how many
// it holds, how many it has made and in how many switches.
func ReadyStats(n *Namespace, seqpacket bool) (held, made, batches int) {
	t := typeStream
	if seqpacket {
		t = typeSeqpacket
	}
	return n.readyStats(t)
}

// ReadyHeld is what all stores hold; ReadyLimit their bound.
func ReadyHeld() int64  { return readyHeld.Load() }
func ReadyLimit() int64 { return readyLimit() }

// SetReadyIdle changes how long an untouched store keeps its sockets, and
// returns the old value.
func SetReadyIdle(d time.Duration) time.Duration {
	return time.Duration(readyIdle.Swap(int64(d)))
}
