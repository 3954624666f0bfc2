#!/bin/bash
# GPU check of `udocker run --nvidia` on a real NVIDIA node (CI never needs a GPU; this is run by hand).
#
# It installs udocker from this tree into a fresh virtual environment, builds a tiny image from the host's
# own programs (the node has no internet: nothing is pulled), imports it, and for each mode (P1, R1, R2, R3
# and F1 by default; R2 and R3 are skipped, with a verdict saying why, where their setup or a plain run fails)
# runs with --nvidia: nvidia-smi as the command, a CUDA driver API device query whose count must be
# the host's, the same with CUDA_VISIBLE_DEVICES=0 (one device) and without LD_LIBRARY_PATH (libcuda through
# the container's loader cache; not in F modes). Where nvidia-smi -L lists MIG devices, each mode also runs
# on one MIG device, named by its UUID, by the toolkit's <gpu>:<mig> index and by a Slurm gres index: one
# device, CUDA_VISIBLE_DEVICES naming it, and in R modes only its two nvidia-caps nodes; a MIG UUID that
# does not exist must be a one-line error. With /dev/infiniband on the node, ibv_devices (the host's,
# without its libraries, so that udocker injects rdma-core) must list the adapters with no provider warning.
# Every step is labelled and time-limited and ends with a one-line verdict (ok / FAILED); the summary lists
# them all. The whole check takes a minute or two, well under 10 minutes.
#
# usage: utils/gpu_check.sh [--wheelhouse DIR] [--engines BUNDLE] [--modes "P1 R1"] [--keep] [--dry-run]
#   --wheelhouse DIR  wheels of the dependencies, made where PyPI is reachable with
#                       pip download -d wheelhouse click requests pyyaml psutil nvidia-ml-py
#                     (without it the system python3 must already import click, requests, yaml)
#   --engines BUNDLE  an engine bundle from engines/build-bundle.sh, installed with `udocker install --from`
#                     (without it proot/runc must be installed already, on PATH or in the repository)
#   --modes LIST      modes to check (default "P1 R1 R2 R3 F1")
#   --keep            keep the work directory (printed at the start)
#   --dry-run         no GPU needed: prepare everything, show `udocker info`, print the container commands
#                     without running them
# Exit status: 0 every check passed, 1 a check failed, 2 the node has no NVIDIA driver/GPU (not dry-run).
set -u
TOP=$(cd "$(dirname "$0")/.." && pwd)
GPUS=1  # the host's GPU count (nvidia-smi -L); 1 in a dry run
MIGS=""  # the host's MIG devices, "GPU-index MIG-index gres-index UUID" per line (nvidia-smi -L)
WHEELHOUSE="" ENGINES="" MODES="P1 R1 R2 R3 F1" KEEP=0 DRY=0
OPTIONAL="R2 R3"  # modes whose setup or first plain run may fail here (PRoot inside runc/crun, a uid range
                  # without newuidmap): skipped, with the reason, not failed
while [ $# -gt 0 ]; do
    case "$1" in
        --wheelhouse) WHEELHOUSE=$(cd "$2" && pwd); shift 2 ;;
        --engines) ENGINES=$(cd "$(dirname "$2")" && pwd)/$(basename "$2"); shift 2 ;;
        --modes) MODES=$2; shift 2 ;;
        --keep) KEEP=1; shift ;;
        --dry-run) DRY=1; shift ;;
        -h|--help) sed -n '2,27p' "$0"; exit 0 ;;
        *) echo "gpu_check: unknown option $1" >&2; exit 2 ;;
    esac
done
WORK=$(mktemp -d "${TMPDIR:-/tmp}/udocker-gpu-check.XXXXXX")
[ "$KEEP" = 1 ] || trap 'rm -rf "$WORK"' EXIT
export UDOCKER_DIR="$WORK/repo"
FAILED="" VERDICTS=""
section() { printf '\n===== %s =====\n' "$*"; }
verdict() {  # verdict NAME STATUS: the one-line verdict of a check (STATUS skipped: not run here, with why)
    if [ "$2" = skipped ]; then echo "----- skipped: $1"; VERDICTS="$VERDICTS
skipped $1"; return; fi
    if [ "$2" = 0 ]; then echo "----- ok: $1"; VERDICTS="$VERDICTS
ok      $1"; else echo "----- FAILED ($2): $1"; FAILED="$FAILED [$1]"; VERDICTS="$VERDICTS
FAILED  $1"; fi
}
check() {  # check NAME SECONDS COMMAND...: run, show output, pass on status 0
    local name=$1 limit=$2 status=0; shift 2
    echo "\$ $*"
    timeout "$limit" "$@" || status=$?
    verdict "$name" "$status"
}
expect() {  # expect NAME SECONDS REGEX COMMAND...: run, show output, pass on status 0 with REGEX in the output
    local name=$1 limit=$2 regex=$3 status=0 out; shift 3
    echo "\$ $*   (expecting /$regex/)"
    out=$(timeout "$limit" "$@" 2>&1) || status=$?
    printf '%s\n' "$out"
    [ "$status" != 0 ] || printf '%s\n' "$out" | grep -Eq -- "$regex" || status=mismatch
    verdict "$name" "$status"
}
echo "gpu_check: tree $TOP, work directory $WORK, modes $MODES$([ "$DRY" = 1 ] && echo ', dry run')"

