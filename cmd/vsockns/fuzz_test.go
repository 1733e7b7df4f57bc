package main

import (
	"errors"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/vsockns/vsockns"
)

// plainSize is what --buffer-size takes: digits, then at most one unit.
var plainSize = regexp.MustCompile(`^[0-9]+[KMG]?$`)

// FuzzByteSize: --buffer-size accepts a positive number of bytes (with K,
// M or G) that fits 64 bits and nothing else, refuses with a usage-style
// error and leaves the flag as it was, and prints what it took as a
// number it takes back to the same size.
func FuzzByteSize(f *testing.F) {
	for _, s := range []string{"1", "1K", "1M", "1G", "0", "0K", "-1", "+1", "1k", "1KB", "1 M", " 1", "0x10", "1_000", "18446744073709551615", "18446744073709551616", "17179869184G", "17179869183G", "", "K", "1.5M"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		const before = byteSize(7)
		b := before
		if err := b.Set(s); err != nil {
			if b != before {
				t.Fatalf("Set(%q) failed (%v) and changed the flag to %d", s, err, b)
			}
			return
		}
		if b == 0 {
			t.Fatalf("Set(%q) took 0", s)
		}
		if !plainSize.MatchString(s) {
			t.Fatalf("Set(%q) took it, as %d", s, b)
		}
		digits := strings.TrimRight(s, "KMG")
		n, err := strconv.ParseUint(digits, 10, 64)
		mult := map[string]uint64{"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30}[s[len(digits):]]
		if err != nil || n > ^uint64(0)/mult || uint64(b) != n*mult {
			t.Fatalf("Set(%q) = %d, want %d x %d", s, b, n, mult)
		}
		var back byteSize
		if err := back.Set(b.String()); err != nil || back != b {
			t.Fatalf("Set(%q) = %d prints %q, which sets %d, %v", s, b, b.String(), back, err)
		}
	})
}

// FuzzDialAddr: dial's CID and PORT arguments give an address whose CID
// is the CID argument's and whose port is the PORT argument's (no colon
// in either moves a part of one into the other), or a usage error.
func FuzzDialAddr(f *testing.F) {
	for _, s := range [][2]string{{"3", "1024"}, {"host", "22"}, {"vsock://3", "1"}, {"vm(42)", "5"}, {"3:4", "5"}, {"3", "4:5"}, {"", "1"}, {"3", ""}, {"local", "4294967295"}, {"3", "4294967296"}, {"vm(3", "1):2"}} {
		f.Add(s[0], s[1])
	}
	f.Fuzz(func(t *testing.T, cid, port string) {
		addr, err := dialAddr(cid, port)
		if err != nil {
			var ue *usageError
			if !errors.As(err, &ue) {
				t.Fatalf("dialAddr(%q, %q): %T %v, not a usage error", cid, port, err, err)
			}
			return
		}
		p, perr := strconv.ParseUint(port, 10, 32)
		if perr != nil || uint32(p) != addr.Port {
			t.Fatalf("dialAddr(%q, %q) = %v: the port is not the PORT argument", cid, port, addr)
		}
		alone, cerr := vsockns.ParseAddr(cid + ":0")
		if cerr != nil || alone.ContextID != addr.ContextID {
			t.Fatalf("dialAddr(%q, %q) = %v: the CID is not the CID argument's (%v, %v)", cid, port, addr, alone, cerr)
		}
	})
}

// FuzzListenPort: listen's PORT is a decimal number of 32 bits or a
// usage error.
func FuzzListenPort(f *testing.F) {
	for _, s := range []string{"0", "1024", "4294967295", "4294967296", "-1", "+1", "0x10", "", " 1"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		port, err := listenPort(s)
		if err != nil {
			var ue *usageError
			if !errors.As(err, &ue) {
				t.Fatalf("listenPort(%q): %T %v, not a usage error", s, err, err)
			}
			return
		}
		if strconv.FormatUint(uint64(port), 10) != strings.TrimLeft(s, "0") && !(port == 0 && strings.Trim(s, "0") == "") {
			t.Fatalf("listenPort(%q) = %d", s, port)
		}
	})
}
