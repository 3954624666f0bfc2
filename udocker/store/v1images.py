"""udocker 1.x's image format, read (and, for rmi, trimmed) the way udocker 1.3 does; no other module
knows it. Images: repos/<name>/<tag>/ holds TAG (its presence marks a tag directory), a version file (v1 or
v2), and symbolic links into layers/ named by blob: `sha256:<hex>` for a v2 image (its config and layers;
`manifest` is the registry's manifest as 1.3 re-serialised it, so its digest is not the registry's), or
`<id>.layer`/`<id>.json` for the v1 format (`ancestry`: the layer ids, top first; `container.json`: the
image's config), which 1.3 writes for images it loaded from `docker save` archives and for Docker's v1 API.

Listing the tags (v1_image_tags, v1_tag_signature: what `udocker images` checks on every call, store/adopt.py)
loads nothing more than os: no dataclasses, typing, json, gzip or hashlib (imported where an image is read).
"""

from __future__ import annotations

import os

from udocker.errors import UdockerError
from udocker.oci import mediatypes
from udocker.record import Record

CHUNK = 1 << 20
_GZIP_MAGIC = b"\x1f\x8b"


class V1Unsupported(UdockerError):
    """A udocker 1.x image that udocker 2 cannot read: the message says why, in one line."""


class V1Tag(Record):
    """One image tag of udocker 1.x: `name` as 1.3 names it ("test/debian"), `tag` ("12"), its directory.
    Immutable, equal when all three are."""

    __slots__ = FIELDS = ("name", "tag", "directory")

    @property
    def key(self) -> str:
        """The tag directory relative to repos/ ("test/debian/12"): what identifies it for 1.3."""
        return f"{self.name}/{self.tag}"

    @property
    def text(self) -> str:
        return f"{self.name}:{self.tag}"


class V1Image:
    """A 1.x image in OCI terms: the manifest's bytes and media type, and for each blob it names the file
    holding it (a layer or config in layers/) or, for content made here (a v1 image's config), its bytes."""

    def __init__(self, manifest: bytes, media_type: str, files: dict[str, str] | None = None,
                 made: dict[str, bytes] | None = None):
        self.manifest = manifest
        self.media_type = media_type
        self.files = {} if files is None else files  # digest -> path
        self.made = {} if made is None else made  # digest -> bytes

    def __eq__(self, other):
        if other.__class__ is not self.__class__:
            return NotImplemented
        return (self.manifest, self.media_type, self.files, self.made) == \
            (other.manifest, other.media_type, other.files, other.made)

    __hash__ = None  # mutable, as a dataclass without frozen is


def v1_image_tags(repos: str) -> list[V1Tag]:
    """Every tag directory below udocker 1.x's repos/ (1.3's _get_tags: a directory holding a TAG file; its
    parents, however deep, are the image's name). Symbolic links are not followed. [] when repos/ is absent."""
    found: list[V1Tag] = []
    for top, dirs, files in os.walk(repos, onerror=lambda error: None):
        if "TAG" in files and top != repos:
            name = os.path.relpath(os.path.dirname(top), repos)
            if name != ".":
                found.append(V1Tag(name.replace(os.sep, "/"), os.path.basename(top), top))
            dirs[:] = []  # 1.3 does not look below a tag
    return sorted(found, key=lambda tag: tag.key)


def v1_tag_signature(tag: V1Tag) -> list[list]:
    """What changes when 1.3 pulls, re-pulls or finishes a download into `tag`: each entry's name, size and
    mtime (links followed; [-1, 0] for a dangling one). A listdir and a stat per entry: cheap."""
    signature: list[list] = []
    try:
        names = sorted(os.listdir(tag.directory))
    except OSError:
        return []
    for name in names:
        try:
            info = os.stat(os.path.join(tag.directory, name))
            signature.append([name, info.st_size, info.st_mtime_ns])
        except OSError:
            signature.append([name, -1, 0])
    return signature


def v1_image(tag: V1Tag) -> V1Image:
    """The image of `tag` as OCI content (nothing is verified here: the caller checks every blob's digest
    before using it). Raises V1Unsupported with the reason."""
    if os.path.exists(os.path.join(tag.directory, "v1")) or os.path.exists(os.path.join(tag.directory, "ancestry")):
        return _image_v1(tag)
    import json

    manifest_path = os.path.join(tag.directory, "manifest")
    try:
        with open(manifest_path, "rb") as stream:
            data = stream.read()
        manifest = json.loads(data)
    except (OSError, ValueError) as exc:
        raise V1Unsupported(f"udocker 1 image {tag.text}: cannot read its manifest ({_why(exc)})") from None
    if not isinstance(manifest, dict) or "fsLayers" in manifest:
        raise V1Unsupported(f"udocker 1 image {tag.text} is in Docker's schema 1 format, which udocker 2 does "
                            f"not read: pull it again")
    try:
        config = manifest["config"]["digest"]
        layers = [layer["digest"] for layer in manifest["layers"]]
    except (KeyError, TypeError):
        raise V1Unsupported(f"udocker 1 image {tag.text}: its manifest names no config or layers") from None
    media_type = manifest.get("mediaType") or mediatypes.OCI_MANIFEST
    if media_type not in mediatypes.MANIFESTS:
        raise V1Unsupported(f"udocker 1 image {tag.text}: unsupported manifest type {media_type}")
    files = {digest: _blob_file(tag, digest, digest) for digest in [config, *layers]}
    return V1Image(data, media_type, files)


