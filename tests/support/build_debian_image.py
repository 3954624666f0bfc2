#!/usr/bin/env python3
"""Build the Debian 12 test image with debootstrap and save it as an OCI image layout tarball (stdlib only).

As root: `python3 tests/support/build_debian_image.py [ARCHIVE] [--include PKG,...] [--mirror URL] [--force]`
(a package named `pip:REQUIREMENT`, e.g. `pip:deepaas==2.6.0`, is installed from PyPI by this Python's pip into
the image's /usr/local/lib/python3.X/dist-packages, with its console scripts in /usr/local/bin; it needs the
image's python3 to be this one's version: run the script with Debian 12's /usr/bin/python3; a REQUIREMENT that
names a directory of this checkout, e.g. `pip:tests/support/udocker_demo_model`, is that local project, built
from a copy of it)
(default ARCHIVE: /opt/udocker-ci/images/debian12.tar). The image has two gzip layers:

  layer 1  `debootstrap --variant=minbase bookworm` (plus --include packages): numeric owners, modes, hard links
           and symlinks kept; /dev, /proc, /sys, /tmp emptied; apt's package lists and caches, locales, man and
           info pages dropped; the build host's /etc/hostname and /etc/resolv.conf replaced
  layer 2  LAYER2_EXPECTED's effects: whiteouts of a file, a directory and the first name of a hard-linked file,
           an opaque /etc/skel, hard links, symlinks, a read-only file and a read-only directory

Beside ARCHIVE goes ARCHIVE minus ".tar" plus ".json" (the "info"): manifest digest, layers, packages, build
times, and the trees a correct unpacker leaves: "expected" (layer 2's effects, for
build_test_images.check_tree) and "base_expected" (a few facts of layer 1). A second run does nothing when the
archive and info exist and were made by this same script (its sha256, which covers the files of the local pip
projects too) with the same packages; --force rebuilds.

push_archive() pushes the archive to a registry, streaming each blob from inside the tarball; the test suite's
`debian_image` fixture uses it. Not imported by udocker itself.
"""

import argparse
import configparser
import datetime
import fnmatch
import glob
import gzip
import io
import json
import os
import shutil
import stat
import subprocess
import sys
import tarfile
import tempfile
import time
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

if __package__ in (None, ""):  # run as a script: make `tests.support` importable from the checkout's root
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from tests.support import build_test_images as builders  # noqa: E402
from tests.support.build_test_images import directory, file, hardlink, opaque, symlink, whiteout  # noqa: E402

SUITE = "bookworm"
TAG = "12"
DEFAULT_ARCHIVE = "/opt/udocker-ci/images/debian12.tar"
DEFAULT_MIRROR = "http://deb.debian.org/debian"
CHECKOUT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PATH_ENV = builders.PATH_ENV

# Directories kept empty in layer 1, and files dropped from it (fnmatch patterns relative to the rootfs).
EMPTIED = ("dev", "proc", "sys", "tmp", "var/tmp", "var/lib/apt/lists", "usr/share/locale", "usr/share/man",
           "usr/share/info")
DROPPED = ("var/cache/apt/*.bin", "var/cache/apt/archives/*.deb", "var/log/bootstrap.log",
           "var/cache/debconf/*-old", "var/lib/dpkg/*-old")
REPLACED = {"etc/hostname": "localhost\n", "etc/resolv.conf": ""}  # they described the build host

# What layer 2 acts on in layer 1: the build fails when one is missing, rather than make a vacuous test.
LAYER1_NEEDED = ("etc/motd", "etc/skel/.profile", "etc/skel/.bash_logout", "usr/share/doc/bash/copyright",
                 "usr/bin/uncompress", "usr/bin/gunzip")
HL_CONTENT = "hard link content\n"
SKEL_BASHRC = "# udocker test image: layer 2 made /etc/skel opaque and put only this file in it\n"
CHECK_SCRIPT = "#!/bin/sh\necho debian-ok\n"
T = "/opt/udocker-test"