section "1. host driver and GPUs"
uname -a
if [ -r /proc/driver/nvidia/version ] && command -v nvidia-smi >/dev/null && timeout 60 nvidia-smi -L; then
    head -1 /proc/driver/nvidia/version
    ls -l /dev/nvidia* 2>&1 | head -20
    GPUS=$(timeout 60 nvidia-smi -L | grep -c '^GPU ')
    # MIG devices: "  MIG 1g.10gb     Device  0: (UUID: MIG-...)" lines under their GPU's line; the Slurm gres
    # index (AutoDetect=nvml) counts GPUs in order, a MIG-enabled one as its MIG devices
    MIGS=$(timeout 60 nvidia-smi -L | awk '/^GPU /{if (seen && n == 0) g++; seen = 1; gpu = $2; sub(":", "", gpu); n = 0}
        /^ +MIG .*UUID: MIG-/{u = $0; sub(/.*UUID: /, "", u); sub(/\).*/, "", u); print gpu, n, g, u; n++; g++}')
    [ -z "$MIGS" ] || { echo "MIG devices (GPU index, MIG index, Slurm gres index, UUID):"; printf '%s\n' "$MIGS"; }
else
    echo "no NVIDIA driver or GPU on this node (/proc/driver/nvidia/version, nvidia-smi)"
    [ "$DRY" = 1 ] || exit 2
fi

section "2. udocker in a virtual environment"
PY=python3
if [ -n "$WHEELHOUSE" ]; then
    timeout 120 python3 -m venv "$WORK/venv" || { echo "FAILED: python3 -m venv"; exit 1; }
    PY="$WORK/venv/bin/python"
    timeout 180 "$PY" -m pip install -q --no-index --find-links "$WHEELHOUSE" click requests pyyaml psutil \
        nvidia-ml-py || { echo "FAILED: installing the dependencies from $WHEELHOUSE"; exit 1; }
    # the project itself: a real install when setuptools is there, else run from the tree
    timeout 120 "$PY" -m pip install -q --no-index --no-deps --no-build-isolation "$TOP" 2>/dev/null \
        || echo "(setuptools missing in the venv: running udocker from $TOP)"
fi
export PYTHONPATH="$TOP"  # harmless after an install; needed without one
udocker() { "$PY" -m udocker "$@"; }
udocker --version || { echo "FAILED: udocker does not start (missing dependencies? use --wheelhouse)"; exit 1; }
if [ -n "$ENGINES" ]; then check "engines install" 120 "$PY" -m udocker install --from "$ENGINES"; fi
udocker install || true
check "udocker info" 120 "$PY" -m udocker info

section "3. a test image from the host's programs"
ROOTFS="$WORK/rootfs"
mkdir -p "$ROOTFS"/{bin,usr/bin,etc,tmp,dev,proc,sys}
copy_with_libs() {  # copy_with_libs PROGRAM: into the rootfs at the same path, with its shared libraries
    local program=$1
    mkdir -p "$ROOTFS$(dirname "$program")" && cp -L "$program" "$ROOTFS$program"
    ldd "$program" 2>/dev/null | grep -o '/[^ ]*' | while read -r lib; do
        [ -e "$ROOTFS$lib" ] || { mkdir -p "$ROOTFS$(dirname "$lib")" && cp -L "$lib" "$ROOTFS$lib"; }
    done
}
for tool in sh ls cat env head; do
    path=$(command -v "$tool") && copy_with_libs "$(readlink -f "$path")" && \
        [ -e "$ROOTFS/bin/$tool" ] || ln -sf "$(readlink -f "$path")" "$ROOTFS/bin/$tool" 2>/dev/null
done
# the C library's companions that the driver's libcuda.so.1 needs (libm, libdl, libpthread, librt): every real
# image has them, a rootfs of a few programs may not (seen on a GPU node: dlopen failed on libm.so.6)
LDCONFIG=$(command -v ldconfig || echo /sbin/ldconfig)
for lib in libm.so.6 libdl.so.2 libpthread.so.0 librt.so.1; do
    path=$("$LDCONFIG" -p 2>/dev/null | awk -v name="$lib" '$1 == name && /x86-64|64bit/ {print $NF; exit}')
    [ -z "$path" ] || [ -e "$ROOTFS$path" ] || copy_with_libs "$path"
