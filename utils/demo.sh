#!/usr/bin/env bash
# The main job, end to end on a fresh Debian 12 machine, as root: install the Debian packages, build the
# self-contained engine bundle (tarball and wheel) from them, start a local registry and push the test busybox
# image to it. Then, as the unprivileged user $UDOCKER_DEMO_USER in an environment where the host's engines
# are hidden (utils/hide-engines.sh: no proot, runc, crun, patchelf, slirp4netns or libfakechroot to be found), what a
# cluster user does: a venv with `pip install udocker udocker-engines` (here: this checkout and the wheel just
# built), `udocker pull`, `udocker images`, `udocker info`, and runs of the image in the default mode, P1 and R1.
#
# Environment: UDOCKER_DEMO_DIR (default /tmp/udocker-demo: registry data, bundle, the user's venv and
# repository), UDOCKER_DEMO_USER (default udemo; created when missing), KEEP_REGISTRY=1 to leave the registry
# running at the end.
set -euo pipefail

TOP=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
WORK=${UDOCKER_DEMO_DIR:-/tmp/udocker-demo}
DEMO_USER=${UDOCKER_DEMO_USER:-udemo}
PACKAGES=(docker-registry busybox-static python3-venv python3-pip proot fakechroot runc crun patchelf slirp4netns uidmap)

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

if [ "$(id -u)" -ne 0 ]; then
    echo "demo: run me as root (I build the engine bundle and create the user $DEMO_USER)" >&2
    exit 1
fi

say "building the engine bundle (tarball and wheel) from this machine's engines"
rm -rf "$WORK"
mkdir -p "$WORK"
chmod 755 "$WORK"
sh "$TOP/engines/build-bundle.sh" -o "$WORK/bundle" >&2
ls "$WORK/bundle" >&2

say "user $DEMO_USER (rootless runc maps the ranges in /etc/subuid and /etc/subgid)"
id -u "$DEMO_USER" >/dev/null 2>&1 || useradd --create-home --shell /bin/bash "$DEMO_USER"
for kind in uid gid; do
    touch "/etc/sub$kind"
    if ! grep -q "^$DEMO_USER:" "/etc/sub$kind"; then
        start=$(awk -F: 'BEGIN { end = 100000 } { if ($2 + $3 > end) end = $2 + $3 } END { print end }' "/etc/sub$kind")
        usermod "--add-sub${kind}s" "$start-$((start + 65535))" "$DEMO_USER"
    fi
done
# the user's copy of udocker (this checkout may live under /root, which other users cannot read)
mkdir -p "$WORK/src"
tar -C "$TOP" --exclude=./.git --exclude=./.venv --exclude='*.egg-info' --exclude=__pycache__ -cf - . \
    | tar -C "$WORK/src" -xf -
chmod -R a+rX "$WORK/bundle"
chown -R "$DEMO_USER:" "$WORK/src"  # pip builds udocker in its source tree
install -d -o "$DEMO_USER" -m 700 "$WORK/user"

say "starting a local registry"
HOST=$(/usr/bin/python3 "$TOP/tests/support/local_registry.py" "$WORK/registry")
stop_registry() {
    # local_registry.py leaves docker-registry running in its own session: find it by its config file.
    local proc
    for proc in /proc/[0-9]*; do
        if tr '\0' ' ' 2>/dev/null <"$proc/cmdline" | grep -qF "serve $WORK/registry/config.yml"; then
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
/usr/bin/python3 "$TOP/tests/support/build_test_images.py" --registry "$HOST"

say "as $DEMO_USER, with the host's engines hidden: pip install udocker udocker-engines, pull, run"
IMAGE=$HOST/test/busybox:latest
"$TOP/utils/hide-engines.sh" runuser -u "$DEMO_USER" -- env -i HOME="$(getent passwd "$DEMO_USER" | cut -d: -f6)" \
    LANG=C.UTF-8 PATH=/usr/local/bin:/usr/bin:/bin USER="$DEMO_USER" WORK="$WORK" IMAGE="$IMAGE" bash -euo pipefail -c '
say() { printf "\n=== %s\n" "$*" >&2; }
for engine in proot runc crun patchelf slirp4netns; do
    for dir in ${PATH//:/ } /usr/sbin /sbin; do
        if [ -f "$dir/$engine" ]; then echo "demo: $dir/$engine is visible: not hidden" >&2; exit 1; fi
    done
done
say "python3 -m venv; pip install udocker (this checkout) and the udocker-engines wheel"
/usr/bin/python3 -m venv "$WORK/user/venv"
"$WORK/user/venv/bin/pip" install -q --disable-pip-version-check "$WORK/src" "$WORK"/bundle/udocker_engines-*.whl
export PATH=$WORK/user/venv/bin:$PATH UDOCKER_DIR=$WORK/user/udocker
say "udocker pull $IMAGE"
udocker pull "$IMAGE"
say "udocker images"
udocker images
say "udocker run --rm $IMAGE (the default mode: the first that works here)"
udocker run --rm "$IMAGE" sh -c "echo \"hello from \$(uname -m) busybox as uid \$(id -u) in \$(pwd)\"; ls /"
say "udocker info: the engines come from the wheel"
udocker info | sed -n "/^engines:/,/^gpus:/p"
for mode in P1 R1; do
    say "udocker run in mode $mode, as a named container"
    udocker create --name="demo-$mode" "$IMAGE"
    udocker setup --execmode="$mode" "demo-$mode"
    udocker run "demo-$mode" sh -c "echo \"$mode: uid \$(id -u) on \$(hostname)\""
    udocker rm "demo-$mode"
done
'

say "done: the user's repository is $WORK/user/udocker"
