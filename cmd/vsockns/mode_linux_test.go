//go:build linux

package main

import (
	"encoding/json"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/vsockns/vsockns"
)

func TestCLIMode(t *testing.T) {
	cliPath(t)
	if !namespacesExpected(t) {
		r := runCLI(t, "", "mode")
		assert.Equal(t, 1, r.code)
		assert.Contains(t, r.stderr, "Linux >= 7.0 is needed")
		r = runCLI(t, "", "add", "legacy", "--mode", "local")
		assert.Equal(t, 1, r.code)
		assert.Contains(t, r.stderr, "not supported")
		return
	}
	r := runCLI(t, "", "mode")
	require.Equal(t, 0, r.code, "%+v", r)
	assert.Equal(t, "ns_mode:        global\nchild_ns_mode:  global\ng2h_fallback:   true\n", r.stdout)

	addNS(t, "blue", "local")
	r = runCLI(t, "", "mode", "--netns", "blue", "--json")
	require.Equal(t, 0, r.code, "%+v", r)
	var rep struct {
		Namespace string       `json:"namespace"`
		Mode      vsockns.Mode `json:"ns_mode"`
		Child     vsockns.Mode `json:"child_ns_mode"`
		G2H       bool         `json:"g2h_fallback"`
	}
	require.NoError(t, json.Unmarshal([]byte(r.stdout), &rep))
	assert.Equal(t, vsockns.ModeLocal, rep.Mode)
	assert.Equal(t, vsockns.ModeLocal, rep.Child)
	assert.Equal(t, "namespace 'blue'", rep.Namespace)

	r = runCLI(t, "", "mode", "--netns", "/run/netns/blue")
	require.Equal(t, 0, r.code, "%+v", r)
	assert.Contains(t, r.stdout, "ns_mode:        local")

	r = runCLI(t, "", "mode", "--netns", "nosuch")
	assert.Equal(t, 1, r.code)
	assert.Contains(t, r.stderr, `namespace "nosuch"`)
}

// mode --json reports an error in the JSON and in its exit status (before
// the fix it printed the error and exited 0).
func TestCLIModeJSONError(t *testing.T) {
	cliPath(t)
	var rep struct {
		Error string `json:"error"`
	}
	// Not a namespace: every kernel fails to read its mode.
	r := runCLI(t, "", "mode", "--json", "--netns", "/dev/null")
	assert.Equal(t, 1, r.code, "%+v", r)
	require.NoError(t, json.Unmarshal([]byte(r.stdout), &rep), "%+v", r)
	assert.Contains(t, rep.Error, "not a network namespace")
	if !namespacesExpected(t) {
		r := runCLI(t, "", "mode", "--json")
		assert.Equal(t, 1, r.code, "%+v", r)
		require.NoError(t, json.Unmarshal([]byte(r.stdout), &rep))
		assert.Contains(t, rep.Error, "Linux >= 7.0 is needed")
	}
}

func TestCLIChildMode(t *testing.T) {
	cliPath(t)
	if !namespacesExpected(t) {
		r := runCLI(t, "", "child-mode", "set", "local", "--init")
		assert.Equal(t, 1, r.code)
		assert.Contains(t, r.stderr, "not supported")
		return
	}
	r := runCLI(t, "", "child-mode", "set", "local")
	assert.Equal(t, 2, r.code, "the init namespace needs --init")
	assert.Contains(t, r.stderr, "every namespace created on this host until reboot")

	addNS(t, "parent", "global")
	r = runCLI(t, "", "child-mode", "set", "local", "--netns", "parent")
	require.Equal(t, 0, r.code, "%+v", r)
	assert.Contains(t, r.stderr, "cannot be changed again")
	r = runCLI(t, "", "child-mode", "set", "global", "--netns", "parent")
	assert.Equal(t, 1, r.code)
	assert.Contains(t, r.stderr, "already local and can be written only once")
}