done
echo "root:x:0:0:root:/root:/bin/sh" > "$ROOTFS/etc/passwd"; echo "root:x:0:" > "$ROOTFS/etc/group"
QUERY=""
if command -v gcc >/dev/null || command -v cc >/dev/null; then
    # A CUDA driver API device query that needs no CUDA toolkit: libcuda.so.1 is opened at run time, so the
    # program finds the driver the way any CUDA program in the container would (LD_LIBRARY_PATH).
    cat > "$WORK/cuda_query.c" <<'CODE'
#include <dlfcn.h>
#include <stdio.h>
typedef int (*f_init)(unsigned), (*f_int)(int *), (*f_get)(int *, int), (*f_name)(char *, int, int);
typedef int (*f_mem)(size_t *, int), (*f_attr)(int *, int, int);
int main(void) {
    void *cuda = dlopen("libcuda.so.1", RTLD_NOW);
    if (!cuda) { printf("dlopen libcuda.so.1: %s\n", dlerror()); return 1; }
    f_init init = (f_init) dlsym(cuda, "cuInit"); f_int count = (f_int) dlsym(cuda, "cuDeviceGetCount");
    f_int version = (f_int) dlsym(cuda, "cuDriverGetVersion"); f_get get = (f_get) dlsym(cuda, "cuDeviceGet");
    f_name name = (f_name) dlsym(cuda, "cuDeviceGetName"); f_mem mem = (f_mem) dlsym(cuda, "cuDeviceTotalMem_v2");
    f_attr attr = (f_attr) dlsym(cuda, "cuDeviceGetAttribute");
    int rc = init(0), n = 0, v = 0;
    if (rc) { printf("cuInit failed: CUresult %d\n", rc); return 1; }
    version(&v); count(&n);
    printf("CUDA driver version %d.%d, %d device(s)\n", v / 1000, v % 1000 / 10, n);
    for (int i = 0; i < n; i++) {
        int dev, major = 0, minor = 0; char text[256]; size_t bytes = 0;
        get(&dev, i); name(text, sizeof text, dev); mem(&bytes, dev);
        attr(&major, 75, dev); attr(&minor, 76, dev);  /* CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR/MINOR */
        printf("device %d: %s, %zu MiB, compute capability %d.%d\n", i, text, bytes >> 20, major, minor);
    }
    return n > 0 ? 0 : 1;
}
CODE
    if $(command -v gcc || command -v cc) -O -o "$WORK/cuda_query" "$WORK/cuda_query.c" -ldl; then
        copy_with_libs "$WORK/cuda_query" && mv "$ROOTFS$WORK/cuda_query" "$ROOTFS/usr/bin/cuda_query"
        QUERY=/usr/bin/cuda_query
    fi
fi
[ -n "$QUERY" ] || echo "(no C compiler: the device query is nvidia-smi -q instead)"
IBV=""
if [ -d /dev/infiniband ] && command -v ibv_devices >/dev/null; then
    # the host's ibv_devices without the host's rdma-core: udocker injects it (an image with its own keeps it)
    copy_with_libs "$(readlink -f "$(command -v ibv_devices)")"
    find "$ROOTFS" \( -name 'libibverbs*' -o -name 'librdmacm*' -o -name 'lib*-rdmav*.so' \) -exec rm -rf {} + 2>/dev/null
    IBV=$(readlink -f "$(command -v ibv_devices)")
fi
tar -C "$ROOTFS" -cf "$WORK/image.tar" . && du -sh "$WORK/image.tar"
check "import" 120 "$PY" -m udocker import "$WORK/image.tar" gpucheck:1

