#!/usr/bin/env bash
# Makes sure a C compiler and the C library's headers are there: the VM
# suite builds its race-detector test binaries with cgo. Installs Debian's
# gcc and libc6-dev as root when missing, otherwise says what to do.
set -euo pipefail
command -v gcc >/dev/null && [ -e /usr/include/stdlib.h ] && exit 0
me=ensure-cc
. "$(dirname "$0")/debian.sh"
apt_install gcc libc6-dev && command -v gcc >/dev/null && exit 0
echo "ensure-cc: gcc and the C library headers are needed for the race-detector tests: install gcc and libc6-dev, or run 'make test' as root" >&2
exit 1
