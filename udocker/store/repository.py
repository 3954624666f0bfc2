"""The repository: an OCI image layout (blobs + index.json) plus containers, with per-object locks."""

import contextlib
import json
import os
from typing import Callable, Iterator, Sequence

from udocker import fs
from udocker.errors import NotFound, StoreError, UdockerError
from udocker.paths import FORMAT_VERSION, Layout
from udocker.store.blobs import BlobStore
from udocker.store.images import ImageStore


class Repository:
    """An opened repository. Use Repository.open(); attributes: layout, blobs, images."""

    def __init__(self, layout: Layout, lock_timeout: float):
        self.layout = layout
        self.lock_timeout = lock_timeout
        self.blobs = BlobStore(layout, lock_timeout)
        self.images = ImageStore(layout, lock_timeout)

    @classmethod
    def open(cls, layout: Layout, *, create: bool = True, lock_timeout: float = 3600) -> "Repository":
        """Check the format version (creating the layout when `create`), clean tmp/ leftovers of dead
        processes. Raises StoreError if the directory is not a udocker repository of this format."""
        if not os.path.exists(layout.version_file):
            if os.path.isdir(layout.legacy_repos) and os.path.isdir(layout.containers):
                # udocker 1.x's ~/.udocker (repos/, layers/, containers/, bin/, lib/): never mix the two.
                raise StoreError(f"repository {layout.topdir} was made by udocker 1, expected format "
                                 f"{FORMAT_VERSION!r}", hint="use another --repo or remove the old repository")
            if not create:
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
        return cls(layout, lock_timeout)

    @contextlib.contextmanager
    def gc_guard(self) -> Iterator[None]:
        """Held (shared) by anything that adds blobs not yet referenced by index.json, so that a
        concurrent garbage collection (held exclusively) never deletes them."""
        with fs.locked(self.layout.lock("repo", "gc"), timeout=self.lock_timeout, shared=True,
                       what="the repository"):
            yield

    @contextlib.contextmanager
    def exclusive(self) -> Iterator[None]:
        """Held while garbage is collected: waits for every gc_guard holder (pulls, imports, creates)."""
        with fs.locked(self.layout.lock("repo", "gc"), timeout=self.lock_timeout, what="the repository"):
            yield

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

        if not force:
            for text in texts:
                with contextlib.suppress(NotFound):  # said in its turn below, after the names before it
                    garbage.refuse_if_unpacking(self, self.images.find(text))
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


def _initialise(layout: Layout) -> None:
    for path in (layout.topdir, layout.tmp, layout.locks, layout.blobs, layout.containers):
        fs.ensure_dir(path)
    with fs.locked(layout.lock("repo", "init"), timeout=60, what="the repository"):
        if os.path.exists(layout.version_file):
            return
        oci_layout = json.dumps({"imageLayoutVersion": "1.0.0"}).encode()
        fs.atomic_write(layout.oci_layout, oci_layout, tmpdir=layout.tmp)
        if not os.path.exists(layout.index_json):
            index = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": []}
            fs.atomic_write(layout.index_json, json.dumps(index).encode(), tmpdir=layout.tmp)
        fs.atomic_write(layout.version_file, (FORMAT_VERSION + "\n").encode(), tmpdir=layout.tmp)
