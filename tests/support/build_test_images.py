#!/usr/bin/env python3
"""Build small test images and push them to a registry through the Distribution API v2 (standard library only).

Images (repository prefix `test/` by default):
  test/busybox:latest          Docker schema 2: one layer, Debian's static busybox plus applet symlinks
  test/busybox-oci:latest      the same image with OCI media types
  test/layers:latest           busybox + two layers exercising whiteouts, opaque directories, hard links,
                               symlinks, read-only files and directories; the final tree is LAYERS_EXPECTED
  test/multiarch:latest        OCI image index: linux/amd64, linux/arm64/v8 and an unknown/unknown
                               attestation manifest as buildx makes; /platform names the platform
  test/multiarch-docker:latest the same as a Docker manifest list
  test/big:latest              only with --big MB: incompressible random data in several layers (benchmarks)

Everything but the big image is deterministic (fixed mtimes, gzip without timestamps), so digests are stable
for a given busybox binary. As a script:
`python3 tests/support/build_test_images.py --registry 127.0.0.1:PORT [--all] [--big MB]` prints `REF DIGEST` lines.
Not imported by udocker itself.
"""

import argparse
import base64
import gzip
import hashlib
import io
import json
import os
import platform as _platform
import ssl
import stat
import sys
import tarfile
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

BUSYBOX = "/bin/busybox"
MTIME = 1704067200  # 2024-01-01T00:00:00Z, every entry of the deterministic images
CREATED = "2024-01-01T00:00:00Z"

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar.gzip"
IN_TOTO = "application/vnd.in-toto+json"

PATH_ENV = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
APPLETS = (
    "sh ash ls cat echo true false env id pwd sleep mkdir rmdir touch rm cp mv ln chmod wc head tail grep sed "
    "awk sort uniq cut tr test [ printf readlink realpath stat find uname whoami hostname date du df ps kill "
    "sha256sum md5sum tar gzip gunzip xargs basename dirname expr seq tee which yes"
).split()
PASSWD = ("root:x:0:0:root:/root:/bin/sh\n"
          "daemon:x:1:1:daemon:/usr/sbin:/bin/false\n"
          "tester:x:1000:1000:test user:/home/tester:/bin/sh\n"
          "nobody:x:65534:65534:nobody:/nonexistent:/bin/false\n")
GROUP = "root:x:0:\ndaemon:x:1:\ntester:x:1000:\nnogroup:x:65534:\n"

