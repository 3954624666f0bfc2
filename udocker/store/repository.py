"""The repository: an OCI image layout (blobs + index.json) plus containers, with per-object locks."""

from __future__ import annotations

import os
import stat

from udocker import fs, log
from udocker.config import KEYS, USER_FILE_NAME
from udocker.errors import NotFound, StoreError, UdockerError
from udocker.paths import FORMAT_VERSION, Layout

TYPE_CHECKING = False  # typing's constant without typing, contextlib or collections: `ps` opens the repository
if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

DEFAULT_MAX_LAYER_SIZE = KEYS["max_layer_size"].default


class Repository:
    """An opened repository. Use Repository.open(); attributes: layout, blobs, images (both made on first use:
    `ps` opens the repository without loading the image store, hashlib, dataclasses or the OCI modules)."""

    def __init__(self, layout: Layout, lock_timeout: float, max_layer_size: int = DEFAULT_MAX_LAYER_SIZE):
        self.layout = layout
        self.lock_timeout = lock_timeout
        self.max_layer_size = max_layer_size  # uncompressed bytes per layer when unpacking; 0: no limit
        self.v1_adopted = 0  # how many udocker 1.x image tags this process adopted

    def __getattr__(self, name: str):
        if name == "blobs":
            from udocker.store.blobs import BlobStore

            self.blobs = BlobStore(self.layout, self.lock_timeout)
            return self.blobs
        if name == "images":
            from udocker.store.images import ImageStore

            self.images = ImageStore(self.layout, self.lock_timeout, before_list=self._adopt_v1,
                                     why_missing=self._v1_refusal)
            return self.images
        raise AttributeError(name)

    def _adopt_v1(self) -> None:
        """Run by images.prepare(), once: only commands that resolve image names pay for udocker 1.x's."""
        if not os.path.isdir(self.layout.legacy_repos):
            return  # no udocker 1.x images: adopt.py (and gzip, logging) not loaded
        from udocker.store import adopt

        self.v1_adopted = adopt.sync_v1_images(self)

    def _v1_refusal(self, text: str):
        if not os.path.exists(self.layout.v1_images):
            return None
        from udocker.store import adopt

        return adopt.v1_refusal(self, text)

    @classmethod
    def open(cls, layout: Layout, *, create: bool = True, lock_timeout: float = 3600,
             max_layer_size: int = DEFAULT_MAX_LAYER_SIZE) -> Repository:
        """Check the format version (creating the layout, private, when `create`), clean tmp/ leftovers of
        dead processes, warn once if other users may enter it. Raises StoreError if the directory is not a
        udocker repository of this format."""
        if not os.path.exists(layout.version_file):
            # udocker 1.x's ~/.udocker (repos/, layers/, containers/, bin/, lib/) becomes udocker 2's too:
            # udocker 2's files are added beside 1.x's, which stay as they are (its images are adopted by
            # store/adopt.py when a command first lists them).
            legacy = os.path.isdir(layout.legacy_repos) and os.path.isdir(layout.containers)
            if not create and not legacy:
                raise StoreError(f"no udocker repository at {layout.topdir}", hint="run 'udocker mkrepo DIR'")
            _initialise(layout)
        try:
            with open(layout.version_file, encoding="utf-8") as stream:
                version = stream.read().strip()
        except OSError as exc:
            raise StoreError(f"cannot read {layout.version_file}: {exc.strerror}") from None
        if version != FORMAT_VERSION:
            raise StoreError(f"repository {layout.topdir} has format {version!r}, expected {FORMAT_VERSION!r}",
                             hint="use another --repo or remove the old repository")
        writable = [os.access(path, os.W_OK | os.X_OK) for path in (layout.topdir, layout.tmp, layout.locks)
                    if os.path.isdir(path)]
        if not all(writable):
            # Every command takes locks and may clean tmp/: say so once instead of failing on the first file.
            raise StoreError(f"repository {layout.topdir} is not writable", hint=fs.WRITABLE_HINT)
        for path in (layout.tmp, layout.locks, layout.blobs, layout.containers):
            fs.ensure_dir(path)  # directories removed by hand are recreated
        fs.clean_tmp(layout.tmp)
        _warn_if_open(layout)
        return cls(layout, lock_timeout, max_layer_size)

    def gc_guard(self):
        """Held (shared, in a with block) by anything that adds blobs not yet referenced by index.json, so that
        a concurrent garbage collection (held exclusively) never deletes them."""
        self.images.prepare()  # udocker 1.x's images are adopted before, never under, the repository's lock
        return fs.locked(self.layout.lock("repo", "gc"), timeout=self.lock_timeout, shared=True,
                         what="the repository")

    def exclusive(self):
        """Held (in a with block) while garbage is collected: waits for every gc_guard holder (pulls, imports,
        creates)."""
        self.images.prepare()
        return fs.locked(self.layout.lock("repo", "gc"), timeout=self.lock_timeout, what="the repository")

    def collect_garbage(self) -> int:
        """Delete blobs that no image references and unpacked trees that no image and no container uses;
        returns how many blobs. Waits for running pulls and creates. Fails closed: when an image record
        cannot be read, nothing is deleted and StoreError names the record."""
        with self.exclusive():
            return self._collect()

    def _collect(self) -> int:
        from udocker.store import garbage

        keep = self.images.referenced_blobs(self.blobs)
        removed = 0
        for digest in self.blobs.list():
            if digest not in keep:
                self.blobs.remove(digest)
                removed += 1
        garbage.collect_unpacked(self)
        return removed

    def remove_images(self, texts: Sequence[str], *, force: bool = False,
                      on_removed: Callable[[str], None] = lambda ref: None) -> None:
        """Untag each image and collect the garbage (rmi). Without `force`, an image that is being unpacked
        or that a container uses (and no other name keeps) is refused, and a protected one too; with it,
        they are untagged, but nothing a running create needs is deleted under it."""
        from udocker.store import garbage
        from udocker.store.images import V1_TAG

        if not force:
            for text in texts:
                try:
                    garbage.refuse_if_unpacking(self, self.images.find(text))
                except NotFound:
                    pass  # said in its turn below, after the names before it
        error = None
        with self.exclusive():
            try:
                for text in texts:
                    found = self.images.find(text)
                    if not force:
                        garbage.refuse_if_used(self, found)
                    elif found.protected:
                        self.images.set_protected(found.ref, False)
                    self.images.untag(found.ref)
                    if found.descriptor.annotations.get(V1_TAG):
                        from udocker.store import adopt

                        adopt.remove_v1_origin(self, found)
                    on_removed(found.ref)
            except UdockerError as exc:
                error = exc
            try:
                self._collect()  # also for the names removed before one that failed
            except UdockerError:
                if error is None:
                    raise
        if error is not None:
            raise error


