// Package vsocktest plays the guest side of a vhost-vsock device inside a
// test process, so that host code that dials or serves VMs over vsock can be
// tested against a "guest" without booting one.
//
// NewGuest opens /dev/vhost-vsock in a network namespace (through
// vsockns.OpenVhost), gives the device memory the package maps itself, sets
// up its RX and TX virtqueues, claims the guest CID and starts it. The
// package then speaks the virtio-vsock stream protocol for the guest
// (REQUEST, RESPONSE, RW, CREDIT_UPDATE, CREDIT_REQUEST, SHUTDOWN, RST,
// with credit accounting both ways): host sockets connect to the guest's
// CID and reach Guest.Listen's listeners, and Guest.Dial connects from the
// guest to host listeners on CID 2.
//
// What it covers: stream connections between host sockets and the guest,
// in whatever namespace the device lives, with the namespace rules the
// kernel applies to vhost-vsock. What it does not: SOCK_SEQPACKET and
// datagrams, the event virtqueue (transport resets), and anything a real
// guest kernel does beyond the wire protocol. It needs Linux, root (or
// access to /dev/vhost-vsock) and the vhost_vsock module; production code
// never needs it.
package vsocktest
