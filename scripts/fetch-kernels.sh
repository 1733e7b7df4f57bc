#!/usr/bin/env bash
# Fetches the kernels the VM test suite boots, from Debian's package archive:
#   - the newest cloud kernel that trixie-backports and sid offer (each
#     resolved through its linux-image-cloud-amd64 metapackage, so no version
#     is pinned here), with vsock network namespaces (Linux >= 7.0), and
#     sid's as well when it is another one (backports can be ahead of sid);
#   - Debian 12's (bookworm) 6.1 cloud kernel, the legacy case.
# Each lands in .cache/kernels/<release>/ as vmlinuz plus modules/ holding just
# the vsock and vhost modules the suite loads; .cache/kernels/selected lists
# the releases of this run, which are what the suite boots.
#
# apt runs with a private state (its own sources.list, lists and cache under
# .cache/apt); the machine's apt configuration is read for the mirror URI only
# and never changed.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
cache=${VSOCKNS_CACHE:-$root/.cache}
apt_dir=$cache/apt
kernels=$cache/kernels
modules=(vsock vmw_vsock_virtio_transport_common vsock_loopback vhost_iotlb vhost vhost_vsock vsock_diag)

me=fetch-kernels
. "$root/scripts/debian.sh"
mkdir -p "$kernels"
private_apt "$apt_dir" sid trixie-backports bookworm

# image_package SUITE prints the versioned linux-image package that the
# linux-image-cloud-amd64 metapackage of SUITE depends on.
image_package() {
	local ver
	ver=$(apt-cache "${apt_opts[@]}" madison linux-image-cloud-amd64 | awk -v s="$1" '$0 ~ " "s"/" {print $3; exit}')
	[ -n "$ver" ] || { echo "fetch-kernels: no linux-image-cloud-amd64 in $1" >&2; return 1; }
	apt_depends "linux-image-cloud-amd64=$ver" '^linux-image-[0-9]' | head -n 1
}

selected=()

# has_modules DIR: every module the suite packs is in DIR/modules (a cache
# made before a module joined the list is fetched again).
has_modules() {
	local m
	for m in "${modules[@]}"; do
		compgen -G "$1/modules/$m.ko*" >/dev/null || return 1
	done
}

fetch() {
	local suite=$1 image=$2 release dir tmp pkgs deps
	release=${image#linux-image-}
	dir=$kernels/$release
	selected+=("$release")
	if [ -f "$dir/vmlinuz" ] && [ -f "$dir/.complete" ] && has_modules "$dir"; then
		echo "fetch-kernels: $release ($suite) already in $dir"
		return
	fi
	# Since 6.12 the image package is a stub depending on linux-binary-* and
	# linux-modules-*; older ones ship everything themselves.
	deps=$(apt_depends "$image" '^linux-(binary|modules)-' | sort -u)
	pkgs=${deps:-$image}
	tmp=$(mktemp -d "$cache/fetch.XXXXXX")
	trap 'rm -rf "$tmp"' RETURN
	echo "fetch-kernels: downloading $(echo $pkgs) ($suite)"
	(cd "$tmp" && apt-get "${apt_opts[@]}" download $pkgs >"$tmp/download.log" 2>&1) || { cat "$tmp/download.log" >&2; return 1; }
	for deb in "$tmp"/*.deb; do dpkg-deb -x "$deb" "$tmp/root"; done
	rm -rf "$dir"
	mkdir -p "$dir/modules"
	local vmlinuz
	vmlinuz=$(find "$tmp/root" \( -path "*/boot/vmlinuz-$release" -o -path "*/modules/$release/vmlinuz" \) | head -n 1)
	[ -n "$vmlinuz" ] || { echo "fetch-kernels: no vmlinuz in $pkgs" >&2; return 1; }
	cp "$vmlinuz" "$dir/vmlinuz"
	for m in "${modules[@]}"; do
		local f
		f=$(find "$tmp/root" -path "*/modules/$release/*" -regex ".*/$m\.ko\(\.xz\|\.zst\|\.gz\)?" | head -n 1)
		[ -n "$f" ] || { echo "fetch-kernels: module $m missing from $pkgs" >&2; return 1; }
		cp "$f" "$dir/modules/"
	done
	touch "$dir/.complete"
	echo "fetch-kernels: $release ready in $dir"
}

# image_version PKG prints the Debian version of a linux-image package.
image_version() {
	apt-cache "${apt_opts[@]}" show "$1" | awk '/^Version:/ {print $2; exit}'
}

sid_image=$(image_package sid)
if bpo_image=$(image_package trixie-backports 2>/dev/null); then
	# The newer of the two first; sid's too if it is another kernel.
	if dpkg --compare-versions "$(image_version "$bpo_image")" gt "$(image_version "$sid_image")"; then
		fetch trixie-backports "$bpo_image"
	fi
else
	echo "fetch-kernels: trixie-backports has no cloud kernel; using sid's" >&2
fi
fetch sid "$sid_image"
fetch bookworm "$(image_package bookworm)"
printf '%s\n' "${selected[@]}" >"$kernels/selected"
echo "fetch-kernels: the suite boots ${selected[*]}"
