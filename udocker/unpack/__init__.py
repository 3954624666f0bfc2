"""Apply image layers to a container rootfs, as an unprivileged user, following the OCI image-spec layer.md.

Each layer is read once, as a stream (tar, tar+gzip; tar+zstd where the standard library has
`compression.zstd`, Python 3.14+). The compression is taken from the content's magic bytes, so a
mislabelled layer still unpacks; the media type only has to be a layer type.

Changeset rules (layer.md "Applying Changesets"):
- `.wh.<name>` deletes `<name>` of the lower layers; entries of the same layer are never hidden by it,
  whatever the tar order. `.wh..wh..opq` empties its directory of lower-layer entries, keeping those
  of the same layer (before or after it in the tar). Other `.wh..wh.*` names (aufs metadata) are
  ignored. No whiteout file is ever written to the rootfs.
- A member replaces whatever is at its path (file, symlink or directory, like Docker), except that a
  directory over a directory merges and takes the new mode. Duplicate members: the later wins.
- Hard links are made inside the rootfs (`linkname` is rootfs-relative, a leading `/` is stripped);
  symlink targets are stored as they are and never followed while unpacking.

Permissions: ownership is never applied nor recorded (the user owns everything). setuid and setgid
bits are dropped (notice), and so are group and other write bits, silently: the repository is private,
and the container's user owns every entry, so an image's /tmp (1777) becomes 1755 and programs in the
container can still write there. Files keep their mode plus u+r; directories get their mode plus u+rwx at
once, so later layers can write into a 0555 directory and the user can always delete the container
(`shutil.rmtree` works); there is no deferred pass to restore modes. mtimes are set on files and
symlinks (Python compares .py mtimes with their .pyc), not on directories.

Safety: every path is walked component by component from a directory fd of the rootfs with
O_NOFOLLOW, and every change is made relative to a directory fd (openat, mkdirat, linkat, unlinkat),
so no member can reach outside the rootfs. What happens to each hostile member:
- `..` component in a name, link target or whiteout (`../x`, `a/../../.wh.x`): error.
- Absolute name (`/etc/x`): the leading `/` is stripped, as tar does; written inside the rootfs.
- A parent component that is a symlink (`a -> /` then `a/etc/passwd`, a symlink loop, a symlink that
  replaced a directory and is then written into), for members, hard-link targets and whiteouts: error.
  (Docker resolves such symlinks inside the rootfs; image builders never produce such members.)
- A parent component that is a file: error.
- Hard link to a missing target (e.g. `/etc/passwd` when the rootfs has none) or to a directory: error.
- NUL byte in a name or link target: error. A name component longer than the file system allows:
  error (from the system call). Paths have no length limit of their own.
- Character and block devices, and every entry under `/dev`: skipped with a notice; so is a hard link
  to a skipped member.
- FIFOs: created; skipped with a notice where the system refuses.
- Other member types (tar volume headers, ...): skipped with a notice. A member naming the rootfs
  itself (`./`) is ignored: the rootfs mode is the caller's.
- Names are decoded as UTF-8 with surrogateescape (undecodable bytes survive); messages escape them.
- Sparse members are written with holes, and all-zero 1 MiB blocks of large files are left as holes,
  so a huge sparse file or a gzip bomb of zeros takes only the disk its real data needs; an apparent
  size beyond what the file system supports fails with an error.
- A layer whose uncompressed tar stream exceeds `max_size` bytes (config key max_layer_size) fails with an
  error naming the layer, however its data would be stored.
- A member header (pax extended header, GNU long name) of more than 16 MiB: error (tarfile reads a header
  whole into memory; no tar writer makes one that large).
Errors raise UnpackError naming the layer and the member, e.g.
`unsafe path in layer sha256:0123456789ab…: ../etc/passwd`. After an error the rootfs is incomplete
(everything in it is still inside it and removable by the user): the caller should delete it.

The package, by job: report.py (notices, the report, how a layer and a member are named), streams.py (the
layer's decompression, its size bound, member data copied with holes), dirs.py (directory fds walked without
following symlinks, trees removed likewise), changeset.py (members and whiteouts applied to the rootfs).
"""

