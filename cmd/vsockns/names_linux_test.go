//go:build linux

package main

import (
	"encoding/json"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/vsockns/vsockns"
)

func TestCLIAddListDelete(t *testing.T) {
	cliPath(t)
	if !namespacesExpected(t) {
		r := runCLI(t, "", "ls", "--json")
		require.Equal(t, 0, r.code, "%+v", r)
		assert.JSONEq(t, "[]", r.stdout)
		return
	}
	addNS(t, "red", "local")
	addNS(t, "green", "global")
	r := runCLI(t, "", "add", "red", "--mode", "global")
	assert.Equal(t, 1, r.code, "the name is taken")
	assert.Contains(t, r.stderr, "exists")

	r = runCLI(t, "", "ls", "--json")
	require.Equal(t, 0, r.code, "%+v", r)
	var rows []struct {
		Namespace string       `json:"namespace"`
		Mode      vsockns.Mode `json:"ns_mode"`
	}
	require.NoError(t, json.Unmarshal([]byte(r.stdout), &rows))
	modes := map[string]vsockns.Mode{}
	for _, row := range rows {
		modes[row.Namespace] = row.Mode
	}
	assert.Equal(t, map[string]vsockns.Mode{"green": vsockns.ModeGlobal, "red": vsockns.ModeLocal}, modes)

	r = runCLI(t, "", "ls")
	require.Equal(t, 0, r.code)
	assert.Regexp(t, `(?m)^green\s+global\s+global`, r.stdout)
	assert.Regexp(t, `(?m)^red\s+local\s+local`, r.stdout)

	r = runCLI(t, "", "ls", "--all", "--json")
	require.Equal(t, 0, r.code, "%+v", r)
	var all []struct {
		Mode vsockns.Mode `json:"ns_mode"`
		PIDs []int        `json:"pids"`
	}
	require.NoError(t, json.Unmarshal([]byte(r.stdout), &all))
	foundInit := false
	for _, row := range all {
		for _, pid := range row.PIDs {
			if pid == 1 {
				foundInit = true
				assert.Equal(t, vsockns.ModeGlobal, row.Mode)
			}
		}
	}
	assert.True(t, foundInit, "--all lists the namespace of pid 1")

	r = runCLI(t, "", "del", "red")
	require.Equal(t, 0, r.code, "%+v", r)
	r = runCLI(t, "", "del", "red")
	assert.Equal(t, 1, r.code)
}