# What a correct unpacker leaves behind, for checks with check_tree(): path -> expectation. Kinds: "file"
# (content, mode, optional same_inode_as), "dir" (mode), "symlink" (target), "absent".
BUSYBOX_EXPECTED: Dict[str, dict] = {
    "/bin/busybox": {"kind": "file", "mode": 0o755},
    "/bin/sh": {"kind": "symlink", "target": "busybox"},
    "/bin/ls": {"kind": "symlink", "target": "busybox"},
    "/usr/bin/env": {"kind": "symlink", "target": "/bin/busybox"},
    "/etc/passwd": {"kind": "file", "content": PASSWD, "mode": 0o644},
    "/etc/group": {"kind": "file", "content": GROUP, "mode": 0o644},
    "/tmp": {"kind": "dir", "mode": 0o1777},
    "/root": {"kind": "dir", "mode": 0o700},
    "/home/tester": {"kind": "dir", "mode": 0o755},
}
KNOWN_CONTENT = "udocker layers test: known content\n"
LAYERS_EXPECTED: Dict[str, dict] = {
    **BUSYBOX_EXPECTED,
    "/data/known.txt": {"kind": "file", "content": KNOWN_CONTENT, "mode": 0o644},
    "/data/keep.txt": {"kind": "file", "content": "keep\n", "mode": 0o644},
    "/data/deleted.txt": {"kind": "absent"},  # .wh.deleted.txt in layer 3
    "/data/gone-dir": {"kind": "absent"},  # .wh.gone-dir removes a whole directory
    "/data/gone-dir/a.txt": {"kind": "absent"},
    "/data/opaque": {"kind": "dir", "mode": 0o755},  # .wh..wh..opq in layer 3
    "/data/opaque/old.txt": {"kind": "absent"},
    "/data/opaque/sub": {"kind": "absent"},
    "/data/opaque/new.txt": {"kind": "file", "content": "new in opaque\n", "mode": 0o644},
    "/opt": {"kind": "absent"},  # top-level .wh.opt
    "/data/replaced.txt": {"kind": "file", "content": "new\n", "mode": 0o644},
    "/data/dir2file": {"kind": "file", "content": "a file replaced a directory\n", "mode": 0o644},
    "/data/file2dir": {"kind": "dir", "mode": 0o755},
    "/data/file2dir/y.txt": {"kind": "file", "content": "a directory replaced a file\n", "mode": 0o644},
    "/data/hl/original": {"kind": "file", "content": "hard link content\n", "mode": 0o644},
    "/data/hl/same-dir-link": {"kind": "file", "content": "hard link content\n", "same_inode_as": "/data/hl/original"},
    "/data/other/cross-dir-link": {"kind": "file", "content": "hard link content\n",
                                   "same_inode_as": "/data/hl/original"},
    "/data/rel-link": {"kind": "symlink", "target": "keep.txt"},
    "/data/abs-link": {"kind": "symlink", "target": "/data/keep.txt"},
    "/data/dir-link": {"kind": "symlink", "target": "hl"},
    "/data/dangling": {"kind": "symlink", "target": "/nonexistent/target"},
    "/data/readonly.txt": {"kind": "file", "content": "read-only\n", "mode": 0o444},
    "/data/rodir": {"kind": "dir", "mode": 0o555},
    "/data/rodir/inside.txt": {"kind": "file", "content": "inside a read-only directory\n", "mode": 0o644},
    "/data/rodir/added.txt": {"kind": "file", "content": "added by layer 3\n", "mode": 0o644},
    "/data/run.sh": {"kind": "file", "content": "#!/bin/sh\necho layers-ok\n", "mode": 0o755},
}
LAYERS_RUN_OUTPUT = "layers-ok\n"  # what the image's Cmd (/data/run.sh) prints
MULTIARCH_PLATFORMS = ("linux/amd64", "linux/arm64/v8")  # /platform holds the name and a newline

_MACHINES = {"x86_64": ("amd64", None), "aarch64": ("arm64", "v8"), "armv7l": ("arm", "v7"),
             "ppc64le": ("ppc64le", None), "s390x": ("s390x", None), "i686": ("386", None),
             "riscv64": ("riscv64", None)}


def host_platform() -> Tuple[str, Optional[str]]:
    """This machine's (architecture, variant) in image-index vocabulary."""
    machine = _platform.machine()
    return _MACHINES.get(machine, (machine, None))


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


# --- layers --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Entry:
    """One tar member. kind: file, dir, symlink, hardlink; `target` for links (hard links: a member name)."""

    path: str
    kind: str = "file"
    data: bytes = b""
    mode: int = 0o644
    target: str = ""


def file(path: str, data, mode: int = 0o644) -> Entry:
    return Entry(path, "file", data.encode() if isinstance(data, str) else data, mode)


def directory(path: str, mode: int = 0o755) -> Entry:
    return Entry(path, "dir", mode=mode)


def symlink(path: str, target: str) -> Entry:
    return Entry(path, "symlink", mode=0o777, target=target)


def hardlink(path: str, target: str) -> Entry:
    return Entry(path, "hardlink", target=target)


def whiteout(path: str) -> Entry:
    """The OCI whiteout for path (image-spec layer.md, "Whiteouts"): an empty file `.wh.<name>` beside it."""
    head, name = os.path.split(path.rstrip("/"))
    return file(os.path.join(head, ".wh." + name), b"", 0o644)


def opaque(path: str) -> Entry:
    """The opaque whiteout marker for directory path: its lower-layer children are hidden."""
    return file(path.rstrip("/") + "/.wh..wh..opq", b"", 0o644)