mig_checks() {  # mig_checks MODE: the first MIG device, named three ways; a MIG UUID that does not exist
    local mode=$1 probe want
    # shellcheck disable=SC2086
    set -- $(printf '%s\n' "$MIGS" | head -1)  # GPU index, MIG index, gres index, UUID
    # on one line (echo of an unquoted substitution: the image has sh, ls, cat, env, head), for one regex
    probe="echo \$(${QUERY:-nvidia-smi -L}; echo CUDA_VISIBLE_DEVICES=\$CUDA_VISIBLE_DEVICES caps: \$(ls /dev/nvidia-caps))"
    want="UUID: $4"
    [ -z "$QUERY" ] || want=" 1 device\(s\)"
    want="$want.*CUDA_VISIBLE_DEVICES=$4"
    case $mode in R*) want="$want caps: nvidia-cap[0-9]+ nvidia-cap[0-9]+ *\$" ;; esac
    expect "$mode MIG device by UUID $4" 120 "$want" \
        "$PY" -m udocker run --nvidia -e NVIDIA_VISIBLE_DEVICES="$4" "gpucheck-$mode" sh -c "$probe"
    expect "$mode MIG device by index $1:$2" 120 "$want" \
        "$PY" -m udocker run --nvidia -e NVIDIA_VISIBLE_DEVICES="$1:$2" "gpucheck-$mode" sh -c "$probe"
    expect "$mode MIG device by Slurm gres index $3" 120 "$want" \
        env SLURM_JOB_ID=1 SLURM_STEP_GPUS="$3" "$PY" -m udocker run --nvidia "gpucheck-$mode" sh -c "$probe"
    expect "$mode MIG UUID that does not exist: one error line" 120 '^error: .*no such MIG device' sh -c \
        '! "$@"' - "$PY" -m udocker run --nvidia -e NVIDIA_VISIBLE_DEVICES=MIG-00000000-0000-0000-0000-000000000000 \
        "gpucheck-$mode" true
}

section "4. runs with --nvidia"
for mode in $MODES; do
    if [ "$DRY" = 1 ]; then
        echo "would run in $mode: nvidia-smi -L; ${QUERY:-nvidia-smi -q} (expect $GPUS device(s)); the same with" \
            "-e CUDA_VISIBLE_DEVICES=0 (1 device) and under env -u LD_LIBRARY_PATH${IBV:+; $IBV}"
        continue
    fi
    section "4.$mode"
    run=("$PY" -m udocker run --nvidia "gpucheck-$mode")
    check "create $mode" 120 "$PY" -m udocker create --name "gpucheck-$mode" gpucheck:1
    case " $OPTIONAL " in
        *" $mode "*) if ! why=$(timeout 180 "$PY" -m udocker setup --execmode="$mode" "gpucheck-$mode" 2>&1) ||
                        ! why=$(timeout 120 "$PY" -m udocker run "gpucheck-$mode" sh -c : 2>&1); then
                         verdict "$mode cannot run on this node: $(printf '%s' "$why" | head -1)" skipped
                         continue
                     fi
                     verdict "setup $mode" 0 ;;
        *) check "setup $mode" 180 "$PY" -m udocker setup --execmode="$mode" "gpucheck-$mode" ;;
    esac
    expect "$mode nvidia-smi as the command" 120 '^GPU 0: ' "${run[@]}" nvidia-smi -L
    if [ -n "$QUERY" ]; then
        expect "$mode driver API counts $GPUS device(s)" 120 " $GPUS device\(s\)" "${run[@]}" "$QUERY"
        expect "$mode CUDA_VISIBLE_DEVICES=0 selects 1 device" 120 " 1 device\(s\)" \
            "$PY" -m udocker run --nvidia -e CUDA_VISIBLE_DEVICES=0 "gpucheck-$mode" "$QUERY"
        case "$mode" in
            F*) echo "(F modes: libcuda without LD_LIBRARY_PATH is not checked: their loader reads no container cache)" ;;
            *) expect "$mode libcuda without LD_LIBRARY_PATH" 120 " $GPUS device\(s\)" \
                   "${run[@]}" env -u LD_LIBRARY_PATH "$QUERY" ;;
        esac
    else
        check "$mode nvidia-smi -q" 120 "${run[@]}" nvidia-smi -q
    fi
    check "$mode environment" 60 "${run[@]}" sh -c \
        'echo LD_LIBRARY_PATH=$LD_LIBRARY_PATH NVIDIA_VISIBLE_DEVICES=$NVIDIA_VISIBLE_DEVICES CUDA_VISIBLE_DEVICES=$CUDA_VISIBLE_DEVICES; test -e /.udocker/nvidia/lib64/libcuda.so.1'
    [ -z "$MIGS" ] || mig_checks "$mode"
    if [ -n "$IBV" ]; then
        check "$mode Infiniband: ibv_devices lists adapters, every provider loads" 120 \
            "$PY" -m udocker run --ib -e IBV_SHOW_WARNINGS=1 "gpucheck-$mode" sh -c \
            "$IBV >/tmp/ibv.out 2>&1; cat /tmp/ibv.out; ! grep -q 'load driver' /tmp/ibv.out && test \$(grep -c . /tmp/ibv.out) -gt 2"
    fi
done

section "summary"
printf '%s\n' "${VERDICTS#?}"
if [ -n "$FAILED" ]; then echo "FAILED:$FAILED"; exit 1; fi
echo "all checks passed"
