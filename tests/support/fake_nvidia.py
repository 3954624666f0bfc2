#!/usr/bin/env python3
"""A fake NVIDIA driver that behaves like the real one where injection is concerned, built with gcc.

build(directory) compiles, into `directory` (cached by a hash of the sources, the version and the compiler):
  libcuda.so.<VERSION>       cuInit, cuDriverGetVersion (12040), cuDeviceGetCount, cuDeviceGet,
                             cuDeviceGetName, cuDeviceGetUuid: the devices are the /dev/nvidia<N> nodes this
                             process can stat as character devices (or open), in minor order, then filtered by
                             CUDA_VISIBLE_DEVICES as the real driver does (indexes or GPU UUIDs/unique prefixes,
                             comma-separated; the first invalid or repeated entry ends the list)
  libnvidia-ml.so.<VERSION>  nvmlInit(_v2), nvmlShutdown, nvmlSystemGetDriverVersion, nvmlDeviceGetCount(_v2),
                             nvmlDeviceGetHandleByIndex(_v2), nvmlDeviceGetName, nvmlDeviceGetUUID: the same
                             devices, CUDA_VISIBLE_DEVICES ignored (as NVML does); the model name from
                             /proc/driver/nvidia/gpus/*/information when readable (R modes mount their own
                             /proc), else MODEL
  nvidia-smi                 dlopens libnvidia-ml.so.1; `-L` prints "GPU i: NAME (UUID: GPU-...)" lines,
                             without options a header with the driver version, then the same lines; exit 9
                             when NVML cannot be loaded, 6 when no device is found (the real statuses)
  cudacount                  for images: dlopens libcuda.so.1 and prints the device count (status 2 when the
                             library cannot be loaded, 3 when a call fails); `cudacount -v` adds the driver
                             version and each device's UUID
A GPU's UUID follows from its minor number (uuid(minor)), as a real board's is fixed, so that the library
needs no /proc. proc_files(root, gpus) writes /proc/driver/nvidia/version and gpus/<bus id>/information
under `root`, in the format udocker/inject/nvidia.py parses (as tests/fixtures/hosttree.py does).

As a script (tests/support/fake-gpu-node.sh uses it): `fake_nvidia.py build DIR` prints DIR's files,
`fake_nvidia.py proc ROOT N` writes the /proc files of N GPUs under ROOT.
"""

import hashlib
import os
import shutil
import subprocess
import sys

VERSION = "550.54.15"
CUDA_VERSION = 12040
MODEL = "NVIDIA H100 80GB HBM3"
MAX_GPUS = 16

_COMMON = r"""
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <unistd.h>
#include <sys/stat.h>
#define MAX_GPUS %(max)d
static void fake_uuid(int minor, char *out, size_t size) {
    snprintf(out, size, "GPU-fa4e0000-0000-4000-8000-%%012d", minor);
}
static int fake_present(int minor) {
    char path[64]; struct stat st;
    snprintf(path, sizeof path, "/dev/nvidia%%d", minor);
    if (stat(path, &st) == 0 && S_ISCHR(st.st_mode)) return 1;
    int fd = open(path, O_RDWR);
    if (fd >= 0) { close(fd); return 1; }
    return 0;
}
/* minors of the device nodes present, in order; returns the count */
static int fake_scan(int *minors) {
    int n = 0;
    for (int m = 0; m < MAX_GPUS; m++) if (fake_present(m)) minors[n++] = m;
    return n;
}
"""