def _tarinfo(entry: Entry) -> tarfile.TarInfo:
    info = tarfile.TarInfo(entry.path.lstrip("/") + ("/" if entry.kind == "dir" else ""))
    info.mtime, info.uid, info.gid, info.uname, info.gname = MTIME, 0, 0, "root", "root"
    info.mode = entry.mode
    if entry.kind == "file":
        info.size = len(entry.data)
    elif entry.kind == "dir":
        info.type = tarfile.DIRTYPE
    elif entry.kind == "symlink":
        info.type, info.linkname = tarfile.SYMTYPE, entry.target
    elif entry.kind == "hardlink":
        info.type, info.linkname = tarfile.LNKTYPE, entry.target.lstrip("/")
    else:
        raise ValueError(f"unknown entry kind {entry.kind}")
    return info


@dataclass(frozen=True)
class Layer:
    """A gzip-compressed layer held in memory: `data` is the blob, `diff_id` the digest of the plain tar."""

    data: bytes
    digest: str
    diff_id: str
    created_by: str = ""

    @property
    def size(self) -> int:
        return len(self.data)


def make_layer(entries: Iterable[Entry], *, created_by: str = "") -> Layer:
    """Tar the entries in the given order (PAX format, fixed owner and mtime) and gzip it without a timestamp."""
    plain = io.BytesIO()
    with tarfile.open(fileobj=plain, mode="w", format=tarfile.PAX_FORMAT) as archive:
        for entry in entries:
            info = _tarinfo(entry)
            archive.addfile(info, io.BytesIO(entry.data) if entry.kind == "file" else None)
    tar = plain.getvalue()
    data = gzip.compress(tar, compresslevel=6, mtime=0)
    return Layer(data, sha256(data), sha256(tar), created_by)


def busybox_entries(busybox: str = BUSYBOX) -> List[Entry]:
    with open(busybox, "rb") as stream:
        binary = stream.read()
    entries = [directory(d) for d in ("bin", "dev", "etc", "home", "proc", "sys", "usr", "usr/bin", "var")]
    entries += [directory("home/tester"), directory("root", 0o700), directory("tmp", 0o1777)]
    entries += [file("bin/busybox", binary, 0o755)]
    entries += [symlink(f"bin/{name}", "busybox") for name in APPLETS]
    entries += [symlink("usr/bin/env", "/bin/busybox"), file("etc/passwd", PASSWD), file("etc/group", GROUP),
                file("etc/hostname", "busybox\n"), file("etc/hosts", "127.0.0.1\tlocalhost\n")]
    return entries


def busybox_layer(busybox: str = BUSYBOX) -> Layer:
    return make_layer(busybox_entries(busybox), created_by=f"ADD {busybox} and applet links /")


def layers_lower() -> Layer:
    """Layer 2 of test/layers: the things layer 3 deletes or replaces, and links and permissions."""
    return make_layer([
        directory("data"), file("data/known.txt", KNOWN_CONTENT), file("data/keep.txt", "keep\n"),
        file("data/deleted.txt", "deleted by a whiteout\n"),
        directory("data/gone-dir"), file("data/gone-dir/a.txt", "gone\n"),
        directory("data/opaque"), file("data/opaque/old.txt", "hidden by an opaque whiteout\n"),
        directory("data/opaque/sub"), file("data/opaque/sub/old2.txt", "hidden too\n"),
        directory("opt"), directory("opt/tool"), file("opt/tool/run", "#!/bin/sh\n", 0o755),
        file("data/replaced.txt", "old\n"),
        directory("data/dir2file"), file("data/dir2file/x.txt", "x\n"),
        file("data/file2dir", "was a file\n"),
        directory("data/hl"), file("data/hl/original", "hard link content\n"),
        hardlink("data/hl/same-dir-link", "data/hl/original"),
        directory("data/other"), hardlink("data/other/cross-dir-link", "data/hl/original"),
        symlink("data/rel-link", "keep.txt"), symlink("data/abs-link", "/data/keep.txt"),
        symlink("data/dir-link", "hl"), symlink("data/dangling", "/nonexistent/target"),
        file("data/readonly.txt", "read-only\n", 0o444),
        # The directory comes before its file, as in any tar: an unpacker must defer the chmod.
        directory("data/rodir", 0o555), file("data/rodir/inside.txt", "inside a read-only directory\n"),
        file("data/run.sh", "#!/bin/sh\necho layers-ok\n", 0o755),
    ], created_by="COPY data opt /")


