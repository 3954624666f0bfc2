"""Which GPUs and MIG devices a run gets, the device nodes that give them, and how the container names them.

Which (first match wins): NVIDIA_VISIBLE_DEVICES of the request (host environment and -e); Slurm's
SLURM_STEP_GPUS or SLURM_JOB_GPUS narrowed by the task's CUDA_VISIBLE_DEVICES; CUDA_VISIBLE_DEVICES; the
image's NVIDIA_VISIBLE_DEVICES; else all. Tokens: all, none, void, "" (none), GPU indexes, GPU UUIDs or unique
prefixes, PCI bus ids ([domain:]bus:device.function), MIG-<uuid>, <gpu>:<mig> (the toolkit's MIG index form).
void (from NVIDIA_VISIBLE_DEVICES) means no injection at all, as under the toolkit.

Slurm: SLURM_STEP_GPUS / SLURM_JOB_GPUS hold global ids (GPU indexes; with MIG, gres indexes counting each MIG
instance of a MIG-enabled GPU in place of the GPU). Per task (srun --gpus-per-task, --gpu-bind), Slurm >= 21.08
sets SLURM_STEP_GPUS to the task's own ids and CUDA_VISIBLE_DEVICES to the same devices, as indexes local to
the step when a device cgroup constrains the step (cgroup.conf ConstrainDevices=yes), as global ids otherwise,
or as MIG UUIDs. A CUDA_VISIBLE_DEVICES with fewer entries than the Slurm list (a wrapper exporting
CUDA_VISIBLE_DEVICES=$SLURM_LOCALID, an older Slurm) narrows it: an index outside the Slurm list is local, one
beyond its length global, and where both readings fit and differ Slurm's cgroup.conf decides, as it does for
Slurm itself. UUIDs in CUDA_VISIBLE_DEVICES name devices outright and win.

MIG: /proc/driver/nvidia/capabilities/gpu<minor>/mig/gi<G>/access and .../gi<G>/ci<C>/access name (DeviceFileMinor)
the /dev/nvidia-caps/nvidia-cap<M> nodes that grant an instance; a MIG device needs its GPU's node and those two.
MIG indexes are the instances of a GPU in (gi, ci) order; MIG UUIDs are known to NVML only (on the real host):
a MIG UUID NVML does not list is an error; where NVML cannot say, a MIG UUID gets every MIG-enabled GPU with
its instances and the driver picks the instance from CUDA_VISIBLE_DEVICES. The container gets the caps nodes
of its MIG devices only, not mig/config or mig/monitor (root's, as under the toolkit).

The container's names: P and F modes show it every /dev/nvidia* (/dev is bound whole), R modes (`isolated`)
only the chosen nodes, which the driver inside numbers from 0 in bus order. CUDA_VISIBLE_DEVICES is set to the
indexes the program's driver will use (the chosen GPUs' host indexes, or their rank among the chosen ones when
isolated), with CUDA_DEVICE_ORDER=PCI_BUS_ID so that the driver's order is the bus order used here;
NVIDIA_VISIBLE_DEVICES names the chosen devices by UUID. Both replace what the container set: a value typed
for the host (-e CUDA_VISIBLE_DEVICES=1) would name another device, or none, inside.
"""

import os
import re

from udocker.errors import UdockerError
from udocker.inject import libraries

NONE = ("", "none", "nodevfiles", "-1")
_CAPS = "/proc/driver/nvidia/capabilities"
_BUS = re.compile(r"^(?:([0-9a-f]{1,8}):)?([0-9a-f]{1,2}):([0-9a-f]{1,2})\.([0-7])$")


class Selection:
    """choices: [{"gpu": GPU dict or None, "mig": MIG dict or None, "uuid": a MIG UUID or None}], in the order
    asked; subset: named by a variable; void: no injection wanted."""

    def __init__(self, choices, subset, void=False):
        self.choices, self.subset, self.void = choices, subset, void

    def gpus(self, all_gpus, root):
        """The GPUs whose nodes the container gets, in host order."""
        wanted = {c["gpu"]["index"] for c in self.choices if c["gpu"]}
        if any(not c["gpu"] for c in self.choices):  # a MIG UUID nobody could place: every MIG-enabled GPU
            wanted |= {g["index"] for g in all_gpus if migs_of(root, g)}
        return [g for g in all_gpus if g["index"] in wanted]


def bus_id(text):
    """A PCI bus id as (domain, bus, device, function), or None."""
    match = _BUS.match(text.strip().lower())
    return tuple(int(x or "0", 16) for x in match.groups()) if match else None


