#!/usr/bin/env bash
# Makes sure qemu-system-x86_64 is there: installs Debian's qemu-system-x86
# when running as root on a Debian-like system, otherwise says what to do.
set -euo pipefail
command -v qemu-system-x86_64 >/dev/null && exit 0
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
	echo "ensure-qemu: installing qemu-system-x86"
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -q >/dev/null
	apt-get install -y -q --no-install-recommends qemu-system-x86 >/dev/null
	command -v qemu-system-x86_64 >/dev/null && exit 0
fi
echo "ensure-qemu: qemu-system-x86_64 is needed for the VM tests: install qemu-system-x86 (Debian/Ubuntu) or run 'make test' as root" >&2
exit 1