LIBCUDA = _COMMON + r"""
typedef int CUresult;
typedef int CUdevice;
typedef struct { char bytes[16]; } CUuuid;
static int devices[MAX_GPUS], ndevices = -1;

static int lookup(const char *token, const int *minors, int n) {
    char uuid[64]; int found = -1;
    if (*token >= '0' && *token <= '9') {
        char *end; long index = strtol(token, &end, 10);
        return (*end == '\0' && index < n) ? (int)index : -1;
    }
    for (int i = 0; i < n; i++) {
        fake_uuid(minors[i], uuid, sizeof uuid);
        if (strncmp(uuid, token, strlen(token)) == 0) { if (found >= 0) return -1; found = i; }
    }
    return found;
}

CUresult cuInit(unsigned int flags) {
    int minors[MAX_GPUS], n = fake_scan(minors), used[MAX_GPUS] = {0};
    const char *visible = getenv("CUDA_VISIBLE_DEVICES");
    (void)flags;
    ndevices = 0;
    if (visible == NULL) {
        for (int i = 0; i < n; i++) devices[ndevices++] = minors[i];
        return 0;
    }
    char copy[1024]; snprintf(copy, sizeof copy, "%%s", visible);
    for (char *token = strtok(copy, ","); token; token = strtok(NULL, ",")) {
        while (*token == ' ') token++;
        int index = lookup(token, minors, n);
        if (index < 0 || used[index]) break;   /* an invalid entry ends the list */
        used[index] = 1;
        devices[ndevices++] = minors[index];
    }
    return 0;
}
CUresult cuDriverGetVersion(int *version) { *version = %(cuda)d; return 0; }
CUresult cuDeviceGetCount(int *count) {
    if (ndevices < 0) return 3;  /* CUDA_ERROR_NOT_INITIALIZED */
    *count = ndevices; return 0;
}
CUresult cuDeviceGet(CUdevice *device, int ordinal) {
    if (ndevices < 0) return 3;
    if (ordinal < 0 || ordinal >= ndevices) return 101;  /* CUDA_ERROR_INVALID_DEVICE */
    *device = ordinal; return 0;
}
CUresult cuDeviceGetName(char *name, int len, CUdevice device) {
    if (device < 0 || device >= ndevices) return 101;
    snprintf(name, (size_t)len, "%(model)s"); return 0;
}
CUresult cuDeviceGetUuid(CUuuid *uuid, CUdevice device) {
    if (device < 0 || device >= ndevices) return 101;
    memset(uuid->bytes, 0, sizeof uuid->bytes);
    uuid->bytes[0] = (char)0xfa; uuid->bytes[1] = 0x4e; uuid->bytes[15] = (char)devices[device];
    return 0;
}
CUresult cuDeviceTotalMem_v2(size_t *bytes, CUdevice device) {
    if (device < 0 || device >= ndevices) return 101;
    *bytes = (size_t)80 << 30; return 0;
}
CUresult cuDeviceGetAttribute(int *value, int attribute, CUdevice device) {
    if (device < 0 || device >= ndevices) return 101;
    *value = attribute == 75 ? 9 : 0;  /* compute capability 9.0 */
    return 0;
}
/* cudacount -v: the UUID string of a device (not a CUDA API) */
int fakeDeviceUuidString(CUdevice device, char *out, int len) {
    if (device < 0 || device >= ndevices) return 101;
    fake_uuid(devices[device], out, (size_t)len); return 0;
}
"""

LIBNVML = _COMMON + r"""
#include <dirent.h>
typedef int nvmlReturn_t;
typedef struct { int minor; } *nvmlDevice_t;
static struct { int minor; } handles[MAX_GPUS];
static int count = -1;

nvmlReturn_t nvmlInit_v2(void) {
    int minors[MAX_GPUS];
    if (access("/dev/nvidiactl", F_OK) != 0) return 9;  /* NVML_ERROR_DRIVER_NOT_LOADED */
    count = fake_scan(minors);
    for (int i = 0; i < count; i++) handles[i].minor = minors[i];
    return 0;
}
nvmlReturn_t nvmlInit(void) { return nvmlInit_v2(); }
nvmlReturn_t nvmlShutdown(void) { count = -1; return 0; }
nvmlReturn_t nvmlSystemGetDriverVersion(char *out, unsigned int len) {
    snprintf(out, len, "%(version)s"); return 0;
}
nvmlReturn_t nvmlDeviceGetCount_v2(unsigned int *n) {
    if (count < 0) return 1;  /* NVML_ERROR_UNINITIALIZED */
    *n = (unsigned int)count; return 0;
}
nvmlReturn_t nvmlDeviceGetCount(unsigned int *n) { return nvmlDeviceGetCount_v2(n); }
nvmlReturn_t nvmlDeviceGetHandleByIndex_v2(unsigned int index, nvmlDevice_t *device) {
    if (count < 0) return 1;
    if (index >= (unsigned int)count) return 2;  /* NVML_ERROR_INVALID_ARGUMENT */
    *device = (nvmlDevice_t)&handles[index]; return 0;
}
nvmlReturn_t nvmlDeviceGetHandleByIndex(unsigned int index, nvmlDevice_t *device) {
    return nvmlDeviceGetHandleByIndex_v2(index, device);
}
/* "Model:" of the /proc information file whose "Device Minor:" is minor, when /proc has one */
static int proc_model(int minor, char *out, unsigned int len) {
    DIR *top = opendir("/proc/driver/nvidia/gpus");
    struct dirent *entry; int found = 0;
    if (!top) return 0;
    while (!found && (entry = readdir(top))) {
        char path[512], line[256], model[128] = ""; int dev = -1;
        if (entry->d_name[0] == '.') continue;
        snprintf(path, sizeof path, "/proc/driver/nvidia/gpus/%%s/information", entry->d_name);
        FILE *stream = fopen(path, "r");
        if (!stream) continue;
        while (fgets(line, sizeof line, stream)) {
            char *value = strchr(line, ':');
            if (!value) continue;
            for (value++; *value == ' ' || *value == '\t'; value++) {}
            value[strcspn(value, "\n")] = '\0';
            if (strncmp(line, "Model:", 6) == 0) snprintf(model, sizeof model, "%%s", value);
            if (strncmp(line, "Device Minor:", 13) == 0) dev = atoi(value);
        }
        fclose(stream);
        if (dev == minor && model[0]) { snprintf(out, len, "%%s", model); found = 1; }
    }
    closedir(top);
    return found;
}
nvmlReturn_t nvmlDeviceGetName(nvmlDevice_t device, char *out, unsigned int len) {
    if (!proc_model(device->minor, out, len)) snprintf(out, len, "%(model)s");
    return 0;
}
nvmlReturn_t nvmlDeviceGetUUID(nvmlDevice_t device, char *out, unsigned int len) {
    fake_uuid(device->minor, out, len); return 0;
}
"""

