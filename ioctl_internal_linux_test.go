//go:build linux && amd64

package vsockns

import "testing"

// The computed vhost ioctl numbers are those of linux/vhost.h on x86-64.
func TestVhostIoctlNumbers(t *testing.T) {
	for _, tc := range []struct {
		name      string
		got, want uintptr
	}{
		{"VHOST_SET_OWNER", vhostSetOwner, 0xaf01},
		{"VHOST_GET_FEATURES", vhostGetFeatures, 0x8008af00},
		{"VHOST_SET_FEATURES", vhostSetFeatures, 0x4008af00},
		{"VHOST_SET_MEM_TABLE", vhostSetMemTable, 0x4008af03},
		{"VHOST_SET_VRING_NUM", vhostSetVringNum, 0x4008af10},
		{"VHOST_SET_VRING_ADDR", vhostSetVringAddr, 0x4028af11},
		{"VHOST_SET_VRING_BASE", vhostSetVringBase, 0x4008af12},
		{"VHOST_SET_VRING_KICK", vhostSetVringKick, 0x4008af20},
		{"VHOST_SET_VRING_CALL", vhostSetVringCall, 0x4008af21},
		{"VHOST_VSOCK_SET_GUEST_CID", vhostVsockSetGuestCID, 0x4008af60},
		{"VHOST_VSOCK_SET_RUNNING", vhostVsockSetRunning, 0x4004af61},
	} {
		if tc.got != tc.want {
			t.Errorf("%s = %#x, want %#x", tc.name, tc.got, tc.want)
		}
	}
}
