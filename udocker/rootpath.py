"""Container paths on the host: where a path inside a container is, following the container's symbolic
links as chroot(2) would. A primitive: the run's checks, the engines and the injectors all ask it."""

import os
import stat

MAX_SYMLINKS = 40  # as the kernel allows for one path lookup


def resolve(rootfs, path, mounts=(), cwd="/"):
    """The host path of container path `path` (relative ones from `cwd`), following symbolic links as
    chroot(2) would: absolute link targets start again at `rootfs`, '..' stops at the root; a path under a
    mount target continues in the mount's source. The last component need not exist. Shared by the run's checks
    (the program, /etc/passwd), the engines and the injectors.
    A link target (or `path`) that is a host path into `rootfs`, as udocker 1.3's F modes leave them (links,
    and the interpreters of F3/F4), stands for the container path it names."""
    return resolve_stat(rootfs, path, mounts, cwd)[0]


def resolve_stat(rootfs, path, mounts=(), cwd="/", cache=None):
    """(resolve()'s host path, the os.lstat of it or None when it is missing): the lstat that told the last
    component is no symbolic link, kept, so that a caller needs no stat of its own (on NFS or Lustre each is
    a round trip). A link left after MAX_SYMLINKS hops is returned with its own lstat (S_ISLNK). `cache` (a
    dict, host path -> lstat or None) shares the lstat of directories between the resolutions of one lookup."""
    targets = sorted(((os.path.normpath("/" + m.target.lstrip("/")), os.path.abspath(m.source)) for m in mounts),
                     key=lambda t: -len(t[0]))

    def host(parts):
        container = "/" + "/".join(parts)
        for target, source in targets:
            if container == target or container.startswith(target.rstrip("/") + "/"):
                return source + container[len(target):]
        return rootfs.rstrip("/") + container

    inside = rootfs.rstrip("/") + "/"
    if path.startswith(inside):  # likewise a program's interpreter patched by udocker 1.3's F3/F4
        path = path[len(inside) - 1:]
    todo = [p for p in (path if path.startswith("/") else cwd + "/" + path).split("/") if p]
    done, hops, info, known = [], 0, None, False  # known: info is the lstat of host(done)
    while todo:
        part = todo.pop(0)
        if part == ".":
            continue
        if part == "..":
            if done:
                done.pop()
            info, known = None, False
            continue
        candidate = host(done + [part])
        info, known = _lstat(candidate, cache), True
        if info is not None and stat.S_ISLNK(info.st_mode) and hops < MAX_SYMLINKS:
            hops += 1
            target = os.readlink(candidate)
            if target.startswith("/"):
                done = []
                if target.startswith(inside):  # a host path into the rootfs, as udocker 1.3's F modes write
                    target = target[len(inside) - 1:]
            todo = [p for p in target.split("/") if p] + todo
            continue
        done.append(part)
    final = host(done)
    if not known and done and final != rootfs.rstrip("/"):  # '..' ended the walk: one lstat more (not twice)
        info = _lstat(final)
    return final, info


def _lstat(path, cache=None):
    if cache is not None and path in cache:
        return cache[path]
    try:
        info = os.lstat(path)
    except (OSError, ValueError):
        info = None
    if cache is not None:
        cache[path] = info
    return info