def _image_v1(tag: V1Tag) -> V1Image:
    """A v1-format tag (1.3's load of a `docker save` archive, or Docker's v1 API): layer files named by id
    in `ancestry`, the config in container.json (else the top layer's json). Made into an OCI manifest."""
    import hashlib
    import json

    try:
        with open(os.path.join(tag.directory, "ancestry"), "rb") as stream:
            ancestry = json.load(stream)
        if not isinstance(ancestry, list) or not ancestry or not all(isinstance(i, str) for i in ancestry):
            raise ValueError("not a list of layer ids")
    except (OSError, ValueError) as exc:
        raise V1Unsupported(f"udocker 1 image {tag.text}: cannot read its ancestry ({_why(exc)})") from None
    config = _v1_config(tag, ancestry[0])
    files, layers, diff_ids = {}, [], []
    for layer_id in reversed(ancestry):  # base first
        path = _blob_file(tag, f"{layer_id}.layer", layer_id)
        digest, diff_id, size, gzipped = _hash_layer(path, tag)
        files[digest] = path
        diff_ids.append(diff_id)
        layers.append({"mediaType": mediatypes.OCI_LAYER_GZIP if gzipped else mediatypes.OCI_LAYER,
                       "digest": digest, "size": size})
    config["rootfs"] = {"type": "layers", "diff_ids": diff_ids}
    config_bytes = json.dumps(config, sort_keys=True).encode()
    config_digest = "sha256:" + hashlib.sha256(config_bytes).hexdigest()
    manifest = {"schemaVersion": 2, "mediaType": mediatypes.OCI_MANIFEST,
                "config": {"mediaType": mediatypes.OCI_CONFIG, "digest": config_digest, "size": len(config_bytes)},
                "layers": layers}
    return V1Image(json.dumps(manifest, sort_keys=True).encode(), mediatypes.OCI_MANIFEST, files,
                   {config_digest: config_bytes})


def _v1_config(tag: V1Tag, top_id: str) -> dict:
    import json

    for name in ("container.json", f"{top_id}.json"):
        try:
            with open(os.path.join(tag.directory, name), "rb") as stream:
                data = json.load(stream)
        except (OSError, ValueError):
            continue
        if isinstance(data, dict):
            config = {key: data[key] for key in ("architecture", "os", "variant", "created", "author", "history")
                      if data.get(key)}
            config.setdefault("os", "linux")
            config["config"] = data.get("config") or data.get("container_config") or {}
            return config
    raise V1Unsupported(f"udocker 1 image {tag.text}: no readable image configuration")


def _hash_layer(path: str, tag: V1Tag) -> tuple[str, str, int, bool]:
    """A v1 layer file's digest, its diff_id (digest of the uncompressed tar), size and compression."""
    import gzip

    try:
        with open(path, "rb") as stream:
            gzipped = stream.read(2) == _GZIP_MAGIC
        digest, size = _sha256(path, open)
        diff_id = _sha256(path, gzip.open)[0] if gzipped else digest
    except (OSError, EOFError, gzip.BadGzipFile) as exc:
        raise V1Unsupported(f"udocker 1 image {tag.text}: cannot read layer {path} ({_why(exc)})") from None
    return digest, diff_id, size, gzipped


def _sha256(path: str, opener) -> tuple[str, int]:
    import hashlib

    hasher, size = hashlib.sha256(), 0
    with opener(path, "rb") as stream:
        for chunk in iter(lambda: stream.read(CHUNK), b""):
            hasher.update(chunk)
            size += len(chunk)
    return "sha256:" + hasher.hexdigest(), size


def _blob_file(tag: V1Tag, name: str, what: str) -> str:
    path = os.path.join(tag.directory, name)
    if not os.path.isfile(path):
        raise V1Unsupported(f"udocker 1 image {tag.text}: blob {what} is missing")
    return os.path.realpath(path)


def _why(exc: Exception) -> str:
    return getattr(exc, "strerror", None) or str(exc)


def v1_remove_image(repos: str, tag: V1Tag) -> None:
    """What udocker 1.3's rmi does: remove the tag directory and each layer file it links to that no other
    tag links to, then its now empty parent directories up to repos/. Raises OSError."""
    others = {os.path.basename(os.readlink(link)) for link in _tag_links(repos)
              if os.path.dirname(link) != tag.directory}
    doomed = []
    for name in os.listdir(tag.directory):
        path = os.path.join(tag.directory, name)
        if os.path.islink(path):
            target = os.path.realpath(path)
            if os.path.basename(target) not in others:
                doomed.append(target)
    _remove_tree(tag.directory)
    for target in doomed:
        try:
            os.unlink(target)
        except FileNotFoundError:
            pass
    parent = os.path.dirname(tag.directory)
    while parent != repos and parent.startswith(repos + os.sep):
        try:
            os.rmdir(parent)
        except OSError:
            break
        parent = os.path.dirname(parent)


def _tag_links(repos: str) -> list[str]:
    links = []
    for top, _dirs, files in os.walk(repos, onerror=lambda error: None):
        links += [os.path.join(top, name) for name in files if os.path.islink(os.path.join(top, name))]
    return links


def _remove_tree(path: str) -> None:
    for top, dirs, files in os.walk(path, topdown=False):
        for name in files:
            os.unlink(os.path.join(top, name))
        for name in dirs:
            full = os.path.join(top, name)
            os.unlink(full) if os.path.islink(full) else os.rmdir(full)
    os.rmdir(path)


def v1_find_tag(repos: str, key: str | None) -> V1Tag | None:
    """The tag directory repos/<key> when it is still one (its TAG file exists), else None."""
    if not key:
        return None
    directory = os.path.join(repos, *key.split("/"))
    if ".." in key.split("/") or not os.path.isfile(os.path.join(directory, "TAG")):
        return None
    name, _, tag = key.rpartition("/")
    return V1Tag(name, tag, directory)
