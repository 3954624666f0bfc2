"""Containers: containers/<id>/ holding container.json, rootfs/ and engine/<name>/ state."""

import contextlib
import json
import os
import re
import stat

from udocker.errors import NotFound, StoreError, UdockerError

# fs (tempfile, shutil) and uuid are imported where containers are written: `run` of an existing container
# only reads, and every import there is start-up time added to the engine's.


class Container:
    """One container directory. `record` is the parsed container.json:
    {"id", "names": [...], "image": ref, "manifest": digest, "config": image config ("config" object of the
    image configuration: Env, Cmd, Entrypoint, WorkingDir, User...), "platform": {...}, "mode": "P1"|None,
    "created": ISO time, "protected": bool}."""

    def __init__(self, directory, record):
        self.dir = directory
        self.record = record

    @property
    def id(self):
        return self.record["id"]

    @property
    def rootfs(self):
        return os.path.join(self.dir, "rootfs")

    def engine_dir(self, name):
        """Where engine `name` keeps its state for this container (created on demand by the engine)."""
        return os.path.join(self.dir, "engine", name)

    @property
    def mode(self):
        return self.record.get("mode")


class ContainerStore:
    """containers/<id>/ directories and containers/.names/<name> symlinks (-> id).

    A container directory is assembled in tmp/ and renamed into place, so it is either complete or
    absent; a name is a symlink, created atomically and exclusively, so two creates can never take one
    name. container.json is rewritten atomically under the container's lock.
    """

    def __init__(self, layout, lock_timeout):
        self.layout = layout
        self.lock_timeout = lock_timeout
        self.names_dir = os.path.join(layout.containers, ".names")

    # -- reading ---------------------------------------------------------------------------------------
    def load(self, container_id):
        directory = self.layout.container(container_id)
        try:
            with open(os.path.join(directory, "container.json"), "rb") as stream:
                return Container(directory, json.loads(stream.read()))
        except FileNotFoundError:
            raise NotFound(f"container not found: {container_id}", hint="see 'udocker ps'") from None
        except ValueError:
            raise StoreError(f"container {container_id} has a corrupt container.json") from None

    def list(self):
        found = []
        for name in sorted(os.listdir(self.layout.containers)):
            if not name.startswith(".") and os.path.isfile(os.path.join(self.layout.containers, name,
                                                                        "container.json")):
                found.append(self.load(name))
        return found

    def names(self):
        """{name: id} of every name."""
        try:
            return {name: os.readlink(os.path.join(self.names_dir, name)) for name in os.listdir(self.names_dir)}
        except FileNotFoundError:
            return {}

    def names_of(self, container_id):
        return sorted(name for name, cid in self.names().items() if cid == container_id)

    def find(self, text):
        """A container by name, id, or unique id prefix."""
        if _valid_name(text):
            try:
                return self.load(os.readlink(os.path.join(self.names_dir, text)))
            except (FileNotFoundError, NotFound):
                pass
        if "/" not in text and os.path.isdir(self.layout.container(text)) and not text.startswith("."):
            return self.load(text)
        if len(text) >= 4:
            matches = [c for c in os.listdir(self.layout.containers) if c.startswith(text) and not c.startswith(".")]
            if len(matches) == 1:
                return self.load(matches[0])
            if len(matches) > 1:
                raise UdockerError(f"container id {text} is ambiguous", hint="give more characters or a name")
        raise NotFound(f"container not found: {text}", hint="see 'udocker ps'")

    # -- writing ---------------------------------------------------------------------------------------
    def create(self, record, populate, *, name=None, force=False):
        """Make a new container: `populate(rootfs)` fills its rootfs, `record` (without id) becomes its
        container.json. Returns the Container. On failure nothing is left but tmp/ leftovers."""
        import uuid

        from udocker import fs

        if name is not None:
            check_name(name)
        container_id = str(uuid.uuid4())
        record = dict(record, id=container_id, protected=False)
        with fs.scratch_dir(self.layout.tmp, prefix="create-") as scratch:
            staging = os.path.join(scratch, container_id)
            os.mkdir(staging, 0o755)
            rootfs = os.path.join(staging, "rootfs")
            os.mkdir(rootfs, 0o755)
            populate(rootfs)
            _write_json(os.path.join(staging, "container.json"), record)
            os.rename(staging, self.layout.container(container_id))
        container = Container(self.layout.container(container_id), record)
        if name is not None:
            try:
                self.add_name(container, name, force=force)
            except UdockerError:
                self.remove(container, force=True)
                raise
        return container

    def update(self, container, **fields):
        """Change fields of container.json (atomically, under the container's lock)."""
        from udocker import fs

        with fs.locked(self.layout.lock("container", container.id), timeout=self.lock_timeout,
                       what=f"container {container.id}"):
            current = self.load(container.id).record
            current.update(fields)
            fs.atomic_write(os.path.join(container.dir, "container.json"),
                            json.dumps(current, indent=1, sort_keys=True).encode(), tmpdir=self.layout.tmp)
            container.record = current
        return container

    def add_name(self, container, name, *, force=False):
        from udocker import fs

        check_name(name)
        fs.ensure_dir(self.names_dir)
        link = os.path.join(self.names_dir, name)
        while True:
            try:
                os.symlink(container.id, link)
                return
            except FileExistsError:
                if not force:
                    raise UdockerError(f"container name already in use: {name}",
                                       hint="choose another name or remove it with 'udocker rmname'") from None
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(link)

    def remove_name(self, name):
        try:
            os.unlink(os.path.join(self.names_dir, name))
        except FileNotFoundError:
            raise NotFound(f"container name not found: {name}", hint="see 'udocker ps'") from None

    def rename(self, old, new):
        container = self.find(old)
        if old not in self.names_of(container.id):
            raise NotFound(f"container name not found: {old}", hint="see 'udocker ps'")
        self.add_name(container, new)
        self.remove_name(old)

    def remove(self, container, *, force=False):
        """Remove names and directory. A protected container needs unprotect first (or force)."""
        from udocker import fs

        if container.record.get("protected") and not force:
            raise UdockerError(f"container is protected: {container.id}", hint="run 'udocker unprotect' first")
        for name in self.names_of(container.id):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(os.path.join(self.names_dir, name))
        with fs.scratch_dir(self.layout.tmp, prefix="remove-") as scratch:
            try:
                os.rename(container.dir, os.path.join(scratch, container.id))
            except FileNotFoundError:
                return
            _make_removable(os.path.join(scratch, container.id))


CONTAINER_JSON = "container.json"
_NAME_RE = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,127}$")


def _valid_name(name):
    return bool(_NAME_RE.match(name)) and not _UUID_RE.match(name)


_UUID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


def check_name(name):
    if not _valid_name(name):
        raise UdockerError(f"invalid container name: {name!r}",
                           hint="use letters, digits, '_', '.' and '-', starting with a letter or digit")


def _write_json(path, data):
    with open(path, "w", encoding="utf-8") as stream:
        json.dump(data, stream, indent=1, sort_keys=True)
        stream.flush()
        os.fsync(stream.fileno())


def _make_removable(top):
    """Give the user write permission on every directory so that the tree can be deleted."""
    for parent, dirs, _ in os.walk(top):
        for name in dirs:
            path = os.path.join(parent, name)
            with contextlib.suppress(OSError):
                if not os.path.islink(path):
                    os.chmod(path, stat.S_IMODE(os.lstat(path).st_mode) | stat.S_IRWXU)
