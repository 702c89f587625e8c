#!/usr/bin/env bash
# Build a PostgreSQL 15 Docker image from Debian bookworm packages, without
# pulling anything from a container registry.
#
#   scripts/build-pg-image.sh [--force] [IMAGE]
#
# IMAGE defaults to $PREFLIGHT_PG_IMAGE, else preflight/postgres:15-debian.
# The Debian archive is taken from this machine's apt sources at run time.
# If the image already exists the build is skipped (fast, exit 0), unless it
# was built by this script from an older recipe (entrypoint or this script
# changed), which triggers a rebuild; --force always rebuilds.
# Needs root (debootstrap, chroot).
set -euo pipefail

SUITE=bookworm
PG_MAJOR=15
DEFAULT_IMAGE=preflight/postgres:15-debian

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ENTRYPOINT_SRC="$SCRIPT_DIR/pg-image/docker-entrypoint.sh"

log() { printf '[build-pg-image] %s\n' "$*" >&2; }
die() { printf '[build-pg-image] error: %s\n' "$*" >&2; exit 1; }

usage() {
	awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "${BASH_SOURCE[0]}"
}

force=0
image=""
while [ $# -gt 0 ]; do
	case "$1" in
		--force|-f) force=1 ;;
		-h|--help) usage; exit 0 ;;
		-*) die "unknown option: $1" ;;
		*)
			[ -z "$image" ] || die "only one image name may be given"
			image="$1"
			;;
	esac
	shift
done
image="${image:-${PREFLIGHT_PG_IMAGE:-$DEFAULT_IMAGE}}"

command -v docker >/dev/null 2>&1 || die "docker CLI not found"
[ -r "$ENTRYPOINT_SRC" ] || die "missing $ENTRYPOINT_SRC"

# A fingerprint of what goes into the image, stored as a label, so an image
# built from an older entrypoint/recipe is rebuilt instead of silently reused.
recipe="$(cat "${BASH_SOURCE[0]}" "$ENTRYPOINT_SRC" | sha256sum | cut -c1-16)"

if [ "$force" = 0 ] && docker image inspect "$image" >/dev/null 2>&1; then
	have="$(docker image inspect -f '{{ index .Config.Labels "org.preflight.pg-image.recipe" }}' "$image" 2>/dev/null || true)"
	if [ "$have" = "$recipe" ]; then
		log "image $image already exists (recipe $recipe); skipping build (use --force to rebuild)"
		exit 0
	elif [ -z "$have" ]; then
		# Not built by this script (e.g. a real postgres image under that name): never replace it implicitly.
		log "image $image already exists (not built by this script); skipping build (use --force to replace it)"
		exit 0
	fi
	log "image $image was built from an older recipe ($have != $recipe); rebuilding"
fi

old_id="$(docker image inspect -f '{{ .Id }}' "$image" 2>/dev/null || true)"

[ "$(id -u)" = 0 ] || die "must run as root (debootstrap and chroot need it)"

# --- Find the Debian archive in this machine's apt sources -----------------
# Prints the first URI serving SUITE (deb822 *.sources, then one-line *.list).
apt_uri_for_suite() {
	local want="$1" f
	shopt -s nullglob
	for f in /etc/apt/sources.list.d/*.sources; do
		awk -v want="$want" '
			function flush() {
				if (types ~ /(^|[ \t])deb([ \t]|$)/ && enabled !~ /^[ \t]*no/ && uri != "") {
					n = split(suites, s, /[ \t]+/)
					for (i = 1; i <= n; i++) if (s[i] == want) { print uri; found = 1; exit }
				}
				types = ""; suites = ""; uri = ""; enabled = ""
			}
			/^[ \t]*#/ { next }
			/^[ \t]*$/ { flush(); next }
			tolower($1) == "types:"   { sub(/^[^:]*:[ \t]*/, ""); types = $0; next }
			tolower($1) == "suites:"  { sub(/^[^:]*:[ \t]*/, ""); suites = $0; next }
			tolower($1) == "enabled:" { sub(/^[^:]*:[ \t]*/, ""); enabled = tolower($0); next }
			tolower($1) == "uris:"    { sub(/^[^:]*:[ \t]*/, ""); split($0, u, /[ \t]+/); uri = u[1]; next }
			END { if (!found) flush() }
		' "$f" | head -n1
	done
	for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
		[ -r "$f" ] || continue
		# deb [opts] URI SUITE COMPONENTS...
		awk -v want="$want" '
			$1 != "deb" { next }
			{
				i = 2
				if ($i ~ /^\[/) { while (i <= NF && $i !~ /\]$/) i++; i++ }
				if ($(i + 1) == want) { print $i; exit }
			}
		' "$f"
	done
	shopt -u nullglob
}

