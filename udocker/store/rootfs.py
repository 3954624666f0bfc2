"""Unpacked images shared by containers.

The first `create` of an image applies its layers once into unpacked/<manifest hex>/ (published with
an atomic rename) and makes every regular file there read-only. Each container's rootfs is then a
"link farm" of that tree: real directories, symlinks and fifos of its own, and hard links to the
read-only files, except under PRIVATE_DIRS (/etc, /var, /root, /home, /tmp...), which are copied
because programs edit files there in place. A second create of the same image therefore writes
directory entries only, no file data.

Why this is safe: a program that opens a shared file for writing gets EACCES (the file is read-only
and the user is not root); tools that replace files (dpkg, pip, sed -i, editors) write a new inode and
rename it over the link. Engines that would write shared files in place must call materialize() first:
R modes (root in a user namespace may override file permissions) and F3/F4 (patchelf rewrites ELF
files). Known limit: chmod on a shared file inside a P or F container changes its mode for the other
containers of that image too (the user owns every inode); its content stays protected until a
program then writes to it (docs/architecture.md, 'Unpacked images').

Nothing here is writable by group or others: copies and directories drop those bits (the repository is
private; the container's user owns everything). Copies keep holes (a sparse file costs only its data),
are written next to their target and removed on failure, and are preceded by a check of free space.
"""

import contextlib
import os
import stat

from udocker import fs
from udocker.errors import StoreError
from udocker.fs import copy_file
from udocker.unpack import LayerSource, apply_layers

PRIVATE_DIRS = ("etc", "var", "root", "home", "tmp", "run", "srv", "mnt", "media")
_WRITE = stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH
_OPEN = stat.S_IWGRP | stat.S_IWOTH
_COPIERS = 4  # private copies made at once (materialize)


class ByDescriptor:
    """Unpack progress (keyed by LayerSource) told to a progress that knows layers by their Descriptor."""

    def __init__(self, progress, descriptors):
        self.progress, self.descriptors = progress, descriptors

    def layer_started(self, layer):
        self.progress.layer_started(self.descriptors[layer.name])

    def layer_advanced(self, layer, nbytes):
        self.progress.layer_advanced(self.descriptors[layer.name], nbytes)

    def layer_finished(self, layer):
        self.progress.layer_finished(self.descriptors[layer.name])


def ensure_unpacked(repo, manifest, manifest_digest, *, on_notice=None, progress=None):
    """The read-only unpacked tree of an image, applying its layers on first use. Concurrent callers
    wait for the first; a crash leaves only a scratch directory in tmp/. `progress` (layer_started,
    layer_advanced, layer_finished, each given the layer's Descriptor) hears of each layer unpacked."""
    target = repo.layout.unpacked_tree(manifest_digest)
    if os.path.isdir(target):
        return target
    fs.ensure_dir(os.path.dirname(target))
    with fs.locked(repo.layout.lock("unpacked", manifest_digest), timeout=repo.lock_timeout,
                   what=f"image {manifest_digest[7:19]}"):
        if os.path.isdir(target):
            return target
        with fs.scratch_dir(repo.layout.tmp, prefix="unpack-") as scratch:
            rootfs = os.path.join(scratch, "rootfs")
            os.mkdir(rootfs, 0o755)
            layers = [LayerSource(repo.blobs.path(d.digest), d.media_type, d.digest, d.size) for d in manifest.layers]
            told = ByDescriptor(progress, {d.digest: d for d in manifest.layers}) if progress else None
            apply_layers(rootfs, layers, on_notice=on_notice, max_size=repo.max_layer_size, progress=told,
                         spool_dir=scratch)
            publish(rootfs, target)
    return target


def publish(rootfs, target):
    """Make the tree `rootfs` read-only and rename it to `target` (under the image's unpack lock)."""
    _make_read_only(rootfs)
    try:
        os.rename(rootfs, target)
    except OSError:
        if not os.path.isdir(target):  # else published meanwhile by a process whose lock was broken
            raise


def _make_read_only(top):
    for parent, _, files in os.walk(top):
        for name in files:
            path = os.path.join(parent, name)
            mode = os.lstat(path).st_mode
            if stat.S_ISREG(mode) and mode & _WRITE:
                os.chmod(path, stat.S_IMODE(mode) & ~_WRITE)


def link_tree(source, target, *, share=True, keep_shared_only=False):
    """Populate `target` (an existing empty directory) from `source`: directories, symlinks and fifos
    are recreated, regular files are hard-linked when `share` and outside PRIVATE_DIRS, else copied.
    With `keep_shared_only` (cloning a container), a file is linked exactly when it is shared already
    (read-only with several links), whatever its directory."""
    copied = {}  # (st_dev, st_ino) -> first copy, to keep the image's own hard links among copies
    for parent, dirs, files in os.walk(source):
        relative = os.path.relpath(parent, source)
        private = not share or relative.split(os.sep, 1)[0] in PRIVATE_DIRS
        destination = target if relative == "." else os.path.join(target, relative)
        for name in dirs + files:
            path = os.path.join(parent, name)
            link = not private and not (relative == "." and name in PRIVATE_DIRS)
            if keep_shared_only:
                link = share and _is_shared(path)
            _place(path, os.path.join(destination, name), copied, link=link)
        os.chmod(destination, (stat.S_IMODE(os.lstat(parent).st_mode) | stat.S_IRWXU) & ~_OPEN)


