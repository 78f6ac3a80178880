#!/bin/sh
# deploy/debian-base.sh CACHE_DIR - makes the Debian base image that
# deploy/Dockerfile builds FROM, with debootstrap from Debian's own package
# archive (no container registry needed), and prints its tag.
#
# Mirror and suite are this host's: the site that apt is configured to fetch
# the host's release (VERSION_CODENAME of /etc/os-release) from, as
# `apt-get indextargets` reads it out of /etc/apt/sources.list and
# sources.list.d (one-line and deb822 alike). The image's own sources.list
# lists the same sites and suites (the release, -updates, -security), and it
# keeps the host's Acquire::Check-Valid-Until and Check-Date (a snapshot
# mirror serves Release files past their Valid-Until), so the image installs
# what the host would.
#
# The root file system is a minbase debootstrap, made "slim" like Debian's
# -slim images: no apt lists or .debs, and dpkg told to leave out manuals,
# docs (but copyright files) and translations of every package installed
# later. It is cached as CACHE_DIR/SUITE-DATE-KEY.tar, DATE the UTC day and KEY
# a hash of the mirror, the sources and this script, and imported into podman
# as localhost/beamfleet-base:SUITE-DATE-KEY (also tagged :latest, the
# Dockerfile's default). A second run on the same day finds the image in
# podman's store, or imports the tar, in seconds; a new day makes a new base
# (security updates) and removes the older tars; the packages debootstrap
# fetched are kept in CACHE_DIR/debs for it (30 days).
#
#   img=$(deploy/debian-base.sh build/deploy-image)
#   podman build -f deploy/Dockerfile --build-arg BASE="$img" -t beamfleet:0.1.0 .
#
# Needs root (debootstrap), debootstrap and podman. PODMAN names another
# podman command (e.g. "podman --runtime runc").
set -eu
cache=${1:?usage: debian-base.sh CACHE_DIR}
PODMAN=${PODMAN:-podman}
mkdir -p "$cache"
cache=$(cd "$cache" && pwd)

# shellcheck disable=SC1091
. /etc/os-release
suite=${VERSION_CODENAME:?no VERSION_CODENAME in /etc/os-release}
arch=$(dpkg --print-architecture)
# shellcheck disable=SC2016  # apt's own $(FIELD) placeholders
targets=$(apt-get indextargets --format '$(SITE) $(RELEASE) $(COMPONENT)' 'Identifier: Packages' | sort -u)
mirror=$(printf '%s\n' "$targets" | awk -v s="$suite" '$2 == s {print $1; exit}')
[ -n "$mirror" ] || { echo "debian-base: apt has no source for suite $suite (apt-get indextargets)" >&2; exit 1; }
# the release and its -updates and -security suites, main only, as the host has them
sources=$(printf '%s\n' "$targets" \
    | awk -v s="$suite" '$3 == "main" && ($2 == s || $2 == s "-updates" || $2 == s "-security") {print "deb " $1 " " $2 " main"}')
aptconf=$(apt-config dump | grep -E '^Acquire::Check-(Valid-Until|Date) ' || true)

key=$(printf '%s\n%s\n%s\n%s\n' "$mirror" "$sources" "$aptconf" "$arch" | cat - "$0" | sha256sum | cut -c1-10)
name=$suite-$(date -u +%Y%m%d)-$key
tag=localhost/beamfleet-base:$name
tar=$cache/$name.tar

if ! $PODMAN image exists "$tag"; then
    if [ ! -s "$tar" ]; then
        root=$cache/$name.root
        rm -rf "$root" "$tar.part"
        echo "debian-base: debootstrap $suite from $mirror ($arch, minbase)" >&2
        # the .debs stay in CACHE/debs: the next day's base fetches only what changed
        mkdir -p "$cache/debs"
        find "$cache/debs" -name '*.deb' -mtime +30 -delete
        debootstrap --variant=minbase --arch="$arch" --components=main --cache-dir="$cache/debs" \
            "$suite" "$root" "$mirror" >"$cache/$name.log" 2>&1 \
            || { tail -n 20 "$cache/$name.log" >&2; rm -rf "$root"; exit 1; }
        printf '%s\n' "$sources" >"$root/etc/apt/sources.list"
        [ -z "$aptconf" ] || printf '%s\n' "$aptconf" >"$root/etc/apt/apt.conf.d/99beamfleet-host"
        cat >"$root/etc/dpkg/dpkg.cfg.d/99beamfleet-slim" <<'EOF'
# deploy/debian-base.sh: what Debian's -slim images leave out
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/info/*
path-exclude /usr/share/locale/*
path-include /usr/share/locale/locale.alias
path-exclude /usr/share/lintian/*
EOF
        cat >"$root/etc/apt/apt.conf.d/99beamfleet-slim" <<'EOF'
APT::Install-Recommends "false";
APT::Install-Suggests "false";
Acquire::Languages "none";
EOF
        # what the base itself has of those, and apt's lists and downloads
        find "$root/usr/share/doc" -mindepth 1 ! -name copyright ! -type d -delete
        find "$root/usr/share/doc" -mindepth 1 -type d -empty -delete
        rm -rf "$root/usr/share/man" "$root/usr/share/info" "$root/usr/share/lintian"
        find "$root/usr/share/locale" -mindepth 1 -maxdepth 1 ! -name locale.alias -exec rm -rf {} +
        rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin "$root"/var/cache/apt/archives/*.deb \
            "$root"/var/log/* "$root"/tmp/* "$root/etc/hostname" "$root/etc/resolv.conf"
        tar --numeric-owner --xattrs -C "$root" -cf "$tar.part" .
        rm -rf "$root"
        mv "$tar.part" "$tar"
        # one base a day is enough: the older tars go
        for old in "$cache"/"$suite"-*.tar; do
            [ "$old" = "$tar" ] || rm -f "$old" "${old%.tar}.log"
        done
    fi
    $PODMAN import --change 'CMD ["/bin/bash"]' "$tar" "$tag" >/dev/null
    # and the older days' bases go from podman too (their layers stay while an
    # image built on them is kept)
    $PODMAN images --format '{{.Repository}}:{{.Tag}}' localhost/beamfleet-base | grep ":$suite-" \
        | grep -v -x -F "$tag" | while read -r old; do $PODMAN rmi "$old" >/dev/null 2>&1 || true; done
fi
$PODMAN tag "$tag" localhost/beamfleet-base:latest
echo "$tag"
