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
    $SUDO apt-get -o DPkg::Lock::Timeout=300 update -qq
    # Packages such as openssh-server, slurm-wlm and munge start their
    # services when installed; the tests start their own, on their own ports.
    # A policy-rc.d that says "no" (exit 101) for the length of the install
    # keeps the host as it was (invoke-rc.d and deb-systemd-invoke obey it).
    policy=""
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        policy=/usr/sbin/policy-rc.d
        printf '#!/bin/sh\nexit 101\n' | $SUDO tee "$policy" >/dev/null
        $SUDO chmod 755 "$policy"
        trap '$SUDO rm -f "$policy"' EXIT INT TERM
    fi
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get -o DPkg::Lock::Timeout=300 install -y -qq \
        $missing >/dev/null
    if [ -n "$policy" ]; then
        $SUDO rm -f "$policy"
        trap - EXIT INT TERM
    fi
fi
for p in $pys; do
    python3 -c "import ${p#py}" 2>/dev/null && continue
    echo "install-deps: installing Python package $p"
    python3 -m pip install -q "$p" 2>/dev/null || python3 -m pip install -q --break-system-packages "$p"
done
