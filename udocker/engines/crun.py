"""crun as the rootless OCI runtime of modes R1-R3 (the bundle logic is in ocirt.py).

crun starts about twice as fast as runc, but refuses every container on a cgroup v1/v2 hybrid host whose
cgroup2 hierarchy (/sys/fs/cgroup/unified) has a controller attached ("cgroups in hybrid mode not supported,
drop all controllers from cgroupv2"), whatever --cgroup-manager says: refusal() detects that case so the
probe can name it instead of failing at run time."""

from udocker.engines.ocirt import OciEngine

UNIFIED = "/sys/fs/cgroup/unified/cgroup.controllers"


def hybrid_controllers(path=UNIFIED):
    """The controllers attached to the cgroup2 hierarchy of a hybrid host ('' when none or not hybrid)."""
    try:
        with open(path, "rb") as stream:  # bytes: a text stream of "ascii" loads encodings.ascii (R modes' run)
            return stream.read().decode("ascii", "replace").strip()
    except OSError:
        return ""


class CrunEngine(OciEngine):
    name = "crun"
    global_options = ("--cgroup-manager=disabled",)

    def refusal(self):
        controllers = hybrid_controllers()
        if controllers:
            return (f"crun refuses cgroup v1/v2 hybrid hosts whose cgroup2 hierarchy has controllers "
                    f"({UNIFIED}: {controllers})")
        return None
