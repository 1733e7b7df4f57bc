# Shared by the scripts that get what the suite needs from Debian's archive.
# Source it; it defines:
#
#   apt_install PKG...        installs missing packages on this machine (as
#                             root, with its own apt sources; never changes
#                             them)
#   private_apt DIR SUITE...  sets up an apt state of our own under DIR whose
#                             sources are SUITEs of the machine's mirror, and
#                             leaves the options that select it in apt_opts
#   apt_depends PKG ERE       prints the packages PKG (a name or name=version
#                             of the private state) depends on that match ERE
#
# Messages are prefixed with $me.

me=${me:-$(basename "$0")}

apt_install() {
	if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
		echo "$me: needs $* (install them, or run as root on Debian, which installs them)" >&2
		return 1
	fi
	echo "$me: installing $*"
	DEBIAN_FRONTEND=noninteractive apt-get update -q >/dev/null
	DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "$@" >/dev/null
}

# debian_mirror prints the machine's Debian mirror URI (VSOCKNS_DEBIAN_MIRROR
# overrides it).
debian_mirror() {
	local mirror=${VSOCKNS_DEBIAN_MIRROR:-}
	if [ -z "$mirror" ] && [ -r /etc/apt/sources.list.d/debian.sources ]; then
		# The first URI of a stanza that serves the main archive (not -security).
		mirror=$(awk '/^URIs:/ && $2 !~ /security/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources)
	fi
	if [ -z "$mirror" ] && [ -r /etc/apt/sources.list ]; then
		mirror=$(awk '$1 == "deb" && $0 !~ /security/ {for (i = 2; i <= NF; i++) if ($i ~ /^[a-z]+:\/\//) {print $i; exit}}' /etc/apt/sources.list)
	fi
	if [ -z "$mirror" ]; then
		echo "$me: no Debian mirror found in /etc/apt; set VSOCKNS_DEBIAN_MIRROR" >&2
		return 1
	fi
	echo "$mirror"
}

private_apt() {
	local dir=$1 mirror suite keyring=/usr/share/keyrings/debian-archive-keyring.gpg signed=""
	shift
	for tool in apt-get apt-cache dpkg-deb; do
		command -v "$tool" >/dev/null || { echo "$me: $tool is needed (a Debian or Ubuntu machine)" >&2; return 1; }
	done
	mirror=$(debian_mirror)
	mkdir -p "$dir/lists/partial" "$dir/archives/partial"
	[ -r "$keyring" ] && signed="[signed-by=$keyring] "
	: >"$dir/sources.list"
	for suite in "$@"; do
		echo "deb ${signed}$mirror $suite main" >>"$dir/sources.list"
	done
	apt_opts=(
		-o "Dir::Etc::sourcelist=$dir/sources.list"
		-o "Dir::Etc::sourceparts=-"
		-o "Dir::State::Lists=$dir/lists"
		-o "Dir::Cache=$dir"
		-o "Dir::Cache::archives=$dir/archives"
		-o "Dir::State::status=/dev/null"
		-o "Acquire::IndexTargets::deb::DEP-11::DefaultEnabled=false"
		-o "Acquire::IndexTargets::deb::DEP-11-icons::DefaultEnabled=false"
		-o "Acquire::IndexTargets::deb::DEP-11-icons-small::DefaultEnabled=false"
		-o "APT::Sandbox::User=root"
		-q
	)
	echo "$me: updating the private package lists ($*) from $mirror" >&2
	apt-get "${apt_opts[@]}" update >"$dir/update.log" 2>&1 || { cat "$dir/update.log" >&2; return 1; }
}

apt_depends() {
	apt-cache "${apt_opts[@]}" show "$1" |
		awk -v re="$2" '/^Depends:/ && !seen++ {n = split($0, d, /[ ,]+/); for (i = 2; i <= n; i++) if (d[i] ~ re) print d[i]}'
}