def migs_of(root, gpu):
    """The MIG instances of `gpu` from /proc: [{gi, ci, index, caps: (gi minor, ci minor), parent}]."""
    if gpu.get("minor") is None:
        return []
    top = libraries.under(root, f"{_CAPS}/gpu{gpu['minor']}/mig")
    found = []
    for gi in _numbered(top, "gi"):
        gi_minor = _minor(os.path.join(top, f"gi{gi}", "access"))
        for ci in _numbered(os.path.join(top, f"gi{gi}"), "ci"):
            ci_minor = _minor(os.path.join(top, f"gi{gi}", f"ci{ci}", "access"))
            if gi_minor is not None and ci_minor is not None:
                found.append({"gi": gi, "ci": ci, "index": len(found), "caps": (gi_minor, ci_minor), "parent": gpu})
    return found


def _numbered(directory, prefix):
    try:
        names = os.listdir(directory)
    except OSError:
        return []
    return sorted(int(n[len(prefix):]) for n in names if n.startswith(prefix) and n[len(prefix):].isdigit())


def _minor(path):
    try:
        with open(path, encoding="utf-8", errors="replace") as stream:
            match = re.search(r"DeviceFileMinor:\s*(\d+)", stream.read())
    except OSError:
        return None
    return int(match.group(1)) if match else None


_NVML_MIGS = {}


def nvml_migs(root):
    """{MIG UUID: (GPU UUID, gi, ci)} from NVML on the real host (asked once per process); None elsewhere or
    when NVML cannot tell (no pynvml, no driver), so that a MIG UUID NVML does not list is an error only
    where NVML answered."""
    if root != "/":
        return None
    if "/" not in _NVML_MIGS:
        _NVML_MIGS["/"] = _nvml_ask()
    return _NVML_MIGS["/"]


def _nvml_ask():
    try:
        import pynvml

        pynvml.nvmlInit()
    except Exception:  # no pynvml, no driver: NVMLError subclasses and ctypes' OSError
        return None
    try:
        return dict(_nvml_walk(pynvml))
    except Exception:
        return None
    finally:
        try:
            pynvml.nvmlShutdown()
        except Exception:
            pass


def _nvml_walk(pynvml):
    for index in range(pynvml.nvmlDeviceGetCount()):
        handle = pynvml.nvmlDeviceGetHandleByIndex(index)
        try:  # a GPU without MIG support says NOT_SUPPORTED; one with MIG disabled has no MIG devices
            if not pynvml.nvmlDeviceGetMigMode(handle)[0]:
                continue
            slots = pynvml.nvmlDeviceGetMaxMigDeviceCount(handle)
        except pynvml.NVMLError:
            continue
        parent = _text(pynvml.nvmlDeviceGetUUID(handle))
        for slot in range(slots):
            try:
                mig = pynvml.nvmlDeviceGetMigDeviceHandleByIndex(handle, slot)
            except pynvml.NVMLError:
                continue
            yield (_text(pynvml.nvmlDeviceGetUUID(mig)),
                   (parent, pynvml.nvmlDeviceGetGpuInstanceId(mig), pynvml.nvmlDeviceGetComputeInstanceId(mig)))


def _mig_choice(root, gpu, mig):
    """The choice of MIG device `mig` of `gpu`, with its MIG UUID where NVML knows it (drivers >= 470 take
    MIG-<uuid> in CUDA_VISIBLE_DEVICES; the legacy MIG-GPU-<uuid>/<gi>/<ci> is the fallback)."""
    place = (gpu["uuid"], mig["gi"], mig["ci"])
    uuid = next((u for u, p in (nvml_migs(root) or {}).items() if tuple(p) == place), None)
    return {"gpu": gpu, "mig": mig, "uuid": uuid}


def _text(value):
    return value.decode() if isinstance(value, bytes) else str(value)


# -- which ---------------------------------------------------------------------------------------------
def select(all_gpus, request, image_env, root="/"):
    """The Selection for this run; raises UdockerError for a device that does not exist here."""
    if "NVIDIA_VISIBLE_DEVICES" in request:
        return _parse(request["NVIDIA_VISIBLE_DEVICES"], "NVIDIA_VISIBLE_DEVICES", all_gpus, root)
    slurm = _slurm(all_gpus, request, root)
    if slurm is not None:
        return slurm
    for var, env in (("CUDA_VISIBLE_DEVICES", request), ("NVIDIA_VISIBLE_DEVICES", image_env)):
        if var in env:
            return _parse(env[var], var, all_gpus, root)
    return Selection(_whole(all_gpus), False)