def layers_upper() -> Layer:
    """Layer 3 of test/layers: whiteouts, an opaque directory, replacements, a write into a read-only dir."""
    return make_layer([
        directory("data"), whiteout("data/deleted.txt"), whiteout("data/gone-dir"),
        directory("data/opaque"), opaque("data/opaque"), file("data/opaque/new.txt", "new in opaque\n"),
        whiteout("opt"),
        file("data/replaced.txt", "new\n"),
        file("data/dir2file", "a file replaced a directory\n"),
        directory("data/file2dir"), file("data/file2dir/y.txt", "a directory replaced a file\n"),
        directory("data/rodir", 0o555), file("data/rodir/added.txt", "added by layer 3\n"),
    ], created_by="RUN rm -rf /data/deleted.txt /data/gone-dir /data/opaque/* /opt && ...")


def platform_layer(name: str) -> Layer:
    return make_layer([file("platform", name + "\n")], created_by=f"RUN echo {name} > /platform")


# --- images --------------------------------------------------------------------------------------------------


@dataclass
class Image:
    """A single-platform image: its config (as a dict, rootfs added by config_bytes) and its layers."""

    layers: List[Layer]
    config: dict
    architecture: str
    os: str = "linux"
    variant: Optional[str] = None
    history: List[dict] = field(default_factory=list)
    layer_media_type: Optional[str] = None  # None: the usual gzip layer type for the manifest's flavour

    def config_bytes(self) -> bytes:
        data = {"architecture": self.architecture, "os": self.os, "created": CREATED, "config": self.config,
                "rootfs": {"type": "layers", "diff_ids": [layer.diff_id for layer in self.layers]},
                "history": self.history or [{"created": CREATED, "created_by": layer.created_by}
                                            for layer in self.layers]}
        if self.variant:
            data["variant"] = self.variant
        return json.dumps(data, sort_keys=True, separators=(",", ":")).encode()

    def platform(self) -> dict:
        data = {"architecture": self.architecture, "os": self.os}
        if self.variant:
            data["variant"] = self.variant
        return data

    def manifest_bytes(self, *, oci: bool) -> bytes:
        config = self.config_bytes()
        layer_type = self.layer_media_type or (OCI_LAYER if oci else DOCKER_LAYER)
        manifest = {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST if oci else DOCKER_MANIFEST,
            "config": {"mediaType": OCI_CONFIG if oci else DOCKER_CONFIG, "digest": sha256(config),
                       "size": len(config)},
            "layers": [{"mediaType": layer_type, "digest": layer.digest, "size": layer.size}
                       for layer in self.layers],
        }
        return json.dumps(manifest, indent=3).encode()


def busybox_image(busybox: str = BUSYBOX) -> Image:
    architecture, variant = host_platform()
    config = {"Env": [PATH_ENV], "Cmd": ["sh"], "WorkingDir": "/",
              "Labels": {"org.opencontainers.image.title": "udocker test busybox"}}
    return Image([busybox_layer(busybox)], config, architecture, variant=variant)


def layers_image(busybox: str = BUSYBOX) -> Image:
    architecture, variant = host_platform()
    layers = [busybox_layer(busybox), layers_lower(), layers_upper()]
    config = {"Env": [PATH_ENV, "LAYERS_TEST=1"], "Cmd": ["/data/run.sh"], "WorkingDir": "/data"}
    history = [{"created": CREATED, "created_by": layers[0].created_by},
               {"created": CREATED, "created_by": "ENV LAYERS_TEST=1", "empty_layer": True},
               {"created": CREATED, "created_by": layers[1].created_by},
               {"created": CREATED, "created_by": layers[2].created_by}]
    return Image(layers, config, architecture, variant=variant, history=history)


