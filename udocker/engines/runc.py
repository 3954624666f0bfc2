"""runc as the rootless OCI runtime of modes R1-R3 (the bundle logic is in ocirt.py).

Rootless runc needs no option here: with `linux.cgroupsPath` and `linux.resources` absent it tries the
cgroups it may use and ignores permission errors, which works on cgroup v1, v2 and hybrid hosts."""

from udocker.engines.ocirt import OciEngine


class RuncEngine(OciEngine):
    name = "runc"
