"""The execution modes: the one table from udocker's mode names to engine classes, and the automatic choice.

P1 P2     PRoot (engines/proot.py): P1 lets PRoot use its seccomp filter, P2 sets PROOT_NO_SECCOMP=1
F1 - F4   fakechroot (engines/fakechroot.py)
R1 R2 R3  a rootless OCI runtime (engines/ocirt.py): runc or crun as the `oci_runtime` setting says; R2 and
          R3 run PRoot inside it (R3 without seccomp)

Engines are imported by dotted name only when asked for, so that `run` imports just the one it uses and a
mode whose module is missing fails alone.
"""

import importlib

from udocker.errors import EngineUnavailable, UsageError

MODES = {
    "P1": "udocker.engines.proot.ProotEngine",
    "P2": "udocker.engines.proot.ProotEngine",
    "F1": "udocker.engines.fakechroot.FakechrootEngine",
    "F2": "udocker.engines.fakechroot.FakechrootEngine",
    "F3": "udocker.engines.fakechroot.FakechrootEngine",
    "F4": "udocker.engines.fakechroot.FakechrootEngine",
    "R1": "oci",
    "R2": "oci",
    "R3": "oci",
}
OCI_RUNTIMES = {"runc": "udocker.engines.runc.RuncEngine", "crun": "udocker.engines.crun.CrunEngine"}

# What `auto` tries, first to last. R1 first: programs run at native speed (PRoot traces every system call,
# fakechroot wraps every libc call) and start-up is about 26 ms. Then PRoot with and without seccomp, then
# fakechroot with LD_PRELOAD only. R2/R3 (slower than both R1 and P1) and F3/F4 (they patch the container's
# executables) are never chosen automatically.
AUTO_ORDER = ("R1", "P1", "P2", "F1", "F2")


def _load(dotted):
    module, _, name = dotted.rpartition(".")
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as error:
        raise EngineUnavailable(f"engine {dotted} is not available: {error}") from None


def _setting(config, name, default):
    try:
        return config[name]
    except (KeyError, TypeError):
        return default


def oci_runtime(config, layout):
    """'runc' or 'crun': the `oci_runtime` setting, or for 'auto' crun where it is installed and this host's
    cgroups do not make it refuse (it starts faster), else runc. Cheap: a PATH search and one small read."""
    wanted = _setting(config, "oci_runtime", "auto") or "auto"
    if wanted in OCI_RUNTIMES:
        return wanted
    if wanted != "auto":
        raise UsageError(f"unknown oci_runtime: {wanted}", hint="use auto, runc or crun")
    from udocker.engines.crun import hybrid_controllers
    from udocker.engines.locate import find

    try:
        find("crun", layout)
    except EngineUnavailable:
        return "runc"
    return "runc" if hybrid_controllers() else "crun"


def get_engine(mode, config, layout):
    """The engine instance that runs `mode` (a name from MODES, case-insensitive)."""
    mode = (mode or "").upper()
    if mode not in MODES:
        raise UsageError(f"unknown execution mode: {mode or '(none)'}", hint="use one of " + " ".join(MODES))
    dotted = MODES[mode]
    if dotted == "oci":
        dotted = OCI_RUNTIMES[oci_runtime(config, layout)]
    return _load(dotted)(config, layout)


def probe_all(config, layout, modes=AUTO_ORDER):
    """[(mode, None or the EngineUnavailable that says why not)] for each mode, in order (for `udocker info`
    style reports and for auto_mode)."""
    results = []
    for mode in modes:
        try:
            get_engine(mode, config, layout).probe(mode)
        except EngineUnavailable as error:
            results.append((mode, error))
            continue
        results.append((mode, None))
    return results


def auto_mode(config, layout, container=None):
    """The first mode of AUTO_ORDER whose probe passes, for `container` when given (an engine that checks
    containers looks at it only when its mode is reached, after R1/P1/P2 failed); EngineUnavailable listing
    every reason otherwise. Host probes are cached per process, so calling this again is cheap."""
    reasons = {}
    for mode in AUTO_ORDER:
        try:
            get_engine(mode, config, layout).probe(mode, container)
        except EngineUnavailable as error:
            reasons.setdefault(error.message, []).append(mode)
            continue
        return mode
    where = "can run this container" if container is not None else "works on this host"
    raise EngineUnavailable(f"no execution mode {where}: "
                            + "; ".join(f"{', '.join(names)}: {reason}" for reason, names in reasons.items()),
                            hint="install proot or runc, or see 'udocker setup --execmode'")
