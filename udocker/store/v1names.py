"""Container names and udocker 2 containers in a repository that udocker 1.x still uses (it has 1.x's repos/).

There every name is kept as udocker 1.3 keeps it, a relative symbolic link containers/<name> -> <uuid> (1.3's
set_container_name links containers/<name> to os.path.relpath(realpath(container dir), containers/), which is
the bare uuid; its get_container_id takes the basename of the link's target). udocker 2's own place for names,
containers/.names/, is never made there: 1.3's `ps` takes every directory of containers/ for a container and
prints "Error: invalid container json metadata" for it.

A udocker 2 container made there also gets what 1.3 needs to list, run and remove it: ROOT -> rootfs (a
relative link) and imagerepo.name. Its container.json is udocker 2's record, which 1.3 reads as an image
configuration (its "config" object holds Env, Cmd, WorkingDir...); `protect` adds 1.3's PROTECT file too, so that
1.3's rm refuses it as udocker 2's does. No execmode file: 1.3 runs it in P1, which
changes nothing in its files; 1.3's F and R setups would rewrite the tree that udocker 2 prepared.

Names that an earlier udocker 2 left in containers/.names/ of such a repository are moved to 1.x links by the
next udocker 2 command that writes a name there (move_dot_names), under the `names-v1` lock that every such
writer takes first. Each name is linked at its new place before it is unlinked from the old, and readers look
in containers/.names/ before containers/, so a reader always finds it in one of the two.
"""

import os

from udocker.paths import Layout, link_id

LOCK = ("names", "v1")


def is_v1_repository(layout: Layout) -> bool:
    """True when udocker 1.x still uses the repository: it holds 1.x's image tags (repos/), which udocker 2 never
    makes and never removes."""
    return os.path.isdir(layout.legacy_repos)


def link_target(container_id: str) -> str:
    """What a name's link holds: the container's uuid, relative to containers/ (as udocker 1.3 writes it)."""
    return container_id


def v1_view(directory: str, record: dict) -> None:
    """Add to the udocker 2 container being assembled in `directory` what udocker 1.3 needs to list, run and
    remove it: ROOT -> rootfs, and imagerepo.name ("repo:tag") when it was made from an image."""
    os.symlink(os.path.basename(Layout.container_rootfs(directory)), Layout.legacy_root(directory))
    if record.get("image"):
        with open(os.path.join(directory, "imagerepo.name"), "w", encoding="utf-8") as stream:
            stream.write(record["image"])


def mark_protected(directory: str, protected: bool) -> None:
    """Protect the container in `directory` against udocker 1.3's rm as 1.3 does (a PROTECT file), or not."""
    protect = os.path.join(directory, "PROTECT")
    if protected:
        open(protect, "a", encoding="ascii").close()
    else:
        try:
            os.unlink(protect)
        except FileNotFoundError:
            pass


def move_dot_names(layout: Layout, lock_timeout: float, warn) -> None:
    """Move the names of containers/.names/ to 1.x links containers/<name>, then remove the directory. A name that
    1.3 gave to another container meanwhile stays where it is (udocker 2 still finds it there) and `warn(text)`
    says so; the directory then stays too."""
    if not os.path.isdir(layout.names):
        return
    from udocker import fs

    with fs.locked(layout.lock(*LOCK), timeout=lock_timeout, what="the container names"):
        try:
            entries = os.listdir(layout.names)
        except FileNotFoundError:
            return  # moved by another process meanwhile
        kept = [name for name in sorted(entries) if not _move(layout, name)]
        for name in kept:
            warn(f"container name {name} is also udocker 1's name of another container: rename one of them "
                 f"(it stays in {layout.names} until then)")
        if not kept:
            try:
                os.rmdir(layout.names)
            except OSError:
                pass


def _move(layout: Layout, name: str) -> bool:
    old = layout.name(name)
    try:
        target = os.readlink(old)
    except FileNotFoundError:
        return True
    except OSError:
        return False  # not a link: not udocker 2's
    new = layout.container(name)
    try:
        os.symlink(link_target(link_id(target)), new)
    except FileExistsError:
        try:
            same = link_id(os.readlink(new)) == link_id(target)
        except OSError:  # a directory: a container whose id is the name
            same = False
        if not same:
            return False
    try:
        os.unlink(old)
    except FileNotFoundError:
        pass
    return True
