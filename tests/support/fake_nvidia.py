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
needs no /proc.
MIG: a GPU has the MIG devices whose two /dev/nvidia-caps/nvidia-cap<M> nodes (GPU instance, compute
instance; minors as cap_minor() numbers them) this process can stat, as only those are usable: NVML lists
them (nvmlDeviceGetMigMode, nvmlDeviceGetMaxMigDeviceCount, nvmlDeviceGetMigDeviceHandleByIndex,
nvmlDeviceGetGpuInstanceId, nvmlDeviceGetComputeInstanceId, nvmlDeviceGetUUID -> mig_uuid()), nvidia-smi -L
prints them under their GPU ("  MIG 1g.10gb     Device  N: (UUID: MIG-...)"), and libcuda enumerates a
MIG-enabled GPU as its first MIG device and honours MIG-<uuid> (or a unique prefix) and the legacy
MIG-GPU-<uuid>/<gi>/<ci> in CUDA_VISIBLE_DEVICES. nvmlInitWithFlags is there too (pynvml's nvmlInit).
proc_files(root, gpus) writes /proc/driver/nvidia/version and gpus/<bus id>/information
under `root`, in the format udocker/inject/nvidia.py parses (as tests/fixtures/hosttree.py does).

As a script (tests/support/fake-gpu-node.sh uses it): `fake_nvidia.py build DIR` prints DIR's files,
`fake_nvidia.py proc ROOT N` writes the /proc files of N GPUs under ROOT, `fake_nvidia.py mig ROOT` the MIG
files of MIG_LAYOUT and prints the /dev/nvidia-caps nodes to make (name, minor, octal mode per line).
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
/* MIG: the nvidia-caps minor of GPU instance gi of GPU `minor` (ci < 0) or of its compute instance ci, as
   the driver numbers them (/proc/driver/nvidia-caps/mig-minors: 3 + 135 per GPU + 9 per gi, ci after) */
#define MAX_GI 15
#define MAX_CI 8
static int cap_minor(int minor, int gi, int ci) {
    int base = 3 + minor * MAX_GI * (1 + MAX_CI) + gi * (1 + MAX_CI);
    return ci < 0 ? base : base + 1 + ci;
}
static int cap_present(int cap) {
    char path[64]; struct stat st;
    snprintf(path, sizeof path, "/dev/nvidia-caps/nvidia-cap%%d", cap);
    return stat(path, &st) == 0 && S_ISCHR(st.st_mode);
}
/* the MIG instances of GPU `minor` this process is granted (both caps nodes there), in (gi, ci) order, as
   gi * MAX_CI + ci; returns the count (0: not MIG-enabled here) */
static int fake_migs(int minor, int *out) {
    int n = 0;
    for (int gi = 0; gi < MAX_GI; gi++) {
        if (!cap_present(cap_minor(minor, gi, -1))) continue;
        for (int ci = 0; ci < MAX_CI; ci++) if (cap_present(cap_minor(minor, gi, ci))) out[n++] = gi * MAX_CI + ci;
    }
    return n;
}
static void fake_mig_uuid(int minor, int gi, int ci, char *out, size_t size) {
    snprintf(out, size, "MIG-fa4e%%04d-%%04d-4000-8000-%%012d", minor, gi, ci);
}
"""

LIBCUDA = _COMMON + r"""
typedef int CUresult;
typedef int CUdevice;
typedef struct { char bytes[16]; } CUuuid;
typedef struct { int minor, gi, ci; } fake_dev;  /* gi < 0: the whole GPU */
#define MAX_DEVS (MAX_GPUS * 8)
static fake_dev devices[MAX_DEVS];
static int ndevices = -1;

/* what the driver enumerates without CUDA_VISIBLE_DEVICES: each GPU, a MIG-enabled one as its first
   MIG device (CUDA enumerates one MIG device per GPU) */
static int enumerate(fake_dev *out) {
    int minors[MAX_GPUS], n = fake_scan(minors), count = 0;
    for (int i = 0; i < n; i++) {
        int migs[MAX_GI * MAX_CI];
        fake_dev dev = {minors[i], -1, -1};
        if (fake_migs(minors[i], migs) > 0) { dev.gi = migs[0] / MAX_CI; dev.ci = migs[0] %% MAX_CI; }
        out[count++] = dev;
    }
    return count;
}

/* a MIG device by UUID (or unique prefix), MIG-GPU-<uuid>/gi/ci, or a GPU by UUID (prefix): 1 when found */
static int lookup_id(const char *token, fake_dev *found) {
    int minors[MAX_GPUS], n = fake_scan(minors), hits = 0;
    char id[64];
    for (int i = 0; i < n; i++) {
        int migs[MAX_GI * MAX_CI], m = fake_migs(minors[i], migs);
        fake_uuid(minors[i], id, sizeof id);
        if (strncmp(token, "MIG-GPU-", 8) == 0) {
            int gi, ci; size_t len = strlen(id);
            if (strncmp(token + 4, id, len) != 0 || sscanf(token + 4 + len, "/%%d/%%d", &gi, &ci) != 2) continue;
            for (int j = 0; j < m; j++)
                if (migs[j] == gi * MAX_CI + ci) { fake_dev dev = {minors[i], gi, ci}; *found = dev; return 1; }
            return 0;
        }
        if (strncmp(token, "MIG-", 4) == 0) {
            for (int j = 0; j < m; j++) {
                fake_mig_uuid(minors[i], migs[j] / MAX_CI, migs[j] %% MAX_CI, id, sizeof id);
                if (strncmp(id, token, strlen(token)) == 0) {
                    fake_dev dev = {minors[i], migs[j] / MAX_CI, migs[j] %% MAX_CI}; *found = dev; hits++;
                }
            }
        } else if (strncmp(id, token, strlen(token)) == 0) {
            fake_dev dev = {minors[i], m ? migs[0] / MAX_CI : -1, m ? migs[0] %% MAX_CI : -1};
            *found = dev; hits++;
        }
    }
    return hits == 1;
}

CUresult cuInit(unsigned int flags) {
    fake_dev all[MAX_DEVS];
    int n = enumerate(all);
    const char *visible = getenv("CUDA_VISIBLE_DEVICES");
    (void)flags;
    ndevices = 0;
    if (visible == NULL) {
        for (int i = 0; i < n; i++) devices[ndevices++] = all[i];
        return 0;
    }
    char copy[1024]; snprintf(copy, sizeof copy, "%%s", visible);
    for (char *token = strtok(copy, ","); token; token = strtok(NULL, ",")) {
        fake_dev dev; int repeated = 0;
        while (*token == ' ') token++;
        if (*token >= '0' && *token <= '9') {
            char *end; long index = strtol(token, &end, 10);
            if (*end != '\0' || index >= n) break;   /* an invalid entry ends the list */
            dev = all[index];
        } else if (!lookup_id(token, &dev)) {
            break;
        }
        for (int i = 0; i < ndevices; i++)
            repeated |= devices[i].minor == dev.minor && devices[i].gi == dev.gi && devices[i].ci == dev.ci;
        if (repeated || ndevices == MAX_DEVS) break;
        devices[ndevices++] = dev;
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
    snprintf(name, (size_t)len, devices[device].gi < 0 ? "%(model)s" : "%(model)s MIG 1g.10gb"); return 0;
}
CUresult cuDeviceGetUuid(CUuuid *uuid, CUdevice device) {
    if (device < 0 || device >= ndevices) return 101;
    memset(uuid->bytes, 0, sizeof uuid->bytes);
    uuid->bytes[0] = (char)0xfa; uuid->bytes[1] = 0x4e; uuid->bytes[15] = (char)devices[device].minor;
    uuid->bytes[13] = (char)(devices[device].gi + 1); uuid->bytes[14] = (char)(devices[device].ci + 1);
    return 0;
}
CUresult cuDeviceTotalMem_v2(size_t *bytes, CUdevice device) {
    if (device < 0 || device >= ndevices) return 101;
    *bytes = (size_t)(devices[device].gi < 0 ? 80 : 10) << 30; return 0;
}
CUresult cuDeviceGetAttribute(int *value, int attribute, CUdevice device) {
    if (device < 0 || device >= ndevices) return 101;
    *value = attribute == 75 ? 9 : 0;  /* compute capability 9.0 */
    return 0;
}
/* cudacount -v: the UUID string of a device, GPU-... or MIG-... (not a CUDA API) */
int fakeDeviceUuidString(CUdevice device, char *out, int len) {
    if (device < 0 || device >= ndevices) return 101;
    if (devices[device].gi < 0) fake_uuid(devices[device].minor, out, (size_t)len);
    else fake_mig_uuid(devices[device].minor, devices[device].gi, devices[device].ci, out, (size_t)len);
    return 0;
}
"""

LIBNVML = _COMMON + r"""
#include <dirent.h>
typedef int nvmlReturn_t;
typedef struct fake_handle { int minor, gi, ci; } *nvmlDevice_t;  /* gi < 0: a GPU, else a MIG device */
#define MAX_MIGS 7  /* nvmlDeviceGetMaxMigDeviceCount of an H100 */
static struct fake_handle handles[MAX_GPUS], mig_handles[MAX_GPUS][MAX_MIGS];
static int count = -1, mig_count[MAX_GPUS];

nvmlReturn_t nvmlInit_v2(void) {
    int minors[MAX_GPUS];
    if (access("/dev/nvidiactl", F_OK) != 0) return 9;  /* NVML_ERROR_DRIVER_NOT_LOADED */
    count = fake_scan(minors);
    for (int i = 0; i < count; i++) {
        int migs[MAX_GI * MAX_CI], n = fake_migs(minors[i], migs);
        handles[i].minor = minors[i]; handles[i].gi = handles[i].ci = -1;
        mig_count[i] = n < MAX_MIGS ? n : MAX_MIGS;
        for (int j = 0; j < mig_count[i]; j++) {
            mig_handles[i][j].minor = minors[i];
            mig_handles[i][j].gi = migs[j] / MAX_CI; mig_handles[i][j].ci = migs[j] %% MAX_CI;
        }
    }
    return 0;
}
nvmlReturn_t nvmlInit(void) { return nvmlInit_v2(); }
nvmlReturn_t nvmlInitWithFlags(unsigned int flags) { (void)flags; return nvmlInit_v2(); }
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
    if (device->gi >= 0) snprintf(out + strlen(out), len - strlen(out), " MIG 1g.10gb");
    return 0;
}
nvmlReturn_t nvmlDeviceGetUUID(nvmlDevice_t device, char *out, unsigned int len) {
    if (device->gi < 0) fake_uuid(device->minor, out, len);
    else fake_mig_uuid(device->minor, device->gi, device->ci, out, len);
    return 0;
}
/* MIG: a GPU is MIG-enabled when this process is granted one of its MIG devices (nvidia-caps nodes) */
static int gpu_slot(nvmlDevice_t device) {
    for (int i = 0; i < count; i++) if (device == &handles[i]) return i;
    return -1;
}
nvmlReturn_t nvmlDeviceGetMigMode(nvmlDevice_t device, unsigned int *current, unsigned int *pending) {
    int slot = gpu_slot(device);
    if (slot < 0) return 2;  /* NVML_ERROR_INVALID_ARGUMENT: a MIG device */
    *current = *pending = mig_count[slot] > 0; return 0;
}
nvmlReturn_t nvmlDeviceGetMaxMigDeviceCount(nvmlDevice_t device, unsigned int *n) {
    if (gpu_slot(device) < 0) return 2;
    *n = MAX_MIGS; return 0;
}
nvmlReturn_t nvmlDeviceGetMigDeviceHandleByIndex(nvmlDevice_t device, unsigned int index, nvmlDevice_t *mig) {
    int slot = gpu_slot(device);
    if (slot < 0 || index >= MAX_MIGS) return 2;
    if (index >= (unsigned int)mig_count[slot]) return 6;  /* NVML_ERROR_NOT_FOUND */
    *mig = &mig_handles[slot][index]; return 0;
}
nvmlReturn_t nvmlDeviceGetGpuInstanceId(nvmlDevice_t device, unsigned int *id) {
    if (device->gi < 0) return 3;  /* NVML_ERROR_NOT_SUPPORTED: not a MIG device */
    *id = (unsigned int)device->gi; return 0;
}
nvmlReturn_t nvmlDeviceGetComputeInstanceId(nvmlDevice_t device, unsigned int *id) {
    if (device->gi < 0) return 3;
    *id = (unsigned int)device->ci; return 0;
}
nvmlReturn_t nvmlDeviceIsMigDeviceHandle(nvmlDevice_t device, unsigned int *is_mig) {
    *is_mig = device->gi >= 0; return 0;
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
    typedef int (*mode_t_)(void *, unsigned int *, unsigned int *);
    typedef int (*max_t)(void *, unsigned int *);
    typedef int (*mig_t)(void *, unsigned int, void **);
    mode_t_ mode = (mode_t_)dlsym(nvml, "nvmlDeviceGetMigMode");
    max_t max = (max_t)dlsym(nvml, "nvmlDeviceGetMaxMigDeviceCount");
    mig_t mig = (mig_t)dlsym(nvml, "nvmlDeviceGetMigDeviceHandleByIndex");
    for (unsigned int i = 0; i < n; i++) {
        void *device; char model[96], id[96]; unsigned int current = 0, pending = 0, slots = 0;
        handle(i, &device); name(device, model, sizeof model); uuid(device, id, sizeof id);
        printf("GPU %u: %s (UUID: %s)\n", i, model, id);
        if (!mode || !max || !mig || mode(device, &current, &pending) != 0 || !current) continue;
        max(device, &slots);
        for (unsigned int j = 0; j < slots; j++) {  /* the real tool's MIG lines under their GPU */
            void *instance;
            if (mig(device, j, &instance) != 0) continue;
            uuid(instance, id, sizeof id);
            printf("  MIG 1g.10gb     Device  %u: (UUID: %s)\n", j, id);
        }
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


# The MIG layout of `fake-gpu-node.sh --mig`: GPU minor 1 split into two MIG devices, GPU instances 1 and 2
# with one compute instance (0) each; GPU 0 stays whole.
MIG_LAYOUT = {1: ((1, 0), (2, 0))}
_CAPS = "proc/driver/nvidia/capabilities"


def cap_minor(minor, gi, ci=None):
    """The /dev/nvidia-caps minor of GPU instance `gi` of GPU `minor`, or of its compute instance `ci`, as
    the driver numbers them (/proc/driver/nvidia-caps/mig-minors); the libraries use the same formula."""
    base = 3 + minor * 15 * 9 + gi * 9
    return base if ci is None else base + 1 + ci


def mig_uuid(minor, gi, ci):
    """The UUID of the fake MIG device (what the fake libraries report for it)."""
    return f"MIG-fa4e{minor:04d}-{gi:04d}-4000-8000-{ci:012d}"


def mig_files(root, layout=None):
    """The driver's MIG files under `root` (a directory standing for /): capabilities/mig/config and monitor
    (caps minors 1, 2, mode 0400) and, per instance of `layout` ({GPU minor: ((gi, ci), ...)}, default
    MIG_LAYOUT), capabilities/gpu<minor>/mig/gi<G>/access and .../ci<C>/access (mode 0444). Returns the
    /dev/nvidia-caps nodes to make: [(name, minor, mode)]."""
    top = os.path.join(str(root), _CAPS)
    nodes = []

    def access(path, minor, mode):
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w", encoding="utf-8") as stream:
            stream.write(f"DeviceFileMinor: {minor}\nDeviceFileMode: {mode}\nDeviceFileModify: 1\n")
        if (f"nvidia-cap{minor}", minor, f"{mode:o}") not in nodes:
            nodes.append((f"nvidia-cap{minor}", minor, f"{mode:o}"))

    access(os.path.join(top, "mig", "config"), 1, 0o400)
    access(os.path.join(top, "mig", "monitor"), 2, 0o400)
    for minor, instances in sorted((layout or MIG_LAYOUT).items()):
        for gi, ci in instances:
            directory = os.path.join(top, f"gpu{minor}", "mig", f"gi{gi}")
            access(os.path.join(directory, "access"), cap_minor(minor, gi), 0o444)
            access(os.path.join(directory, f"ci{ci}", "access"), cap_minor(minor, gi, ci), 0o444)
    return nodes


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
    if len(argv) == 2 and argv[0] == "mig":
        for name, minor, mode in mig_files(argv[1]):
            print(name, minor, mode)
        return 0
    print(__doc__.rsplit("As a script", 1)[1].strip(), file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
