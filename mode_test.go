package vsockns_test

import (
	"encoding/json"
	"errors"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/vsockns/vsockns"
)

func TestParseMode(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want vsockns.Mode
	}{
		{"global", vsockns.ModeGlobal},
		{"local", vsockns.ModeLocal},
	} {
		got, err := vsockns.ParseMode(tc.in)
		require.NoError(t, err)
		assert.Equal(t, tc.want, got)
		assert.Equal(t, tc.in, got.String())
	}
	for _, bad := range []string{"", "Global", "LOCAL", "global\n", " local", "loc", "global local", "0", "1"} {
		_, err := vsockns.ParseMode(bad)
		var me *vsockns.ModeError
		require.ErrorAs(t, err, &me, "%q", bad)
		assert.Equal(t, bad, me.Value)
	}
}

func TestModeText(t *testing.T) {
	type config struct {
		Mode vsockns.Mode `json:"mode"`
	}
	b, err := json.Marshal(config{Mode: vsockns.ModeLocal})
	require.NoError(t, err)
	assert.JSONEq(t, `{"mode":"local"}`, string(b))

	var c config
	require.NoError(t, json.Unmarshal([]byte(`{"mode":"global"}`), &c))
	assert.Equal(t, vsockns.ModeGlobal, c.Mode)

	c.Mode = vsockns.ModeLocal
	err = json.Unmarshal([]byte(`{"mode":"isolated"}`), &c)
	var me *vsockns.ModeError
	require.ErrorAs(t, err, &me)
	assert.Equal(t, vsockns.ModeLocal, c.Mode, "a failed unmarshal leaves the value alone")

	_, err = json.Marshal(config{})
	require.Error(t, err, "the zero Mode is not a mode")
	assert.Equal(t, "Mode(0)", vsockns.Mode(0).String())
	assert.False(t, vsockns.Mode(0).Valid())
	assert.False(t, vsockns.Mode(3).Valid())
}

func FuzzParseMode(f *testing.F) {
	for _, s := range []string{"global", "local", "", "global\n", "\xff"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		m, err := vsockns.ParseMode(s)
		var m2 vsockns.Mode
		err2 := m2.UnmarshalText([]byte(s))
		if (err == nil) != (err2 == nil) || m != m2 {
			t.Fatalf("ParseMode and UnmarshalText disagree on %q", s)
		}
		if err != nil {
			var me *vsockns.ModeError
			if !errors.As(err, &me) || m != 0 {
				t.Fatalf("ParseMode(%q) = %v, %v", s, m, err)
			}
			return
		}
		if !m.Valid() || m.String() != s {
			t.Fatalf("ParseMode(%q) = %v, which does not round-trip", s, m)
		}
		b, err := m.MarshalText()
		if err != nil || string(b) != s {
			t.Fatalf("MarshalText(%v) = %q, %v", m, b, err)
		}
	})
}
