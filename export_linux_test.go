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

// For the tests of CreateUserNamespace's helper.

// HelperSpecs are the values of HelperEnv the helper's stages take for
// mode m, as startHelper and the helper itself write them.
func HelperSpecs(m Mode) []string {
	return []string{helperSpec(m, stageMap), helperSpec(m, stageMake), helperSpec(m, stageServe)}
}

// HelperRequests is how many requests n has sent its server (0 for a
// namespace this process enters itself).
func HelperRequests(n *Namespace) int64 {
	if n.remote == nil {
		return 0
	}
	return n.remote.requests.Load()
}

// HelperPid is the pid of n's helper process (0 for none).
func HelperPid(n *Namespace) int { return n.helperPid }