LAYER2_EXPECTED: Dict[str, dict] = {
    "/etc/motd": {"kind": "absent"},  # .wh.motd
    "/etc/issue": {"kind": "file", "mode": 0o644},  # its sibling stays
    "/usr/share/doc/bash": {"kind": "absent"},  # .wh.bash removes a whole directory
    "/usr/share/doc/bash/copyright": {"kind": "absent"},
    "/usr/share/doc/coreutils/copyright": {"kind": "file", "mode": 0o644},
    # The first name of a hard-linked pair whited out: layer 1's link member `uncompress` must still have
    # made a whole file (an unpacker that skips files a later layer deletes would lose it).
    "/usr/bin/gunzip": {"kind": "absent"},
    "/usr/bin/uncompress": {"kind": "file", "mode": 0o755},
    "/etc/skel": {"kind": "dir", "mode": 0o755},  # .wh..wh..opq
    "/etc/skel/.bashrc": {"kind": "file", "content": SKEL_BASHRC, "mode": 0o644},
    "/etc/skel/.profile": {"kind": "absent"},
    "/etc/skel/.bash_logout": {"kind": "absent"},
    T: {"kind": "dir", "mode": 0o755},
    f"{T}/hl/original": {"kind": "file", "content": HL_CONTENT, "mode": 0o644},
    f"{T}/hl/same-dir-link": {"kind": "file", "content": HL_CONTENT, "same_inode_as": f"{T}/hl/original"},
    f"{T}/other/cross-dir-link": {"kind": "file", "content": HL_CONTENT, "same_inode_as": f"{T}/hl/original"},
    f"{T}/rel-link": {"kind": "symlink", "target": "hl/original"},
    f"{T}/abs-link": {"kind": "symlink", "target": f"{T}/hl/original"},
    f"{T}/readonly.txt": {"kind": "file", "content": "read-only\n", "mode": 0o444},
    f"{T}/rodir": {"kind": "dir", "mode": 0o555},
    f"{T}/rodir/inside.txt": {"kind": "file", "content": "inside a read-only directory\n", "mode": 0o644},
    "/usr/local/bin/udocker-check": {"kind": "file", "content": CHECK_SCRIPT, "mode": 0o755},
}
BASE_EXPECTED: Dict[str, dict] = {
    "/bin": {"kind": "symlink", "target": "usr/bin"},  # bookworm's merged /usr
    "/usr/bin/ls": {"kind": "file", "mode": 0o755},
    "/usr/bin/bash": {"kind": "file", "mode": 0o755},
    "/etc/debian_version": {"kind": "file", "mode": 0o644},
    "/etc/hostname": {"kind": "file", "content": "localhost\n"},
    "/root": {"kind": "dir", "mode": 0o700},
    "/tmp": {"kind": "dir", "mode": 0o1777},
    "/dev": {"kind": "dir", "mode": 0o755},
    "/dev/null": {"kind": "absent"},
    "/proc": {"kind": "dir"},
    "/var/lib/apt/lists/partial": {"kind": "absent"},
}
CHECK_OUTPUT = "debian-ok\n"  # what /usr/local/bin/udocker-check prints


def layer2_entries() -> List[builders.Entry]:
    """Layer 2, in tar order; LAYER2_EXPECTED is what it leaves on top of layer 1."""
    return [
        directory("etc"), whiteout("etc/motd"),
        directory("etc/skel"), opaque("etc/skel"), file("etc/skel/.bashrc", SKEL_BASHRC),
        directory("usr"), directory("usr/share"), directory("usr/share/doc"), whiteout("usr/share/doc/bash"),
        directory("usr/bin"), whiteout("usr/bin/gunzip"),
        directory("usr/local"), directory("usr/local/bin"), file("usr/local/bin/udocker-check", CHECK_SCRIPT, 0o755),
        directory("opt"), directory("opt/udocker-test"),
        directory("opt/udocker-test/hl"), file("opt/udocker-test/hl/original", HL_CONTENT),
        hardlink("opt/udocker-test/hl/same-dir-link", "opt/udocker-test/hl/original"),
        directory("opt/udocker-test/other"),
        hardlink("opt/udocker-test/other/cross-dir-link", "opt/udocker-test/hl/original"),
        symlink("opt/udocker-test/rel-link", "hl/original"), symlink("opt/udocker-test/abs-link", f"{T}/hl/original"),
        file("opt/udocker-test/readonly.txt", "read-only\n", 0o444),
        # The directory comes before its file, as in any tar: an unpacker must defer the chmod.
        directory("opt/udocker-test/rodir", 0o555),
        file("opt/udocker-test/rodir/inside.txt", "inside a read-only directory\n"),
    ]