def platform_image(name: str, busybox: str = BUSYBOX) -> Image:
    """A busybox image with /platform naming `name` (os/arch[/variant]). The busybox binary is this host's
    whatever the label says: the image exists to show which entry a client selected."""
    parts = name.split("/")
    config = {"Env": [PATH_ENV], "Cmd": ["cat", "/platform"], "WorkingDir": "/"}
    return Image([busybox_layer(busybox), platform_layer(name)], config, parts[1], parts[0],
                 variant=parts[2] if len(parts) > 2 else None)


def attestation_image(subject: str) -> Image:
    """An in-toto attestation manifest like the ones buildx attaches under platform unknown/unknown."""
    statement = {"_type": "https://in-toto.io/Statement/v0.1", "predicateType": "https://slsa.dev/provenance/v0.2",
                 "subject": [{"name": "test/multiarch", "digest": {"sha256": subject.split(":", 1)[1]}}],
                 "predicate": {"builder": {"id": "udocker-tests"}}}
    data = json.dumps(statement, sort_keys=True).encode()
    # The attestation "layer" is plain JSON, not a tar: its digest is also its diff_id.
    layer = Layer(data, sha256(data), sha256(data), "attestation")
    return Image([layer], {}, "unknown", "unknown", layer_media_type=IN_TOTO)


# --- the registry client ---------------------------------------------------------------------------------------


class PushError(RuntimeError):
    pass


class Registry:
    """Just enough of the Distribution API v2 to push: blob HEAD / POST+PUT upload, manifest PUT.

    `host` is HOST:PORT; `scheme` http or https; `auth` (user, password) for HTTP basic authentication
    (docker-registry's htpasswd); `cafile` to trust a test CA, or `insecure=True` to skip TLS verification.
    """

    def __init__(self, host: str, *, scheme: str = "http", auth: Optional[Tuple[str, str]] = None,
                 cafile: Optional[str] = None, insecure: bool = False):
        self.base = f"{scheme}://{host}"
        self.headers = {}
        if auth:
            token = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
            self.headers["Authorization"] = "Basic " + token
        self.context = None
        if scheme == "https":
            self.context = ssl.create_default_context(cafile=cafile)
            if insecure:
                self.context.check_hostname = False
                self.context.verify_mode = ssl.CERT_NONE

    def request(self, method: str, url: str, *, body=None, headers: Optional[Dict[str, str]] = None,
                ok: Sequence[int] = (200,)):
        """One request; returns (status, headers, body bytes); raises PushError unless the status is in ok."""
        if not url.startswith(("http://", "https://")):
            url = urllib.parse.urljoin(self.base, url)
        request = urllib.request.Request(url, data=body, method=method, headers={**self.headers, **(headers or {})})
        try:
            with urllib.request.urlopen(request, context=self.context, timeout=300) as answer:
                status, answer_headers, data = answer.status, answer.headers, answer.read()
        except urllib.error.HTTPError as exc:
            status, answer_headers, data = exc.code, exc.headers, exc.read()
        if status not in ok:
            raise PushError(f"{method} {url}: HTTP {status}: {data[:500].decode(errors='replace')}")
        return status, answer_headers, data

    def has_blob(self, name: str, digest: str) -> bool:
        status, _, _ = self.request("HEAD", f"/v2/{name}/blobs/{digest}", ok=(200, 404))
        return status == 200

    def push_blob(self, name: str, digest: str, data=None, *, path: Optional[str] = None, size: int = 0) -> bool:
        """Upload bytes (or the file at path, streamed) as one monolithic PUT unless the registry has the blob.
        Returns True when it uploaded."""
        if self.has_blob(name, digest):
            return False
        _, headers, _ = self.request("POST", f"/v2/{name}/blobs/uploads/", ok=(202,))
        location = headers["Location"]
        location += ("&" if "?" in location else "?") + urllib.parse.urlencode({"digest": digest})
        put_headers = {"Content-Type": "application/octet-stream"}
        if path is None:
            self.request("PUT", location, body=data, headers=put_headers, ok=(201,))
            return True
        with open(path, "rb") as stream:
            put_headers["Content-Length"] = str(size or os.path.getsize(path))
            self.request("PUT", location, body=stream, headers=put_headers, ok=(201,))
        return True

    def push_manifest(self, name: str, reference: str, data: bytes, media_type: str) -> str:
        digest = sha256(data)
        _, headers, _ = self.request("PUT", f"/v2/{name}/manifests/{reference}", body=data,
                                     headers={"Content-Type": media_type}, ok=(201,))
        answered = headers.get("Docker-Content-Digest")
        if answered and answered != digest:
            raise PushError(f"registry computed {answered} for the manifest, expected {digest}")
        return digest


