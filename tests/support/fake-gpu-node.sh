#!/bin/sh
# Run COMMAND on a fake GPU node: in a private mount namespace, the fake NVIDIA driver of
# tests/support/fake_nvidia.py (built here with gcc) is installed at a real driver's paths, and nothing on the
# real host changes (overlay mounts whose upper layers live in a tmpfs, a tmpfs over /proc/driver, bind mounts):
#   libraries  libcuda.so.<ver>, libnvidia-ml.so.<ver> and their links in /usr/lib/x86_64-linux-gnu (Debian
#              layout, the default) or /usr/lib64 (RHEL 8 layout: --layout=rhel), entered in the loader cache
#              (ldconfig writes a cache that is bound over /etc/ld.so.cache; /usr/lib64 added to its search)
#   binaries   /usr/bin/nvidia-smi
#   sandbox    --layout=sandbox: a GPU sandbox's layout, as seen on a real H200 node (Ubuntu 24.04): the driver in
#              /usr/local/nvidia/lib64 (entered in the loader cache) and /usr/local/nvidia/bin, and
#              /usr/bin/nvidia-smi a wrapper script that execs /usr/local/nvidia/bin/nvidia-smi
#   /proc      /proc/driver/nvidia/version and gpus/<bus id>/information of N GPUs (--gpus=N, default 2)
#   /dev       nvidia0..nvidia<N-1> (char 195,minor), nvidiactl (195,255), nvidia-uvm, nvidia-uvm-tools, mode
#              0666 as udev makes them, in an overlay over /dev (its pts, shm and mqueue mounts put back)
#   MIG        with --mig, GPU 1 is MIG-enabled with two MIG devices (fake_nvidia.MIG_LAYOUT: GPU instances
#              1 and 2, compute instance 0 each): /proc/driver/nvidia/capabilities (mig/config, mig/monitor,
#              gpu1/mig/gi<G>/access, gi<G>/ci0/access) and /dev/nvidia-caps/nvidia-cap<M> (char, mode 0400
#              for config/monitor, 0444 for the instances, as nvidia-modprobe makes them); needs --gpus >= 2
#   /media     a plain /proc mount (see below), for R modes
# COMMAND runs with UDOCKER_TEST_FAKE_GPU=<layout> (<layout>-mig with --mig) in its environment (runuser -u
# USER -- env -i ... drops it: pass it on). --layout=debian-mig and rhel-mig are the layouts with --mig.
# tests/gpu needs this variable and checks that the node is really there.
#
# usage (as root): tests/support/fake-gpu-node.sh [--layout=debian|rhel[-mig]|sandbox] [--gpus=N] [--mig] COMMAND...
set -eu
layout=debian gpus=2 mig=no
while [ $# -gt 0 ]; do
    case $1 in
        --layout=debian|--layout=rhel|--layout=sandbox) layout=${1#--layout=}; shift ;;
        --layout=debian-mig|--layout=rhel-mig) layout=${1#--layout=}; layout=${layout%-mig} mig=yes; shift ;;
        --gpus=[1-9]|--gpus=1[0-6]) gpus=${1#--gpus=}; shift ;;
        --mig) mig=yes; shift ;;
        --*) echo "fake-gpu-node: unknown option $1" >&2; exit 2 ;;
        *) break ;;
    esac