mirror="$(apt_uri_for_suite "$SUITE" | head -n1)"
[ -n "$mirror" ] || die "no apt source for suite '$SUITE' found in /etc/apt/sources.list{,.d/}"
updates="$(apt_uri_for_suite "$SUITE-updates" | head -n1)"
security="$(apt_uri_for_suite "$SUITE-security" | head -n1)"
log "archive from apt sources: $mirror${security:+ (+ security)}${updates:+ (+ updates)}"

# --- Tools -----------------------------------------------------------------
if ! command -v debootstrap >/dev/null 2>&1; then
	log "installing debootstrap"
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq
	apt-get install -y -qq --no-install-recommends debootstrap >/dev/null
fi

# --- Build -----------------------------------------------------------------
start=$SECONDS
work="$(mktemp -d "${TMPDIR:-/var/tmp}/preflight-pg-image.XXXXXX")"
root="$work/rootfs"
cleanup() {
	local m
	# Unmount anything still mounted below the rootfs (deepest first), then delete.
	if [ -d "$root" ]; then
		awk -v r="$root" 'index($2, r) == 1 { print $2 }' /proc/mounts | sort -r |
			while read -r m; do umount -l "$m" 2>/dev/null || true; done
	fi
	rm -rf --one-file-system "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

log "bootstrapping minimal $SUITE rootfs (debootstrap --variant=minbase)"
if ! debootstrap --variant=minbase "$SUITE" "$root" "$mirror" >"$work/debootstrap.log" 2>&1; then
	tail -n 30 "$work/debootstrap.log" >&2
	die "debootstrap failed"
fi

{
	printf 'deb %s %s main\n' "$mirror" "$SUITE"
	[ -z "$updates" ] || printf 'deb %s %s-updates main\n' "$updates" "$SUITE"
	[ -z "$security" ] || printf 'deb %s %s-security main\n' "$security" "$SUITE"
} >"$root/etc/apt/sources.list"

# No daemons started by maintainer scripts; no default cluster; no docs.
printf '#!/bin/sh\nexit 101\n' >"$root/usr/sbin/policy-rc.d"
chmod 755 "$root/usr/sbin/policy-rc.d"
mkdir -p "$root/etc/postgresql-common/createcluster.d"
printf 'create_main_cluster = false\n' >"$root/etc/postgresql-common/createcluster.d/00-preflight.conf"
cat >"$root/etc/dpkg/dpkg.cfg.d/01-preflight-nodoc" <<'EOC'
path-exclude=/usr/share/doc/*
path-exclude=/usr/share/man/*
path-exclude=/usr/share/info/*
path-exclude=/usr/share/locale/*
path-exclude=/usr/share/lintian/*
EOC
cat >"$root/etc/apt/apt.conf.d/01-preflight" <<'EOC'
APT::Install-Recommends "false";
APT::Install-Suggests "false";
EOC

log "installing postgresql-$PG_MAJOR in the rootfs"
in_root() { chroot "$root" env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin DEBIAN_FRONTEND=noninteractive LANG=C.UTF-8 "$@"; }
mount -t proc proc "$root/proc"
if ! { in_root apt-get update -qq && in_root apt-get install -y -qq "postgresql-$PG_MAJOR"; } >"$work/apt.log" 2>&1; then
	tail -n 30 "$work/apt.log" >&2
	die "installing postgresql-$PG_MAJOR failed"
fi
umount "$root/proc"
# Belt and braces: no cluster may ship in the image (PGDATA is initialised at run time).
rm -rf "$root/etc/postgresql/$PG_MAJOR" "$root/var/lib/postgresql/$PG_MAJOR"
# shellcheck disable=SC2016  # ${Version} is a dpkg-query field, not a shell variable
version="$(in_root dpkg-query -W -f '${Version}' "postgresql-$PG_MAJOR")"
log "installed postgresql-$PG_MAJOR $version"

# Like the official image: listen on all interfaces by default.
sed -ri "s!^#?(listen_addresses)\s*=\s*\S+.*!\1 = '*'!" \
	"$root/usr/share/postgresql/$PG_MAJOR/postgresql.conf.sample"
grep -q "^listen_addresses = '\*'" "$root/usr/share/postgresql/$PG_MAJOR/postgresql.conf.sample" \
	|| die "could not set listen_addresses in postgresql.conf.sample"

install -m 0755 "$ENTRYPOINT_SRC" "$root/usr/local/bin/docker-entrypoint.sh"
mkdir -p "$root/docker-entrypoint-initdb.d"
in_root install -d -o postgres -g postgres -m 0700 /var/lib/postgresql/data
in_root install -d -o postgres -g postgres -m 03775 /var/run/postgresql

# Slim down.
rm -f "$root/usr/sbin/policy-rc.d"
rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin "$root"/var/cache/apt/archives/*.deb \
	"$root"/var/cache/debconf/*-old "$root"/var/lib/dpkg/*-old "$root"/var/log/* \
	"$root"/tmp/* "$root"/var/tmp/* "$root"/usr/share/doc/* "$root"/usr/share/man/* \
	"$root"/usr/share/info/* "$root"/usr/share/locale/*
: >"$root/etc/machine-id" 2>/dev/null || true

# `docker import --change` sets everything except STOPSIGNAL (daemon 20.10
# rejects it there), so import under a temporary tag, then add STOPSIGNAL with
# a one-step build FROM that local image (nothing is pulled).
base="preflight/pg-rootfs:tmp-$recipe-$$"
log "importing rootfs into docker"
tar --numeric-owner --xattrs -C "$root" -cf - . | docker import \
	--change "ENV PATH=/usr/lib/postgresql/$PG_MAJOR/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin" \
	--change "ENV LANG=C.UTF-8" \
	--change "ENV PG_MAJOR=$PG_MAJOR" \
	--change "ENV PG_VERSION=$version" \
	--change "ENV PGDATA=/var/lib/postgresql/data" \
	--change "LABEL org.preflight.pg-image.recipe=$recipe" \
	--change 'ENTRYPOINT ["docker-entrypoint.sh"]' \
	--change 'CMD ["postgres"]' \
	--change 'EXPOSE 5432' \
	-m "preflight: Debian $SUITE rootfs with postgresql-$PG_MAJOR $version" \
	- "$base" >/dev/null
cleanup_base() { docker rmi "$base" >/dev/null 2>&1 || true; }
trap 'cleanup_base; cleanup' EXIT

log "adding STOPSIGNAL, tagging $image"
printf 'FROM %s\nSTOPSIGNAL SIGINT\n' "$base" >"$work/Dockerfile"
mkdir "$work/ctx"
if ! docker build -q -t "$image" -f "$work/Dockerfile" "$work/ctx" >"$work/build.log" 2>&1; then
	cat "$work/build.log" >&2
	die "docker build (metadata layer) failed"
fi
[ "$(docker image inspect -f '{{ .Config.StopSignal }}' "$image")" = SIGINT ] \
	|| die "image $image lacks STOPSIGNAL SIGINT"

# Drop the image this one replaced, unless something still uses it.
if [ -n "$old_id" ] && [ "$old_id" != "$(docker image inspect -f '{{ .Id }}' "$image")" ]; then
	if docker rmi "$old_id" >/dev/null 2>&1; then
		log "removed previous image ${old_id#sha256:}"
	fi
fi

size="$(docker image inspect -f '{{ .Size }}' "$image")"
log "built $image: postgresql $version, $((size / 1024 / 1024)) MiB, in $((SECONDS - start))s"
