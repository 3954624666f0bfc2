"""User-namespace id mappings of rootless OCI runtimes (runc, crun): which host ids a container's ids are.

Without help only the caller's own uid and gid can be mapped; a range needs an entry in /etc/subuid and
/etc/subgid and the setuid newuidmap/newgidmap, which the runtime calls. R1 as uid 0 needs neither; R2/R3
(PRoot inside the runtime) and other uids need both.
"""

import os

from udocker.errors import EngineError


def id_mappings(inside, kind, *, proot, euid=None, subordinate=None):
    """uidMappings or gidMappings (kind "uid" or "gid") that make the caller appear as id `inside`.

    Only the caller's own id can be mapped without help; more need newuidmap/newgidmap (which the runtime
    calls) and a range in /etc/subuid or /etc/subgid (`subordinate`: (start, count), read when None).
    Rootless runtimes need container root to be the caller (runc fchowns its own files to it), so: uid 0 in
    R1 -> the caller alone; another id, or R2/R3 -> the caller as root and the range behind it (ids 1...).
    In R2/R3 that makes chown to another id a permission error, which PRoot fakes, instead of EINVAL for an
    unmapped id, which it does not. As real root: the identity mapping of the first 65536 ids."""
    euid = (os.geteuid() if kind == "uid" else os.getegid()) if euid is None else euid
    if os.geteuid() == 0 and euid == 0:
        return [{"containerID": 0, "hostID": 0, "size": 65536}]
    if inside == 0 and not proot:
        return [{"containerID": 0, "hostID": euid, "size": 1}]
    if subordinate is None:
        subordinate = subordinate_range(kind)
        mapping_helper(kind)
    start, count = subordinate
    return [{"containerID": 0, "hostID": euid, "size": 1}, {"containerID": 1, "hostID": start, "size": count}]


def mapping_helper(kind):
    """The newuidmap/newgidmap the runtime calls (from this PATH) to map a range: without it the kernel refuses
    (Ubuntu's useradd gives every user a range, but its uidmap package is optional)."""
    from udocker.engines.locate import on_path

    name = f"new{kind}map"
    if on_path(name):
        return
    raise EngineError(f"a rootless container with more than one {kind} needs {name}, which is not on PATH",
                      hint="ask an administrator to install it (package uidmap or shadow-utils), or run in R1")


def subordinate_range(kind):
    """(start, count) of the caller's first range in /etc/subuid or /etc/subgid; EngineError when none."""
    import pwd

    path = f"/etc/sub{kind}"
    uid = os.geteuid()
    try:
        names = {str(uid), pwd.getpwuid(uid).pw_name}
    except KeyError:
        names = {str(uid)}
    try:
        with open(path, encoding="utf-8") as stream:
            for line in stream:
                fields = line.strip().split(":")
                if len(fields) == 3 and fields[0] in names and fields[1].isdigit() and fields[2].isdigit():
                    return int(fields[1]), int(fields[2])
    except OSError:
        pass
    raise EngineError(f"a rootless container with more than one {kind} needs a range in {path} for this user",
                      hint=f"ask an administrator for one (usermod --add-sub{kind}s), or run as uid 0 in R1")


def mapping_problem():
    """Why a range cannot be mapped for this user (None when it can, or as real root): for probes and info."""
    if os.geteuid() == 0:
        return None
    try:
        for kind in ("uid", "gid"):
            subordinate_range(kind)
            mapping_helper(kind)
    except EngineError as error:
        return error.message
    return None