def _whole(gpus):
    return [{"gpu": g, "mig": None, "uuid": None} for g in gpus]


def _tokens(value):
    return [t.strip() for t in value.split(",") if t.strip()]


def _parse(value, var, all_gpus, root, flat=None):
    text = value.strip().lower()
    if text == "all":
        return Selection(_whole(all_gpus), False)
    if text == "void" and var == "NVIDIA_VISIBLE_DEVICES":
        return Selection([], True, void=True)
    if text in NONE or text == "void":
        return Selection([], True)
    return Selection([_one(all_gpus, t, var, root, flat) for t in _tokens(value)], True)


def _one(all_gpus, token, var, root, flat=None):
    lower = token.lower()
    if lower.startswith("mig-"):
        return _mig_uuid(all_gpus, token, var, root)
    if ":" in token and bus_id(token) is None and all(p.isdigit() for p in token.split(":")):
        gpu, mig = (int(p) for p in token.split(":"))
        return _mig_index(all_gpus, gpu, mig, var, root)
    if token.isdigit() and flat is not None:
        if int(token) >= len(flat):
            _missing(all_gpus, var, token, "no such GPU on this node")
        return flat[int(token)]
    if token.isdigit():
        matches = [g for g in all_gpus if g["index"] == int(token)]
    elif bus_id(token):
        matches = [g for g in all_gpus if g["bus_id"] and bus_id(g["bus_id"]) == bus_id(token)]
    else:
        matches = [g for g in all_gpus if g["uuid"] and g["uuid"].lower().startswith(lower)]
    if len(matches) != 1:
        _missing(all_gpus, var, token, "ambiguous GPU UUID prefix" if matches else "no such GPU on this node")
    return {"gpu": matches[0], "mig": None, "uuid": None}


def _missing(all_gpus, var, token, what):
    have = ", ".join(f"{g['index']}" + (f" ({g['uuid']})" if g["uuid"] else "") for g in all_gpus) or "none"
    raise UdockerError(f"{var}={token}: {what}", hint=f"GPUs here: {have}")


def _mig_index(all_gpus, gpu, mig, var, root):
    parents = [g for g in all_gpus if g["index"] == gpu]
    instances = migs_of(root, parents[0]) if parents else []
    if mig >= len(instances):
        _missing(all_gpus, var, f"{gpu}:{mig}", "no such MIG device on this node")
    return _mig_choice(root, parents[0], instances[mig])


def _mig_uuid(all_gpus, token, var, root):
    known = nvml_migs(root)
    place = (known or {}).get(token)
    if place:
        for gpu in (g for g in all_gpus if g["uuid"] == place[0]):
            for mig in migs_of(root, gpu):
                if (mig["gi"], mig["ci"]) == tuple(place[1:]):
                    return {"gpu": gpu, "mig": mig, "uuid": token}
    if known is None and any(migs_of(root, g) for g in all_gpus):  # NVML cannot tell: the driver will
        return {"gpu": None, "mig": None, "uuid": token}
    return _missing(all_gpus, var, token, "no such MIG device on this node")


# -- Slurm ---------------------------------------------------------------------------------------------
def _slurm(all_gpus, request, root):
    var = next((v for v in ("SLURM_STEP_GPUS", "SLURM_JOB_GPUS") if v in request), None)
    if var is None:
        return None
    ids = _tokens(request[var])
    if not ids or request[var].strip().lower() in NONE:
        return Selection([], True)
    local = request.get("CUDA_VISIBLE_DEVICES", "")
    task = [] if local.strip().lower() in NONE else _tokens(local)
    if any(not t.isdigit() for t in task):  # UUIDs (MIG-..., GPU-...) name the task's devices outright
        return _parse(local, "CUDA_VISIBLE_DEVICES", all_gpus, root)
    flat = _flat(all_gpus, root)
    if task and len(task) < len(ids) and all(i.isdigit() for i in ids):
        ids = _narrow(sorted(ids, key=int), [int(t) for t in task], request, root)
    return _parse(",".join(ids), var, all_gpus, root, flat)


def _flat(all_gpus, root):
    """Slurm's gres list (AutoDetect=nvml): each GPU, or the MIG instances of a MIG-enabled GPU in its place."""
    flat = []
    for gpu in all_gpus:
        flat += [_mig_choice(root, gpu, m) for m in migs_of(root, gpu)] or _whole([gpu])
    return flat


def _narrow(ids, task, request, root):
    """The Slurm ids (sorted) a task's shorter CUDA_VISIBLE_DEVICES names: local indexes or global ids."""
    as_local = [ids[t] for t in task if t < len(ids)] if all(t < len(ids) for t in task) else None
    as_global = [str(t) for t in task] if all(str(t) in ids for t in task) else None
    if as_local and as_global and as_local != as_global:
        return as_local if _constrained(root, request) else as_global
    return as_local or as_global or ids


