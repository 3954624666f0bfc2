#!/bin/sh
# Run COMMAND where this host's engines cannot be found, as on a cluster where no admin installed them: a
# private mount namespace in which /dev/null is bound over proot, runc, crun, patchelf and slirp4netns and an empty,
# read-only tmpfs over libfakechroot's directories. Nothing changes outside COMMAND's process tree.
#
# usage (as root): utils/hide-engines.sh COMMAND [ARG...]     e.g. ... runuser -u alice -- udocker run IMAGE
# Used by .ci/run (the bundled-engine tests) and utils/demo.sh (README command 1).
set -eu
[ $# -gt 0 ] || { sed -n '6p' "$0" >&2; exit 2; }
[ "$(id -u)" -eq 0 ] || { echo "hide-engines: run me as root (I mount over the engines)" >&2; exit 2; }
exec unshare --mount --propagation private sh -c '
    set -eu
    for name in proot runc crun patchelf slirp4netns; do
        for dir in /usr/local/sbin /usr/local/bin /usr/sbin /usr/bin /sbin /bin; do
            if [ -f "$dir/$name" ]; then mount --bind /dev/null "$dir/$name"; fi
        done
    done
    for dir in /usr/lib/*/fakechroot /usr/lib/fakechroot /usr/lib64/fakechroot /lib/*/fakechroot; do
        if [ -d "$dir" ] && ! mountpoint -q "$dir"; then mount -t tmpfs -o ro,size=4k,mode=755 none "$dir"; fi
    done
    exec "$@"' hide-engines "$@"
