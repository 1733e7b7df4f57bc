package vsockns_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"testing"

	"github.com/mdlayher/vsock"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/vsockns/vsockns"
)

func TestParseAddr(t *testing.T) {
	for in, want := range map[string]vsock.Addr{
		"3:1024":              {ContextID: 3, Port: 1024},
		"vsock://42:80":       {ContextID: 42, Port: 80},
		"host:22":             {ContextID: vsock.Host, Port: 22},
		"local:1":             {ContextID: vsock.Local, Port: 1},
		"hypervisor:5":        {ContextID: vsock.Hypervisor, Port: 5},
		":8080":               {ContextID: 0xffffffff, Port: 8080},
		"4294967295:0":        {ContextID: 0xffffffff, Port: 0},
		"vm(42):1024":         {ContextID: 42, Port: 1024},
		"host(2):4294967295":  {ContextID: 2, Port: 0xffffffff},
		"vsock://local(1):99": {ContextID: 1, Port: 99},
	} {
		got, err := vsockns.ParseAddr(in)
		require.NoError(t, err, in)
		assert.Equal(t, want, *got, in)
	}
	for _, bad := range []string{"", "3", "3:", ":", "x:1", "3:x", "3:-1", "-1:3", "4294967296:1",
		"3:4294967296", "vm(x):1", "vm(3:1", "pc(3):1", "3:1:2", "vsock:/3:1", " 3:1",
		// The name must be the one (*vsock.Addr).String gives the number.
		"vm():1", "host(7):1", "local(2):1", "vm(2):1", "hypervisor(1):5", "host():1", "vm(-3):1"} {
		_, err := vsockns.ParseAddr(bad)
		var ae *vsockns.AddrError
		require.ErrorAs(t, err, &ae, "%q", bad)
		assert.Equal(t, bad, ae.Address)
	}
}

// Addresses printed by mdlayher/vsock parse back to the same value.
func TestParseAddrRoundTrip(t *testing.T) {
	for _, a := range []vsock.Addr{{ContextID: 0, Port: 1}, {ContextID: 1, Port: 2}, {ContextID: 2, Port: 3}, {ContextID: 77, Port: 4}} {
		got, err := vsockns.ParseAddr(a.String())
		require.NoError(t, err, a.String())
		assert.Equal(t, a, *got)
	}
}

// Bad input to the net-style entry points is reported before any socket
// exists, as *net.OpError values, on every platform.
func TestDialerRejectsBadInput(t *testing.T) {
	var d vsockns.Dialer
	for _, tc := range []struct{ network, address string }{
		{"vsock", "3"},
		{"vsock", ":1024"}, // no CID to dial
		{"vsock", "3:99999999999"},
		{"vsock", "vm():5"},
		{"vsock", "host(7):5"},
		{"vsock", "local(2):5"},
		{"vsock", "4294967295:5"}, // VMADDR_CID_ANY
		{"vsock", "vm(4294967295):5"},
	} {
		c, err := d.DialContext(context.Background(), tc.network, tc.address)
		assert.Nil(t, c, "%+v", tc)
		var oe *net.OpError
		require.ErrorAs(t, err, &oe, "%+v", tc)
		assert.Equal(t, "dial", oe.Op)
		var ae *vsockns.AddrError
		assert.ErrorAs(t, err, &ae, "%+v", tc)
	}
	// An unknown network is package net's error for it.
	for _, network := range []string{"tcp", "", "vsock4"} {
		c, err := d.DialContext(context.Background(), network, "3:1024")
		assert.Nil(t, c)
		var une net.UnknownNetworkError
		require.ErrorAs(t, err, &une, "%q", network)
		assert.Equal(t, network, string(une))
	}
	var lc vsockns.ListenConfig
	l, err := lc.Listen(context.Background(), "unix", ":1024")
	assert.Nil(t, l)
	var une net.UnknownNetworkError
	assert.ErrorAs(t, err, &une)

	// VMADDR_CID_ANY is refused by DialVsock too, before any socket exists.
	_, err = d.DialVsock(context.Background(), 0xffffffff, 1024)
	var ae *vsockns.AddrError
	assert.ErrorAs(t, err, &ae)
	_, err = vsockns.Dial(0, 0xffffffff, 1024)
	assert.ErrorAs(t, err, &ae)

	// A nil context is an error (not a panic, not Background) for dial,
	// listen and accept alike.
	//lint:ignore SA1012 a nil context is exactly the bad input under test
	_, err = d.DialVsock(nil, 3, 1024)
	var oe *net.OpError
	require.ErrorAs(t, err, &oe)
	assert.Equal(t, "vsock", oe.Net)
	assert.ErrorContains(t, err, "nil context")
	//lint:ignore SA1012 a nil context is exactly the bad input under test
	_, err = lc.ListenVsock(nil, 0xffffffff, 0)
	require.ErrorAs(t, err, &oe)
	assert.Equal(t, "listen", oe.Op)
	assert.ErrorContains(t, err, "nil context")
}

// ErrNotSupported is also errors.ErrUnsupported.
func TestErrNotSupportedIsUnsupported(t *testing.T) {
	assert.ErrorIs(t, vsockns.ErrNotSupported, errors.ErrUnsupported)
	assert.ErrorIs(t, fmt.Errorf("wrapped: %w", vsockns.ErrNotSupported), errors.ErrUnsupported)
	assert.NotErrorIs(t, errors.ErrUnsupported, vsockns.ErrNotSupported)
}

func TestModeFunctionsRejectInvalidMode(t *testing.T) {
	var me *vsockns.ModeError
	_, err := vsockns.NewNamespace(0)
	assert.ErrorAs(t, err, &me)
	_, err = vsockns.NewNamedNamespace("x", 7)
	assert.ErrorAs(t, err, &me)
	assert.ErrorAs(t, vsockns.SetChildMode(0, 0), &me)
}

// ParseAddr never panics, and what it accepts prints (through
// *vsock.Addr's String) to something it parses back to the same address.
func FuzzParseAddr(f *testing.F) {
	for _, s := range []string{"3:1024", "vsock://host:22", ":80", "vm(42):1", "local(1):2", "x", "", "((:", "4294967295:4294967295"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		a, err := vsockns.ParseAddr(s)
		if err != nil {
			var ae *vsockns.AddrError
			if !errors.As(err, &ae) {
				t.Fatalf("ParseAddr(%q): untyped error %v", s, err)
			}
			return
		}
		b, err := vsockns.ParseAddr(a.String())
		if err != nil || *a != *b {
			t.Fatalf("ParseAddr(%q) = %v, which parses back to %v, %v", s, a, b, err)
		}
	})
}
