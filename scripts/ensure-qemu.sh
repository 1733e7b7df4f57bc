#!/usr/bin/env bash
# Makes sure qemu-system-x86_64 is there: installs Debian's qemu-system-x86
# when running as root on a Debian-like system, otherwise says what to do.
set -euo pipefail
command -v qemu-system-x86_64 >/dev/null && exit 0
me=ensure-qemu
. "$(dirname "$0")/debian.sh"
apt_install qemu-system-x86 && command -v qemu-system-x86_64 >/dev/null && exit 0
echo "ensure-qemu: qemu-system-x86_64 is needed for the VM tests: install qemu-system-x86 (Debian/Ubuntu) or run 'make test' as root" >&2
exit 1
