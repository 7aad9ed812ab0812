#!/usr/bin/env bash
# Installs the real BitTorrent clients used by tests/clients/e2e.py and a Python venv with
# libtorrent, PyJWT and cryptography at tests/clients/.venv.  Idempotent and non-interactive; re-runs are fast.
# Set E2E_WITH_OPENTRACKER=1 to also install Debian's opentracker (for comparison runs).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
venv="$here/.venv"
export DEBIAN_FRONTEND=noninteractive

SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi

pkgs=(transmission-cli aria2 rtorrent ctorrent mktorrent python3-venv)
if [ "${E2E_WITH_OPENTRACKER:-0}" = 1 ]; then pkgs+=(opentracker); fi

missing=()
for p in "${pkgs[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
        missing+=("$p")
    fi
done
if [ "${#missing[@]}" -gt 0 ]; then
    echo "install.sh: installing ${missing[*]}"
    $SUDO apt-get update -q
    $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
    # opentracker's package enables a system service on port 6969; we start our own.
    if [[ " ${missing[*]} " == *" opentracker "* ]] && command -v systemctl >/dev/null; then
        $SUDO systemctl disable --now opentracker >/dev/null 2>&1 || true
    fi
else
    echo "install.sh: Debian packages already installed"
fi

# The venv uses Debian's python (python3-venv above) so that it does not depend on
# whatever python3 comes first on PATH.
py=/usr/bin/python3
[ -x "$py" ] || py="$(command -v python3)"
# PyJWT + cryptography sign the tokens of the jwt-* cases (RS256, ES256, EdDSA).
py_mods=(libtorrent jwt cryptography)
py_pkgs=(libtorrent "PyJWT[crypto]" cryptography)
if [ -x "$venv/bin/python" ] && "$venv/bin/python" -c 'import libtorrent' 2>/dev/null; then
    if ! "$venv/bin/python" -c "import ${py_mods[*]// /,}" 2>/dev/null; then
        "$venv/bin/pip" install -q --disable-pip-version-check "${py_pkgs[@]}"
    fi
    echo "install.sh: $venv already has libtorrent $("$venv/bin/python" -c 'import libtorrent; print(libtorrent.__version__)')"
else
    rm -rf "$venv"
    "$py" -m venv "$venv"
    "$venv/bin/pip" install -q --disable-pip-version-check "${py_pkgs[@]}"
    "$venv/bin/python" -c 'import libtorrent; print("install.sh: libtorrent", libtorrent.__version__)'
fi
"$venv/bin/python" -c 'import jwt, cryptography; print("install.sh: PyJWT", jwt.__version__, "cryptography", cryptography.__version__)'