@dataclass
class Pushed:
    """What was pushed under one tag. `children` maps "os/arch[/variant]" to the platform manifests of an
    index (the attestation entry under "unknown/unknown")."""

    ref: str  # repository:tag, without the registry
    digest: str
    media_type: str
    size: int
    config_digest: Optional[str] = None
    layers: Tuple[str, ...] = ()
    children: Dict[str, "Pushed"] = field(default_factory=dict)


def push_image(registry: Registry, ref: str, image: Image, *, oci: bool = False,
               tag: Optional[str] = None) -> Pushed:
    """Push an image's blobs and manifest. `ref` is repository:tag; `tag=""` pushes by digest only."""
    name, _, default_tag = ref.rpartition(":")
    config = image.config_bytes()
    registry.push_blob(name, sha256(config), config)
    for layer in image.layers:
        registry.push_blob(name, layer.digest, layer.data)
    manifest = image.manifest_bytes(oci=oci)
    media_type = OCI_MANIFEST if oci else DOCKER_MANIFEST
    digest = sha256(manifest)
    registry.push_manifest(name, (default_tag if tag is None else tag) or digest, manifest, media_type)
    return Pushed(ref, digest, media_type, len(manifest), sha256(config), tuple(x.digest for x in image.layers))


def push_index(registry: Registry, ref: str, images: Sequence[Image], *, oci: bool = True,
               attestation: bool = True) -> Pushed:
    """Push each image by digest, then an index (OCI) or manifest list (Docker) naming them under ref's tag.
    With attestation, the first image also gets an unknown/unknown attestation entry, as buildx does."""
    name, _, tag = ref.rpartition(":")
    entries, children = [], {}
    for image in images:
        pushed = push_image(registry, ref, image, oci=oci, tag="")
        entries.append({"mediaType": pushed.media_type, "digest": pushed.digest, "size": pushed.size,
                        "platform": image.platform()})
        children["/".join(x for x in (image.os, image.architecture, image.variant) if x)] = pushed
    if attestation:
        subject = entries[0]["digest"]
        pushed = push_image(registry, ref, attestation_image(subject), oci=oci, tag="")
        entry = {"mediaType": pushed.media_type, "digest": pushed.digest, "size": pushed.size,
                 "platform": {"architecture": "unknown", "os": "unknown"}}
        if oci:
            entry["annotations"] = {"vnd.docker.reference.digest": subject,
                                    "vnd.docker.reference.type": "attestation-manifest"}
        entries.append(entry)
        children["unknown/unknown"] = pushed
    media_type = OCI_INDEX if oci else DOCKER_LIST
    index = json.dumps({"schemaVersion": 2, "mediaType": media_type, "manifests": entries}, indent=3).encode()
    digest = registry.push_manifest(name, tag, index, media_type)
    return Pushed(ref, digest, media_type, len(index), children=children)


# --- the big image ---------------------------------------------------------------------------------------------


class _Hashing(io.RawIOBase):
    """A write-only stream that hashes and counts what passes through to `target`."""

    def __init__(self, target):
        self.target, self.hash, self.count = target, hashlib.sha256(), 0

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:
        self.hash.update(data)
        self.count += len(data)
        self.target.write(data)
        return len(data)


@dataclass(frozen=True)
class FileLayer:
    """A layer blob written to a file (too big to hold in memory)."""

    path: str
    digest: str
    diff_id: str
    size: int
    created_by: str = ""