NVIDIA_SMI = r"""
#include <dlfcn.h>
#include <stdio.h>
#include <string.h>
typedef int (*init_t)(void);
typedef int (*count_t)(unsigned int *);
typedef int (*handle_t)(unsigned int, void **);
typedef int (*text_t)(void *, char *, unsigned int);
typedef int (*version_t)(char *, unsigned int);
int main(int argc, char **argv) {
    void *nvml = dlopen("libnvidia-ml.so.1", RTLD_NOW);
    if (!nvml) {
        printf("NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver. (%s)\n", dlerror());
        return 9;
    }
    init_t init = (init_t)dlsym(nvml, "nvmlInit_v2");
    count_t count = (count_t)dlsym(nvml, "nvmlDeviceGetCount_v2");
    handle_t handle = (handle_t)dlsym(nvml, "nvmlDeviceGetHandleByIndex_v2");
    text_t name = (text_t)dlsym(nvml, "nvmlDeviceGetName"), uuid = (text_t)dlsym(nvml, "nvmlDeviceGetUUID");
    version_t version = (version_t)dlsym(nvml, "nvmlSystemGetDriverVersion");
    unsigned int n = 0;
    if (init() != 0 || count(&n) != 0) {
        printf("NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver.\n");
        return 9;
    }
    if (n == 0) { printf("No devices were found\n"); return 6; }
    if (!(argc > 1 && strcmp(argv[1], "-L") == 0)) {
        char text[96]; version(text, sizeof text);
        printf("NVIDIA-SMI %s    Driver Version: %s    CUDA Version: 12.4\n", text, text);
    }
    for (unsigned int i = 0; i < n; i++) {
        void *device; char model[96], id[96];
        handle(i, &device); name(device, model, sizeof model); uuid(device, id, sizeof id);
        printf("GPU %u: %s (UUID: %s)\n", i, model, id);
    }
    return 0;
}
"""

CUDACOUNT = r"""
#include <dlfcn.h>
#include <stdio.h>
#include <string.h>
int main(int argc, char **argv) {
    void *cuda = dlopen("libcuda.so.1", RTLD_NOW);
    if (!cuda) { fprintf(stderr, "cudacount: %s\n", dlerror()); return 2; }
    int (*init)(unsigned int) = (int (*)(unsigned int))dlsym(cuda, "cuInit");
    int (*count)(int *) = (int (*)(int *))dlsym(cuda, "cuDeviceGetCount");
    int (*version)(int *) = (int (*)(int *))dlsym(cuda, "cuDriverGetVersion");
    int (*uuid)(int, char *, int) = (int (*)(int, char *, int))dlsym(cuda, "fakeDeviceUuidString");
    int n = 0, v = 0, status;
    if (!init || !count || (status = init(0)) != 0 || (status = count(&n)) != 0) {
        fprintf(stderr, "cudacount: CUDA call failed\n"); return 3;
    }
    printf("%d\n", n);
    if (argc > 1 && strcmp(argv[1], "-v") == 0) {
        if (version) version(&v);
        printf("driver %d\n", v);
        for (int i = 0; uuid && i < n; i++) { char text[96]; uuid(i, text, sizeof text); printf("%s\n", text); }
    }
    return 0;
}
"""


def uuid(minor):
    """The UUID of the fake GPU with device minor `minor` (what the fake libraries report)."""
    return f"GPU-fa4e0000-0000-4000-8000-{minor:012d}"


