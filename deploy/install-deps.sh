#!/bin/sh
# install-deps.sh DEB... -- PY...: installs the Debian and Python packages that
# are missing, and nothing else. Needs root (or sudo) only when something is
# missing, so a machine that has everything never asks.
set -eu
debs=""; pys=""; side=deb
for a in "$@"; do
    if [ "$a" = "--" ]; then side=py; continue; fi
    if [ $side = deb ]; then debs="$debs $a"; else pys="$pys $a"; fi
done
missing=""
for p in $debs; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
if [ -n "$missing" ]; then
    echo "install-deps: installing Debian packages:$missing"
    SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO=sudo
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq $missing >/dev/null
fi
for p in $pys; do
    python3 -c "import ${p#py}" 2>/dev/null && continue
    echo "install-deps: installing Python package $p"
    python3 -m pip install -q "$p" 2>/dev/null || python3 -m pip install -q --break-system-packages "$p"
done
