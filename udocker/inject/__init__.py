"""Injectors: make host facilities (the NVIDIA driver, Infiniband) visible in a container.

Each injector module has plan(root, ...) -> plan.InjectionPlan, reading the host at run time on the node
that runs the job; run.py applies the plans to the RunSpec and the engine turns binds and devices into its
own mechanism (see plan.py). This module decides which injectors run, cheaply: environment variables
first, then one or two stat calls; the injector modules are imported only when they will run.

Setting per injector (first that says something wins): the command line (--nvidia / --no-nvidia, --ib /
--no-ib), the container's record (`setup --nvidia`), the configuration key (nvidia, infiniband: auto, on,
off). auto: NVIDIA when the node has a driver and the job was given GPUs (Slurm GPU variables,
CUDA_VISIBLE_DEVICES or NVIDIA_VISIBLE_DEVICES naming a device); Infiniband when the node has RDMA devices.
on: always, and an error when the node lacks what it needs.
"""

import os

from udocker.errors import ConfigError

SETTINGS = ("auto", "on", "off")


def setting(configured, flag, recorded, *, key):
    """"on", "off" or "auto" from the command-line flag (True, False, None), the container record and the
    configured value of `key`. Raises ConfigError for a configured value other than auto, on, off."""
    if flag is not None:
        return "on" if flag else "off"
    if recorded:
        return "on"
    value = str(configured).lower() if not isinstance(configured, bool) else ("on" if configured else "off")
    if value not in SETTINGS:
        raise ConfigError(f"config key '{key}' must be one of {', '.join(SETTINGS)}, not {configured!r}")
    return value


def plans(*, nvidia, infiniband, request, image_env, hostmpi="off", root="/", isolated=False, rootfs=None):
    """The InjectionPlans to apply, for settings `nvidia`, `infiniband` and `hostmpi` ("auto", "on", "off";
    the host MPI only when "on"); `request` is the host environment with the run's -e variables,
    `image_env` the container's environment; `isolated`: the container sees only the device nodes given to it
    (R modes), which renumbers the GPUs; `rootfs` its root directory (an image with its own rdma-core keeps
    it)."""
    found = []
    if nvidia == "on" or (nvidia == "auto" and _wants_gpus(request, image_env, root)):
        from udocker.inject import nvidia as nvidia_injector

        found.append(nvidia_injector.plan(root, request=request, image_env=image_env, required=nvidia == "on",
                                          isolated=isolated))
    if infiniband == "on" or (infiniband == "auto" and os.path.isdir(root.rstrip("/") + "/dev/infiniband")):
        from udocker.inject import infiniband as ib_injector

        found.append(ib_injector.plan(root, required=infiniband == "on", image=rootfs))
    if hostmpi == "on":
        from udocker.inject import hostmpi as mpi_injector

        found.append(mpi_injector.plan(root, required=True))
    return [p for p in found if not p.empty()]


# Checked before importing the injector (about 7 ms with its data file) on every run of a node without GPUs;
# data/nvidia.json "driver_present" says the same for the injector itself.
_NVIDIA_DRIVER = ("/proc/driver/nvidia/version", "/dev/nvidiactl")


def _driver_files(root):
    return any(os.path.exists(root.rstrip("/") + path) for path in _NVIDIA_DRIVER)


def node_has_gpus(root="/"):
    """Whether this node has a loaded NVIDIA driver and at least one GPU (the injector is imported only
    when the driver's files exist)."""
    if not _driver_files(root):
        return False
    from udocker.inject import nvidia as nvidia_injector

    return nvidia_injector.driver_present(root) and bool(nvidia_injector.gpus(root))


def _wants_gpus(request, image_env, root):
    if not _driver_files(root):
        return False
    from udocker.inject import nvidia as nvidia_injector

    env = dict(image_env, **request)  # the image's NVIDIA_VISIBLE_DEVICES=all (CUDA images) counts too
    return nvidia_injector.requested(env) and nvidia_injector.driver_present(root)