# --- debootstrap -------------------------------------------------------------------------------------------------


def apt_mirror(sources: Sequence[str] = ("/etc/apt/sources.list", "/etc/apt/sources.list.d")) -> str:
    """The Debian archive this machine's apt uses for SUITE (one-line or deb822 sources), else DEFAULT_MIRROR."""
    paths: List[str] = []
    for source in sources:
        paths += sorted(glob.glob(os.path.join(source, "*"))) if os.path.isdir(source) else [source]
    for path in paths:
        try:
            with open(path, encoding="utf-8") as stream:
                text = stream.read()
        except OSError:
            continue
        for uri in _deb_uris(text):
            if uri.rstrip("/").endswith("/debian"):
                return uri.rstrip("/")
    return DEFAULT_MIRROR


def _deb_uris(text: str) -> Iterator[str]:
    """URIs of `deb` entries naming SUITE itself, from sources.list or deb822 .sources text."""
    for stanza in text.split("\n\n"):
        fields = {}
        for line in stanza.splitlines():
            line = line.split("#", 1)[0].strip()
            words = [w for w in line.split() if not w.startswith("[") and not w.endswith("]") and "=" not in w]
            if len(words) >= 3 and words[0] == "deb" and words[2] == SUITE:
                yield words[1]
            elif ":" in line and not line.startswith("deb"):
                key, _, value = line.partition(":")
                fields[key.strip().lower()] = value.split()
        if "deb" in fields.get("types", []) and SUITE in fields.get("suites", []):
            yield from fields.get("uris", [])


