#!/usr/bin/env bash
# Prints the path of a go command at least as new as go.mod's go line.
#
# It is `go` on the PATH, or /usr/local/go/bin/go, when new enough.
# Otherwise (a fresh Debian 12 has Go 1.19 at best) it bootstraps: Debian's
# newest packaged Go for bookworm (golang-go in bookworm-backports, fetched
# with a private apt state like the kernels, unpacked under .cache/go)
# downloads the wanted toolchain through the Go module proxy, checked
# against the Go checksum database (GOTOOLCHAIN), into .cache/go/mod.
# Messages go to stderr; only the path goes to stdout.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
cache=${VSOCKNS_CACHE:-$root/.cache}
want=$(awk '$1 == "go" {print $2; exit}' "$root/go.mod")
me=ensure-go

# new_enough GO prints GO's path if its version is at least $want.
new_enough() {
	local v
	v=$("$1" env GOVERSION 2>/dev/null) || return 1
	v=${v#go}
	v=${v%%[-+ ]*}
	[ "$(printf '%s\n%s\n' "$want" "$v" | sort -V | head -n 1)" = "$want" ] || return 1
	command -v "$1"
}

# VSOCKNS_GO_CANDIDATES replaces the commands tried (to test the bootstrap).
for candidate in ${VSOCKNS_GO_CANDIDATES:-go /usr/local/go/bin/go}; do
	command -v "$candidate" >/dev/null && new_enough "$candidate" && exit 0
done

toolchain=$cache/go/mod/golang.org/toolchain@v0.0.1-go$want.linux-$(dpkg --print-architecture 2>/dev/null || echo amd64)/bin/go
if [ -x "$toolchain" ] && new_enough "$toolchain"; then
	exit 0
fi

echo "$me: no Go >= $want found; fetching go$want" >&2
. "$root/scripts/debian.sh"
if [ ! -r /etc/ssl/certs/ca-certificates.crt ]; then
	apt_install ca-certificates >&2
fi
private_apt "$cache/go/apt" bookworm-backports >&2
# The versioned compiler package golang-go depends on (golang-1.NN-go).
pkg=$(apt_depends golang-go '^golang-1\.[0-9]+-go$' | head -n 1)
[ -n "$pkg" ] || { echo "$me: no golang-go in bookworm-backports; install Go >= $want from https://go.dev/dl" >&2; exit 1; }
boot=$cache/go/bootstrap
rm -rf "$boot"
mkdir -p "$boot"
(cd "$cache/go/apt" && apt-get "${apt_opts[@]}" download "$pkg" >&2)
dpkg-deb -x "$cache/go/apt/$pkg"_*.deb "$boot"
bootgo=$(find "$boot/usr/lib" -path '*/bin/go' -type f | head -n 1)
[ -n "$bootgo" ] || { echo "$me: no go command in $pkg" >&2; exit 1; }
# The bootstrap Go downloads the toolchain and verifies it (GOSUMDB).
env GOROOT="$(dirname "$(dirname "$bootgo")")" GOMODCACHE="$cache/go/mod" GOPATH="$cache/go/path" \
	GOTOOLCHAIN="go$want" GOFLAGS= "$bootgo" version >&2
new_enough "$toolchain" || { echo "$me: fetching go$want did not give $toolchain" >&2; exit 1; }