def _random_layer(path: str, index: int, size: int, chunk: int) -> FileLayer:
    with open(path, "wb") as out:
        compressed = _Hashing(out)
        with gzip.GzipFile(fileobj=compressed, mode="wb", compresslevel=1, mtime=0) as zipped:
            plain = _Hashing(zipped)
            with tarfile.open(fileobj=plain, mode="w|", format=tarfile.PAX_FORMAT) as archive:
                archive.addfile(_tarinfo(directory(f"big/layer{index}")))
                number, left = 0, size
                while left > 0:
                    count = min(chunk, left)
                    info = _tarinfo(file(f"big/layer{index}/file{number:05d}.bin", b"", 0o644))
                    info.size = count
                    archive.addfile(info, io.BytesIO(os.urandom(count)))
                    number, left = number + 1, left - count
    return FileLayer(path, "sha256:" + compressed.hash.hexdigest(), "sha256:" + plain.hash.hexdigest(),
                     compressed.count, f"RUN head -c {size} /dev/urandom > /big/layer{index}/...")


def big_image(size_mb: int, layers: int = 3, *, workdir: str, chunk_mb: int = 1) -> Tuple[dict, List[FileLayer]]:
    """Write `layers` (>= 3) gzip layers of incompressible random data totalling size_mb MiB, as files of
    chunk_mb MiB, into workdir. Returns (config dict, layers); the first layer is busybox so it runs."""
    if layers < 3:
        raise ValueError("the big image has at least 3 layers")
    base = busybox_layer()
    base_path = os.path.join(workdir, "layer0.tar.gz")
    with open(base_path, "wb") as stream:
        stream.write(base.data)
    result = [FileLayer(base_path, base.digest, base.diff_id, base.size, base.created_by)]
    per_layer = size_mb * 1024 * 1024 // (layers - 1)
    for index in range(1, layers):
        path = os.path.join(workdir, f"layer{index}.tar.gz")
        result.append(_random_layer(path, index, per_layer, chunk_mb * 1024 * 1024))
    architecture, variant = host_platform()
    config = {"architecture": architecture, "os": "linux", "created": CREATED,
              "config": {"Env": [PATH_ENV], "Cmd": ["sh"], "WorkingDir": "/"},
              "rootfs": {"type": "layers", "diff_ids": [x.diff_id for x in result]},
              "history": [{"created": CREATED, "created_by": x.created_by} for x in result]}
    if variant:
        config["variant"] = variant
    return config, result


def push_big(registry: Registry, ref: str, size_mb: int, layers: int = 3) -> Pushed:
    name, _, tag = ref.rpartition(":")
    with tempfile.TemporaryDirectory(prefix="udocker-big-") as workdir:
        config, files = big_image(size_mb, layers, workdir=workdir)
        config_data = json.dumps(config, sort_keys=True).encode()
        registry.push_blob(name, sha256(config_data), config_data)
        for layer in files:
            registry.push_blob(name, layer.digest, path=layer.path, size=layer.size)
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": DOCKER_MANIFEST,
        "config": {"mediaType": DOCKER_CONFIG, "digest": sha256(config_data), "size": len(config_data)},
        "layers": [{"mediaType": DOCKER_LAYER, "digest": x.digest, "size": x.size} for x in files]}).encode()
    digest = registry.push_manifest(name, tag, manifest, DOCKER_MANIFEST)
    return Pushed(ref, digest, DOCKER_MANIFEST, len(manifest), sha256(config_data), tuple(x.digest for x in files))


# --- everything ------------------------------------------------------------------------------------------------

NAMES = ("busybox", "layers", "multiarch")


def push_test_images(registry: Registry, *, prefix: str = "test/", which: Iterable[str] = NAMES,
                     busybox: str = BUSYBOX) -> Dict[str, Pushed]:
    """Push the named groups of test images (busybox, layers, multiarch); returns repository:tag -> Pushed."""
    pushed: Dict[str, Pushed] = {}
    which = set(which)
    unknown = which - set(NAMES)
    if unknown:
        raise ValueError(f"unknown test images: {sorted(unknown)}")
    if "busybox" in which:
        image = busybox_image(busybox)
        for ref, oci in ((f"{prefix}busybox:latest", False), (f"{prefix}busybox-oci:latest", True)):
            pushed[ref] = push_image(registry, ref, image, oci=oci)
    if "layers" in which:
        ref = f"{prefix}layers:latest"
        pushed[ref] = push_image(registry, ref, layers_image(busybox))
    if "multiarch" in which:
        images = [platform_image(name, busybox) for name in MULTIARCH_PLATFORMS]
        for ref, oci in ((f"{prefix}multiarch:latest", True), (f"{prefix}multiarch-docker:latest", False)):
            pushed[ref] = push_index(registry, ref, images, oci=oci)
    return pushed


