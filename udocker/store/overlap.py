"""The unpacked tree of an image built while its layers download (the first `run IMAGE` of an image not yet
pulled): each layer is decompressed and applied, in order, as its blob arrives, read back from the blob
store's scratch file (the file is the buffer: memory stays bounded however far the download runs ahead).

The tree is built in a tmp/ scratch directory under the image's unpack lock, as ensure_unpacked() does, and
published only when the pull says every blob was verified (its sink hashed exactly the bytes the unpacker read
from the file; a blob received again from its first byte makes the overlap give up). On any failure nothing
is published and the scratch directory is removed; then create's ensure_unpacked() unpacks from the verified
blobs as usual (so an UnpackError is reported by create, as without the overlap)."""

import os
import threading

from udocker import fs, log
from udocker.errors import UdockerError
from udocker.store.blobs import Restarted
from udocker.store.rootfs import ByDescriptor, publish
from udocker.unpack import apply_layers

LOG = log.get("overlap")


class _Aborted(Exception):
    """The pull failed: stop unpacking."""


class _Offered:
    """A layer of the image (the LayerSource protocol of apply_layers): open() waits until the pull offers its
    blob, then reads it from the store or, while it downloads, from its Sink. Opened from the unpacking
    thread or from its helper (unpack/ahead.py), in any order."""

    def __init__(self, overlap, descriptor):
        self.media_type, self.name, self.size = descriptor.media_type, descriptor.digest, descriptor.size
        self.label, self.overlap, self.descriptor = descriptor.digest, overlap, descriptor
        self.generation = None  # of the sink when first opened: opened again, it must give the same bytes

    def open(self):
        overlap, digest = self.overlap, self.descriptor.digest
        with overlap.changed:
            while digest not in overlap.offers and overlap.ended is None:
                overlap.changed.wait()
            if digest not in overlap.offers:
                raise _Aborted()  # or a pull that ended without offering it: unpack as usual later
            sink = overlap.offers[digest]
        if sink is None:
            return open(overlap.repo.blobs.path(digest), "rb")
        follower = sink.follow(overlap._aborted)
        if self.generation is None:
            self.generation = follower.generation
        elif follower.generation != self.generation:
            follower.close()
            raise Restarted(digest)
        return follower


class Overlap:
    """Unpack `manifest`'s layers while a pull downloads them: start(), offer() each blob as its download
    begins, then finish() once every blob is verified and stored (publishes the tree), or abort()."""

    def __init__(self, repo, manifest_digest, manifest, *, progress=None, on_notice=None):
        self.repo, self.digest, self.manifest = repo, manifest_digest, manifest
        self.progress = ByDescriptor(progress, {d.digest: d for d in manifest.layers}) if progress else None
        self.on_notice = on_notice
        self.changed = threading.Condition()
        self.offers = {}  # digest -> Sink, or None when the blob is in the store
        self.ended = None  # "verified" or "aborted"
        self.failure = None
        self.thread = None

    def start(self):
        if os.path.isdir(self.repo.layout.unpacked_tree(self.digest)) or not self.manifest.layers:
            return
        self.thread = threading.Thread(target=self._work, name="unpack", daemon=True)
        self.thread.start()

    def offer(self, descriptor, sink):
        with self.changed:
            self.offers[descriptor.digest] = sink
            self.changed.notify_all()

    def finish(self):
        """Every blob was verified: publish the tree (unless the unpacking gave up; create will unpack)."""
        self._end("verified")

    def abort(self):
        self._end("aborted")

    def _end(self, how):
        with self.changed:
            self.ended = how
            self.changed.notify_all()
        if self.thread is not None:
            self.thread.join()
        if self.failure is not None:
            LOG.debug("unpacking while pulling gave up: %s", self.failure)

    def _aborted(self):
        return self.ended == "aborted"

    def _work(self):
        repo, target = self.repo, self.repo.layout.unpacked_tree(self.digest)
        try:
            fs.ensure_dir(os.path.dirname(target))
            with fs.locked(repo.layout.lock("unpacked", self.digest), timeout=0, what=f"image {self.digest[7:19]}"):
                if os.path.isdir(target):
                    return
                with fs.scratch_dir(repo.layout.tmp, prefix="unpack-") as scratch:
                    rootfs = os.path.join(scratch, "rootfs")
                    os.mkdir(rootfs, 0o755)
                    sources = [_Offered(self, descriptor) for descriptor in self.manifest.layers]
                    apply_layers(rootfs, sources, on_notice=self.on_notice, max_size=repo.max_layer_size,
                                 progress=self.progress, spool_dir=scratch)
                    with self.changed:
                        while self.ended is None:
                            self.changed.wait()
                    if self.ended == "verified":
                        publish(rootfs, target)
                        LOG.debug("unpacked image %s while pulling it", self.digest)
        except (_Aborted, Restarted, UdockerError, OSError) as exc:
            self.failure = exc