def _constrained(root, request):
    """Whether Slurm constrains devices here (cgroup.conf ConstrainDevices=yes next to slurm.conf)."""
    conf = request.get("SLURM_CONF", "")
    directories = ([os.path.dirname(conf)] if conf.startswith("/") else []) + [
        "/etc/slurm", "/run/slurm/conf", "/etc/slurm-llnl", "/usr/local/etc/slurm"]
    for directory in directories:
        try:
            with open(libraries.under(root, f"{directory}/cgroup.conf"), encoding="utf-8", errors="replace") as f:
                text = f.read()
        except OSError:
            continue
        return bool(re.search(r"^\s*ConstrainDevices\s*=\s*yes\b", text, re.I | re.M))
    return False


# -- the container's names and nodes -------------------------------------------------------------------
def container_env(selection, all_gpus, root, isolated):
    """(variables that replace the container's, variables set unless the container sets them)."""
    present = selection.gpus(all_gpus, root)
    rank = {g["index"]: (n if isolated else g["index"]) for n, g in enumerate(present)}
    names, cuda = [], []
    for choice in selection.choices:
        gpu, mig = choice["gpu"], choice["mig"]
        if mig is None and gpu is not None:
            names.append(gpu["uuid"] or str(rank[gpu["index"]]))
            cuda.append(str(rank[gpu["index"]]))
        else:
            legacy = f"MIG-{gpu['uuid']}/{mig['gi']}/{mig['ci']}" if gpu and gpu["uuid"] else None
            names.append(choice["uuid"] or (f"{rank[gpu['index']]}:{mig['index']}" if gpu else ""))
            cuda.append(choice["uuid"] or legacy or str(rank[gpu["index"]]))
    override = {"NVIDIA_VISIBLE_DEVICES": ",".join(names) or "none"}
    defaults = {}
    if selection.subset:
        override["CUDA_VISIBLE_DEVICES"] = ",".join(cuda)
        defaults["CUDA_DEVICE_ORDER"] = "PCI_BUS_ID"
    return override, defaults


def device_paths(selection, all_gpus, root, caps_dir):
    """Container paths of the chosen GPUs' nodes and of the nvidia-caps nodes of the chosen MIG devices (all
    of a GPU chosen whole). As under the NVIDIA toolkit, the other caps nodes (mig/config, mig/monitor, which
    only root may open) are not given; P and F modes see them anyway, with the host's /dev."""
    present = selection.gpus(all_gpus, root)
    kept = set()
    whole = {c["gpu"]["index"] for c in selection.choices if c["gpu"] and not c["mig"]}
    whole |= {g["index"] for g in present if any(not c["gpu"] for c in selection.choices)}
    for gpu in all_gpus:
        if gpu["index"] in whole:
            kept.update(m for mig in migs_of(root, gpu) for m in mig["caps"])
    kept.update(m for c in selection.choices if c["mig"] for m in c["mig"]["caps"])
    paths = [f"{caps_dir}/nvidia-cap{minor}" for minor in sorted(kept)]
    return paths + [f"/dev/nvidia{g['minor'] if g['minor'] is not None else g['index']}" for g in present]


def masked_capabilities(root, all_gpus, chosen, caps):
    """/proc/driver/nvidia/capabilities paths to hide from a run given, of `all_gpus`, those of minors
    `chosen` and the nvidia-caps minors `caps` (R modes, which mount their own /proc): the other GPUs'
    gpu<minor> directories and the MIG devices (gi<G>, or gi<G>/ci<C>) of the chosen GPUs whose caps nodes
    the run lacks."""
    top = "/proc/driver/nvidia/capabilities"
    masked = []
    for gpu in all_gpus:
        if gpu["minor"] not in chosen:
            if os.path.isdir(f"{root.rstrip('/')}{top}/gpu{gpu['minor']}"):
                masked.append(f"{top}/gpu{gpu['minor']}")
            continue
        instances = migs_of(root, gpu)
        for gi in sorted({m["gi"] for m in instances}):
            mine = [m for m in instances if m["gi"] == gi]
            base = f"{top}/gpu{gpu['minor']}/mig/gi{gi}"
            if not any(set(m["caps"]) <= caps for m in mine):
                masked.append(base)
            else:
                masked += [f"{base}/ci{m['ci']}" for m in mine if not set(m["caps"]) <= caps]
    return masked
