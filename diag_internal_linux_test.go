//go:build linux

package vsockns

import (
	"encoding/binary"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// The nsfs mounts of a mountinfo table, escapes undone; other file
// systems and malformed lines are not.
func TestNsfsMount(t *testing.T) {
	for line, want := range map[string]string{
		"1016 30 0:4 net:[4026532209] /run/netns/blue rw shared:5 - nsfs nsfs rw":       "/run/netns/blue",
		"1017 30 0:4 net:[4026532209] /run/docker/netns/a\\040b rw - nsfs nsfs rw":      "/run/docker/netns/a b",
		"1018 30 0:4 net:[4026532209] /tmp/x\\134y rw master:1 shared:2 - nsfs nsfs rw": "/tmp/x\\y",
		"25 30 0:23 / /proc rw,nosuid shared:12 - proc proc rw":                         "",
		"garbage":      "",
		"1 2 3 4 5 - ": "",
		"1019 30 0:4 net:[1] /tmp/trailing\\04 rw - nsfs nsfs rw": "/tmp/trailing\\04",
	} {
		got, ok := nsfsMount(line)
		assert.Equal(t, want != "", ok, line)
		assert.Equal(t, want, got, line)
	}
}

func TestLinkInode(t *testing.T) {
	for link, want := range map[string]uint64{"socket:[123]": 123, "socket:[]": 0, "socket:[12a]": 0, "pipe:[5]": 0, "socket:[7": 0} {
		got, ok := linkInode([]byte(link), "socket:[")
		assert.Equal(t, want != 0, ok, link)
		assert.Equal(t, want, got, link)
	}
}

// A struct vsock_diag_msg decodes field by field; a short one or another
// family is an error.
func TestParseDiagMsg(t *testing.T) {
	b := make([]byte, diagMsgLen)
	b[0], b[1], b[2], b[3] = unix.AF_VSOCK, 5, 10, 3
	for i, v := range []uint32{1, 1234, ^uint32(0), ^uint32(0), 98765, 0x11223344, 0x55667788} {
		binary.NativeEndian.PutUint32(b[4+4*i:], v)
	}
	s, err := parseDiagMsg(b)
	require.NoError(t, err)
	assert.Equal(t, TypeSeqpacket, s.Type)
	assert.Equal(t, StateListening, s.State)
	assert.Equal(t, uint8(3), s.Shutdown)
	assert.Equal(t, uint32(1), s.Local.ContextID)
	assert.Equal(t, uint32(1234), s.Local.Port)
	assert.Equal(t, ^uint32(0), s.Remote.ContextID)
	assert.Equal(t, uint64(98765), s.Inode)
	assert.Equal(t, uint64(0x5566778811223344), s.Cookie)
	_, err = parseDiagMsg(b[:diagMsgLen-1])
	assert.Error(t, err)
	b[0] = unix.AF_INET
	_, err = parseDiagMsg(b)
	assert.Error(t, err)
}
