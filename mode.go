package vsockns

import (
	"fmt"
	"strconv"
)

// Mode is a network namespace's vsock mode, as in
// /proc/sys/net/vsock/ns_mode and child_ns_mode. The zero Mode is not a
// valid mode; functions taking a Mode reject it.
type Mode uint8

const (
	// ModeGlobal: the namespace shares CIDs, ports and reach with every other
	// global namespace, as vsock behaved before Linux 7.0. The init
	// namespace is always global.
	ModeGlobal Mode = iota + 1

	// ModeLocal: the namespace has its own CIDs and ports; its sockets
	// reach only sockets and vhost-vsock devices of the same namespace.
	ModeLocal
)

// String returns "global" or "local", the kernel's spelling, or
// "Mode(N)" for an invalid value.
func (m Mode) String() string {
	switch m {
	case ModeGlobal:
		return "global"
	case ModeLocal:
		return "local"
	}
	return "Mode(" + strconv.Itoa(int(m)) + ")"
}

// Valid reports whether m is ModeGlobal or ModeLocal.
func (m Mode) Valid() bool { return m == ModeGlobal || m == ModeLocal }

// ParseMode parses exactly "global" or "local".
func ParseMode(s string) (Mode, error) {
	switch s {
	case "global":
		return ModeGlobal, nil
	case "local":
		return ModeLocal, nil
	}
	return 0, &ModeError{Value: s}
}

// MarshalText implements encoding.TextMarshaler; it fails for an invalid Mode.
func (m Mode) MarshalText() ([]byte, error) {
	if !m.Valid() {
		return nil, &ModeError{Value: m.String()}
	}
	return []byte(m.String()), nil
}

// UnmarshalText implements encoding.TextUnmarshaler with ParseMode's rules.
// On error *m is left unchanged.
func (m *Mode) UnmarshalText(b []byte) error {
	v, err := ParseMode(string(b))
	if err != nil {
		return err
	}
	*m = v
	return nil
}

// ModeError reports a value that is not a vsock mode.
type ModeError struct {
	Value string
}

func (e *ModeError) Error() string {
	return fmt.Sprintf("vsockns: invalid vsock mode %q (want \"global\" or \"local\")", e.Value)
}