done
[ $# -gt 0 ] || { sed -n '/^# usage/p' "$0" >&2; exit 2; }
[ "$mig" = no ] || [ "$gpus" -ge 2 ] || { echo "fake-gpu-node: --mig splits GPU 1: needs --gpus >= 2" >&2; exit 2; }
[ "$(id -u)" -eq 0 ] || { echo "fake-gpu-node: run me as root (I mount and mknod)" >&2; exit 2; }
here=$(cd "$(dirname "$0")" && pwd)
exec unshare --mount --propagation private sh -c '
    set -eu
    here=$1 layout=$2 gpus=$3 mig=$4; shift 4
    # staging: a tmpfs on an empty directory of the host, detached again once everything is mounted
    stage=/media; [ -d "$stage" ] || stage=/mnt
    mount -t tmpfs -o mode=755 fake-gpu-node "$stage"
    overlay() {  # overlay DIR: DIR writable here, its changes kept in the staging tmpfs
        mkdir -p "$stage/upper$1" "$stage/work$1"
        mount -t overlay fake-gpu-node -o "lowerdir=$1,upperdir=$stage/upper$1,workdir=$stage/work$1" "$1"
    }
    /usr/bin/python3 "$here/fake_nvidia.py" build "$stage/build" >/dev/null
    case $layout in
        debian) libdir=/usr/lib/x86_64-linux-gnu ;;
        rhel) libdir=/usr/lib64 ;;
        sandbox) libdir=/usr/local/nvidia/lib64 ;;
    esac
    if [ "$layout" = sandbox ]; then overlay /usr/local; mkdir -p "$libdir" /usr/local/nvidia/bin; else overlay "$libdir"; fi
    cp -P "$stage"/build/libcuda.so* "$stage"/build/libnvidia-ml.so* "$libdir/"
    overlay /usr/bin
    if [ "$layout" = sandbox ]; then
        cp "$stage/build/nvidia-smi" /usr/local/nvidia/bin/nvidia-smi
        printf "%s\n" "#!/bin/sh" "# the sandbox'"'"'s wrapper: the driver'"'"'s programs are in /usr/local/nvidia/bin" \
            "export LD_LIBRARY_PATH=\"\${LD_LIBRARY_PATH:+\$LD_LIBRARY_PATH:}/usr/local/nvidia/lib64\"" \
            "exec /usr/local/nvidia/bin/nvidia-smi \"\$@\"" >/usr/bin/nvidia-smi
        chmod 755 /usr/bin/nvidia-smi
    else
        cp "$stage/build/nvidia-smi" /usr/bin/nvidia-smi
    fi
    { echo "include /etc/ld.so.conf.d/*.conf"; [ "$layout" = debian ] || echo "$libdir"; } >"$stage/ld.so.conf"
    # -X: no soname links made in the scanned directories (they are the host'"'"'s)
    ldconfig -X -f "$stage/ld.so.conf" -C "$stage/ld.so.cache"
    mount --bind "$stage/ld.so.cache" /etc/ld.so.cache
    mount -t tmpfs -o mode=755 fake-gpu-node /proc/driver
    /usr/bin/python3 "$here/fake_nvidia.py" proc / "$gpus"
    # /dev: an overlay (its submounts are not part of it: bound back from a copy of the mount tree)
    mkdir "$stage/dev"
    mount --rbind /dev "$stage/dev"
    overlay /dev
    for sub in pts shm mqueue hugepages; do
        if mountpoint -q "$stage/dev/$sub"; then mount --rbind "$stage/dev/$sub" "/dev/$sub"; fi
    done
    minor=0
    while [ "$minor" -lt "$gpus" ]; do mknod -m 666 "/dev/nvidia$minor" c 195 "$minor"; minor=$((minor + 1)); done
    mknod -m 666 /dev/nvidiactl c 195 255
    mknod -m 666 /dev/nvidia-uvm c 510 0
    mknod -m 666 /dev/nvidia-uvm-tools c 510 1
    if [ "$mig" = yes ]; then
        mkdir -p /dev/nvidia-caps
        /usr/bin/python3 "$here/fake_nvidia.py" mig / | while read -r name cap mode; do
            mknod -m "$mode" "/dev/nvidia-caps/$name" c 508 "$cap"
        done
    fi
    umount -l "$stage/dev"
    umount -l "$stage"
    # A user namespace (R modes) may mount a new /proc only while some /proc mount is fully visible: the one
    # at /proc has the tmpfs over /proc/driver, so a plain one goes where the staging tmpfs was.
    mount -t proc fake-gpu-node "$stage"
    export UDOCKER_TEST_FAKE_GPU="$layout"
    [ "$mig" = no ] || UDOCKER_TEST_FAKE_GPU="$layout-mig"
    exec "$@"' fake-gpu-node "$here" "$layout" "$gpus" "$mig" "$@"