def debootstrap(rootfs: str, *, mirror: str, include: Sequence[str]) -> None:
    command = ["debootstrap", "--variant=minbase"]
    if include:
        command.append("--include=" + ",".join(include))
    command += [SUITE, rootfs, mirror]
    print("build_debian_image: " + " ".join(command), file=sys.stderr)
    result = subprocess.run(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if result.returncode:
        sys.stderr.write(result.stdout[-4000:])
        raise SystemExit(f"build_debian_image: debootstrap failed with status {result.returncode}")


def local_project(requirement: str) -> Optional[str]:
    """The checkout's directory a pip requirement names (relative to the checkout's root), or None."""
    path = os.path.join(CHECKOUT, requirement)
    return path if "/" in requirement and os.path.isfile(os.path.join(path, "pyproject.toml")) else None


def pip_install(rootfs: str, requirements: Sequence[str], scratch: str) -> None:
    """Install `requirements` with this Python's pip into the image's dist-packages; console scripts start the
    image's /usr/bin/python3 (pip's own would name this interpreter). A local project is built from a copy in
    `scratch` (its build leaves build/ and *.egg-info where it is built)."""
    copies = []
    for requirement in requirements:
        source = local_project(requirement)
        if source:
            copy = os.path.join(scratch, f"pip-{len(copies)}-{os.path.basename(source)}")
            shutil.copytree(source, copy, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
            copies.append(copy)
        else:
            copies.append(requirement)
    version = f"python{sys.version_info[0]}.{sys.version_info[1]}"
    if not os.path.exists(os.path.join(rootfs, "usr", "bin", version)):
        raise SystemExit(f"build_debian_image: pip packages need {version} in the image (--include python3)")
    target = os.path.join(rootfs, "usr", "local", "lib", version, "dist-packages")
    command = [sys.executable, "-m", "pip", "install", "--disable-pip-version-check", "--no-compile",
               "--no-warn-script-location", "--target", target, *copies]
    print("build_debian_image: pip install " + " ".join(requirements), file=sys.stderr)
    result = subprocess.run(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if result.returncode:
        sys.stderr.write(result.stdout[-4000:])
        raise SystemExit(f"build_debian_image: pip failed with status {result.returncode}")
    shutil.rmtree(os.path.join(target, "bin"), ignore_errors=True)
    for entry_points in sorted(glob.glob(os.path.join(target, "*.dist-info", "entry_points.txt"))):
        parser = configparser.RawConfigParser()
        parser.optionxform = str
        parser.read(entry_points, encoding="utf-8")
        if parser.has_section("console_scripts"):
            for name, value in parser.items("console_scripts"):
                _console_script(os.path.join(rootfs, "usr", "local", "bin", name), value.split()[0])


def _console_script(path: str, entry: str) -> None:
    module, _, attribute = entry.partition(":")
    with open(path, "w", encoding="utf-8") as stream:
        stream.write(f"#!/usr/bin/python3\nimport sys\nfrom {module} import {attribute.partition('.')[0]}\n\n"
                     f"if __name__ == '__main__':\n    sys.exit({attribute}())\n")
    os.chmod(path, 0o755)


def tidy(rootfs: str) -> None:
    """Replace what describes the build host; check that layer 2's targets exist."""
    for name, content in REPLACED.items():
        path = os.path.join(rootfs, name)
        if os.path.lexists(path):
            os.unlink(path)
        with open(path, "w", encoding="utf-8") as stream:
            stream.write(content)
        os.chmod(path, 0o644)
    missing = [name for name in LAYER1_NEEDED if not os.path.lexists(os.path.join(rootfs, name))]
    if missing:
        raise SystemExit(f"build_debian_image: layer 2 needs {', '.join(missing)} in the debootstrap tree")
    if not os.path.samefile(os.path.join(rootfs, "usr/bin/uncompress"), os.path.join(rootfs, "usr/bin/gunzip")):
        raise SystemExit("build_debian_image: usr/bin/uncompress is no longer a hard link of usr/bin/gunzip")


# --- layers ------------------------------------------------------------------------------------------------------


def _walk(rootfs: str) -> Iterator[str]:
    """Paths relative to rootfs, parents first, sorted, without EMPTIED's contents or DROPPED files."""
    for top, dirs, files in os.walk(rootfs):
        relative = os.path.relpath(top, rootfs)
        relative = "" if relative == "." else relative
        if relative in EMPTIED:
            dirs[:] = []
            continue
        dirs.sort()
        # os.walk lists symlinks to directories in dirs, and does not descend into them: tar them as links.
        for name in sorted(dirs + files):
            path = os.path.join(relative, name)
            if not any(fnmatch.fnmatchcase(path, pattern) for pattern in DROPPED):
                yield path


def _owned(info: tarfile.TarInfo) -> tarfile.TarInfo:
    # Numeric owners only (the build host's user names mean nothing in the image), whole-second mtimes (a float
    # mtime costs a PAX header per member).
    info.uname = info.gname = ""
    info.mtime = int(info.mtime)
    return info


def tree_layer(rootfs: str, blob: str) -> Tuple[str, str, int, int]:
    """Write rootfs as a gzip tar to blob; returns (digest, diff_id, size, plain size)."""
    with open(blob, "wb") as out:
        compressed = builders._Hashing(out)
        with gzip.GzipFile(fileobj=compressed, mode="wb", compresslevel=6, mtime=0) as zipped:
            plain = builders._Hashing(zipped)
            with tarfile.open(fileobj=plain, mode="w|", format=tarfile.GNU_FORMAT) as archive:
                for path in _walk(rootfs):
                    full = os.path.join(rootfs, path)
                    mode = os.lstat(full).st_mode
                    if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode) or stat.S_ISLNK(mode)):
                        raise SystemExit(f"build_debian_image: unexpected special file {path}")
                    # tarfile turns the second name of an inode into a hard link member itself.
                    archive.add(full, arcname=path, recursive=False, filter=_owned)
    return ("sha256:" + compressed.hash.hexdigest(), "sha256:" + plain.hash.hexdigest(), compressed.count,
            plain.count)


def _write_blob(layout: str, data: bytes) -> str:
    digest = builders.sha256(data)
    with open(os.path.join(layout, "blobs", "sha256", digest.split(":", 1)[1]), "wb") as stream:
        stream.write(data)
    return digest


def _os_release(rootfs: str) -> str:
    with open(os.path.join(rootfs, "etc/debian_version"), encoding="utf-8") as stream:
        return stream.read().strip()


def make_layout(rootfs: str, layout: str, *, include: Sequence[str]) -> dict:
    """Write the image into the OCI image layout directory `layout`; returns the info (without timings)."""
    blobs = os.path.join(layout, "blobs", "sha256")
    os.makedirs(blobs)
    temporary = os.path.join(blobs, "layer1.partial")
    digest, diff_id, size, plain_size = tree_layer(rootfs, temporary)
    os.replace(temporary, os.path.join(blobs, digest.split(":", 1)[1]))
    upper = builders.make_layer(layer2_entries(), created_by="RUN rm -rf /etc/motd /usr/share/doc/bash ...")
    _write_blob(layout, upper.data)
    layers = [{"digest": digest, "diff_id": diff_id, "size": size, "plain_size": plain_size},
              {"digest": upper.digest, "diff_id": upper.diff_id, "size": upper.size,
               "plain_size": len(gzip.decompress(upper.data))}]
    version = _os_release(rootfs)
    architecture, variant = builders.host_platform()
    created = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    config = {"architecture": architecture, "os": "linux", "created": created,
              "config": {"Env": [PATH_ENV], "Cmd": ["/bin/bash"], "WorkingDir": "/root",
                         "Labels": {"org.opencontainers.image.title": "udocker test debian",
                                    "org.opencontainers.image.version": version,
                                    "org.udocker.test.packages": ",".join(include)}},
              "rootfs": {"type": "layers", "diff_ids": [layer["diff_id"] for layer in layers]},
              "history": [{"created": created, "created_by": "debootstrap --variant=minbase "
                           + (f"--include={','.join(include)} " if include else "") + SUITE},
                          {"created": created, "created_by": upper.created_by}]}
    if variant:
        config["variant"] = variant
    config_data = json.dumps(config, sort_keys=True, separators=(",", ":")).encode()
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": builders.OCI_MANIFEST,
        "config": {"mediaType": builders.OCI_CONFIG, "digest": _write_blob(layout, config_data),
                   "size": len(config_data)},
        "layers": [{"mediaType": builders.OCI_LAYER, "digest": layer["digest"], "size": layer["size"]}
                   for layer in layers]}, indent=3).encode()
    manifest_digest = _write_blob(layout, manifest)
    index = {"schemaVersion": 2, "mediaType": builders.OCI_INDEX,
             "manifests": [{"mediaType": builders.OCI_MANIFEST, "digest": manifest_digest, "size": len(manifest),
                            "annotations": {"org.opencontainers.image.ref.name": TAG}}]}
    with open(os.path.join(layout, "index.json"), "w", encoding="utf-8") as stream:
        json.dump(index, stream, indent=3)
    with open(os.path.join(layout, "oci-layout"), "w", encoding="utf-8") as stream:
        json.dump({"imageLayoutVersion": "1.0.0"}, stream)
    return {"format": "oci-archive", "tag": TAG, "suite": SUITE, "debian_version": version,
            "packages": list(include), "manifest_digest": manifest_digest,
            "config_digest": builders.sha256(config_data), "layers": layers, "expected": LAYER2_EXPECTED,
            "base_expected": BASE_EXPECTED}


