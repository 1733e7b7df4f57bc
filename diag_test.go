package vsockns_test

import (
	"encoding/json"
	"errors"
	"syscall"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/vsockns/vsockns"
)

// States and types print as ss(8) prints them, and states parse back.
func TestSocketStateAndTypeNames(t *testing.T) {
	for s, name := range map[vsockns.SocketState]string{
		vsockns.StateConnected: "ESTAB", vsockns.StateConnecting: "SYN-SENT", vsockns.StateUnconnected: "UNCONN",
		vsockns.StateListening: "LISTEN", vsockns.StateClosing: "CLOSING", 0: "state(0)", 12: "state(12)",
	} {
		assert.Equal(t, name, s.String())
		if s != 0 && s < 12 {
			got, err := vsockns.ParseSocketState(name)
			require.NoError(t, err)
			assert.Equal(t, s, got)
		}
	}
	got, err := vsockns.ParseSocketState("listen")
	require.NoError(t, err)
	assert.Equal(t, vsockns.StateListening, got)
	_, err = vsockns.ParseSocketState("state(0)")
	assert.Error(t, err)
	_, err = vsockns.ParseSocketState("UNKNOWN")
	assert.Error(t, err, "0 is no state")

	for typ, names := range map[vsockns.SocketType][2]string{
		vsockns.TypeStream: {"stream", "v_str"}, vsockns.TypeDatagram: {"dgram", "v_dgr"},
		vsockns.TypeSeqpacket: {"seqpacket", "v_seq"}, 9: {"type(9)", "v_9"},
	} {
		assert.Equal(t, names[0], typ.String())
		assert.Equal(t, names[1], typ.NetID())
	}
	b, err := json.Marshal(vsockns.Socket{Type: vsockns.TypeSeqpacket, State: vsockns.StateListening})
	require.NoError(t, err)
	assert.Contains(t, string(b), `"type":"seqpacket","state":"LISTEN"`)
}

// An IncompleteError is ErrIncomplete and each namespace's error, and says
// what is missing.
func TestIncompleteError(t *testing.T) {
	ni := &vsockns.NamespaceInfo{ID: vsockns.NamespaceID{Dev: 4, Ino: 4026532000}, Names: []string{"blue"}}
	err := error(&vsockns.IncompleteError{
		Namespaces: []*vsockns.NamespaceError{{Namespace: ni, Err: syscall.EPERM}},
		UnreadPIDs: []int{1, 2}, Unopened: []int{7},
	})
	assert.ErrorIs(t, err, vsockns.ErrIncomplete)
	assert.ErrorIs(t, err, syscall.EPERM)
	assert.False(t, errors.Is(err, syscall.ENOENT))
	assert.Equal(t, "vsockns: the socket listing is incomplete: 1 namespaces not listed: network namespace blue: "+
		"operation not permitted; the network namespaces of 1 processes could not be opened (pid 7 ...); "+
		"the descriptors of 2 processes could not be read, so owners may be missing (pid 1 ...)", err.Error())
	assert.Equal(t, "net:[4026532000]", (&vsockns.NamespaceInfo{ID: ni.ID}).Name())
	assert.Equal(t, "/run/docker/netns/x", (&vsockns.NamespaceInfo{Paths: []string{"/run/docker/netns/x"}}).Name())
	assert.ErrorIs(t, vsockns.ErrDiagUnavailable, errors.ErrUnsupported)
}