def _warn_if_open(layout: Layout) -> None:
    """One `warning:` line the first time a repository is found open to group or others (and again if
    its mode changes), remembered in layout.open_warned. Once, not on every command: a repository shared
    on purpose (a project's group directory) would otherwise print it in every job's log."""
    try:
        mode = stat.S_IMODE(os.stat(layout.topdir).st_mode)
        if not mode & 0o077:
            if os.path.lexists(layout.open_warned):
                os.unlink(layout.open_warned)
            return
        try:
            with open(layout.open_warned, encoding="ascii") as stream:
                if stream.read().strip() == f"{mode:04o}":
                    return  # said before (a 1.x ~/.udocker is often 0755): logging is not loaded
        except FileNotFoundError:
            pass
        import logging  # only for a repository open to others, until said

        logger = log.get("store")
        if not logger.isEnabledFor(logging.WARNING):
            return  # --quiet: not said, so not remembered as said
        logger.warning("warning: repository %s has mode %04o: other users can read%s its images and containers "
                    "(chmod 700 %s to make it private; said once)", layout.topdir, mode,
                    " or change" if mode & 0o022 else "", layout.topdir)
        fs.atomic_write(layout.open_warned, f"{mode:04o}\n".encode(), tmpdir=layout.tmp, mode=0o600)
    except (OSError, ValueError, StoreError):
        pass  # a warning is not worth failing the command for


def _make_private(topdir: str) -> None:
    """Create `topdir` and its missing parents with mode 0700; an existing empty directory becomes 0700
    (a directory with other files, a home directory say, is left as it is: _warn_if_open says so)."""
    missing = []
    path = topdir
    while not os.path.lexists(path):
        missing.append(path)
        path = os.path.dirname(path)
    import contextlib  # only when a repository is made

    try:
        for path in reversed(missing):
            with contextlib.suppress(FileExistsError):
                os.mkdir(path, 0o700)
    except OSError as exc:
        raise fs.store_error("create directory", path, exc) from None
    with contextlib.suppress(OSError):  # not a directory, unreadable...: the next steps say so
        if not missing and set(os.listdir(topdir)) <= {USER_FILE_NAME}:
            os.chmod(topdir, 0o700)  # empty but for its udocker.conf: a directory made for the repository


def _initialise(layout: Layout) -> None:
    _make_private(layout.topdir)
    for path in (layout.tmp, layout.locks, layout.blobs, layout.containers):
        fs.ensure_dir(path)
    import json

    with fs.locked(layout.lock("repo", "init"), timeout=60, what="the repository"):
        if os.path.exists(layout.version_file):
            return
        oci_layout = json.dumps({"imageLayoutVersion": "1.0.0"}).encode()
        fs.atomic_write(layout.oci_layout, oci_layout, tmpdir=layout.tmp)
        if not os.path.exists(layout.index_json):
            index = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": []}
            fs.atomic_write(layout.index_json, json.dumps(index).encode(), tmpdir=layout.tmp)
        fs.atomic_write(layout.version_file, (FORMAT_VERSION + "\n").encode(), tmpdir=layout.tmp)
