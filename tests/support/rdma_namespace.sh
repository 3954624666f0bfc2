#!/bin/sh
# usage (as any user): sh tests/support/rdma_namespace.sh FAKE_SYSFS COMMAND [ARG...]
# Run COMMAND, as the caller, where the node seems to have one RDMA adapter: in a private user and mount
# namespace, /sys/class is a tmpfs holding FAKE_SYSFS/infiniband and FAKE_SYSFS/infiniband_verbs, and /dev a
# tmpfs with the usual nodes bound from the host plus /dev/infiniband/uverbs0 (the host's /dev/null: a
# character device, which is all libibverbs checks). A second user namespace maps the caller back to its own
# uid and gid, so that COMMAND runs unprivileged. Nothing changes outside COMMAND's process tree.
set -eu
[ $# -gt 1 ] || { sed -n '2p' "$0" >&2; exit 2; }
fake=$1; shift
exec unshare --map-root-user --mount --propagation private sh -eu -c '
fake=$1; uid=$2; gid=$3; shift 3
mount -t tmpfs -o mode=755 none /sys/class
for class in infiniband infiniband_verbs; do
    mkdir "/sys/class/$class"; mount --bind "$fake/$class" "/sys/class/$class"
done
dev=/sys/class/.dev  # staging, on the tmpfs: removed once bound over /dev
mkdir "$dev"
mount -t tmpfs -o mode=755 none "$dev"
for node in null zero full random urandom tty ptmx; do
    if [ -e "/dev/$node" ]; then touch "$dev/$node"; mount --bind "/dev/$node" "$dev/$node"; fi
done
for sub in pts shm mqueue; do
    if [ -d "/dev/$sub" ]; then mkdir "$dev/$sub"; mount --rbind "/dev/$sub" "$dev/$sub"; fi
done
ln -s /proc/self/fd "$dev/fd"; ln -s fd/0 "$dev/stdin"; ln -s fd/1 "$dev/stdout"; ln -s fd/2 "$dev/stderr"
mkdir "$dev/infiniband"; touch "$dev/infiniband/uverbs0"; mount --bind /dev/null "$dev/infiniband/uverbs0"
mount --rbind "$dev" /dev
umount -R "$dev"; rmdir "$dev"
exec unshare --map-user="$uid" --map-group="$gid" -- "$@"' rdma-namespace "$fake" "$(id -u)" "$(id -g)" "$@"
