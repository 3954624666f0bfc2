"""The only module that knows the repository's on-disk layout (docs/architecture.md, 'On-disk layout')."""

from __future__ import annotations

import os

FORMAT_VERSION = "2"


def link_id(target: str) -> str:
    """The container id a name's link target names: a bare id, or a path ending in one (udocker 1.3 reads
    its own links so, and udocker 1.x repositories hold both)."""
    return os.path.basename(target.rstrip("/"))


class Layout:
    """Paths inside one repository rooted at `topdir`. Builds paths only; creates nothing."""

    def __init__(self, topdir: str, tmpdir: str | None = None):
        self.topdir = os.path.abspath(os.path.expanduser(topdir))
        self.scratch = os.path.abspath(os.path.expanduser(tmpdir)) if tmpdir else self.tmp

    @property
    def version_file(self) -> str:
        return os.path.join(self.topdir, "VERSION")

    @property
    def tmp(self) -> str:
        """Partial downloads and unpacks: on the store's filesystem so that os.replace is atomic."""
        return os.path.join(self.topdir, "tmp")

    @property
    def locks(self) -> str:
        """Lock files (udocker/lockfile.py: O_EXCL files naming their owner), kept out of tmp/."""
        return os.path.join(self.topdir, "locks")

    @property
    def store(self) -> str:
        return os.path.join(self.topdir, "store")

    @property
    def oci_layout(self) -> str:
        return os.path.join(self.store, "oci-layout")

    @property
    def index_json(self) -> str:
        return os.path.join(self.store, "index.json")

    @property
    def blobs(self) -> str:
        return os.path.join(self.store, "blobs", "sha256")

    def blob(self, digest: str) -> str:
        algorithm, _, hexdigest = digest.partition(":")
        if algorithm != "sha256" or len(hexdigest) != 64 or not all(c in "0123456789abcdef" for c in hexdigest):
            raise ValueError(f"unsupported digest {digest!r}")
        return os.path.join(self.blobs, hexdigest)

    @property
    def open_warned(self) -> str:
        """The mode of the repository's top directory last warned about as open to other users."""
        return os.path.join(self.topdir, ".open-warned")

    @property
    def legacy_repos(self) -> str:
        """udocker 1.x's image tags (repos/<name>/<tag>/), read by udocker/store/v1images.py."""
        return os.path.join(self.topdir, "repos")

    @property
    def v1_images(self) -> str:
        """What udocker 2 adopted of udocker 1.x's images (udocker/store/adopt.py)."""
        return os.path.join(self.topdir, "v1-images.json")

    @property
    def containers(self) -> str:
        return os.path.join(self.topdir, "containers")

    def container(self, container_id: str) -> str:
        return os.path.join(self.containers, container_id)

    @property
    def names(self) -> str:
        """Container names: containers/.names/<name>, a symlink to the container's id."""
        return os.path.join(self.containers, ".names")

    def name(self, name: str) -> str:
        return os.path.join(self.names, name)

    # Inside one container's directory (containers/<id>/, or NAME.udocker/ beside a `run --location` tree):
    # given the directory, because a Container and a RunSpec carry it and it need not be in a repository.
    @staticmethod
    def container_record(directory: str) -> str:
        return os.path.join(directory, "container.json")

    @staticmethod
    def container_rootfs(directory: str) -> str:
        return os.path.join(directory, "rootfs")

    @staticmethod
    def legacy_root(directory: str) -> str:
        """A udocker 1.x container's root file system (store/v1containers.py knows the rest of 1.x's files)."""
        return os.path.join(directory, "ROOT")

    @staticmethod
    def legacy_overlay(directory: str) -> str:
        """What udocker 2 records of a udocker 1.x container (prepared mode, settings) beside 1.x's files."""
        return os.path.join(directory, "udocker2.json")

    @staticmethod
    def container_runs(directory: str) -> str:
        """The records of the container's runs (udocker/store/runs.py): one per live run, last.json."""
        return os.path.join(directory, "runs")

    @staticmethod
    def container_log(directory: str) -> str:
        """The output of the container's detached runs (`run -d`), rotated to container.log.1."""
        return os.path.join(directory, "container.log")

    @staticmethod
    def container_log_lock(directory: str) -> str:
        """The lock the loggers of a container's detached runs take to rotate its log (engines/detach.py)."""
        return os.path.join(directory, "container.log.lock")

    @staticmethod
    def engine_dir(directory: str, engine: str) -> str:
        """Where engine `engine` keeps its state for the container in `directory` (made by the engine)."""
        return os.path.join(directory, "engine", engine)

    @property
    def unpacked(self) -> str:
        """Images' layers applied once, shared by their containers: unpacked/<manifest hex>/."""
        return os.path.join(self.topdir, "unpacked")

    def unpacked_tree(self, manifest_digest: str) -> str:
        """The unpacked tree of the image whose manifest is `manifest_digest` ("sha256:<hex>")."""
        return os.path.join(self.unpacked, manifest_digest.split(":", 1)[1])

    @property
    def engines(self) -> str:
        return os.path.join(self.topdir, "engines")

    @property
    def credentials(self) -> str:
        return os.path.join(self.topdir, "credentials.yaml")

    def lock(self, kind: str, name: str) -> str:
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in name)
        return os.path.join(self.locks, f"{kind}-{safe}.lock")