def check_tree(rootfs: str, expected: Dict[str, dict], *, modes: bool = True) -> List[str]:
    """Compare an unpacked rootfs with an expectation dict (LAYERS_EXPECTED, BUSYBOX_EXPECTED); returns the
    mismatches as readable lines (empty when all is well). `modes=False` skips permission checks."""
    problems = []
    for path, want in sorted(expected.items()):
        real = os.path.join(rootfs, path.lstrip("/"))
        kind = want["kind"]
        if kind == "absent":
            if os.path.lexists(real):
                problems.append(f"{path}: exists, should be absent")
            continue
        try:
            info = os.lstat(real)
        except FileNotFoundError:
            problems.append(f"{path}: missing")
            continue
        actual = ("symlink" if stat.S_ISLNK(info.st_mode) else "dir" if stat.S_ISDIR(info.st_mode)
                  else "file" if stat.S_ISREG(info.st_mode) else "other")
        if actual != kind:
            problems.append(f"{path}: is a {actual}, should be a {kind}")
            continue
        if kind == "symlink" and os.readlink(real) != want["target"]:
            problems.append(f"{path}: points to {os.readlink(real)}, should point to {want['target']}")
        if "content" in want:
            with open(real, "rb") as stream:
                content = stream.read().decode(errors="replace")
            if content != want["content"]:
                problems.append(f"{path}: content {content!r}, should be {want['content']!r}")
        if modes and "mode" in want and stat.S_IMODE(info.st_mode) != want["mode"]:
            problems.append(f"{path}: mode {stat.S_IMODE(info.st_mode):o}, should be {want['mode']:o}")
        if "same_inode_as" in want:
            other = os.lstat(os.path.join(rootfs, want["same_inode_as"].lstrip("/")))
            if (other.st_dev, other.st_ino) != (info.st_dev, info.st_ino):
                problems.append(f"{path}: not a hard link of {want['same_inode_as']}")
    return problems


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description="Build the udocker test images and push them to a registry.")
    parser.add_argument("--registry", required=True, metavar="HOST:PORT")
    parser.add_argument("--scheme", default="http", choices=("http", "https"))
    parser.add_argument("--user", help="USER:PASSWORD for HTTP basic authentication")
    parser.add_argument("--cafile", help="trust this CA (https)")
    parser.add_argument("--insecure", action="store_true", help="skip TLS verification (https)")
    parser.add_argument("--prefix", default="test/", help="repository prefix (default test/)")
    parser.add_argument("--all", action="store_true", help="push every test image (the default is busybox)")
    parser.add_argument("--image", action="append", choices=NAMES, help="push this group (repeatable)")
    parser.add_argument("--big", type=int, metavar="MB", help="also push PREFIXbig:latest of MB MiB")
    parser.add_argument("--big-layers", type=int, default=3, metavar="N", help="layers of the big image")
    parser.add_argument("--busybox", default=BUSYBOX, help=f"the static busybox binary (default {BUSYBOX})")
    args = parser.parse_args(argv)
    auth = tuple(args.user.split(":", 1)) if args.user else None
    registry = Registry(args.registry, scheme=args.scheme, auth=auth, cafile=args.cafile, insecure=args.insecure)
    which = NAMES if args.all else (args.image or ["busybox"])
    pushed = push_test_images(registry, prefix=args.prefix, which=which, busybox=args.busybox)
    if args.big:
        ref = f"{args.prefix}big:latest"
        pushed[ref] = push_big(registry, ref, args.big, args.big_layers)
    for ref, item in pushed.items():
        print(f"{args.registry}/{ref} {item.digest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