def tar_layout(layout: str, archive: str) -> None:
    """Tar the layout directory (uncompressed: the layers already are), oci-layout and index.json first."""
    names = ["oci-layout", "index.json", "blobs", "blobs/sha256"]
    names += [f"blobs/sha256/{x}" for x in sorted(os.listdir(os.path.join(layout, "blobs", "sha256")))]
    with tarfile.open(archive, "w", format=tarfile.GNU_FORMAT) as tar:
        for name in names:
            info = tar.gettarinfo(os.path.join(layout, name), arcname=name)
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            info.mtime = builders.MTIME
            info.mode = 0o755 if info.isdir() else 0o644
            if info.isdir():
                tar.addfile(info)
            else:
                with open(os.path.join(layout, name), "rb") as stream:
                    tar.addfile(info, stream)


# --- the cache ---------------------------------------------------------------------------------------------------


def info_path(archive: str) -> str:
    """The info JSON beside an archive: debian12.tar -> debian12.json."""
    base = archive[:-4] if archive.endswith(".tar") else archive
    return base + ".json"


def load_info(archive: str) -> dict:
    with open(info_path(archive), encoding="utf-8") as stream:
        return json.load(stream)


def script_digest(include: Sequence[str] = ()) -> str:
    """sha256 of this script and of every file of the local pip projects in `include`: a change to either
    rebuilds the image."""
    with open(os.path.abspath(__file__), "rb") as stream:
        data = [stream.read()]
    for name in include:
        source = local_project(name[4:]) if name.startswith("pip:") else None
        for top, dirs, files in os.walk(source or os.devnull):
            dirs[:] = sorted(d for d in dirs if d not in ("build", "__pycache__") and not d.endswith(".egg-info"))
            for file_name in sorted(files):
                path = os.path.join(top, file_name)
                with open(path, "rb") as stream:
                    data += [os.path.relpath(path, CHECKOUT).encode(), b"\0", stream.read(), b"\0"]
    return builders.sha256(b"".join(data))