def bus_id(minor):
    return f"0000:{minor + 0x41:02x}:00.0"


def sources(version=VERSION, cuda=CUDA_VERSION):
    """{file name: (C source, gcc arguments)} of the fake driver for `version`, whose cuDriverGetVersion says
    `cuda` (a cuda-compat package's libcuda is a driver of a newer branch, with a newer CUDA)."""
    values = {"max": MAX_GPUS, "cuda": cuda, "model": MODEL, "version": version}
    shared = ["-shared", "-fPIC"]
    return {
        f"libcuda.so.{version}": (LIBCUDA % values, shared + ["-Wl,-soname,libcuda.so.1"]),
        f"libnvidia-ml.so.{version}": (LIBNVML % values, shared + ["-Wl,-soname,libnvidia-ml.so.1"]),
        "nvidia-smi": (NVIDIA_SMI, ["-ldl"]),
        "cudacount": (CUDACOUNT, ["-ldl"]),
    }


def build(directory, version=VERSION, gcc="gcc", cuda=CUDA_VERSION):
    """Compile the fake driver into `directory` (created; reused when the sources, version and compiler are
    unchanged) and return {file name: path}, with the links libcuda.so.1, libcuda.so, libnvidia-ml.so.1."""
    units = sources(version, cuda)
    compiler = shutil.which(gcc) or gcc
    digest = hashlib.sha256(repr((sorted(units.items()), os.path.realpath(compiler))).encode()).hexdigest()[:16]
    os.makedirs(directory, exist_ok=True)
    stamp = os.path.join(directory, ".fake-nvidia-" + digest)
    paths = {name: os.path.join(directory, name) for name in units}
    if not os.path.exists(stamp):
        for name, (text, args) in units.items():
            source = os.path.join(directory, name + ".c")
            with open(source, "w", encoding="utf-8") as stream:
                stream.write(text)
            subprocess.run([compiler, "-O1", "-Wall", "-o", paths[name] + ".tmp", source] + args, check=True)
            os.chmod(paths[name] + ".tmp", 0o755)
            os.replace(paths[name] + ".tmp", paths[name])
            os.unlink(source)
        for base, target in (("libcuda.so.1", f"libcuda.so.{version}"), ("libcuda.so", "libcuda.so.1"),
                             ("libnvidia-ml.so.1", f"libnvidia-ml.so.{version}")):
            _relink(os.path.join(directory, base), target)
        open(stamp, "w").close()
    for base in ("libcuda.so.1", "libcuda.so", "libnvidia-ml.so.1"):
        paths[base] = os.path.join(directory, base)
    return paths


def _relink(path, target):
    if os.path.lexists(path):
        os.unlink(path)
    os.symlink(target, path)


def proc_files(root, gpus=2, version=VERSION):
    """/proc/driver/nvidia/version and gpus/<bus id>/information for `gpus` GPUs (minors 0..gpus-1) under
    `root` (a directory standing for /)."""
    top = os.path.join(str(root), "proc/driver/nvidia")
    os.makedirs(os.path.join(top, "gpus"), exist_ok=True)
    with open(os.path.join(top, "version"), "w", encoding="utf-8") as stream:
        stream.write(f"NVRM version: NVIDIA UNIX x86_64 Kernel Module  {version}  Tue Mar  5 22:23:56 UTC 2024\n"
                     "GCC version:  gcc version 12.2.0 (Debian 12.2.0-14)\n")
    for minor in range(gpus):
        directory = os.path.join(top, "gpus", bus_id(minor))
        os.makedirs(directory, exist_ok=True)
        with open(os.path.join(directory, "information"), "w", encoding="utf-8") as stream:
            stream.write(f"Model: \t\t {MODEL}\nIRQ:   \t\t {17 + minor}\nGPU UUID: \t {uuid(minor)}\n"
                         "Video BIOS: \t 96.00.74.00.0d\nBus Type: \t PCIe\nDMA Size: \t 52 bits\n"
                         f"DMA Mask: \t 0xfffffffffffff\nBus Location: \t {bus_id(minor)}\nDevice Minor: \t {minor}\n"
                         "GPU Excluded:\t No\n")


def main(argv):
    if len(argv) == 2 and argv[0] == "build":
        for name, path in sorted(build(argv[1]).items()):
            print(name, path)
        return 0
    if len(argv) == 3 and argv[0] == "proc":
        proc_files(argv[1], int(argv[2]))
        return 0
    print(__doc__.rsplit("As a script", 1)[1].strip(), file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