from __future__ import annotations

import dataclasses
import io
import os
from collections.abc import Sequence
from typing import BinaryIO, Protocol

from udocker.unpack.ahead import Ahead, Spool, open_layer, worth_it
from udocker.unpack.changeset import Rootfs
from udocker.unpack.report import Notice, NoticeCallback, UnpackReport
from udocker.unpack.streams import CHUNK, Counted

__all__ = ["LayerProgress", "LayerSource", "Notice", "NoticeCallback", "UnpackReport", "apply_layer",
           "apply_layers"]


class LayerProgress(Protocol):
    """What apply_layers reports of each layer: started, its compressed bytes read so far, finished."""

    def layer_started(self, layer: LayerSource) -> None: ...

    def layer_advanced(self, layer: LayerSource, nbytes: int) -> None: ...

    def layer_finished(self, layer: LayerSource) -> None: ...


@dataclasses.dataclass(frozen=True)
class LayerSource:
    """A layer blob on disk: `path` to the blob file, its descriptor's `media_type`, and `name` for
    messages (the digest; the file name when empty)."""

    path: str
    media_type: str
    name: str = ""
    size: int = 0  # the blob's size, for progress (0: unknown)

    @property
    def label(self) -> str:
        return self.name or os.path.basename(self.path)

    def open(self) -> BinaryIO:
        return open(self.path, "rb")


def apply_layers(rootfs: str, layers: Sequence[LayerSource], *, on_notice: NoticeCallback | None = None,
                 max_size: int = 0, progress: LayerProgress | None = None,
                 spool_dir: str | None = None) -> UnpackReport:
    """Apply `layers` in order (lowest first) to `rootfs`, created if missing.

    Raises UnpackError at the first unsafe or unreadable member, or when a layer's uncompressed tar stream
    exceeds `max_size` bytes (0: no limit); the layers before it stay applied. `on_notice` is called for
    each notice as it happens; the report lists them all. `progress` hears of each layer as it is read.
    With `spool_dir` (a scratch directory, removed by the caller), later layers are decompressed by a second
    thread while one is applied (ahead.py); the outcome is the same.
    """
    target = Rootfs(rootfs, on_notice, max_size)
    ahead = Ahead(layers, spool_dir, max_size) if spool_dir and worth_it(layers) else None
    try:
        if ahead is not None:
            ahead.start()
        for index, layer in enumerate(layers):
            apply_source(target, layer, progress, ahead.take(index) if ahead is not None else None)
        return target.report()
    finally:
        if ahead is not None:
            ahead.close()
        target.close()


def apply_source(target: Rootfs, layer: LayerSource, progress: LayerProgress | None = None,
                 spool: Spool | None = None) -> None:
    """Apply one layer of apply_layers (the stream `layer.open()` gives, or its `spool`) to `target`."""
    stream = spool if spool is not None else open_layer(layer)
    plain = spool is not None
    with stream:
        if progress is None:
            target.apply(io.BufferedReader(stream, CHUNK) if plain else stream, layer.media_type, layer.label,
                         plain=plain)
            return
        progress.layer_started(layer)
        if plain:
            stream.advanced = lambda nbytes: progress.layer_advanced(layer, nbytes)
            target.apply(io.BufferedReader(stream, CHUNK), layer.media_type, layer.label, plain=True)
            stream.report()
        else:
            counted = Counted(stream, lambda nbytes: progress.layer_advanced(layer, nbytes))
            target.apply(counted, layer.media_type, layer.label)
            counted.flush_count()
        progress.layer_finished(layer)


def apply_layer(rootfs: str, stream: BinaryIO, media_type: str, *, name: str = "layer",
                on_notice: NoticeCallback | None = None) -> UnpackReport:
    """Apply one layer read from the binary `stream` (left open) to `rootfs`; see apply_layers."""
    target = Rootfs(rootfs, on_notice)
    try:
        target.apply(stream, media_type, name)
        return target.report()
    finally:
        target.close()
