"""Which engine runs an execution mode, and the automatic choice. The modes themselves (names, engines, what
each needs) are the table in udocker/modetable.py.

Engines are imported by dotted name only when asked for, so that `run` imports just the one it uses and a
mode whose module is missing fails alone.
"""

import sys

from udocker.errors import EngineUnavailable, UsageError
from udocker.modetable import NAMES, engine_of

ENGINES = {"proot": "udocker.engines.proot.ProotEngine", "fakechroot": "udocker.engines.fakechroot.FakechrootEngine"}
OCI_RUNTIMES = {"runc": "udocker.engines.runc.RuncEngine", "crun": "udocker.engines.crun.CrunEngine"}

# What `auto` tries, first to last. R1 first: programs run at native speed (PRoot traces every system call,
# fakechroot wraps every libc call) and start-up is about 26 ms. Then PRoot with and without seccomp, then
# fakechroot with LD_PRELOAD only. R2/R3 (slower than both R1 and P1) and F3/F4 (they patch the container's
# executables) are never chosen automatically.
AUTO_ORDER = ("R1", "P1", "P2", "F1", "F2")


def _load(dotted):
    module, _, name = dotted.rpartition(".")
    try:
        __import__(module)  # importlib.import_module would load importlib and warnings (~1 ms of `run`)
        return getattr(sys.modules[module], name)
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

    if hybrid_controllers():  # first: a read of /sys, where finding crun looks in the repository
        return "runc"
    try:
        find("crun", layout)
    except EngineUnavailable:
        return "runc"
    return "crun"


def get_engine(mode, config, layout):
    """The engine instance that runs `mode` (a name from modetable.NAMES, case-insensitive)."""
    mode = (mode or "").upper()
    if mode not in NAMES:
        raise UsageError(f"unknown execution mode: {mode or '(none)'}", hint="use one of " + " ".join(NAMES))
    engine = engine_of(mode)
    dotted = OCI_RUNTIMES[oci_runtime(config, layout)] if engine == "oci" else ENGINES[engine]
    return _load(dotted)(config, layout)


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
