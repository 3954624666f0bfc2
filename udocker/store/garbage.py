"""What rmi may remove: the checks that refuse an image still in use, and the collection of unpacked
trees (unpacked/<manifest hex>/) that no image and no container uses.

All of it runs under Repository.exclusive(), which waits for every create (create.py holds
Repository.gc_guard() from reading the image to publishing the container), so no tree or blob is
removed under a create that reads it. A container needs neither once created: its rootfs holds its own
hard links to the tree's files, so removing a tree frees only what no container shares.
"""

import os

from udocker import fs
from udocker.errors import LockTimeout, UdockerError
from udocker.store.containers import ContainerStore, _make_removable

_HEX = frozenset("0123456789abcdef")


def refuse_if_unpacking(repo, image):
    """UdockerError when a create or run is unpacking `image` now (it holds the tree's lock)."""
    try:
        with fs.locked(repo.layout.lock("unpacked", image.descriptor.digest), timeout=0):
            pass
    except LockTimeout:
        raise UdockerError(f"image {image.ref} is being unpacked by another process",
                           hint="wait for its create or run to end, or use 'udocker rmi -f'") from None


def refuse_if_used(repo, image):
    """Docker's rule: the last name of an image that a container uses is not removed without -f."""
    digest = image.descriptor.digest
    if any(other.ref != image.ref and other.descriptor.digest == digest for other in repo.images.list()):
        return  # another name keeps the image
    containers = ContainerStore(repo.layout, repo.lock_timeout)
    for container in containers.list():
        if container.broken is None and container.record.get("manifest") == digest:
            names = containers.names_of(container.id)
            shown = container.id + (f" ({', '.join(names)})" if names else "")
            raise UdockerError(f"image {image.ref} is used by container {shown}",
                               hint="remove the container first, or use 'udocker rmi -f'")


def collect_unpacked(repo):
    """Remove the unpacked trees no image and no container uses. A broken container record might use
    any of them: then none is removed."""
    top = repo.layout.unpacked
    try:
        trees = [name for name in os.listdir(top) if len(name) == 64 and set(name) <= _HEX]
    except FileNotFoundError:
        return
    except OSError as exc:
        raise fs.store_error("list", top, exc) from None
    used = {image.descriptor.digest for image in repo.images.list()}
    for container in ContainerStore(repo.layout, repo.lock_timeout).list():
        if container.broken is not None:
            return
        used.add(container.record.get("manifest"))
    for name in trees:
        if "sha256:" + name not in used:
            _remove_tree(repo, os.path.join(top, name))


def collect_orphan_tree(repo, digest):
    """After `rm`: collect the unpacked trees now unused when the removed container's image is gone (rmi -f
    left its tree to the container). Skipped while anything holds the repository: the next rmi collects."""
    if not digest or any(image.descriptor.digest == digest for image in repo.images.list()):
        return
    try:
        with fs.locked(repo.layout.lock("repo", "gc"), timeout=0):
            collect_unpacked(repo)
    except LockTimeout:
        return


def _remove_tree(repo, path):
    """Rename the tree into tmp/ (atomic: it is whole or gone), then delete it there."""
    with fs.scratch_dir(repo.layout.tmp, prefix="remove-") as scratch:
        moved = os.path.join(scratch, "tree")
        try:
            os.rename(path, moved)
        except FileNotFoundError:
            return
        except OSError as exc:
            raise fs.store_error("remove", path, exc) from None
        _make_removable(moved)
