#!/usr/bin/env bash
# The main job, end to end on a fresh Debian 12 machine (as root, or as a user once the packages are there):
# install the Debian packages and udocker in a virtual environment, start a local registry, build and push the
# test busybox image, pull it with udocker and list the images.
#
# Environment: UDOCKER_VENV (default CHECKOUT/.venv), UDOCKER_DEMO_DIR (default /tmp/udocker-demo: the
# registry's data and the udocker repository), KEEP_REGISTRY=1 to leave the registry running at the end.
set -euo pipefail

TOP=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV=${UDOCKER_VENV:-$TOP/.venv}
WORK=${UDOCKER_DEMO_DIR:-/tmp/udocker-demo}
PACKAGES=(docker-registry busybox-static python3-venv python3-pip proot fakechroot runc crun patchelf uidmap)

say() { printf '\n=== %s\n' "$*" >&2; }

missing=()
for package in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
done
if [ ${#missing[@]} -gt 0 ]; then
    say "installing ${missing[*]}"
    if [ "$(id -u)" -ne 0 ]; then
        echo "demo: run me as root to install: ${missing[*]}" >&2
        exit 1
    fi
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

say "installing udocker in $VENV"
if [ ! -x "$VENV/bin/python" ]; then
    /usr/bin/python3 -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install -q --disable-pip-version-check -e "$TOP" 2>&1 | { grep -v 'is ignored' || true; }
UDOCKER=("$VENV/bin/udocker" --repo "$WORK/repo")

say "starting a local registry"
rm -rf "$WORK"
mkdir -p "$WORK"
HOST=$(/usr/bin/python3 "$TOP/utils/local_registry.py" "$WORK/registry")
stop_registry() {
    # local_registry.py leaves docker-registry running in its own session: find it by its config file.
    local proc
    for proc in /proc/[0-9]*; do
        if tr '\0' ' ' <"$proc/cmdline" 2>/dev/null | grep -qF "serve $WORK/registry/config.yml"; then
            kill "${proc#/proc/}" 2>/dev/null || true
        fi
    done
}
if [ "${KEEP_REGISTRY:-}" = 1 ]; then
    echo "registry: $HOST (left running; its data: $WORK/registry)" >&2
else
    trap stop_registry EXIT
fi
echo "registry: $HOST" >&2

say "building and pushing $HOST/test/busybox:latest"
/usr/bin/python3 "$TOP/utils/build_test_images.py" --registry "$HOST"

say "udocker pull $HOST/test/busybox:latest"
"${UDOCKER[@]}" pull "$HOST/test/busybox:latest"

say "udocker images"
"${UDOCKER[@]}" images

say "udocker run --rm $HOST/test/busybox:latest (the image's own sh, in the default execution mode)"
"${UDOCKER[@]}" run --rm "$HOST/test/busybox:latest" sh -c 'echo "hello from $(uname -m) busybox in $(pwd)"; ls /'

say "udocker run in PRoot mode P1, as a named container"
"${UDOCKER[@]}" create --name=demo "$HOST/test/busybox:latest"
"${UDOCKER[@]}" setup --execmode=P1 demo
"${UDOCKER[@]}" run demo sh -c 'echo "P1: uid $(id -u) sees $(cat /etc/hostname 2>/dev/null || hostname)"'
"${UDOCKER[@]}" rm demo

say "done: try ${UDOCKER[*]} images"