def up_to_date(archive: str, include: Sequence[str]) -> bool:
    """The archive and its info exist, match in size, and came from this script with these packages. (A content
    hash rather than mtimes: a fresh clone of the checkout makes the script newer than any cache.)"""
    try:
        info = load_info(archive)
        size = os.path.getsize(archive)
    except (OSError, ValueError):
        return False
    return (info.get("script") == script_digest(include) and info.get("packages") == list(include)
            and info.get("archive_size") == size)


def build(archive: str, *, include: Sequence[str], mirror: str) -> dict:
    """Build the archive and its info (atomically replacing both); returns the info."""
    archive = os.path.abspath(archive)
    os.makedirs(os.path.dirname(archive), exist_ok=True)
    work = tempfile.mkdtemp(prefix=".build-", dir=os.path.dirname(archive))
    try:
        start = time.monotonic()
        rootfs = os.path.join(work, "rootfs")
        debootstrap(rootfs, mirror=mirror, include=[name for name in include if not name.startswith("pip:")])
        bootstrapped = time.monotonic()
        tidy(rootfs)
        pips = [name[4:] for name in include if name.startswith("pip:")]
        if pips:
            pip_install(rootfs, pips, work)
        info = make_layout(rootfs, os.path.join(work, "layout"), include=include)
        partial = os.path.join(work, "archive.tar")
        tar_layout(os.path.join(work, "layout"), partial)
        done = time.monotonic()
        info.update(script=script_digest(include), mirror=mirror, archive_size=os.path.getsize(partial),
                    seconds={"debootstrap": round(bootstrapped - start, 1), "layers": round(done - bootstrapped, 1),
                             "total": round(done - start, 1)})
        os.chmod(partial, 0o644)
        os.replace(partial, archive)
        with open(os.path.join(work, "info.json"), "w", encoding="utf-8") as stream:
            json.dump(info, stream, indent=2, sort_keys=True)
        os.chmod(stream.name, 0o644)
        os.replace(stream.name, info_path(archive))
        return info
    finally:
        shutil.rmtree(work, ignore_errors=True)