def _place(src, dst, copied, *, link):
    info = os.lstat(src)
    mode = info.st_mode
    if stat.S_ISDIR(mode):
        os.mkdir(dst, 0o700)
    elif stat.S_ISLNK(mode):
        # A symlink cannot be changed in place, only replaced, so its inode is shared like a read-only file
        # (linkat without AT_SYMLINK_FOLLOW): about 15 times cheaper than creating a new symlink here.
        os.link(src, dst, follow_symlinks=False)
    elif stat.S_ISREG(mode):
        if link:
            os.link(src, dst)
        elif (info.st_dev, info.st_ino) in copied:
            os.link(copied[(info.st_dev, info.st_ino)], dst)
        else:
            if info.st_nlink > 1:
                copied[(info.st_dev, info.st_ino)] = dst
            copy_file(src, dst, (stat.S_IMODE(mode) | stat.S_IRUSR | stat.S_IWUSR) & ~_OPEN)
    elif stat.S_ISFIFO(mode):
        os.mkfifo(dst, stat.S_IMODE(mode) & ~_OPEN)


def _is_shared(path):
    info = os.lstat(path)
    return stat.S_ISREG(info.st_mode) and info.st_nlink > 1 and not info.st_mode & _WRITE


def materialize(rootfs):
    """Replace every hard-linked (shared) file under `rootfs` by a private writable copy. Paths of the
    container that were one file (the image's own hard links) stay one file: the first is copied, the
    others are linked to that copy."""
    shared = []
    for parent, _, files in os.walk(rootfs):
        for name in files:
            path = os.path.join(parent, name)
            info = os.lstat(path)
            if stat.S_ISREG(info.st_mode) and info.st_nlink > 1:
                shared.append((path, info))
    sizes = {(info.st_dev, info.st_ino): info.st_blocks * 512 for _, info in shared}
    check_free_space(rootfs, sum(sizes.values()), "private copies of the container's files")
    copies = {}  # (st_dev, st_ino) of the shared file -> the path that gets its private copy
    others = []  # (path, the path whose copy it becomes a link to)
    for path, info in shared:
        key = (info.st_dev, info.st_ino)
        if key in copies:
            others.append((path, copies[key]))
        else:
            copies[key] = path
    _copy_all(list(copies.values()))
    for path, copy in others:
        try:
            temporary = path + ".udocker-link"
            _remove_stale(temporary)
            os.link(copy, temporary)
            os.replace(temporary, path)
        except OSError as exc:
            raise fs.store_error("copy", path, exc) from None


def _copy_all(paths):
    """private_copy() of every path, _COPIERS at a time: a copy mostly waits for the file system (the kernel
    copies the data; ext4 starts writing a copy back when it is renamed over the link), so on a local disk
    a 200-file, 200 MiB tree takes 0.09 s instead of 0.16 s, and a network file system gains more. The first
    failure (in the order of `paths`) is raised as StoreError; the copies not yet started are not made."""
    from concurrent.futures import ThreadPoolExecutor  # not needed to run a container already prepared

    def copy(path):
        try:
            private_copy(path)
        except OSError as exc:
            raise fs.store_error("copy", path, exc) from None

    with ThreadPoolExecutor(max_workers=_COPIERS, thread_name_prefix="copy") as pool:
        futures = [pool.submit(copy, path) for path in paths]
        try:
            for future in futures:
                future.result()
        finally:
            for future in futures:
                future.cancel()


def private_copy(path):
    """Break the hard link of `path`: copy it (holes kept) next to itself and rename the copy over it."""
    mode = stat.S_IMODE(os.lstat(path).st_mode)
    temporary = path + ".udocker-copy"
    _remove_stale(temporary)
    copy_file(path, temporary, (mode | stat.S_IWUSR) & ~_OPEN)
    os.replace(temporary, path)


def _remove_stale(temporary):
    """A temporary name left by an interrupted materialize() (kill -9) is taken again."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(temporary)


def check_free_space(path, needed, what):
    """StoreError when the file system of `path` has fewer than `needed` bytes free for this user."""
    try:
        info = os.statvfs(path)
    except OSError:
        return  # cannot tell: the copy itself will say
    available = info.f_bavail * info.f_frsize
    if needed > available:
        raise StoreError(f"not enough space for {what}: {needed} bytes needed, {available} available in {path}",
                         hint="free some space in the repository's file system")


def copy_size(unpacked, *, share=True):
    """Bytes of disk that link_tree(unpacked, ..., share=share) will write: the files it copies."""
    tops = [os.path.join(unpacked, name) for name in PRIVATE_DIRS] if share else [unpacked]
    sizes = {}
    for top in tops:
        if os.path.islink(top):
            continue  # an image's /var -> /somewhere: a symlink is copied as a symlink, never followed
        for parent, _, files in os.walk(top):
            for name in files:
                info = os.lstat(os.path.join(parent, name))
                if stat.S_ISREG(info.st_mode):
                    sizes[(info.st_dev, info.st_ino)] = info.st_blocks * 512
    return sum(sizes.values())


def private_size(rootfs):
    """Bytes of the files this container does not share (hard-link count 1)."""
    total = 0
    for parent, _, files in os.walk(rootfs):
        for name in files:
            info = os.lstat(os.path.join(parent, name))
            if stat.S_ISREG(info.st_mode) and info.st_nlink == 1:
                total += info.st_blocks * 512
    return total