# --- pushing -----------------------------------------------------------------------------------------------------


class _Slice(io.RawIOBase):
    """`size` bytes of an open file from `offset`: a request body streamed from inside a tarball."""

    def __init__(self, stream, offset: int, size: int):
        self.stream, self.left = stream, size
        stream.seek(offset)

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        size = self.left if size is None or size < 0 else min(size, self.left)
        data = self.stream.read(size)
        self.left -= len(data)
        return data


def _push_member(registry: builders.Registry, name: str, digest: str, stream, member: tarfile.TarInfo) -> None:
    if registry.has_blob(name, digest):
        return
    _, headers, _ = registry.request("POST", f"/v2/{name}/blobs/uploads/", ok=(202,))
    location = headers["Location"]
    location += ("&" if "?" in location else "?") + f"digest={digest}"
    registry.request("PUT", location, body=_Slice(stream, member.offset_data, member.size),
                     headers={"Content-Type": "application/octet-stream", "Content-Length": str(member.size)},
                     ok=(201,))


def push_archive(registry: builders.Registry, archive: str, ref: str) -> builders.Pushed:
    """Push the image in an OCI layout tarball (the first entry of its index.json) as ref (repository:tag). The
    registry checks each blob's digest as it arrives."""
    name, _, tag = ref.rpartition(":")
    with open(archive, "rb") as stream, tarfile.open(fileobj=stream) as tar:
        members = {member.name[2:] if member.name.startswith("./") else member.name: member
                   for member in tar.getmembers()}

        def read(path: str) -> bytes:
            return tar.extractfile(members[path]).read()

        descriptor = json.loads(read("index.json"))["manifests"][0]
        manifest_data = read("blobs/" + descriptor["digest"].replace(":", "/"))
        manifest = json.loads(manifest_data)
        for blob in [manifest["config"], *manifest["layers"]]:
            member = members["blobs/" + blob["digest"].replace(":", "/")]
            _push_member(registry, name, blob["digest"], stream, member)
    digest = registry.push_manifest(name, tag, manifest_data, descriptor["mediaType"])
    return builders.Pushed(ref, digest, descriptor["mediaType"], len(manifest_data), manifest["config"]["digest"],
                           tuple(layer["digest"] for layer in manifest["layers"]))


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description="Build the Debian 12 test image (as root) into an OCI layout "
                                                 "tarball, or push such a tarball to a registry.")
    parser.add_argument("archive", nargs="?", default=DEFAULT_ARCHIVE, help=f"default {DEFAULT_ARCHIVE}")
    parser.add_argument("--include", default="", metavar="PKG,...", help="extra Debian packages (e.g. openmpi-bin), "
                        "and pip:REQUIREMENT for Python packages from PyPI")
    parser.add_argument("--mirror", help="the Debian archive (default: the one apt uses for bookworm)")
    parser.add_argument("--force", action="store_true", help="rebuild even when the archive is up to date")
    parser.add_argument("--push", metavar="HOST:PORT", help="push the archive (building it if needed) to this "
                                                             "plain-HTTP registry as test/debian:12")
    args = parser.parse_args(argv)
    include = sorted(filter(None, args.include.split(",")))
    if args.force or not up_to_date(args.archive, include):
        if os.getuid() != 0:
            print("build_debian_image: debootstrap needs root", file=sys.stderr)
            return 1
        info = build(args.archive, include=include, mirror=args.mirror or apt_mirror())
        seconds = info["seconds"]
        print(f"build_debian_image: built {args.archive} ({info['archive_size'] / 1e6:.1f} MB, Debian "
              f"{info['debian_version']}) in {seconds['total']} s (debootstrap {seconds['debootstrap']} s)",
              file=sys.stderr)
    else:
        print(f"build_debian_image: {args.archive} is up to date", file=sys.stderr)
    if args.push:
        pushed = push_archive(builders.Registry(args.push), args.archive, f"test/debian:{TAG}")
        print(f"{args.push}/{pushed.ref} {pushed.digest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
